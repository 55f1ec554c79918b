"""Health of the running pipeline: progress check, snapshot, metrics, publication.

:class:`HealthMixin` is part of :class:`edge.pipeline.runtime.Pipeline`; it reads the
pipeline's counters and never blocks the stages. The snapshot is what ``status.json``
holds (read by ``crystal-edge status``) and what every sink's ``publish_health`` gets;
:meth:`HealthMixin.metrics_snapshot` has the keys of :mod:`edge.metrics`.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge import statefiles
from edge.pipeline.stages import one_line
from edge.state import STATUS_FILE, write_status


class HealthMixin:
    """Health methods of :class:`~edge.pipeline.runtime.Pipeline` (see the module)."""

    # provided by Pipeline
    opt: Any
    failed: str | None
    closer: Any
    delivery: Any
    processor: Any
    stages: dict[str, Any]
    post_stages: list[Any]
    _fps_times: Any
    _t0: float

    def busy(self) -> tuple[str, float] | None:
        """(what, since) while the inference stage loads or builds the backend, else None."""
        fn = getattr(self.processor, "busy", None)
        return fn() if fn is not None else None

    def stage_problems(self, now: float | None = None) -> list[str]:
        """Dead or stuck stages, one line each (see :meth:`Stage.problem`).

        The inference stage may be working on one call for longer than ``stall_s``
        while it loads the backend (a TensorRT engine build takes minutes on a Jetson),
        up to ``load_timeout_s``.
        """
        now = time.monotonic() if now is None else now
        busy = self.busy()
        out = []
        for s in [*self.stages.values(), *self.post_stages]:
            problem = s.problem(now, self.opt.stall_s)
            if (problem and s.name == "inference" and s.died is None and s.alive()
                    and busy is not None and now - busy[1] <= self.opt.load_timeout_s):
                continue
            if problem:
                out.append(problem)
        return out

    def healthy(self) -> bool:
        """No stage is dead or stuck and the pipeline has not failed (the watchdog is
        petted only while this holds)."""
        return self.failed is None and not self.stage_problems()

    def problems(self) -> list[str]:
        """Everything that keeps batches from getting out, one line each: a failed
        pipeline, dead or stuck stages, a failing batch close, failing required sinks."""
        out = [f"pipeline failed: {self.failed}"] if self.failed else self.stage_problems()
        return [*out, *self.closer.problems(), *self.delivery.problems()]

    def frames_per_s(self) -> float:
        now = time.monotonic()
        win = self.opt.fps_window_s
        while self._fps_times and now - self._fps_times[0] > win:
            self._fps_times.popleft()
        n = len(self._fps_times)
        return n / max(min(win, now - self._t0), 1e-6)

    def queue_depths(self) -> dict[str, int]:
        return {"inference": self.q_infer.qsize(), "post": self.q_post.qsize(),
                "aggregate": self.q_agg.qsize(), "sinks": self.q_sink.qsize()}

    def snapshot(self) -> dict[str, Any]:
        """Plain-JSON health snapshot (``status.json`` and ``publish_health``)."""
        now = time.monotonic()
        try:
            src = self.source.health()
        except Exception as exc:
            src = {"error": one_line(exc)}
        sinks = {}
        for s in self.sinks:
            try:
                sinks[getattr(s, "name", "?")] = s.health()
            except Exception as exc:
                sinks[getattr(s, "name", "?")] = {"error": one_line(exc)}
        last = self.last_report or {}
        problems = self.problems()
        return {
            "state": self.state,
            "device_id": self.device_id,
            "pid": os.getpid(),
            "time": datetime.now(timezone.utc).isoformat(),
            # `crystal-edge status` calls the file stale after a few missed rewrites
            "health_interval_s": self.opt.health_interval_s,
            "started": datetime.fromtimestamp(self.t_start, tz=timezone.utc).isoformat(),
            "uptime_s": round(time.time() - self.t_start, 3),
            "healthy": not problems,
            "problems": problems,
            "failed": self.failed,
            "batch_close_error": self.closer.fault,
            "sink_faults": self.delivery.faults(),
            "abandoned": list(self.abandoned),
            "busy": (self.busy() or (None,))[0],
            "frames_per_s": round(self.frames_per_s(), 3),
            "frames_total": self.frames_total,
            "frames_used_total": self.frames_used,
            "frames_rejected_total": dict(self.frames_rejected),
            "queue_depths": self.queue_depths(),
            "current_batch_id": self.agg.counter.last + 1,
            "current_batch_frames": self.agg.n_frames,
            "batches_total": self.batches_closed,
            "batches_published": self.batches_published,
            "batches_failed": self.batches_failed,
            "last_batch_id": last.get("batch_id"),
            "last_batch": self.last_report,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
            "stop_reason": self.stop_reason,
            "state_file_incidents": statefiles.incidents(),
            **self.info,
            "source": src,
            "sinks": sinks,
            "stages": {s.name: s.snapshot(now) for s in [*self.stages.values(),
                                                           *self.post_stages]},
        }

    def metrics_snapshot(self) -> dict[str, Any]:
        """Keys of :mod:`edge.metrics` (Prometheus endpoint)."""
        snap = self.snapshot()
        last = self.last_report or {}
        out: dict[str, Any] = {
            "frames_total": snap["frames_total"],
            "frames_rejected_total": snap["frames_rejected_total"],
            "batches_total": snap["batches_total"],
            "fps": snap["frames_per_s"],
            "queue_depth": snap["queue_depths"],
            "uptime_s": snap["uptime_s"],
            "backend": str((self.info.get("backend") or {}).get("name", "")),
            "version": str(self.info.get("software_version", "")),
        }
        for s in snap["sinks"].values():
            if isinstance(s, dict) and "outbox_depth" in s:
                out["outbox_depth"] = s["outbox_depth"]
        if last.get("x50_3_um") is not None:
            out["last_x50_um"] = last["x50_3_um"]
        if last.get("s_lnd") is not None:
            out["last_s_lnd"] = last["s_lnd"]
        if last.get("batch_end"):
            out["last_batch_timestamp_s"] = datetime.fromisoformat(
                last["batch_end"]).timestamp()
        return out

    def publish_health(self) -> dict[str, Any]:
        snap = self.snapshot()
        if self._on_health is not None:
            try:
                self._on_health(snap)
            except Exception as exc:
                self._error("health callback", exc)
        if self.state_dir is not None:
            try:
                write_status(self.state_dir, snap)
            except OSError as exc:
                if not _overwrite_status(Path(self.state_dir) / STATUS_FILE, snap):
                    self._error("status.json", exc)
        for s in self.sinks:
            try:
                s.publish_health(snap)
            except Exception as exc:
                self._error(f"sink {getattr(s, 'name', '?')} health", exc)
        return snap


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
