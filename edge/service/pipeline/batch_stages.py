"""The batch stages of the pipeline: aggregation into the open batch, closing, and
handing closed batches to the sinks.

The aggregate stage counts every frame (:class:`edge.service.pipeline.health.PipelineHealth`)
and adds it to the open batch; it closes the batch when it is due, on a close command,
and at the end (see :mod:`edge.service.pipeline.runtime` for back-pressure and deadlines). The
sink stage delivers each closed batch (:class:`edge.service.pipeline.delivery.Delivery`) and
acknowledges its frames to the source once every required sink has it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edge.service.pipeline.batch import BatchAggregator, BatchReport
from edge.service.pipeline.delivery import Closer, Delivery
from edge.service.pipeline.health import PipelineHealth
from edge.service.pipeline.stages import END, Flow, Item, PipelineOptions, Stage, get, put
from edge.sources.base import FrameSource

log = logging.getLogger(__name__)


class BatchStages:
    """Aggregate and sink loops (see the module docstring).

    Parameters
    ----------
    flow : Flow
        Queues and events shared with the other stages.
    aggregator, closer, delivery
        The open batch, its close with retries, the delivery to the sinks.
    source : FrameSource
        Acknowledges the frames of a delivered batch.
    health : PipelineHealth
        Counts frames and batches.
    options : PipelineOptions
        ``max_open_factor``, ``max_batches``.
    on_failed, on_error : callable
        One item failed (``(stage, where, exc)``); record the last error (``(where, text)``).
    request_stop : callable
        ``request_stop(reason)``: ``max_batches`` reached.
    stop_reason : callable
        Why the pipeline stops (the open batch's close reason at the end).
    abandoned : list of str
        Work given up at a stop (appended to).
    on_report : callable, optional
        Called with every report handed to the sinks.
    """

    def __init__(self, flow: Flow, *, aggregator: BatchAggregator, closer: Closer,
                 delivery: Delivery, source: FrameSource, health: PipelineHealth,
                 options: PipelineOptions,
                 on_failed: Callable[[Stage, str, BaseException], None],
                 on_error: Callable[[str, str], None],
                 request_stop: Callable[[str], None], stop_reason: Callable[[], str | None],
                 abandoned: list[str],
                 on_report: Callable[[BatchReport], None] | None = None) -> None:
        self.flow = flow
        self.agg = aggregator
        self.closer = closer
        self.delivery = delivery
        self.source = source
        self.health = health
        self.opt = options
        self._failed = on_failed
        self._error = on_error
        self._request_stop = request_stop
        self._stop_reason = stop_reason
        self.abandoned = abandoned
        self._on_report = on_report
        self.discard_open = False
        self._closing_disabled = False
        self._want_close: str | None = None
        self.reports: list[BatchReport] = []  # published this run (light; for callers/tests)

    def aggregate(self, st: Stage) -> None:
        limit = self.agg.config.frames * max(1, self.opt.max_open_factor)
        f = self.flow
        while not f.deadline.is_set():
            it = self._next_for_batch(st, limit)
            if it is None and f.abort.is_set():
                break
            if f.close_now.is_set():
                f.close_now.clear()
                self._want_close = self._want_close or "command"
            if it is END:
                break
            if it is not None:
                self._add(it, st)
            if not self._closing_disabled:
                reason = self._want_close or self.agg.due()
                if reason:
                    self._close(reason, st)
        self._final_close(st)
        st.done = True
        put(f.sink, END, st, f.abort)

    def _next_for_batch(self, st: Stage, limit: int) -> Any:
        """The next item for the open batch, or None (nothing came, or back-pressure:
        the open batch is full while its close fails; see the module docstring)."""
        if self.closer.failing and self.agg.n_frames >= limit:
            st.set("retrying")
            self.flow.deadline.wait(min(0.2, self.closer.wait_s()))
            return None
        return get(self.flow.agg, st)

    def _add(self, it: Item, st: Stage) -> None:
        """Count one frame and add it to the open batch (an error: logged, go on)."""
        try:
            self._count(it)
        except Exception as exc:
            self._failed(st, f"aggregate {it.frame.name}", exc)
        st.items += 1
        st.moved()

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
        if self.discard_open or self.agg.config.on_shutdown == "discard":
            dropped = self.agg.discard()
            if dropped:
                log.info("pipeline: open batch with %d frame(s) discarded (not acknowledged; "
                         "a folder source re-reads them next start)", len(dropped))
            return
        reason = self._want_close or ("shutdown" if self._stop_reason() in (
            "SIGTERM", "SIGINT", "signal") else "end")
        while not self._close(reason, st):
            if self.flow.deadline.is_set():
                if self._close(reason, st, force=True):  # one last try
                    return
                n = self.agg.discard()
                self.abandoned.append(f"open batch of {len(n)} frame(s) not closed")
                log.error("pipeline: the open batch of %d frame(s) could not be closed "
                          "before the deadline; its frames stay unacknowledged", len(n))
                return
            st.set("retrying")
            self.flow.deadline.wait(max(0.05, self.closer.wait_s()))

    def _count(self, it: Item) -> None:
        timing = dict(it.timing_ms)
        timing["latency_ms"] = (time.monotonic() - it.t_in) * 1000.0
        if it.reject is not None or it.contribution is None:
            reason = it.reject or "no_result"
            self.health.frame(reason)
            self.agg.add_rejection(it.frame, reason, domain_score=it.domain_score)
            return
        self.health.frame(None)
        self.agg.add_result(it.frame, it.contribution, timing_ms=timing)

    def _emit(self, report: BatchReport | None, st: Stage) -> None:
        if report is None:
            return
        self.health.batches_closed += 1
        if not put(self.flow.sink, report, st, self.flow.abort):
            self.abandoned.append(f"batch {report.batch_id} not handed to the sinks")
            log.error("pipeline: batch %d closed but not handed to the sinks before the "
                      "deadline; its frames stay unacknowledged", report.batch_id)
        if self.opt.max_batches and self.health.batches_closed >= self.opt.max_batches:
            self._closing_disabled = True
            self.discard_open = True
            self._request_stop("max-batches")

    def sink(self, st: Stage) -> None:
        f = self.flow
        while True:
            rep = get(f.sink, st)
            if rep is None:
                if f.abort.is_set() and f.sink.empty():
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
        delivered = self.delivery.deliver(rep, st, self.flow.deadline)
        if delivered:
            try:
                self.source.ack(rep.frames)
            except Exception as exc:
                self._failed(st, f"source ack of batch {rep.batch_id}", exc)
        else:
            self.abandoned.append(f"batch {rep.batch_id} not delivered")
            log.error("pipeline: batch %d did not reach every required sink before the "
                      "deadline; its frames stay unacknowledged", rep.batch_id)
        rep.frames = []
        self.health.batch_done(rep.summary(), delivered=delivered)
        self.reports.append(rep)
        if self._on_report is not None:
            self._on_report(rep)
