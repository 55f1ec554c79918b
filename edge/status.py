"""What ``crystal-edge status`` shows: the service as seen from a shell on the device.

Sources, all read-only:

* ``systemctl is-active crystal-edge`` (``"unknown"`` where systemctl is absent or
  systemd is not running);
* ``STATE_DIR/status.json``, the health snapshot the running service rewrites every few
  seconds (``edge.pipeline.runtime``): state, frames/s, last batch, backend, queue depths,
  last error. Its age (file modification time) says whether it is *stale*: a service that
  stopped writing it is hung or gone, whatever the file says;
* ``STATE_DIR/outbox.sqlite3`` (the MQTT store-and-forward outbox), opened read-only: the
  backlog of batch reports not yet acknowledged by the broker;
* ``STATE_DIR/engines/`` (the TensorRT engine cache): files and sizes.

Missing keys in ``status.json`` are tolerated (an older or newer service writes other
keys); they show as ``-``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.errors import UserError

__all__ = [
    "DEFAULT_STALE_AFTER_S",
    "EngineFile",
    "StatusReport",
    "collect_status",
    "default_state_dir",
    "outbox_depth",
    "service_state",
]

SERVICE = "crystal-edge"
STATUS_FILE = "status.json"
OUTBOX_FILE = "outbox.sqlite3"
ENGINE_DIR = "engines"
SYSTEM_STATE_DIR = Path("/var/lib/crystal-edge")
#: status.json older than this is stale (the service writes it every few seconds).
DEFAULT_STALE_AFTER_S = 30.0

_SYSTEMD_STATES = frozenset({
    "active", "inactive", "failed", "activating", "deactivating", "reloading",
    "maintenance", "refreshing",
})


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """State directory of the service as seen from an administrator's shell.

    ``$CRYSTAL_EDGE_STATE_DIR``, then ``$STATE_DIRECTORY`` (set inside the service), then
    ``/var/lib/crystal-edge`` (systemd's ``StateDirectory=``) when it exists, then
    ``~/.local/state/crystal-edge`` (a development run).
    """
    env = os.environ if environ is None else environ
    for var in ("CRYSTAL_EDGE_STATE_DIR", "STATE_DIRECTORY"):
        value = env.get(var, "").strip()
        if value:
            return Path(value.split(":")[0]).expanduser()
    if SYSTEM_STATE_DIR.is_dir():
        return SYSTEM_STATE_DIR
    return Path.home() / ".local" / "state" / "crystal-edge"


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


def outbox_depth(path: str | Path) -> tuple[int | None, str | None]:
    """Rows waiting in the MQTT outbox, read without writing anything.

    Returns
    -------
    (depth, error)
        ``(n, None)``, ``(None, None)`` when there is no outbox file, or
        ``(None, message)`` when it cannot be read.
    """
    path = Path(path)
    if not path.exists():
        return None, None
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
            row = con.execute("SELECT COUNT(*) FROM outbox").fetchone()
            return int(row[0]), None
        except sqlite3.Error as exc:
            last_error = str(exc)
        finally:
            con.close()
    return None, f"{path}: {last_error}"


@dataclass
class EngineFile:
    """One serialised TensorRT engine in the cache."""

    name: str
    size_bytes: int
    modified: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return {"name": self.name, "size_bytes": self.size_bytes, "modified": self.modified,
                "meta": self.meta}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def _engine_files(cache_dir: Path) -> list[EngineFile]:
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


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


@dataclass
class StatusReport:
    """Everything ``crystal-edge status`` prints (``--json``: :meth:`to_payload`)."""

    service: str
    state_dir: str
    status_file: str
    status_age_s: float | None = None
    stale: bool = True
    status_error: str | None = None
    state: str | None = None
    healthy: bool | None = None
    device_id: str | None = None
    backend: str | None = None
    model: str | None = None
    software_version: str | None = None
    uptime_s: float | None = None
    started: str | None = None
    mqtt: str | None = None
    frames_per_s: float | None = None
    frames_total: int | None = None
    frames_rejected_total: dict[str, int] = field(default_factory=dict)
    batches_total: int | None = None
    current_batch_id: int | None = None
    last_batch: dict[str, Any] | None = None
    queue_depths: dict[str, int] = field(default_factory=dict)
    outbox_depth: int | None = None
    outbox_source: str | None = None
    outbox_error: str | None = None
    last_error: str | None = None
    last_error_time: str | None = None
    engine_cache_dir: str | None = None
    engines: list[EngineFile] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Service active, status fresh and the service's own health flag not False."""
        return (self.service in ("active", "unknown") and not self.stale
                and self.status_error is None and self.healthy is not False)

    def to_payload(self) -> dict[str, Any]:
        """Plain-JSON dict (``crystal-edge status --json``)."""
        return {
            "ok": self.ok,
            "service": self.service,
            "state_dir": self.state_dir,
            "status_file": self.status_file,
            "status_age_s": self.status_age_s,
            "stale": self.stale,
            "status_error": self.status_error,
            "state": self.state,
            "healthy": self.healthy,
            "device_id": self.device_id,
            "backend": self.backend,
            "model": self.model,
            "software_version": self.software_version,
            "uptime_s": self.uptime_s,
            "started": self.started,
            "mqtt": self.mqtt,
            "frames_per_s": self.frames_per_s,
            "frames_total": self.frames_total,
            "frames_rejected_total": dict(self.frames_rejected_total),
            "batches_total": self.batches_total,
            "current_batch_id": self.current_batch_id,
            "last_batch": self.last_batch,
            "queue_depths": dict(self.queue_depths),
            "outbox_depth": self.outbox_depth,
            "outbox_source": self.outbox_source,
            "outbox_error": self.outbox_error,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
            "engine_cache_dir": self.engine_cache_dir,
            "engines": [e.to_payload() for e in self.engines],
        }

    def to_text(self) -> str:
        """Aligned ``key: value`` lines for a terminal."""

        def fmt(v: Any) -> str:
            if v is None or v == {}:
                return "-"
            if isinstance(v, float):
                return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
            if isinstance(v, dict):
                return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
            return str(v)

        age = "-" if self.status_age_s is None else f"{self.status_age_s:.1f} s ago"
        if self.stale and self.status_age_s is not None:
            age += " (STALE)"
        last = self.last_batch or {}
        if last:
            x50 = last.get("x50_3_um")
            lb = (f"#{last.get('batch_id', '-')} at {last.get('batch_end', '-')}"
                  f", x50,3 = {fmt(x50)} um, s_lnd = {fmt(last.get('s_lnd'))}"
                  f", {fmt(last.get('crystals'))} crystals")
        else:
            lb = "-"
        if self.outbox_depth is None:
            outbox = "-" if self.outbox_error is None else f"unreadable ({self.outbox_error})"
        else:
            outbox = f"{self.outbox_depth} report(s) waiting ({self.outbox_source})"
        engines = ", ".join(f"{e.name} ({e.size_bytes / 1e6:.1f} MB, {e.modified})"
                            for e in self.engines) or "-"
        rows = [
            ("service", self.service),
            ("state", fmt(self.state) + ("" if self.healthy is not False else " (unhealthy)")),
            ("status.json", f"{self.status_file}, {age}" if self.status_error is None
             else f"{self.status_file}: {self.status_error}"),
            ("device", fmt(self.device_id)),
            ("backend", fmt(self.backend)),
            ("model", fmt(self.model)),
            ("version", fmt(self.software_version)),
            ("uptime", "-" if self.uptime_s is None else f"{self.uptime_s / 3600:.2f} h"),
            ("frames/s", fmt(self.frames_per_s)),
            ("frames", f"{fmt(self.frames_total)} analysed; rejected: "
                       f"{fmt(self.frames_rejected_total)}"),
            ("batches", f"{fmt(self.batches_total)} closed; collecting "
                        f"#{fmt(self.current_batch_id)}"),
            ("last batch", lb),
            ("queues", fmt(self.queue_depths)),
            ("mqtt", fmt(self.mqtt) if self.mqtt else "- (no MQTT sink)"),
            ("outbox", outbox),
            ("last error", fmt(self.last_error) + (f" ({self.last_error_time})"
                                                   if self.last_error_time else "")),
            ("engine cache", f"{fmt(self.engine_cache_dir)}: {engines}"),
            ("overall", "OK" if self.ok else "NOT OK"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _outbox_from_status(data: dict[str, Any]) -> int | None:
    if isinstance(data.get("outbox_depth"), int):
        return int(data["outbox_depth"])
    sinks = data.get("sinks")
    if isinstance(sinks, dict):
        for s in sinks.values():
            if isinstance(s, dict) and isinstance(s.get("outbox_depth"), int):
                return int(s["outbox_depth"])
    return None


def _backend_name(data: dict[str, Any]) -> str | None:
    b = data.get("backend")
    if isinstance(b, dict):
        name = b.get("name")
        provider = b.get("device") or b.get("provider")
        if name and provider:
            return f"{name} ({provider})"
        return str(name) if name else None
    return None if b is None else str(b)


def collect_status(state_dir: str | Path, *, stale_after_s: float = DEFAULT_STALE_AFTER_S,
                   systemctl: str | None = None, now: float | None = None) -> StatusReport:
    """Gather the :class:`StatusReport` for a state directory.

    Parameters
    ----------
    state_dir : path
        The service's state directory.
    stale_after_s : float
        ``status.json`` older than this is reported stale.
    systemctl : str, optional
        systemctl executable (default: found on PATH).
    now : float, optional
        Current UNIX time (for tests).

    Raises
    ------
    UserError
        The state directory does not exist or cannot be read.
    """
    sd = Path(state_dir)
    if not sd.is_dir():
        raise UserError(f"--state-dir {sd}: no such directory (is the service installed? "
                        "pass --state-dir or set CRYSTAL_EDGE_STATE_DIR)")
    if not os.access(sd, os.R_OK | os.X_OK):
        raise UserError(f"--state-dir {sd}: permission denied (run as root or as the "
                        "crystal-edge user)")
    now = time.time() if now is None else now
    status_path = sd / STATUS_FILE
    rep = StatusReport(service=service_state(systemctl=systemctl), state_dir=str(sd),
                       status_file=str(status_path))

    data: dict[str, Any] = {}
    try:
        st = status_path.stat()
        rep.status_age_s = round(max(0.0, now - st.st_mtime), 3)
        loaded = json.loads(status_path.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise ValueError("not a JSON object")
        data = loaded
    except FileNotFoundError:
        rep.status_error = "missing (the service has not written it yet, or never ran)"
    except (OSError, ValueError) as exc:
        rep.status_error = f"unreadable: {' '.join(str(exc).split())}"
    rep.stale = rep.status_age_s is None or rep.status_age_s > stale_after_s

    rep.state = data.get("state")
    rep.healthy = data.get("healthy") if isinstance(data.get("healthy"), bool) else None
    rep.device_id = data.get("device_id")
    rep.backend = _backend_name(data)
    rep.software_version = data.get("software_version")
    model = data.get("model")
    if isinstance(model, dict) and model.get("name"):
        sha = str(model.get("sha256") or "")[:12]
        rep.model = f"{model['name']}" + (f" (sha256 {sha})" if sha else "")
    rep.uptime_s = data.get("uptime_s")
    rep.started = data.get("started")
    mqtt = _get(data, "sinks", "mqtt")
    if isinstance(mqtt, dict):
        rep.mqtt = mqtt.get("connection") or (
            None if mqtt.get("connected") is None
            else "connected" if mqtt["connected"] else "disconnected")
    rep.frames_per_s = data.get("frames_per_s", data.get("fps"))
    rep.frames_total = data.get("frames_total")
    if isinstance(data.get("frames_rejected_total"), dict):
        rep.frames_rejected_total = dict(data["frames_rejected_total"])
    rep.batches_total = data.get("batches_total")
    rep.current_batch_id = data.get("current_batch_id")
    last = data.get("last_batch")
    if isinstance(last, dict):
        rep.last_batch = last
    elif data.get("last_batch_id") is not None:
        rep.last_batch = {"batch_id": data["last_batch_id"]}
    if isinstance(data.get("queue_depths"), dict):
        rep.queue_depths = dict(data["queue_depths"])
    rep.last_error = data.get("last_error")
    rep.last_error_time = data.get("last_error_time")

    depth, err = outbox_depth(sd / OUTBOX_FILE)
    if depth is not None:
        rep.outbox_depth, rep.outbox_source = depth, "outbox.sqlite3"
    else:
        rep.outbox_error = err
        from_status = _outbox_from_status(data)
        if from_status is not None:
            rep.outbox_depth, rep.outbox_source = from_status, "status.json"

    engine = _get(data, "backend", "engine")
    cache = (_get(data, "backend", "engine_cache_dir") or data.get("engine_cache_dir")
             or (Path(engine).parent if isinstance(engine, str) and engine else None)
             or sd / ENGINE_DIR)
    rep.engine_cache_dir = str(cache)
    rep.engines = _engine_files(Path(cache))
    return rep
