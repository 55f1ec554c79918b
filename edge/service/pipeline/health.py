"""Health of the running pipeline: counters, progress check, the snapshot and its publication.

:class:`PipelineHealth` is held by :class:`edge.service.pipeline.runtime.Pipeline`: it owns the
counters (frames, rejections, batches), the last error and the frames/s window, builds
the :class:`~edge.service.snapshot.StatusSnapshot` from them and from what the pipeline reports
about its stages, queues, source and sinks (:class:`Live`), and publishes it: to
``status.json`` (read by ``crystal-edge status``), to every sink's ``publish_health``
(the MQTT health message) and as the latest snapshot the metrics endpoint serves. It
never blocks the stages.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.service import statefiles
from edge.service.pipeline.stages import Stage, one_line
from edge.service.snapshot import StatusSnapshot
from edge.service.state import STATUS_FILE, write_status


def stage_problems(stages: Iterable[Stage], *, now: float, stall_s: float,
                   busy: tuple[str, float] | None, load_timeout_s: float,
                   loaded_at: float | None = None) -> list[str]:
    """Dead or stuck stages, one line each (see :meth:`Stage.problem`).

    The inference stage may be working on one call for longer than ``stall_s`` while it
    loads the backend (``busy``: what, since; a TensorRT engine build takes minutes on a
    Jetson), up to ``load_timeout_s``; after a load (``loaded_at``) its clock starts
    again, so the call that loaded it is not stuck the moment the load is over.
    """
    out = []
    for s in stages:
        since = (max(s.since, loaded_at) if s.name == "inference" and loaded_at is not None
                 else None)
        problem = s.problem(now, stall_s, since=since)
        if (problem and s.name == "inference" and s.died is None and s.alive()
                and busy is not None and now - busy[1] <= load_timeout_s):
            continue
        if problem:
            out.append(problem)
    return out


@dataclass
class Live:
    """What the pipeline reports about itself at one moment (the rest of a snapshot
    comes from the counters of :class:`PipelineHealth`)."""

    state: str
    problems: list[str]
    failed: str | None = None
    stop_reason: str | None = None
    busy: str | None = None
    abandoned: list[str] = field(default_factory=list)
    batch_close_error: dict[str, Any] | None = None
    sink_faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    queue_depths: dict[str, int] = field(default_factory=dict)
    current_batch_id: int | None = None
    current_batch_frames: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)


class PipelineHealth:
    """Counters, last error and frames/s of a pipeline; builds and publishes its snapshot.

    Parameters
    ----------
    device_id : str
        Appliance id in the snapshot.
    health_interval_s, fps_window_s : float
        Seconds between snapshots (recorded, so ``status`` can tell a stale file) and
        the window of the frames/s figure.
    state_dir : path, optional
        Where ``status.json`` goes (None: not written).
    on_health : callable, optional
        Called with every snapshot published (systemd status line).
    on_error : callable, optional
        ``on_error(where, text)`` for a failed publication (the pipeline's last error).
    """

    def __init__(self, *, device_id: str = "", health_interval_s: float = 5.0,
                 fps_window_s: float = 10.0, state_dir: Path | None = None,
                 on_health: Callable[[StatusSnapshot], None] | None = None) -> None:
        self.device_id = device_id
        self.health_interval_s = health_interval_s
        self.fps_window_s = fps_window_s
        self.state_dir = state_dir
        self._on_health = on_health
        self.t_start = time.time()
        self._t0 = time.monotonic()
        self._fps_times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.frames_total = 0
        self.frames_used = 0
        self.frames_rejected: collections.Counter[str] = collections.Counter()
        self.batches_closed = 0
        self.batches_published = 0
        self.batches_failed = 0
        self.last_report: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.last_error_time: str | None = None
        self.latest: StatusSnapshot | None = None

    # ------------------------------------------------------------ counting
    def frame(self, reject: str | None) -> None:
        """One frame reached the aggregate stage (``reject``: why it is not used)."""
        with self._lock:
            self.frames_total += 1
            self._fps_times.append(time.monotonic())
            if reject is None:
                self.frames_used += 1
            else:
                self.frames_rejected[reject] += 1

    def batch_done(self, summary: dict[str, Any], *, delivered: bool) -> None:
        """A closed batch was delivered to every required sink (or given up)."""
        if delivered:
            self.batches_published += 1
        else:
            self.batches_failed += 1
        self.last_report = summary

    def error(self, where: str, exc: BaseException | str) -> None:
        """Record the last error (one line)."""
        text = exc if isinstance(exc, str) else one_line(exc)
        self.last_error = f"{where}: {text}"
        self.last_error_time = datetime.now(timezone.utc).isoformat()

    def frames_per_s(self) -> float:
        """Frames counted per second over the last ``fps_window_s``."""
        now = time.monotonic()
        win = self.fps_window_s
        with self._lock:
            while self._fps_times and now - self._fps_times[0] > win:
                self._fps_times.popleft()
            n = len(self._fps_times)
        return n / max(min(win, now - self._t0), 1e-6)

    # ------------------------------------------------------------ snapshot
    def snapshot(self, live: Live) -> StatusSnapshot:
        """The snapshot now: the counters here plus what ``live`` reports."""
        last = self.last_report or {}
        snap = StatusSnapshot.model_validate({
            **live.info,
            "state": live.state, "device_id": self.device_id, "pid": os.getpid(),
            "time": datetime.now(timezone.utc).isoformat(),
            "health_interval_s": self.health_interval_s,
            "started": datetime.fromtimestamp(self.t_start, tz=timezone.utc).isoformat(),
            "uptime_s": round(time.time() - self.t_start, 3),
            "healthy": not live.problems, "problems": live.problems,
            "failed": live.failed, "batch_close_error": live.batch_close_error,
            "sink_faults": live.sink_faults, "abandoned": list(live.abandoned),
            "busy": live.busy, "frames_per_s": round(self.frames_per_s(), 3),
            "frames_total": self.frames_total, "frames_used_total": self.frames_used,
            "frames_rejected_total": dict(self.frames_rejected),
            "queue_depths": live.queue_depths, "current_batch_id": live.current_batch_id,
            "current_batch_frames": live.current_batch_frames,
            "batches_total": self.batches_closed,
            "batches_published": self.batches_published,
            "batches_failed": self.batches_failed,
            "last_batch_id": last.get("batch_id"), "last_batch": self.last_report,
            "last_error": self.last_error, "last_error_time": self.last_error_time,
            "stop_reason": live.stop_reason,
            "state_file_incidents": statefiles.incidents(),
            "source": live.source, "sinks": live.sinks, "stages": live.stages,
        })
        return snap.model_copy(update={"outbox_depth": snap.outbox_from_sinks()})

    def publish(self, snap: StatusSnapshot, sinks: Iterable[Any]) -> None:
        """Hand ``snap`` to the systemd callback, ``status.json``, every sink's
        ``publish_health`` (its JSON) and the metrics endpoint (:attr:`latest`)."""
        self.latest = snap
        if self._on_health is not None:
            try:
                self._on_health(snap)
            except Exception as exc:
                self.error("health callback", exc)
        data = snap.to_json()
        if self.state_dir is not None:
            try:
                write_status(self.state_dir, data)
            except OSError as exc:
                if not _overwrite_status(self.state_dir / STATUS_FILE, data):
                    self.error("status.json", exc)
        for s in sinks:  # the sink interface takes plain JSON (the same as status.json)
            try:
                s.publish_health(data)
            except Exception as exc:
                self.error(f"sink {getattr(s, 'name', '?')} health", exc)


def guarded_health(items: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """``{name: item.health()}``; a failing ``health()`` shows as ``{"error": ...}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name = getattr(item, "name", "?")
        try:
            out[name] = dict(item.health())
        except Exception as exc:
            out[name] = {"error": one_line(exc)}
    return out


def _overwrite_status(path: Path, snap: dict[str, Any]) -> bool:
    """``status.json`` rewritten in place, for a full disk (True when written).

    The atomic rewrite needs a new file, which a full disk refuses; overwriting the
    existing file within its size needs no new blocks, so the error that the disk is
    full still shows in ``status.json``. The text is padded with spaces to the old size
    (valid JSON); a snapshot that does not fit is not written.
    """
    try:
        text = json.dumps(snap, default=str, sort_keys=True).encode("utf-8")
        with open(path, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            if len(text) > size:
                return False
            f.write(text.ljust(size, b" "))
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError:
        return False
