"""The streaming pipeline: capture -> inference -> post-processing -> aggregation -> sinks.

One thread per stage (``post_workers`` threads for post-processing), joined by bounded
queues (see :mod:`edge.pipeline.stages`). The main thread (:meth:`Pipeline.run`) writes
the health snapshot (``status.json`` + every sink's ``publish_health``) every
``health_interval_s`` and pets the systemd watchdog while every stage makes progress.

Stopping (:meth:`Pipeline.request_stop`, e.g. from SIGTERM): capture stops, the frames
already taken drain through the stages, the open batch is closed (or discarded, per
``[batch] on_shutdown``) and handed to the sinks, and only then do the threads end. A
closed batch is never dropped: the sink stage publishes every report it was given.
Frames of a batch are acknowledged to the source only after the batch reached a sink.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.batch import BatchAggregator, BatchReport
from edge.pipeline.health import HealthMixin
from edge.pipeline.stages import END, FrameProcessor, Item, Stage, get, one_line, put
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


class Pipeline(HealthMixin):
    """Run a source through the processor into batches and sinks (module docstring)."""

    def __init__(self, *, source: FrameSource, processor: FrameProcessor,
                 aggregator: BatchAggregator, sinks: Sequence[Sink],
                 options: PipelineOptions | None = None, state_dir: str | Path | None = None,
                 device_id: str = "",
                 info: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
                 watchdog: Callable[[], Any] | None = None,
                 watchdog_interval_s: float | None = None,
                 on_report: Callable[[BatchReport], None] | None = None,
                 on_health: Callable[[dict[str, Any]], None] | None = None) -> None:
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

        qs = max(1, self.opt.queue_size)
        self.q_infer: queue.Queue = queue.Queue(qs)
        self.q_post: queue.Queue = queue.Queue(qs)
        self.q_agg: queue.Queue = queue.Queue(qs * 2)
        self.q_sink: queue.Queue = queue.Queue(64)
        self.stages = {n: Stage(n) for n in ("capture", "inference", "aggregate", "sinks")}
        self.post_stages = [Stage(f"post{i}") for i in range(max(1, self.opt.post_workers))]

        self._stop_capture = threading.Event()   # capture: take no more frames
        self._abort = threading.Event()          # everything: give up blocking puts
        self._close_now = threading.Event()      # close the open batch (command)
        self._lock = threading.Lock()
        self._posts_ended = 0
        self._capture_abandoned = False
        self._closing_disabled = False
        self._discard_open = False
        self.stop_reason: str | None = None
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

    # ---------------------------------------------------------------- stages
    def _capture(self) -> None:
        st = self.stages["capture"]
        try:
            while not self._stop_capture.is_set():
                try:
                    for frame in self.source.frames(self._stop_capture):
                        st.tick()
                        if frame is None:  # idle heartbeat
                            continue
                        # The quality gate runs here, beside decoding, so that the
                        # inference thread only prepares tensors and runs the network.
                        item = self._checked(Item(frame), st)
                        if self._capture_abandoned or not put(
                                self.q_infer, item, st, self._abort):
                            return
                        st.items += 1
                        if self.opt.max_frames and st.items >= self.opt.max_frames:
                            self.request_stop("max-frames")
                            break
                    break  # source exhausted (or stop): no restart
                except Exception as exc:  # a source bug or an OS error: retry, keep running
                    st.errors += 1
                    self._error("capture", exc)
                    log.exception("pipeline: capture failed; restarting the source in 2 s")
                    if self._stop_capture.wait(2.0):
                        break
        finally:
            st.done = True
            if not self._capture_abandoned:
                put(self.q_infer, END, st, self._abort)

    def _inference(self) -> None:
        st = self.stages["inference"]
        ended = False
        while not ended:
            first = get(self.q_infer, st)
            if first is None:
                if self._abort.is_set():
                    return
                continue
            items: list[Item] = []
            if first is END:
                ended = True
            else:
                items.append(first)
                while len(items) < self.opt.infer_batch:
                    try:
                        nxt = self.q_infer.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is END:
                        ended = True
                        break
                    items.append(nxt)
            for it in self._infer_items(items, st):
                if not put(self.q_post, it, st, self._abort):
                    return
        st.done = True
        for _ in self.post_stages:
            put(self.q_post, END, st, self._abort)

    def _checked(self, it: Item, st: Stage) -> Item:
        """Quality gate of one captured frame: sets ``it.reject`` for a rejected frame."""
        fr = it.frame
        if fr.error or fr.image is None:
            it.reject = "unreadable"  # the detail is in the log and the source health
            return it
        t0 = time.perf_counter()
        try:
            reason = self.processor.quality(fr.image)
        except Exception as exc:
            st.errors += 1
            self._error(f"quality {fr.name}", exc)
            reason = "quality_error"
        it.timing_ms["quality_ms"] = (time.perf_counter() - t0) * 1000.0
        if reason:
            it.reject = str(reason)
        return it

    def _infer_items(self, items: list[Item], st: Stage) -> list[Item]:
        ready = [it for it in items if it.reject is None]
        groups: dict[tuple[int, ...], list[Item]] = {}
        for it in ready:
            groups.setdefault(tuple(it.frame.image.shape), []).append(it)  # type: ignore[union-attr]
        for group in groups.values():
            t0 = time.perf_counter()
            try:
                maps = self.processor.segment([it.frame.image for it in group])  # type: ignore[misc]
                if len(maps) != len(group):
                    raise RuntimeError(f"segment() returned {len(maps)} maps for "
                                       f"{len(group)} frames")
            except Exception as exc:
                st.errors += 1
                self._error("inference", exc)
                log.exception("pipeline: inference failed for %d frame(s)", len(group))
                for it in group:
                    it.reject = "inference_error"
                continue
            dt = (time.perf_counter() - t0) * 1000.0
            st.busy_s += dt / 1000.0
            for it, m in zip(group, maps, strict=True):
                it.class_map = m
                it.timing_ms["infer_ms"] = dt / len(group)
        st.items += len(items)
        return items

    def _post(self, st: Stage) -> None:
        while True:
            it = get(self.q_post, st)
            if it is None:
                if self._abort.is_set():
                    return
                continue
            if it is END:
                break
            if it.reject is None and it.class_map is not None:
                t0 = time.perf_counter()
                try:
                    it.measured = self.processor.measure(it.frame, it.class_map)
                    if it.measured.reject:
                        it.reject = it.measured.reject
                except Exception as exc:
                    st.errors += 1
                    self._error(f"post-processing {it.frame.name}", exc)
                    log.exception("pipeline: post-processing failed for %s", it.frame.name)
                    it.reject = "postprocess_error"
                dt = time.perf_counter() - t0
                st.busy_s += dt
                it.timing_ms["post_ms"] = dt * 1000.0
            it.class_map = None
            it.frame.image = None  # free the frame's memory before it waits in a queue
            st.items += 1
            if not put(self.q_agg, it, st, self._abort):
                return
        st.done = True
        with self._lock:
            self._posts_ended += 1
            last = self._posts_ended == len(self.post_stages)
        if last:
            put(self.q_agg, END, st, self._abort)

    def _aggregate(self) -> None:
        st = self.stages["aggregate"]
        while True:
            it = get(self.q_agg, st)
            if it is None and self._abort.is_set():
                break
            if self._close_now.is_set():
                self._close_now.clear()
                if not self._closing_disabled:
                    self._emit(self.agg.close("command"), st)
            if it is END:
                break
            if it is not None:
                self._count(it)
                st.items += 1
            if not self._closing_disabled:
                reason = self.agg.due()
                if reason:
                    self._emit(self.agg.close(reason), st)
        if self._discard_open or self.agg.config.on_shutdown == "discard":
            dropped = self.agg.discard()
            if dropped:
                log.info("pipeline: open batch with %d frame(s) discarded (not acknowledged; "
                         "a folder source re-reads them next start)", len(dropped))
        else:
            self._emit(self.agg.close("shutdown" if self.stop_reason in (
                "SIGTERM", "SIGINT", "signal") else "end"), st)
        st.done = True
        put(self.q_sink, END, st, self._abort)

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
        put(self.q_sink, report, st, threading.Event())  # a closed batch is never dropped
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
                    break  # abort: every closed batch handed over was published
                continue
            if rep is END:
                break
            ok = 0
            for sink in self.sinks:
                try:
                    sink.publish(rep)
                    ok += 1
                except Exception as exc:
                    st.errors += 1
                    self._error(f"sink {getattr(sink, 'name', '?')}", exc)
                    log.exception("pipeline: sink %s failed on batch %d",
                                  getattr(sink, "name", "?"), rep.batch_id)
            if ok or not self.sinks:
                self.batches_published += 1
                try:
                    self.source.ack(rep.frames)
                except Exception as exc:
                    self._error("source ack", exc)
                    log.exception("pipeline: acknowledging batch %d failed", rep.batch_id)
            else:
                self.batches_failed += 1
                log.error("pipeline: batch %d reached no sink; its frames stay "
                          "unacknowledged", rep.batch_id)
            rep.frames = []
            self.last_report = rep.summary()
            self.reports.append(rep)
            if self._on_report is not None:
                self._on_report(rep)
            st.items += 1
        st.done = True

    # ---------------------------------------------------------------- running
    def start(self) -> None:
        """Start the stage threads.

        They are daemon threads: :meth:`run` waits for the sink stage, which ends only
        after the last closed batch was published (or on :meth:`abort`), so nothing is
        cut short by the interpreter exiting; a stage hung in a driver call cannot keep
        the process alive after an abort.
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
            stage.thread = threading.Thread(target=fn, name=f"pipeline-{stage.name}",
                                            daemon=True)
            stage.thread.start()
        self.state = "running"

    def run(self) -> int:
        """Start, supervise until the sink stage ends, return 0 (1 if no batch got out
        while at least one was closed)."""
        if self.state == "starting":
            self.start()
        sink_thread = self.stages["sinks"].thread
        assert sink_thread is not None
        next_health = time.monotonic()
        next_pet = time.monotonic()
        stop_seen: float | None = None
        tick = 0.25
        if self._watchdog is not None and self._watchdog_interval:
            tick = min(tick, self._watchdog_interval / 4.0)
        while sink_thread.is_alive():
            sink_thread.join(tick)
            now = time.monotonic()
            if self._watchdog is not None and self._watchdog_interval and now >= next_pet:
                if self.healthy():
                    self._watchdog()
                    next_pet = now + self._watchdog_interval / 2.0
            if self._stop_capture.is_set():
                stop_seen = stop_seen or now
                cap = self.stages["capture"]
                if (cap.alive() and not self._capture_abandoned
                        and now - stop_seen > self.opt.capture_grace_s):
                    log.warning("pipeline: capture did not stop within %.0f s; abandoning it",
                                self.opt.capture_grace_s)
                    self._capture_abandoned = True
                    put(self.q_infer, END, cap, self._abort)
            if now >= next_health:
                self.publish_health()
                next_health = now + self.opt.health_interval_s
        grace = 0.2 if self._abort.is_set() else 5.0
        for s in [*self.stages.values(), *self.post_stages]:
            if s.thread is not None and s.name != "capture":
                s.thread.join(grace)
        self.state = "stopped"
        self.publish_health()
        return 1 if self.batches_closed and not self.batches_published else 0
