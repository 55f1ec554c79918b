"""The frame stages of the pipeline: capture with the quality gate, inference in
micro-batches, post-processing.

Each loop is guarded per item: an error on one frame is logged in one line, counted,
recorded as the last error, and the frame goes on as a rejection with a reason
(``quality_error``, ``inference_error``, ``postprocess_error``); a failing source is
restarted after 2 s. A frame the quality gate or the measurement rejects is logged once
at INFO with its name, reason and detail (an unreadable frame is logged by its source).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.service.pipeline.stages import (
    END,
    Flow,
    FrameProcessor,
    Item,
    PipelineOptions,
    Stage,
    get,
    put,
)
from edge.sources.base import FrameSource

log = logging.getLogger(__name__)


def log_rejected(name: str, reason: str, detail: str = "") -> None:
    """One INFO line for a rejected frame: ``frame rejected: NAME: REASON (DETAIL)``."""
    log.info("frame rejected: %s: %s%s", name, reason, f" ({detail})" if detail else "")


class FrameStages:
    """Capture, inference and post-processing loops (see the module docstring).

    Parameters
    ----------
    flow : Flow
        Queues and events shared with the other stages.
    source, processor
        Where frames come from; the per-frame analysis.
    options : PipelineOptions
        ``infer_batch`` and ``max_frames``.
    on_failed : callable
        ``on_failed(stage, where, exc)``: one item failed (logged, counted).
    request_stop : callable
        ``request_stop(reason)``: ``max_frames`` reached.
    """

    def __init__(self, flow: Flow, *, source: FrameSource, processor: FrameProcessor,
                 options: PipelineOptions,
                 on_failed: Callable[[Stage, str, BaseException], None],
                 request_stop: Callable[[str], None]) -> None:
        self.flow = flow
        self.source = source
        self.processor = processor
        self.opt = options
        self._failed = on_failed
        self._request_stop = request_stop
        self._lock = threading.Lock()
        self._posts = 0
        self._posts_ended = 0
        self.tap: Callable[[Item, Any], None] | None = None
        """Called with each post-processed item (frame still attached) and its result
        (None when not measured): the operators' page keeps references (edge.web.tap)."""

    def targets(self, stages: dict[str, Stage], post_stages: list[Stage]
                ) -> list[tuple[Stage, Callable[[], None]]]:
        """(stage, thread target) for capture, inference and every post worker."""
        self._posts = len(post_stages)
        out: list[tuple[Stage, Callable[[], None]]] = [
            (stages["capture"], lambda: self.capture(stages["capture"])),
            (stages["inference"], lambda: self.inference(stages["inference"])),
        ]
        out += [(ps, lambda ps=ps: self.post(ps)) for ps in post_stages]
        return out

    def capture(self, st: Stage) -> None:
        f = self.flow
        try:
            while not f.stop_capture.is_set():
                try:
                    if not self._frames(st):
                        return
                    break  # source exhausted (or stop): no restart
                except Exception as exc:  # a source bug or an OS error: retry, keep running
                    self._failed(st, "capture (restarting the source in 2 s)", exc)
                    if f.stop_capture.wait(2.0):
                        break
        finally:
            st.done = True
            if not f.capture_abandoned:
                put(f.infer, END, st, f.abort)

    def _frames(self, st: Stage) -> bool:
        """Take the source's frames until it ends or a stop (False: give up at once)."""
        st.set("source")
        for frame in self.source.frames(self.flow.stop_capture):
            st.set("source")
            if frame is None:  # idle heartbeat
                continue
            if not self._take(frame, st):
                return False
            if self.opt.max_frames and st.items >= self.opt.max_frames:
                self._request_stop("max-frames")
                break
        return True

    def _take(self, frame: Any, st: Stage) -> bool:
        """Quality gate of one frame, then into the inference queue (False: give up)."""
        st.set("working")
        # The quality gate runs here, beside decoding, so that the inference thread only
        # prepares tensors and runs the network.
        item = self._checked(Item(frame), st)
        f = self.flow
        if f.capture_abandoned or not put(f.infer, item, st, f.abort):
            return False
        st.items += 1
        return True

    def inference(self, st: Stage) -> None:
        f = self.flow
        ended = False
        while not ended:
            first = get(f.infer, st)
            if first is None:
                if f.abort.is_set():
                    return
                continue
            items, ended = self._micro_batch(first)
            for it in self._infer_items(items, st):
                if not put(f.post, it, st, f.abort):
                    return
        st.done = True
        for _ in range(self._posts):
            put(f.post, END, st, f.abort)

    def _micro_batch(self, first: Any) -> tuple[list[Item], bool]:
        """Up to ``infer_batch`` items starting with ``first`` without waiting; (items,
        whether the end of input came)."""
        if first is END:
            return [], True
        items: list[Item] = [first]
        while len(items) < self.opt.infer_batch:
            try:
                nxt = self.flow.infer.get_nowait()
            except queue.Empty:
                break
            if nxt is END:
                return items, True
            items.append(nxt)
        return items, False

    def _checked(self, it: Item, st: Stage) -> Item:
        """Quality gate of one captured frame: sets ``it.reject`` for a rejected frame."""
        fr = it.frame
        if fr.error or fr.image is None:
            it.reject = "unreadable"  # the detail is in the log and the source health
            return it
        t0 = time.perf_counter()
        try:
            reason, detail = self._quality(fr.image)
            if reason:
                log_rejected(fr.name, str(reason), detail)
        except Exception as exc:
            self._failed(st, f"quality {fr.name}", exc)
            reason = "quality_error"
        it.timing_ms["quality_ms"] = (time.perf_counter() - t0) * 1000.0
        if reason:
            it.reject = str(reason)
        return it

    def _quality(self, image: Any) -> tuple[str | None, str]:
        """``(reason, detail)`` of the quality gate; the detail is empty for a processor
        that gives only the reason."""
        with_detail = getattr(self.processor, "quality_detail", None)
        if with_detail is not None:
            return with_detail(image)
        return self.processor.quality(image), ""

    def _infer_items(self, items: list[Item], st: Stage) -> list[Item]:
        groups: dict[tuple[int, ...], list[Item]] = {}
        for it in items:
            if it.reject is None:
                shape = getattr(it.frame.image, "shape", None)
                groups.setdefault(tuple(shape or ()), []).append(it)
        for group in groups.values():
            t0 = time.perf_counter()
            try:
                maps = self.processor.segment([it.frame.image for it in group])  # type: ignore[misc]
                if len(maps) != len(group):
                    raise RuntimeError(f"segment() returned {len(maps)} maps for "
                                       f"{len(group)} frames")
            except Exception as exc:
                self._failed(st, f"inference of {len(group)} frame(s)", exc)
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

    def post(self, st: Stage) -> None:
        f = self.flow
        while True:
            it = get(f.post, st)
            if it is None:
                if f.abort.is_set():
                    return
                continue
            if it is END:
                break
            self._measure(it, st)
            st.items += 1
            if not put(f.agg, it, st, f.abort):
                return
        st.done = True
        with self._lock:
            self._posts_ended += 1
            last = self._posts_ended == self._posts
        if last:
            put(f.agg, END, st, f.abort)

    def _measure(self, it: Item, st: Stage) -> None:
        """Post-processing of one segmented item (a rejection reason when it fails)."""
        result = None
        if it.reject is None and it.class_map is not None:
            t0 = time.perf_counter()
            try:
                result, it.contribution = self.processor.measure(it.frame, it.class_map)
                # a frame rejected as out of domain still counts in the batch's confidence
                it.domain_score = result.domain_score
                if it.contribution is None:
                    it.reject = result.reject_reason or "rejected"
                    log_rejected(it.frame.name, it.reject, result.reject_detail)
            except Exception as exc:
                self._failed(st, f"post-processing {it.frame.name}", exc)
                it.reject = "postprocess_error"
            dt = time.perf_counter() - t0
            st.busy_s += dt
            it.timing_ms["post_ms"] = dt * 1000.0
        if self.tap is not None:
            self.tap(it, result)
        it.class_map = None
        it.frame.image = None  # free the frame's memory before it waits in a queue
