"""The streaming pipeline: capture -> inference -> post-processing -> aggregation -> sinks.

One thread per stage (``post_workers`` threads for post-processing), joined by bounded
queues (see :mod:`edge.pipeline.stages`). The main thread (:meth:`Pipeline.run`)
supervises: it writes the health snapshot (``status.json`` + every sink's
``publish_health``) every ``health_interval_s`` and pets the systemd watchdog while
every stage makes progress.

Supervision: an error on one item is logged in one line, counted and recorded as the
last error, and the stage goes on with the next item. A stage whose thread dies, or
that is stuck (see :meth:`edge.pipeline.stages.Stage.problem`), makes the pipeline
*failed*: the watchdog is no longer petted, the health says why, the pipeline stops
(the same way as at a deadline-passed stop, below) and :meth:`Pipeline.run` returns 1,
so that the process exits non-zero and systemd restarts it.

Closing and delivery (:mod:`edge.pipeline.delivery`): a batch whose close fails stays
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

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.batch import BatchAggregator, BatchReport
from edge.pipeline.delivery import Closer, Delivery
from edge.pipeline.frame_stages import FrameStagesMixin
from edge.pipeline.health import HealthMixin
from edge.pipeline.stages import END, FrameProcessor, Item, Stage, get, guarded, one_line, put
from edge.sinks.base import Sink
from edge.sources.base import FrameSource

log = logging.getLogger(__name__)


@dataclass
class PipelineOptions:
    """Run-time knobs of :class:`Pipeline` (from ``[pipeline]``, ``[health]`` and the CLI)."""

    queue_size: int = 4
    infer_batch: int = 1
    post_workers: int = 1
    health_interval_s: float = 5.0
    stall_s: float = 120.0
    load_timeout_s: float = 3600.0
    max_frames: int | None = None
    max_batches: int | None = None
    capture_grace_s: float = 5.0
    fps_window_s: float = 10.0
    drain_timeout_s: float = 20.0
    final_s: float = 4.0
    max_open_factor: int = 10
    retry_backoff_s: tuple[float, float] = (1.0, 30.0)


class Pipeline(FrameStagesMixin, HealthMixin):
    """Run a source through the processor into batches and sinks (module docstring).

    ``required_sinks`` names the sinks a batch must reach before its frames are
    acknowledged (None: all of them).
    """

    def __init__(self, *, source: FrameSource, processor: FrameProcessor,
                 aggregator: BatchAggregator, sinks: Sequence[Sink],
                 options: PipelineOptions | None = None, state_dir: str | Path | None = None,
                 device_id: str = "",
                 info: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
                 watchdog: Callable[[], Any] | None = None,
                 watchdog_interval_s: float | None = None,
                 on_report: Callable[[BatchReport], None] | None = None,
                 on_health: Callable[[dict[str, Any]], None] | None = None,
                 required_sinks: Collection[str] | None = None) -> None:
        self.source = source
        self.processor = processor
        self.agg = aggregator
        self.sinks = list(sinks)
        self.opt = options or PipelineOptions()
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.device_id = device_id
        self._info = info or {}
        self._on_health = on_health
        self._watchdog = watchdog
        self._watchdog_interval = watchdog_interval_s
        self._on_report = on_report
        self.delivery = Delivery(self.sinks, required=required_sinks, on_error=self._error,
                                 backoff=self.opt.retry_backoff_s)
        self.closer = Closer(aggregator, backoff=self.opt.retry_backoff_s)

        qs = max(1, self.opt.queue_size)
        self.q_infer: queue.Queue = queue.Queue(qs)
        self.q_post: queue.Queue = queue.Queue(qs)
        self.q_agg: queue.Queue = queue.Queue(qs * 2)
        self.q_sink: queue.Queue = queue.Queue(64)
        self.stages = {n: Stage(n) for n in ("capture", "inference", "aggregate", "sinks")}
        self.post_stages = [Stage(f"post{i}") for i in range(max(1, self.opt.post_workers))]

        self._stop_capture = threading.Event()   # capture: take no more frames
        self._deadline = threading.Event()       # stop waiting; last close and delivery
        self._abort = threading.Event()          # everything: give up blocking puts
        self._close_now = threading.Event()      # close the open batch (command)
        self._lock = threading.Lock()
        self._posts_ended = 0
        self._capture_abandoned = False
        self._closing_disabled = False
        self._discard_open = False
        self._want_close: str | None = None
        self.stop_reason: str | None = None
        self.failed: str | None = None           # why the pipeline failed (dead/stuck)
        self.abandoned: list[str] = []           # work given up at a stop
        self.state = "starting"
        self.t_start = time.time()
        self._t0 = time.monotonic()
        self.frames_total = 0
        self.frames_used = 0
        self.frames_rejected: collections.Counter[str] = collections.Counter()
        self.batches_closed = 0
        self.batches_published = 0
        self.batches_failed = 0
        self.last_report: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.last_error_time: str | None = None
        self._fps_times: collections.deque[float] = collections.deque()
        self.reports: list[BatchReport] = []  # published this run (light; for callers/tests)

    # ---------------------------------------------------------------- control
    def request_stop(self, reason: str = "stop") -> None:
        """Finish gracefully: take no more frames, drain, close the open batch."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.info("pipeline: stopping (%s)", reason)
        if self.state not in ("failed", "stopped"):
            self.state = "stopping"
        self._stop_capture.set()

    def request_close_batch(self, reason: str = "command") -> None:
        """Close the open batch at the next opportunity (MQTT ``close_batch``)."""
        log.info("pipeline: close-batch requested (%s)", reason)
        self._close_now.set()

    def abort(self) -> None:
        """Stop at once: blocked stages give up; the open batch is not closed."""
        self.request_stop(self.stop_reason or "abort")
        self._discard_open = True
        self._deadline.set()
        self._abort.set()

    @property
    def info(self) -> dict[str, Any]:
        """Static identity for the health snapshot (model, backend, version)."""
        try:
            return dict(self._info() if callable(self._info) else self._info)
        except Exception as exc:
            return {"info_error": one_line(exc)}

    def _error(self, where: str, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else one_line(exc)
        self.last_error = f"{where}: {text}"
        self.last_error_time = datetime.now(timezone.utc).isoformat()

    def _failed(self, st: Stage, where: str, exc: BaseException) -> None:
        """One item failed in ``st``: one log line, counted, the last error; go on."""
        text = st.failed(where, exc)
        self._error(where, exc)
        log.error("pipeline: %s", text)
        log.debug("pipeline: %s", where, exc_info=exc)

    # ---------------------------------------------------------------- stages
    def _aggregate(self) -> None:
        st = self.stages["aggregate"]
        limit = self.agg.config.frames * max(1, self.opt.max_open_factor)
        while not self._deadline.is_set():
            if self.closer.failing and self.agg.n_frames >= limit:
                st.set("retrying")  # back-pressure: the open batch is full (see module)
                self._deadline.wait(min(0.2, self.closer.wait_s()))
                it = None
            else:
                it = get(self.q_agg, st)
            if it is None and self._abort.is_set():
                break
            if self._close_now.is_set():
                self._close_now.clear()
                self._want_close = self._want_close or "command"
            if it is END:
                break
            if it is not None:
                try:
                    self._count(it)
                except Exception as exc:
                    self._failed(st, f"aggregate {it.frame.name}", exc)
                st.items += 1
                st.moved()
            if not self._closing_disabled:
                reason = self._want_close or self.agg.due()
                if reason:
                    self._close(reason, st)
        self._final_close(st)
        st.done = True
        put(self.q_sink, END, st, self._abort)

    def _close(self, reason: str, st: Stage, *, force: bool = False) -> bool:
        """Close the open batch (or note why not); True when it is closed or empty."""
        done, report = self.closer.close(reason, force=force)
        if not done:
            self._error("batch close", str((self.closer.fault or {}).get("error", "")))
            return False
        self._want_close = None
        self._emit(report, st)
        return True

    def _final_close(self, st: Stage) -> None:
        """The open batch at the end: closed (retried until the deadline) or discarded."""
        if self._discard_open or self.agg.config.on_shutdown == "discard":
            dropped = self.agg.discard()
            if dropped:
                log.info("pipeline: open batch with %d frame(s) discarded (not acknowledged; "
                         "a folder source re-reads them next start)", len(dropped))
            return
        reason = self._want_close or ("shutdown" if self.stop_reason in (
            "SIGTERM", "SIGINT", "signal") else "end")
        while not self._close(reason, st):
            if self._deadline.is_set():
                if self._close(reason, st, force=True):  # one last try
                    return
                n = self.agg.discard()
                self.abandoned.append(f"open batch of {len(n)} frame(s) not closed")
                log.error("pipeline: the open batch of %d frame(s) could not be closed "
                          "before the deadline; its frames stay unacknowledged", len(n))
                return
            st.set("retrying")
            self._deadline.wait(max(0.05, self.closer.wait_s()))

    def _count(self, it: Item) -> None:
        self.frames_total += 1
        self._fps_times.append(time.monotonic())
        timing = dict(it.timing_ms)
        timing["latency_ms"] = (time.monotonic() - it.t_in) * 1000.0
        if it.reject is not None or it.measured is None:
            reason = it.reject or "no_result"
            self.frames_rejected[reason] += 1
            self.agg.add_rejection(it.frame, reason)
            return
        m = it.measured
        self.frames_used += 1
        self.agg.add_result(it.frame, diameters_um=m.diameters_um, weights=m.weights,
                            crystals_rejected_by_reason=m.crystals_rejected_by_reason,
                            timing_ms=timing)

    def _emit(self, report: BatchReport | None, st: Stage) -> None:
        if report is None:
            return
        self.batches_closed += 1
        if not put(self.q_sink, report, st, self._abort):
            self.abandoned.append(f"batch {report.batch_id} not handed to the sinks")
            log.error("pipeline: batch %d closed but not handed to the sinks before the "
                      "deadline; its frames stay unacknowledged", report.batch_id)
        if self.opt.max_batches and self.batches_closed >= self.opt.max_batches:
            self._closing_disabled = True
            self._discard_open = True
            self.request_stop("max-batches")

    def _sink(self) -> None:
        st = self.stages["sinks"]
        while True:
            rep = get(self.q_sink, st)
            if rep is None:
                if self._abort.is_set() and self.q_sink.empty():
                    break  # abort: every closed batch handed over was tried
                continue
            if rep is END:
                break
            try:
                self._publish(rep, st)
            except Exception as exc:
                self._failed(st, f"sinks batch {getattr(rep, 'batch_id', '?')}", exc)
            st.items += 1
            st.moved()
        st.done = True

    def _publish(self, rep: BatchReport, st: Stage) -> None:
        """Deliver one report; acknowledge its frames when every required sink has it."""
        if self.delivery.deliver(rep, st, self._deadline):
            self.batches_published += 1
            try:
                self.source.ack(rep.frames)
            except Exception as exc:
                self._failed(st, f"source ack of batch {rep.batch_id}", exc)
        else:
            self.batches_failed += 1
            self.abandoned.append(f"batch {rep.batch_id} not delivered")
            log.error("pipeline: batch %d did not reach every required sink before the "
                      "deadline; its frames stay unacknowledged", rep.batch_id)
        rep.frames = []
        self.last_report = rep.summary()
        self.reports.append(rep)
        if self._on_report is not None:
            self._on_report(rep)

    # ---------------------------------------------------------------- running
    def start(self) -> None:
        """Start the stage threads (guarded: a thread that dies is recorded).

        They are daemon threads: :meth:`run` waits for the sink stage, which ends only
        after the last closed batch was tried (or at the deadline), so nothing is cut
        short by the interpreter exiting; a stage hung in a driver call cannot keep
        the process alive after a stop.
        """
        targets: list[tuple[Stage, Callable[[], None]]] = [
            (self.stages["capture"], self._capture),
            (self.stages["inference"], self._inference),
            (self.stages["aggregate"], self._aggregate),
            (self.stages["sinks"], self._sink),
        ]
        for ps in self.post_stages:
            targets.append((ps, lambda ps=ps: self._post(ps)))
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
        next_health = next_pet = time.monotonic()
        tick = 0.25
        if self._watchdog is not None and self._watchdog_interval:
            tick = min(tick, self._watchdog_interval / 4.0)
        self._stop_seen: float | None = None
        self._deadline_at: float | None = None
        while sink_thread.is_alive():
            sink_thread.join(tick)
            now = time.monotonic()
            self._supervise(now)
            if (self._watchdog is not None and self._watchdog_interval and now >= next_pet
                    and self.healthy()):
                self._watchdog()
                next_pet = now + self._watchdog_interval / 2.0
            if self._stop_capture.is_set():
                self._drain_step(now)
            if now >= next_health:
                self.publish_health()
                next_health = now + self.opt.health_interval_s
        grace = 0.2 if self._deadline.is_set() else 5.0
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
        self._deadline.set()
        self._deadline_at = now
        self.publish_health()

    def _drain_step(self, now: float) -> None:
        """While stopping: abandon a capture that does not stop, then the deadlines."""
        self._stop_seen = self._stop_seen or now
        cap = self.stages["capture"]
        if (cap.alive() and not self._capture_abandoned
                and now - self._stop_seen > self.opt.capture_grace_s):
            log.warning("pipeline: capture did not stop within %.0f s; abandoning it",
                        self.opt.capture_grace_s)
            self._capture_abandoned = True
            put(self.q_infer, END, cap, self._abort)
        if not self._deadline.is_set() and now - self._stop_seen > self.opt.drain_timeout_s:
            log.warning("pipeline: draining did not finish within %.0f s; a last attempt "
                        "to close and deliver, then the rest is given up",
                        self.opt.drain_timeout_s)
            self.abandoned.append("drain deadline passed")
            self._deadline.set()
        if self._deadline.is_set():
            self._deadline_at = self._deadline_at or now
            if not self._abort.is_set() and now - self._deadline_at > self.opt.final_s:
                log.warning("pipeline: giving up the work still blocked")
                self._abort.set()
