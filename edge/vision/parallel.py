"""Analysis of many frames on every core: decoding and post-processing beside inference.

:func:`analyze_ordered` runs a :class:`~edge.vision.analyzer.FrameAnalyzer` over a
sequence of inputs as a pipeline with bounded queues::

    decode + quality gate    segmentation, then the       crowding check +
    (thread pool, workers) -> ROI in frame order       -> measurement              -> results
                              (the caller's thread; the   (thread pool, workers)      in input
                              backend has its own threads)                            order

OpenCV and NumPy release the GIL in decoding, resizing, morphology and watershed, and ONNX
Runtime / TensorRT in inference, so the three stages overlap on separate cores. At most
``window`` inputs are decoded ahead of the segmentation and at most ``window`` frames wait
for or in post-processing; the memory held is a few ``window`` frames.

The results are those of :meth:`FrameAnalyzer.analyze_many` called chunk by chunk (the
serial path of ``crystal-edge analyze``): the same quality gate, the same segmentation
batches (the accepted frames of each chunk of ``chunk`` consecutive inputs, so batched
inference sees the same tensors), and the field of view (ROI) found in frame order,
because the analyzer reuses the previous frame's field when it has not moved. Only the
crowding check and the measurement, which depend on nothing but the frame, run out of
order. The analyzer's frame-size lock (the service's) is stateful and not supported here.

:class:`ProgressLine` logs ``analyze: 500/2000 frames, 12.3 frames/s, eta 2 min`` every
``every`` frames, for runs whose stderr is not a terminal (no progress bar there).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from edge.vision.analyzer import FrameAnalyzer
from edge.vision.quality import QualityResult
from edge.vision.result import FrameResult

T = TypeVar("T")
#: What a decoder returns: ``(name, image)``, or the result of an input that cannot be read.
Decoded = tuple[str, np.ndarray] | FrameResult


@dataclass
class _Gated:
    """One input after decoding and the quality gate."""

    name: str
    image: np.ndarray | None
    quality: QualityResult | None
    quality_ms: float
    result: FrameResult | None  # set when the input is not segmented


@dataclass
class Analysed(Generic[T]):
    """One input's outcome: the input, its decoded image (None: unreadable), its result."""

    entry: T
    image: np.ndarray | None
    result: FrameResult


def _gate(analyzer: FrameAnalyzer, decode: Callable[[T], Decoded], entry: T) -> _Gated:
    decoded = decode(entry)
    if isinstance(decoded, FrameResult):
        return _Gated(decoded.name, None, None, 0.0, decoded)
    name, image = decoded
    q, q_ms, rejected = analyzer.gate(name, image)
    return _Gated(name, image, q, q_ms, rejected)


def analyze_ordered(analyzer: FrameAnalyzer, entries: Sequence[T],
                    decode: Callable[[T], Decoded], *, workers: int, chunk: int,
                    window: int | None = None) -> Iterator[Analysed[T]]:
    """Every input's :class:`Analysed`, in input order (see the module docstring).

    Parameters
    ----------
    analyzer : FrameAnalyzer
        Without a frame-size lock; its backend runs in the calling thread only.
    entries : sequence
        Inputs; ``decode(entry)`` runs in the decode pool and gives ``(name, image)`` or a
        :class:`FrameResult` (an unreadable input).
    workers : int
        Threads of each pool (decoding, post-processing), >= 1.
    chunk : int
        Consecutive inputs segmented together (``[backend] max_batch``).
    window : int, optional
        Inputs decoded ahead and frames pending in post-processing, each at most;
        default ``2 * workers + chunk``.
    """
    if analyzer.size_lock.enabled:
        raise ValueError("analyze_ordered: the frame-size lock is not supported")
    if workers < 1 or chunk < 1:
        raise ValueError(f"analyze_ordered: workers and chunk must be >= 1, got "
                         f"{workers}, {chunk}")
    window = window or 2 * workers + chunk
    decode_pool = ThreadPoolExecutor(workers, thread_name_prefix="analyze-decode")
    post_pool = ThreadPoolExecutor(workers, thread_name_prefix="analyze-post")
    try:
        yield from _run(analyzer, entries, decode, pools=(decode_pool, post_pool), chunk=chunk,
                        window=window)
    finally:
        decode_pool.shutdown(wait=True, cancel_futures=True)
        post_pool.shutdown(wait=True, cancel_futures=True)


def _run(analyzer: FrameAnalyzer, entries: Sequence[T], decode: Callable[[T], Decoded], *,
         pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor], chunk: int,
         window: int) -> Iterator[Analysed[T]]:
    decode_pool, post_pool = pools
    todo = iter(entries)
    decoding: deque[tuple[T, Future[_Gated]]] = deque()
    done: deque[tuple[T, np.ndarray | None, Future[FrameResult] | FrameResult]] = deque()

    def refill() -> None:
        while len(decoding) < window:
            entry = next(todo, _END)
            if entry is _END:
                return
            decoding.append((entry, decode_pool.submit(_gate, analyzer, decode, entry)))

    refill()
    while decoding:
        group = [decoding.popleft() for _ in range(min(chunk, len(decoding)))]
        refill()
        gated = [(entry, fut.result()) for entry, fut in group]
        done.extend(_segment_group(analyzer, gated, post_pool))
        while done and (len(done) > window or _ready(done[0][2])):
            yield _resolve(done.popleft())
    while done:
        yield _resolve(done.popleft())


_END = object()


def _segment_group(analyzer: FrameAnalyzer, gated: list[tuple[T, _Gated]],
                   post_pool: ThreadPoolExecutor
                   ) -> list[tuple[T, np.ndarray | None, Future[FrameResult] | FrameResult]]:
    """Segment the accepted frames of one chunk, find their fields in order and hand the
    rest of their post-processing to the pool; rejected inputs pass through."""
    accepted = [g for _, g in gated if g.result is None]
    maps = analyzer.segment([g.image for g in accepted]) if accepted else []
    timings = dict(analyzer.last_timings)
    it = iter(maps)
    out: list[tuple[T, np.ndarray | None, Future[FrameResult] | FrameResult]] = []
    for entry, g in gated:
        if g.result is not None:
            out.append((entry, g.image, g.result))
            continue
        cm = next(it)
        roi = analyzer.field(g.image, cm)
        fut = post_pool.submit(analyzer.postprocess, g.name, g.image, cm, quality=g.quality,
                               timings={"quality_ms": g.quality_ms, **timings}, roi=roi)
        out.append((entry, g.image, fut))
    return out


def _ready(item: Future[FrameResult] | FrameResult) -> bool:
    return not isinstance(item, Future) or item.done()


def _resolve(item: tuple[T, np.ndarray | None, Future[FrameResult] | FrameResult]
             ) -> Analysed[T]:
    entry, image, res = item
    return Analysed(entry, image, res.result() if isinstance(res, Future) else res)


class ProgressLine:
    """``<label>: done/total frames, rate frames/s, eta ...`` logged every ``every`` frames
    (and at the end).

    Parameters
    ----------
    total : int
        Frames expected.
    every : int
        Frames between two lines (>= 1).
    log : logging.Logger
        Where the line goes (INFO).
    clock : callable
        Seconds (monotonic); tests pass their own.
    """

    def __init__(self, total: int, every: int, log: logging.Logger, *, label: str = "analyze",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.every, self.log, self.label = total, max(1, every), log, label
        self.clock = clock
        self.t0 = clock()
        self.done = 0

    def update(self, n: int = 1) -> None:
        before, self.done = self.done, self.done + n
        if self.done // self.every > before // self.every or (
                self.done >= self.total > before):
            self.log.info("%s", self.line())

    def line(self) -> str:
        """The progress line for the frames done so far."""
        dt = self.clock() - self.t0
        rate = self.done / dt if dt > 0 else 0.0
        left = max(0, self.total - self.done)
        eta = _duration(left / rate) if rate > 0 else "unknown"
        return (f"{self.label}: {self.done}/{self.total} frames, {rate:.1f} frames/s, "
                f"eta {eta}")


def _duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
