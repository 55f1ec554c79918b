"""The frame stages of :class:`edge.pipeline.runtime.Pipeline`: capture with the quality
gate, inference in micro-batches, post-processing.

Each loop is guarded per item: an error on one frame is logged in one line, counted,
recorded as the last error, and the frame goes on as a rejection with a reason
(``quality_error``, ``inference_error``, ``postprocess_error``); a failing source is
restarted after 2 s.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

from edge.pipeline.stages import END, Item, Stage, get, put


class FrameStagesMixin:
    """Capture, inference and post-processing loops (see the module docstring)."""

    # provided by Pipeline
    opt: Any
    source: Any
    processor: Any
    stages: dict[str, Stage]
    post_stages: list[Stage]
    q_infer: queue.Queue
    q_post: queue.Queue
    q_agg: queue.Queue
    _stop_capture: Any
    _abort: Any
    _lock: Any
    _posts_ended: int
    _capture_abandoned: bool

    _failed: Callable[[Stage, str, BaseException], None]
    request_stop: Callable[..., None]

    def _capture(self) -> None:
        st = self.stages["capture"]
        try:
            while not self._stop_capture.is_set():
                try:
                    st.set("source")
                    for frame in self.source.frames(self._stop_capture):
                        st.set("source")
                        if frame is None:  # idle heartbeat
                            continue
                        if not self._take(frame, st):
                            return
                        if self.opt.max_frames and st.items >= self.opt.max_frames:
                            self.request_stop("max-frames")
                            break
                    break  # source exhausted (or stop): no restart
                except Exception as exc:  # a source bug or an OS error: retry, keep running
                    self._failed(st, "capture (restarting the source in 2 s)", exc)
                    if self._stop_capture.wait(2.0):
                        break
        finally:
            st.done = True
            if not self._capture_abandoned:
                put(self.q_infer, END, st, self._abort)

    def _take(self, frame: Any, st: Stage) -> bool:
        """Quality gate of one frame, then into the inference queue (False: give up)."""
        st.set("working")
        # The quality gate runs here, beside decoding, so that the inference thread only
        # prepares tensors and runs the network.
        item = self._checked(Item(frame), st)
        if self._capture_abandoned or not put(self.q_infer, item, st, self._abort):
            return False
        st.items += 1
        return True

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
            self._failed(st, f"quality {fr.name}", exc)
            reason = "quality_error"
        it.timing_ms["quality_ms"] = (time.perf_counter() - t0) * 1000.0
        if reason:
            it.reject = str(reason)
        return it

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
                    self._failed(st, f"post-processing {it.frame.name}", exc)
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
