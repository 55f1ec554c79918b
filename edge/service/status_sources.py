"""Read-only readers behind ``crystal-edge status``: systemd, the outbox, the engine cache.

None of them writes anything: the outbox is opened read-only (see :func:`read_outbox`),
systemd is only asked ``is-active``.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["EngineFile", "OutboxInfo", "engine_files", "outbox_depth",
           "read_outbox", "service_state"]

SERVICE = "crystal-edge"

_SYSTEMD_STATES = frozenset({
    "active", "inactive", "failed", "activating", "deactivating", "reloading",
    "maintenance", "refreshing",
})


def service_state(unit: str = SERVICE, *, systemctl: str | None = None,
                  timeout_s: float = 5.0) -> str:
    """``systemctl is-active <unit>``: active, inactive, failed, activating, ... or unknown.

    ``unknown`` when systemctl is not installed, systemd is not PID 1 (a container, a
    CI machine), or the answer is not one of systemd's unit states.
    """
    exe = systemctl or shutil.which("systemctl")
    if not exe:
        return "unknown"
    try:
        result = subprocess.run([exe, "is-active", unit], capture_output=True, text=True,
                                timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = result.stdout.strip().splitlines()
    answer = lines[0].strip() if lines else ""
    return answer if answer in _SYSTEMD_STATES else "unknown"


@dataclass(frozen=True)
class OutboxInfo:
    """What the MQTT outbox file holds: ``depth`` reports, the oldest written at
    ``oldest_created`` (UNIX time); ``error`` when the file cannot be read. All None
    when there is no outbox file."""

    depth: int | None = None
    oldest_created: float | None = None
    error: str | None = None


def read_outbox(path: str | Path) -> OutboxInfo:
    """Rows waiting in the MQTT outbox and the oldest one's time, read without writing."""
    path = Path(path)
    if not path.exists():
        return OutboxInfo()
    uri = f"file:{path.resolve()}?mode=ro"
    wal_live = (path.with_name(path.name + "-wal").exists()
                and path.with_name(path.name + "-shm").exists())
    # A WAL database being written has -wal/-shm files: mode=ro reads through them
    # (including rows not yet checkpointed). Without them (no writer, or it closed
    # cleanly) mode=ro would *create* -wal/-shm, owned by whoever runs `status` (root),
    # which the service's own user could then not open: immutable=1 creates nothing.
    # immutable=1 is also the fallback for a reader that may not write the -shm file.
    last_error = ""
    for suffix in (("", "&immutable=1") if wal_live else ("&immutable=1",)):
        try:
            con = sqlite3.connect(uri + suffix, uri=True, timeout=2.0)
        except sqlite3.Error as exc:
            last_error = str(exc)
            continue
        try:
            count, oldest = con.execute("SELECT COUNT(*), MIN(created) FROM outbox").fetchone()
            return OutboxInfo(int(count), None if oldest is None else float(oldest))
        except sqlite3.Error as exc:
            last_error = str(exc)
        finally:
            con.close()
    return OutboxInfo(error=f"{path}: {last_error}")


def outbox_depth(path: str | Path) -> tuple[int | None, str | None]:
    """``(depth, error)`` of :func:`read_outbox`: ``(n, None)``, ``(None, None)`` without
    an outbox file, ``(None, message)`` when it cannot be read."""
    info = read_outbox(path)
    return info.depth, info.error


@dataclass
class EngineFile:
    """One serialised TensorRT engine in the cache."""

    name: str
    size_bytes: int
    modified: str
    meta: dict[str, Any] = field(default_factory=dict)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def engine_files(cache_dir: Path) -> list[EngineFile]:
    if not cache_dir.is_dir():
        return []
    out = []
    for p in sorted(cache_dir.glob("*.engine")):
        try:
            st = p.stat()
        except OSError:
            continue
        meta: dict[str, Any] = {}
        sidecar = p.with_name(p.name + ".json")
        try:
            loaded = json.loads(sidecar.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                meta = loaded
        except (OSError, ValueError):
            pass
        out.append(EngineFile(p.name, st.st_size, _iso(st.st_mtime), meta))
    return out
