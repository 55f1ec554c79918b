"""What ``crystal-edge status`` shows: the service as seen from a shell on the device.

Sources, all read-only:

* ``systemctl is-active crystal-edge`` (``"unknown"`` where systemctl is absent or
  systemd is not running);
* ``STATE_DIR/status.json``, the health snapshot the running service rewrites every few
  seconds (``edge.pipeline.health``): state, pid, frames/s, last batch, backend, queue
  depths, sinks, last error. Its age (file modification time) says whether it is *stale*:
  a service that stopped writing it is hung or gone, whatever the file says; so is one
  whose recorded pid is no longer alive;
* ``STATE_DIR/outbox.sqlite3`` (the MQTT store-and-forward outbox), opened read-only: the
  backlog of batch reports not yet acknowledged by the broker, and the oldest one's age;
* ``STATE_DIR/engines/`` (the TensorRT engine cache): files and sizes.

Missing keys in ``status.json`` are tolerated (an older or newer service writes other
keys); they show as ``-``. The verdict (``overall OK|DEGRADED|DOWN`` and one line per
problem) comes from :mod:`edge.status_checks`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.status_checks import (
    Problem,
    StatusLimits,
    find_problems,
    overall,
    pid_alive,
    stale_after,
)
from edge.status_sources import (
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
    stale_after_s: float | None = None
    stale: bool = True
    status_error: str | None = None
    state: str | None = None
    pid: int | None = None
    pid_alive: bool | None = None
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
    outbox_oldest_age_s: float | None = None
    last_error: str | None = None
    last_error_time: str | None = None
    engine_cache_dir: str | None = None
    engines: list[EngineFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def overall(self) -> str:
        """``OK``, ``DEGRADED`` or ``DOWN`` (:func:`edge.status_checks.overall`)."""
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
        """Plain-JSON dict (``crystal-edge status --json``)."""
        return {**asdict(self), "ok": self.ok, "overall": self.overall}

    def to_text(self) -> str:
        """Aligned ``key: value`` lines for a terminal, one ``problem`` line per problem."""
        rows = [*self._rows(), *(("problem", f"{p.level}: {p.text}") for p in self.problems),
                ("overall", self.overall)]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)

    def _rows(self) -> list[tuple[str, str]]:
        age = "-" if self.status_age_s is None else f"{self.status_age_s:.1f} s ago"
        if self.stale and self.status_age_s is not None:
            age += " (STALE)"
        if self.pid is not None:
            age += f", pid {self.pid}" + (" (gone)" if self.pid_alive is False else "")
        last = self.last_batch or {}
        lb = (f"#{last.get('batch_id', '-')} at {last.get('batch_end', '-')}"
              f", x50,3 = {_fmt(last.get('x50_3_um'))} um, s_lnd = {_fmt(last.get('s_lnd'))}"
              f", {_fmt(last.get('crystals'))} crystals") if last else "-"
        engines = ", ".join(f"{e.name} ({e.size_bytes / 1e6:.1f} MB, {e.modified})"
                            for e in self.engines) or "-"
        return [
            ("service", self.service),
            ("state", _fmt(self.state) + ("" if self.healthy is not False else " (unhealthy)")),
            ("status.json", f"{self.status_file}, {age}" if self.status_error is None
             else f"{self.status_file}: {self.status_error}"),
            ("device", _fmt(self.device_id)),
            ("backend", _fmt(self.backend)),
            ("model", _fmt(self.model)),
            ("version", _fmt(self.software_version)),
            ("uptime", "-" if self.uptime_s is None else f"{self.uptime_s / 3600:.2f} h"),
            ("frames/s", _fmt(self.frames_per_s)),
            ("frames", f"{_fmt(self.frames_total)} analysed; rejected: "
                       f"{_fmt(self.frames_rejected_total)}"),
            ("batches", f"{_fmt(self.batches_total)} closed; collecting "
                        f"#{_fmt(self.current_batch_id)}"),
            ("last batch", lb),
            ("queues", _fmt(self.queue_depths)),
            ("mqtt", _fmt(self.mqtt) if self.mqtt else "- (no MQTT sink)"),
            ("outbox", self._outbox_text()),
            ("last error", _fmt(self.last_error) + (f" ({self.last_error_time})"
                                                    if self.last_error_time else "")),
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
    data = _read_status_file(rep, sd / STATUS_FILE, now)
    rep.stale_after_s = stale_after(data, limits)
    rep.stale = rep.status_age_s is None or rep.status_age_s > rep.stale_after_s
    _apply_snapshot(rep, data)
    _apply_outbox(rep, read_outbox(sd / OUTBOX_FILE), data, now)
    _apply_engines(rep, sd, data)
    rep.problems = find_problems(rep, data, limits)
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


def _apply_snapshot(rep: StatusReport, data: dict[str, Any]) -> None:
    """Copy the snapshot's facts into ``rep`` (wrong types are left out)."""
    rep.state = data.get("state")
    pid = data.get("pid")
    rep.pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None
    rep.pid_alive = pid_alive(rep.pid)
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


def _apply_outbox(rep: StatusReport, info: OutboxInfo, data: dict[str, Any],
                  now: float) -> None:
    """The outbox file is authoritative; the snapshot's number when it cannot be read."""
    if info.depth is not None:
        rep.outbox_depth, rep.outbox_source = info.depth, "outbox.sqlite3"
        if info.oldest_created is not None:
            rep.outbox_oldest_age_s = round(max(0.0, now - info.oldest_created), 3)
        return
    rep.outbox_error = info.error
    from_status = _outbox_from_status(data)
    if from_status is not None:
        rep.outbox_depth, rep.outbox_source = from_status, "status.json"


def _apply_engines(rep: StatusReport, sd: Path, data: dict[str, Any]) -> None:
    engine = _get(data, "backend", "engine")
    cache = (_get(data, "backend", "engine_cache_dir") or data.get("engine_cache_dir")
             or (Path(engine).parent if isinstance(engine, str) and engine else None)
             or sd / ENGINE_DIR)
    rep.engine_cache_dir = str(cache)
    rep.engines = engine_files(Path(cache))
