"""The streaming pipeline: capture -> inference -> post-processing -> aggregation -> sinks.

One thread per stage (``post_workers`` threads for post-processing), joined by bounded
queues (see :mod:`edge.service.pipeline.stages`); the frame stages are
:class:`edge.service.pipeline.frame_stages.FrameStages`, the batch stages (aggregate, sinks) are
here. The main thread (:meth:`Pipeline.run`) supervises: every ``health_interval_s`` it
builds the status snapshot and publishes it (:class:`edge.service.pipeline.health.PipelineHealth`:
``status.json``, every sink's ``publish_health``, the metrics endpoint), and it pets the
systemd watchdog while every stage makes progress.

Supervision: an error on one item is logged in one line, counted and recorded as the
last error, and the stage goes on with the next item. A stage whose thread dies, or
that is stuck (see :meth:`edge.service.pipeline.stages.Stage.problem`), makes the pipeline
*failed*: the watchdog is no longer petted, the health says why, the pipeline stops
(the same way as at a deadline-passed stop, below) and :meth:`Pipeline.run` returns 1,
so that the process exits non-zero and systemd restarts it.

Closing and delivery (:mod:`edge.service.pipeline.delivery`): a batch whose close fails stays
open and is retried with back-off. Frames that arrive meanwhile keep accumulating in
the open batch, past its normal size (a frame there costs only its name and diameters),
up to ``max_open_factor`` times ``[batch] frames``; beyond that the aggregate stage
stops taking frames (back-pressure), and if that lasts past ``stall_s`` the stages
before it are stuck and the service restarts. Frames of a batch are acknowledged to
the source only when every required sink accepted the batch.

Stopping (:meth:`Pipeline.request_stop`, e.g. from SIGTERM): capture stops, the frames
already taken drain through the stages, the open batch is closed (or discarded, per
``[batch] on_shutdown``) and handed to the sinks. Draining has a deadline
(``drain_timeout_s``): after it the stages stop waiting for one another, the open batch
gets one last close and the sinks one last try (``final_s``), then blocked puts give
up and :meth:`run` returns 1 (work was abandoned: frames not acknowledged are read
again by a folder source on the next start). A clean stop returns 0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from edge.service.pipeline.batch import BatchAggregator, BatchReport
from edge.service.pipeline.batch_stages import BatchStages
from edge.service.pipeline.delivery import Closer, Delivery
from edge.service.pipeline.frame_stages import FrameStages
from edge.service.pipeline.health import Live, PipelineHealth, guarded_health, stage_problems
from edge.service.pipeline.stages import (
    END,
    Flow,
    FrameProcessor,
    PipelineOptions,
    Stage,
    guarded,
    one_line,
    put,
)
from edge.service.snapshot import StatusSnapshot
from edge.sinks.base import Sink
from edge.sources.base import FrameSource

log = logging.getLogger(__name__)

__all__ = ["Pipeline", "PipelineOptions"]


class Pipeline:
    """Run a source through the processor into batches and sinks (module docstring).

    ``required_sinks`` names the sinks a batch must reach before its frames are
    acknowledged (None: all of them). ``health`` owns the counters and the snapshot.
    """

    def __init__(self, *, source: FrameSource, processor: FrameProcessor,
                 aggregator: BatchAggregator, sinks: Sequence[Sink],
                 options: PipelineOptions | None = None, state_dir: str | Path | None = None,
                 device_id: str = "",
                 info: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
                 watchdog: Callable[[], Any] | None = None,
                 watchdog_interval_s: float | None = None,
                 on_report: Callable[[BatchReport], None] | None = None,
                 on_health: Callable[[StatusSnapshot], None] | None = None,
                 required_sinks: Collection[str] | None = None) -> None:
        self.source = source
        self.processor = processor
        self.agg = aggregator
        self.sinks = list(sinks)
        self.opt = opt = options or PipelineOptions()
        self._info = info or {}
        self._watchdog = watchdog
        self._watchdog_interval = watchdog_interval_s
        self.health = PipelineHealth(
            device_id=device_id, health_interval_s=opt.health_interval_s,
            fps_window_s=opt.fps_window_s, on_health=on_health,
            state_dir=Path(state_dir) if state_dir is not None else None)
        self.delivery = Delivery(self.sinks, required=required_sinks, on_error=self._error,
                                 backoff=opt.retry_backoff_s)
        self.closer = Closer(aggregator, backoff=opt.retry_backoff_s)
        self.flow = Flow.sized(opt.queue_size)
        self.frame_stages = FrameStages(self.flow, source=source, processor=processor,
                                        options=opt, on_failed=self._failed,
                                        request_stop=self.request_stop)
        self.stages = {n: Stage(n) for n in ("capture", "inference", "aggregate", "sinks")}
        self.post_stages = [Stage(f"post{i}") for i in range(max(1, opt.post_workers))]
        self._stop_seen: float | None = None
        self._deadline_at: float | None = None
        self.stop_reason: str | None = None
        self.failed: str | None = None           # why the pipeline failed (dead/stuck)
        self.abandoned: list[str] = []           # work given up at a stop
        self.state = "starting"
        self.batch_stages = BatchStages(
            self.flow, aggregator=aggregator, closer=self.closer, delivery=self.delivery,
            source=source, health=self.health, options=opt, on_failed=self._failed,
            on_error=self._error, request_stop=self.request_stop,
            stop_reason=lambda: self.stop_reason, abandoned=self.abandoned,
            on_report=on_report)
        self.reports = self.batch_stages.reports  # published this run (callers, tests)

    # ---------------------------------------------------------------- counters
    @property
    def frames_total(self) -> int:
        return self.health.frames_total

    @property
    def batches_closed(self) -> int:
        return self.health.batches_closed

    @property
    def batches_published(self) -> int:
        return self.health.batches_published

    @property
    def batches_failed(self) -> int:
        return self.health.batches_failed

    @property
    def last_error(self) -> str | None:
        return self.health.last_error

    # ---------------------------------------------------------------- control
    def request_stop(self, reason: str = "stop") -> None:
        """Finish gracefully: take no more frames, drain, close the open batch."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.info("pipeline: stopping (%s)", reason)
        if self.state not in ("failed", "stopped"):
            self.state = "stopping"
        self.flow.stop_capture.set()

    def request_close_batch(self, reason: str = "command") -> None:
        """Close the open batch at the next opportunity (MQTT ``close_batch``)."""
        log.info("pipeline: close-batch requested (%s)", reason)
        self.flow.close_now.set()

    def abort(self) -> None:
        """Stop at once: blocked stages give up; the open batch is not closed."""
        self.request_stop(self.stop_reason or "abort")
        self.batch_stages.discard_open = True
        self.flow.deadline.set()
        self.flow.abort.set()

    def _error(self, where: str, exc: BaseException | str) -> None:
        self.health.error(where, exc)

    def _failed(self, st: Stage, where: str, exc: BaseException) -> None:
        """One item failed in ``st``: one log line, counted, the last error; go on."""
        text = st.failed(where, exc)
        self._error(where, exc)
        log.error("pipeline: %s", text)
        log.debug("pipeline: %s", where, exc_info=exc)

    # ---------------------------------------------------------------- health
    def busy(self) -> tuple[str, float] | None:
        """(what, since) while the inference stage loads or builds the backend, else None."""
        fn = getattr(self.processor, "busy", None)
        return fn() if fn is not None else None

    def stage_problems(self, now: float | None = None) -> list[str]:
        """Dead or stuck stages, one line each
        (:func:`edge.service.pipeline.health.stage_problems`)."""
        return stage_problems([*self.stages.values(), *self.post_stages],
                              now=time.monotonic() if now is None else now,
                              stall_s=self.opt.stall_s, busy=self.busy(),
                              load_timeout_s=self.opt.load_timeout_s,
                              loaded_at=getattr(self.processor, "loaded_at", lambda: None)())

    def healthy(self) -> bool:
        """No stage is dead or stuck and the pipeline has not failed (the watchdog is
        petted only while this holds)."""
        return self.failed is None and not self.stage_problems()

    def problems(self) -> list[str]:
        """Everything that keeps batches from getting out, one line each: a failed
        pipeline, dead or stuck stages, a failing batch close, failing required sinks."""
        out = [f"pipeline failed: {self.failed}"] if self.failed else self.stage_problems()
        return [*out, *self.closer.problems(), *self.delivery.problems()]

    def snapshot(self) -> StatusSnapshot:
        """The status snapshot now (``status.json``, MQTT health, metrics)."""
        now = time.monotonic()
        try:
            info = dict(self._info() if callable(self._info) else self._info)
        except Exception as exc:
            info = {"info_error": one_line(exc)}
        return self.health.snapshot(Live(
            state=self.state, problems=self.problems(), failed=self.failed,
            stop_reason=self.stop_reason, busy=(self.busy() or (None,))[0],
            abandoned=self.abandoned, batch_close_error=self.closer.fault,
            sink_faults=self.delivery.faults(), queue_depths=self.flow.depths(),
            current_batch_id=self.agg.counter.last + 1,
            current_batch_frames=self.agg.n_frames, info=info,
            source=guarded_health([self.source]).popitem()[1],
            sinks=guarded_health(self.sinks),
            stages={s.name: s.snapshot(now) for s in [*self.stages.values(),
                                                       *self.post_stages]}))

    def latest_snapshot(self) -> StatusSnapshot:
        """The snapshot published last (what ``status.json`` and the MQTT health show;
        the metrics endpoint serves it), or one built now before the first."""
        return self.health.latest or self.snapshot()

    def publish_health(self) -> StatusSnapshot:
        snap = self.snapshot()
        self.health.publish(snap, self.sinks)
        return snap

    # ---------------------------------------------------------------- running
    def start(self) -> None:
        """Start the stage threads (guarded: a thread that dies is recorded).

        They are daemon threads: :meth:`run` waits for the sink stage, which ends only
        after the last closed batch was tried (or at the deadline), so nothing is cut
        short by the interpreter exiting; a stage hung in a driver call cannot keep
        the process alive after a stop.
        """
        targets = [*self.frame_stages.targets(self.stages, self.post_stages),
                   (self.stages["aggregate"],
                    lambda: self.batch_stages.aggregate(self.stages["aggregate"])),
                   (self.stages["sinks"], lambda: self.batch_stages.sink(self.stages["sinks"]))]
        for stage, fn in targets:
            stage.thread = threading.Thread(target=guarded(stage, fn),
                                            name=f"pipeline-{stage.name}", daemon=True)
            stage.thread.start()
        self.state = "running"

    def run(self) -> int:
        """Start, supervise until the sink stage ends; 0 for a clean stop, 1 when the
        pipeline failed or work was abandoned (see the module docstring)."""
        if self.state == "starting":
            self.start()
        sink_thread = self.stages["sinks"].thread
        assert sink_thread is not None
        pet_every = self._watchdog_interval if self._watchdog is not None else None
        tick = min(0.25, pet_every / 4.0) if pet_every else 0.25
        next_health = next_pet = time.monotonic()
        while sink_thread.is_alive():
            sink_thread.join(tick)
            now = time.monotonic()
            self._supervise(now)
            if pet_every and now >= next_pet and self.healthy():
                self._watchdog()  # type: ignore[misc]
                next_pet = now + pet_every / 2.0
            if self.flow.stop_capture.is_set():
                self._drain_step(now)
            if now >= next_health:
                self.publish_health()
                next_health = now + self.opt.health_interval_s
        grace = 0.2 if self.flow.deadline.is_set() else 5.0
        for s in [*self.stages.values(), *self.post_stages]:
            if s.thread is not None and s.name != "capture":
                s.thread.join(grace)
        self.state = "failed" if self.failed else "stopped"
        self.publish_health()
        return 1 if self.failed or self.abandoned or self.batches_failed else 0

    def _supervise(self, now: float) -> None:
        """A dead or stuck stage: the pipeline has failed; stop without draining."""
        if self.failed is not None:
            return
        problems = self.stage_problems(now)
        if not problems:
            return
        self.failed = "; ".join(problems)
        self._error("pipeline", self.failed)
        log.error("pipeline: unhealthy: %s; the watchdog is no longer petted and the "
                  "service stops (within %.0f s) with exit status 1 so that systemd "
                  "restarts it", self.failed, self.opt.final_s + 1)
        self.request_stop(self.stop_reason or "unhealthy")
        self.state = "failed"
        self.flow.deadline.set()
        self._deadline_at = now
        self.publish_health()

    def _drain_step(self, now: float) -> None:
        """While stopping: abandon a capture that does not stop, then the deadlines."""
        f = self.flow
        self._stop_seen = self._stop_seen or now
        cap = self.stages["capture"]
        if (cap.alive() and not f.capture_abandoned
                and now - self._stop_seen > self.opt.capture_grace_s):
            log.warning("pipeline: capture did not stop within %.0f s; abandoning it",
                        self.opt.capture_grace_s)
            f.capture_abandoned = True
            put(f.infer, END, cap, f.abort)
        if not f.deadline.is_set() and now - self._stop_seen > self.opt.drain_timeout_s:
            log.warning("pipeline: draining did not finish within %.0f s; a last attempt "
                        "to close and deliver, then the rest is given up",
                        self.opt.drain_timeout_s)
            self.abandoned.append("drain deadline passed")
            f.deadline.set()
        if f.deadline.is_set():
            self._deadline_at = self._deadline_at or now
            if not f.abort.is_set() and now - self._deadline_at > self.opt.final_s:
                log.warning("pipeline: giving up the work still blocked")
                f.abort.set()
