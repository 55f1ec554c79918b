"""The state directory: where the running service keeps what must survive a restart.

Layout (see ``docs/architecture.md``): ``engines/`` (TensorRT cache),
``outbox.sqlite3`` (MQTT store-and-forward), ``batch_counter.json``,
``folder_source.sqlite3`` (processed files) and ``status.json`` (the health snapshot
the running service rewrites every few seconds; read by ``crystal-edge status``).

Resolution order of the directory (:func:`resolve_state_dir`, the one place that knows
it): ``$CRYSTAL_EDGE_STATE_DIR`` (an explicit override, e.g. for tests or a second
instance), then ``[state] dir`` from the configuration, then systemd's
``$STATE_DIRECTORY``, then (for tools that look at the service from an administrator's
shell) ``/var/lib/crystal-edge`` when it exists, then ``~/.local/state/crystal-edge``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edge.errors import TransientError
from edge.service.statefiles import read_json_state

OVERRIDE_ENV = "CRYSTAL_EDGE_STATE_DIR"
#: systemd's ``StateDirectory=crystal-edge`` of the installed unit
SYSTEM_STATE_DIR = Path("/var/lib/crystal-edge")
STATUS_FILE = "status.json"
BATCH_COUNTER_FILE = "batch_counter.json"
FOLDER_DB_FILE = "folder_source.sqlite3"


class StateConfig(BaseModel):
    """``[state]``: where the service keeps its persistent state."""

    model_config = ConfigDict(extra="forbid")

    dir: Path | None = Field(
        None,
        description="state directory (engine cache, batch counter, folder-source "
                    "bookkeeping, status.json); None = systemd's $STATE_DIRECTORY, else "
                    "~/.local/state/crystal-edge. $CRYSTAL_EDGE_STATE_DIR overrides it")


def resolve_state_dir(configured: str | Path | None = None, *,
                      environ: dict[str, str] | None = None,
                      find_service: bool = False) -> Path:
    """The state directory to use (see the module docstring for the order).

    Parameters
    ----------
    configured : path, optional
        ``[state] dir`` of the configuration.
    environ : dict, optional
        The environment to read (default ``os.environ``).
    find_service : bool
        Look for the installed service's directory (``/var/lib/crystal-edge``) before the
        user's own: for ``crystal-edge status`` and ``build-engine`` run from a shell.
    """
    env = os.environ if environ is None else environ
    override = env.get(OVERRIDE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    if configured is not None and str(configured).strip():
        return Path(configured).expanduser()
    systemd = env.get("STATE_DIRECTORY", "").strip()
    if systemd:
        return Path(systemd.split(":")[0])
    if find_service and SYSTEM_STATE_DIR.is_dir():
        return SYSTEM_STATE_DIR
    return Path.home() / ".local" / "state" / "crystal-edge"


def ensure_state_dir(path: str | Path) -> Path:
    """Create the state directory (mode 0750) if needed.

    Raises :class:`~edge.errors.TransientError` (exit 1, systemd retries) when impossible:
    a late mount or a read-only remount clears by itself, and a wrong path in the
    configuration only costs a few restarts before systemd's start limit.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise TransientError(f"[state] dir {p}: cannot create the state directory: "
                             f"{exc.strerror or exc}") from None
    if not os.access(p, os.W_OK):
        raise TransientError(f"[state] dir {p}: not writable by this user")
    return p


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half.

    Writes a temporary file in the same directory, fsyncs it (``fsync=True``), renames
    it over ``path`` and fsyncs the directory so the rename survives a power cut.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_status(state_dir: str | Path, status: dict[str, Any]) -> Path:
    """Atomically (re)write ``status.json`` in the state directory.

    Not fsynced: it is rewritten every few seconds and only ever describes the present.
    """
    path = Path(state_dir) / STATUS_FILE
    atomic_write_text(path, json.dumps(status, indent=2, sort_keys=True) + "\n", fsync=False)
    return path


def read_status(state_dir: str | Path) -> dict[str, Any] | None:
    """The last ``status.json`` written, or None when there is none (or it is unreadable)."""
    path = Path(state_dir) / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


FRAME_SIZE_FILE = "frame_size.json"


def write_frame_size(state_dir: str | Path, hw: tuple[int, int]) -> None:
    """Remember the frame size last analysed, so the next start loads the model before
    READY even when the source cannot tell the size yet (an empty watched folder)."""
    atomic_write_text(Path(state_dir) / FRAME_SIZE_FILE,
                      json.dumps({"height": int(hw[0]), "width": int(hw[1])}) + "\n")


def read_frame_size(state_dir: str | Path) -> tuple[int, int] | None:
    """The size :func:`write_frame_size` recorded, or None (absent or unreadable)."""
    hw, _ = read_json_state(Path(state_dir) / FRAME_SIZE_FILE, _parse_frame_size,
                            what="frame size", then="the model loads with the first frame")
    return hw


def _parse_frame_size(d: Any) -> tuple[int, int]:
    h, w = int(d["height"]), int(d["width"])
    if h <= 0 or w <= 0:
        raise ValueError(f"height and width must be > 0, got {h}x{w}")
    return h, w
