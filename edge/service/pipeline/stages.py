"""Pipeline plumbing: work items, the processor interface, bounded queues and stage threads.

Stages are threads joined by bounded :class:`queue.Queue` objects. A full queue blocks
the stage that feeds it (back-pressure: memory stays bounded, the capture simply waits).
Health means progress: every stage records what it is doing since when
(:class:`Stage`); a stage that works on one item, or waits for room in a full queue,
for longer than ``stall_s`` is stuck, and one whose thread died is dead. Looping without
moving an item is not progress.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge.psd import FrameContribution
from edge.sources.base import Frame

if TYPE_CHECKING:
    from edge.vision.result import FrameResult

log = logging.getLogger(__name__)

END = object()
"""Sentinel that flows down the queues after the last frame."""


class FrameProcessor(Protocol):
    """The analysis the pipeline runs per frame (see :mod:`edge.service.pipeline.analysis`)."""

    def quality(self, image: np.ndarray) -> str | None:
        """Reason the frame is rejected by the quality gate, or None when it is usable."""
        ...

    def segment(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Class maps (H, W) of a micro-batch of same-sized frames."""
        ...

    def measure(self, frame: Frame, class_map: np.ndarray
                ) -> tuple[FrameResult, FrameContribution | None]:
        """Post-processing of one segmented frame: its result and what it adds to the
        batch's distribution (None when the frame is rejected, e.g. ``crowded``)."""
        ...


@dataclass
class Item:
    """A frame on its way through the stages."""

    frame: Frame
    class_map: np.ndarray | None = None
    reject: str | None = None
    contribution: FrameContribution | None = None
    domain_score: float | None = None
    t_in: float = field(default_factory=time.monotonic)
    timing_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class PipelineOptions:
    """Run-time knobs of the pipeline (from ``[pipeline]``, ``[health]`` and the CLI)."""

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


@dataclass
class Flow:
    """The queues between the stages and the events that stop them, shared by every
    stage thread (see :mod:`edge.service.pipeline.runtime` for when each event is set)."""

    infer: queue.Queue
    post: queue.Queue
    agg: queue.Queue
    sink: queue.Queue
    stop_capture: threading.Event = field(default_factory=threading.Event)
    deadline: threading.Event = field(default_factory=threading.Event)
    abort: threading.Event = field(default_factory=threading.Event)
    close_now: threading.Event = field(default_factory=threading.Event)
    capture_abandoned: bool = False

    @classmethod
    def sized(cls, queue_size: int) -> Flow:
        qs = max(1, queue_size)
        return cls(queue.Queue(qs), queue.Queue(qs), queue.Queue(qs * 2), queue.Queue(64))

    def depths(self) -> dict[str, int]:
        """Items waiting in each queue, by the stage it feeds."""
        return {"inference": self.infer.qsize(), "post": self.post.qsize(),
                "aggregate": self.agg.qsize(), "sinks": self.sink.qsize()}


class Stage:
    """Book-keeping of one stage thread: what it is doing since when, items, errors.

    ``state`` is one of ``idle`` (waiting for input), ``source`` (inside the source's
    frame generator, which yields at least a heartbeat every poll), ``working`` (on one
    item), ``blocked`` (waiting for room in a full output queue) or ``retrying``
    (waiting out a back-off before it tries a failed close or sink again). ``since`` is
    when it entered that state; ``progress`` when it last moved an item on.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "idle"
        self.since = time.monotonic()
        self.progress = self.since
        self.items = 0
        self.errors = 0
        self.last_error: str | None = None
        self.died: str | None = None
        self.busy_s = 0.0
        self.thread: threading.Thread | None = None
        self.done = False

    def set(self, state: str) -> None:
        """Enter ``state`` (restarts its clock even when it is the same state)."""
        self.state = state
        self.since = time.monotonic()

    def moved(self) -> None:
        """An item left this stage: that is progress."""
        self.progress = time.monotonic()

    def failed(self, where: str, exc: BaseException) -> str:
        """Count an error on one item; returns the one-line ``where: what`` text."""
        self.errors += 1
        self.last_error = f"{where}: {one_line(exc)}"
        return self.last_error

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def problem(self, now: float, stall_s: float, *, since: float | None = None
                ) -> str | None:
        """Why this stage is dead or stuck (None: it is healthy or finished).

        Waiting for input and waiting out a back-off are healthy; working on one item,
        or waiting inside the source, past ``stall_s`` is a stall; blocking on a full
        output queue past ``stall_s`` is stuck (the stage after it moves nothing).
        ``since`` replaces the time the stage entered its state (a later restart of its
        clock, e.g. the end of a backend load).
        """
        if self.done:
            return None
        if self.died is not None:
            return f"stage {self.name} died: {self.died}"
        if self.thread is not None and not self.thread.is_alive():
            return f"stage {self.name} ended unexpectedly"
        dt = now - (self.since if since is None else since)
        if dt <= stall_s:
            return None
        if self.state == "blocked":
            return f"stage {self.name} stuck: blocked on a full queue for {dt:.1f} s"
        if self.state in ("working", "source"):
            what = "on one item" if self.state == "working" else "inside the source"
            return f"stage {self.name} stalled: no progress {what} for {dt:.1f} s"
        return None

    def snapshot(self, now: float) -> dict[str, Any]:
        """Fields of :class:`edge.service.snapshot.StageSnapshot`."""
        return {"alive": self.alive(), "done": self.done, "state": self.state,
                "state_s": round(now - self.since, 3), "items": self.items,
                "errors": self.errors, "last_error": self.last_error, "died": self.died,
                "busy_s": round(self.busy_s, 3),
                "since_progress_s": round(now - self.progress, 3)}


def put(q: queue.Queue, item: Any, stage: Stage, abort: threading.Event) -> bool:
    """Blocking put; False when ``abort`` was set first. Counts as progress when it got
    in; the stage is ``blocked`` while the queue stays full."""
    try:
        q.put_nowait(item)
    except queue.Full:
        stage.set("blocked")
        while True:
            if abort.is_set():
                return False
            try:
                q.put(item, timeout=0.2)
                break
            except queue.Full:
                continue
    stage.moved()
    stage.set("working")
    return True


def get(q: queue.Queue, stage: Stage, timeout: float = 0.2) -> Any | None:
    """Get with timeout (None when nothing came); the stage is ``idle`` while it waits
    and ``working`` once it has an item."""
    if stage.state != "idle":
        stage.set("idle")
    try:
        item = q.get(timeout=timeout)
    except queue.Empty:
        return None
    stage.set("working")
    return item


def guarded(stage: Stage, fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` as a thread target that records an exception which ends the thread
    (``stage.died``; the supervisor then reports the service unhealthy)."""

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # any death must be seen, not only Exception
            stage.died = one_line(exc)
            log.critical("pipeline: stage %s died: %s", stage.name, stage.died,
                         exc_info=True)

    return run


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, for health snapshots and rejection reasons."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300]
