"""What ``crystal-edge status`` shows: the service as seen from a shell on the device.

Sources, all read-only:

* ``systemctl is-active crystal-edge`` (``"unknown"`` where systemctl is absent or
  systemd is not running);
* ``STATE_DIR/status.json``, the health snapshot the running service rewrites every few
  seconds (``edge.service.pipeline.health``): state, pid, frames/s, last batch, backend, queue
  depths, sinks, last error. Its age (file modification time) says whether it is *stale*:
  a service that stopped writing it is hung or gone, whatever the file says; so is one
  whose recorded pid is no longer alive;
* ``STATE_DIR/outbox.sqlite3`` (the MQTT store-and-forward outbox), opened read-only: the
  backlog of batch reports not yet acknowledged by the broker, and the oldest one's age;
* ``STATE_DIR/engines/`` (the TensorRT engine cache): files and sizes.

``status.json`` is read into the service's own :class:`~edge.service.snapshot.StatusSnapshot`
(the names of ``status.json``, the MQTT health message and ``/metrics`` are the same);
missing or odd fields (an older or newer service) take their defaults and show as ``-``.
The verdict (``overall OK|DEGRADED|DOWN`` and one line per
problem) comes from :mod:`edge.service.status_checks`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.service.snapshot import StatusSnapshot
from edge.service.status_checks import (
    Problem,
    StatusLimits,
    find_problems,
    overall,
    pid_alive,
    stale_after,
)
from edge.service.status_sources import (
    EngineFile,
    OutboxInfo,
    engine_files,
    outbox_depth,
    read_outbox,
    service_state,
)

__all__ = [
    "EngineFile",
    "OutboxInfo",
    "StatusLimits",
    "StatusReport",
    "collect_status",
    "outbox_depth",
    "read_outbox",
    "service_state",
]

STATUS_FILE = "status.json"
OUTBOX_FILE = "outbox.sqlite3"
ENGINE_DIR = "engines"


@dataclass
class StatusReport:
    """Everything ``crystal-edge status`` prints (``--json``: :meth:`to_payload`)."""

    service: str
    state_dir: str
    status_file: str
    status_age_s: float | None = None
    stale_after_s: float | None = None
    stale: bool = True
    status_error: str | None = None
    snapshot: StatusSnapshot = field(default_factory=StatusSnapshot)
    pid_alive: bool | None = None
    outbox_depth: int | None = None
    outbox_source: str | None = None
    outbox_error: str | None = None
    outbox_oldest_age_s: float | None = None
    engine_cache_dir: str | None = None
    engines: list[EngineFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def backend(self) -> str | None:
        """``name (device)`` of the inference backend."""
        b = self.snapshot.backend
        name, device = b.get("name"), b.get("device") or b.get("provider")
        return f"{name} ({device})" if name and device else (str(name) if name else None)

    @property
    def model(self) -> str | None:
        """``name (sha256 <12 hex>)`` of the segmentation model."""
        m = self.snapshot.model
        if not m.get("name"):
            return None
        sha = str(m.get("sha256") or "")[:12]
        return f"{m['name']}" + (f" (sha256 {sha})" if sha else "")

    @property
    def mqtt(self) -> str | None:
        """The MQTT connection (None without an MQTT sink)."""
        m = self.snapshot.mqtt
        if m is None:
            return None
        return m.get("connection") or (None if m.get("connected") is None
                                       else "connected" if m["connected"] else "disconnected")

    @property
    def overall(self) -> str:
        """``OK``, ``DEGRADED`` or ``DOWN`` (:func:`edge.service.status_checks.overall`)."""
        return overall(self.problems)

    @property
    def ok(self) -> bool:
        """No problem found: running, fresh, healthy, delivering, outbox not growing."""
        return not self.problems

    def summary(self) -> str:
        """One line: ``OK``, or the verdict and every problem (``--check``)."""
        if not self.problems:
            return "OK"
        return f"{self.overall}: " + "; ".join(p.text for p in self.problems)

    def to_payload(self) -> dict[str, Any]:
        """Plain-JSON dict (``crystal-edge status --json``): what was read besides the
        snapshot, and ``snapshot`` in ``status.json``'s names."""
        out = {k: v for k, v in asdict(self).items() if k != "snapshot"}
        return {**out, "snapshot": self.snapshot.to_json(), "backend": self.backend,
                "model": self.model, "mqtt": self.mqtt, "ok": self.ok,
                "overall": self.overall}

    def to_text(self) -> str:
        """Aligned ``key: value`` lines for a terminal, one ``problem`` line per problem."""
        rows = [*self._rows(), *(("problem", f"{p.level}: {p.text}") for p in self.problems),
                ("overall", self.overall)]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)

    def _rows(self) -> list[tuple[str, str]]:
        snap = self.snapshot
        age = "-" if self.status_age_s is None else f"{self.status_age_s:.1f} s ago"
        if self.stale and self.status_age_s is not None:
            age += " (STALE)"
        if snap.pid is not None:
            age += f", pid {snap.pid}" + (" (gone)" if self.pid_alive is False else "")
        last = snap.last_batch
        lb = (f"#{_fmt(last.batch_id)} at {_fmt(last.batch_end)}"
              f", x50,3 = {_fmt(last.x50_3_um)} um, s_lnd = {_fmt(last.s_lnd)}"
              f", {_fmt(last.crystals)} crystals") if last else (
            "-" if snap.last_batch_id is None else f"#{snap.last_batch_id}")
        engines = ", ".join(f"{e.name} ({e.size_bytes / 1e6:.1f} MB, {e.modified})"
                            for e in self.engines) or "-"
        return [
            ("service", self.service),
            ("state", _fmt(snap.state) + ("" if snap.healthy is not False else " (unhealthy)")),
            ("status.json", f"{self.status_file}, {age}" if self.status_error is None
             else f"{self.status_file}: {self.status_error}"),
            ("device", _fmt(snap.device_id or None)),
            ("backend", _fmt(self.backend)),
            ("model", _fmt(self.model)),
            ("version", _fmt(snap.software_version)),
            ("uptime", "-" if snap.uptime_s is None else f"{snap.uptime_s / 3600:.2f} h"),
            ("frames/s", _fmt(snap.frames_per_s)),
            ("frames", f"{_fmt(snap.frames_total)} analysed; rejected: "
                       f"{_fmt(snap.frames_rejected_total)}"),
            ("batches", f"{_fmt(snap.batches_total)} closed; collecting "
                        f"#{_fmt(snap.current_batch_id)}"),
            ("last batch", lb),
            ("queues", _fmt(snap.queue_depths)),
            ("mqtt", _fmt(self.mqtt) if self.mqtt else "- (no MQTT sink)"),
            ("outbox", self._outbox_text()),
            ("last error", _fmt(snap.last_error) + (f" ({snap.last_error_time})"
                                                    if snap.last_error_time else "")),
            ("engine cache", f"{_fmt(self.engine_cache_dir)}: {engines}"),
        ]

    def _outbox_text(self) -> str:
        if self.outbox_depth is None:
            return "-" if self.outbox_error is None else f"unreadable ({self.outbox_error})"
        text = f"{self.outbox_depth} report(s) waiting ({self.outbox_source})"
        if self.outbox_oldest_age_s is not None:
            text += f", oldest {self.outbox_oldest_age_s:.0f} s"
        return text


def _fmt(v: Any) -> str:
    if v is None or v == {}:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)


def collect_status(state_dir: str | Path, *, limits: StatusLimits | None = None,
                   systemctl: str | None = None, now: float | None = None) -> StatusReport:
    """Gather the :class:`StatusReport` for a state directory, with its problems.

    Parameters
    ----------
    state_dir : path
        The service's state directory.
    limits : StatusLimits, optional
        Staleness and outbox thresholds (defaults: :class:`StatusLimits`).
    systemctl : str, optional
        systemctl executable (default: found on PATH).
    now : float, optional
        Current UNIX time (for tests).

    Raises
    ------
    UserError
        The state directory does not exist or cannot be read.
    """
    sd = _checked_state_dir(Path(state_dir))
    limits = limits or StatusLimits()
    now = time.time() if now is None else now
    rep = StatusReport(service=service_state(systemctl=systemctl), state_dir=str(sd),
                       status_file=str(sd / STATUS_FILE))
    rep.snapshot = snap = StatusSnapshot.from_mapping(
        _read_status_file(rep, sd / STATUS_FILE, now))
    rep.stale_after_s = stale_after(snap, limits)
    rep.stale = rep.status_age_s is None or rep.status_age_s > rep.stale_after_s
    rep.pid_alive = pid_alive(snap.pid)
    _apply_outbox(rep, read_outbox(sd / OUTBOX_FILE), snap, now)
    _apply_engines(rep, sd, snap)
    rep.problems = find_problems(rep, limits)
    return rep


def _checked_state_dir(sd: Path) -> Path:
    if not sd.is_dir():
        raise UserError(f"--state-dir {sd}: no such directory (is the service installed? "
                        "pass --state-dir or set CRYSTAL_EDGE_STATE_DIR)")
    if not os.access(sd, os.R_OK | os.X_OK):
        raise UserError(f"--state-dir {sd}: permission denied (run as root or as the "
                        "crystal-edge user)")
    return sd


def _read_status_file(rep: StatusReport, path: Path, now: float) -> dict[str, Any]:
    """The snapshot in ``status.json`` ({} when absent or unreadable; the reason in
    ``rep.status_error``); its age in ``rep.status_age_s``."""
    try:
        st = path.stat()
        rep.status_age_s = round(max(0.0, now - st.st_mtime), 3)
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise ValueError("not a JSON object")
        return loaded
    except FileNotFoundError:
        rep.status_error = "missing (the service has not written it yet, or never ran)"
    except (OSError, ValueError) as exc:
        rep.status_error = f"unreadable: {' '.join(str(exc).split())}"
    return {}


def _apply_outbox(rep: StatusReport, info: OutboxInfo, snap: StatusSnapshot,
                  now: float) -> None:
    """The outbox file is authoritative; the snapshot's number when it cannot be read."""
    if info.depth is not None:
        rep.outbox_depth, rep.outbox_source = info.depth, "outbox.sqlite3"
        if info.oldest_created is not None:
            rep.outbox_oldest_age_s = round(max(0.0, now - info.oldest_created), 3)
        return
    rep.outbox_error = info.error
    from_status = snap.outbox_depth
    if from_status is None:
        from_status = snap.outbox_from_sinks()
    if from_status is not None:
        rep.outbox_depth, rep.outbox_source = from_status, "status.json"


def _apply_engines(rep: StatusReport, sd: Path, snap: StatusSnapshot) -> None:
    engine = snap.backend.get("engine")
    cache = (snap.backend.get("engine_cache_dir")
             or (Path(engine).parent if isinstance(engine, str) and engine else None)
             or sd / ENGINE_DIR)
    rep.engine_cache_dir = str(cache)
    rep.engines = engine_files(Path(cache))
