"""Pipeline plumbing: work items, the processor interface, bounded queues and stage threads.

Stages are threads joined by bounded :class:`queue.Queue` objects. A full queue blocks
the stage that feeds it (back-pressure: memory stays bounded, the capture simply waits).
Every stage *beats* (records ``time.monotonic()``) whenever it is not inside a work
call, idle or not, so a stage that hangs inside inference or post-processing stops
beating and the runtime stops petting the systemd watchdog.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge.sources.base import Frame

log = logging.getLogger(__name__)

END = object()
"""Sentinel that flows down the queues after the last frame."""


@dataclass
class Measured:
    """What post-processing contributes to a batch from one frame (``reject``: a
    post-segmentation rejection reason such as ``crowded``; the frame is then counted
    as rejected and its crystals are not used)."""

    diameters_um: np.ndarray
    reject: str | None = None
    weights: np.ndarray | None = None
    crystals_rejected_by_reason: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class FrameProcessor(Protocol):
    """The analysis the pipeline runs per frame (see :mod:`edge.pipeline.analysis`)."""

    def quality(self, image: np.ndarray) -> str | None:
        """Reason the frame is rejected by the quality gate, or None when it is usable."""
        ...

    def segment(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Class maps (H, W) of a micro-batch of same-sized frames."""
        ...

    def measure(self, frame: Frame, class_map: np.ndarray) -> Measured:
        """Crystals of one segmented frame."""
        ...


@dataclass
class Item:
    """A frame on its way through the stages."""

    frame: Frame
    class_map: np.ndarray | None = None
    reject: str | None = None
    measured: Measured | None = None
    t_in: float = field(default_factory=time.monotonic)
    timing_ms: dict[str, float] = field(default_factory=dict)


class Stage:
    """Book-keeping of one stage thread: beats, item count, errors."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.beat = time.monotonic()
        self.items = 0
        self.errors = 0
        self.busy_s = 0.0
        self.thread: threading.Thread | None = None
        self.done = False

    def tick(self) -> None:
        self.beat = time.monotonic()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def snapshot(self, now: float) -> dict[str, Any]:
        return {"alive": self.alive(), "done": self.done, "items": self.items,
                "errors": self.errors, "busy_s": round(self.busy_s, 3),
                "since_beat_s": round(now - self.beat, 3)}


def put(q: queue.Queue, item: Any, stage: Stage, abort: threading.Event) -> bool:
    """Blocking put that keeps beating; False when ``abort`` was set first."""
    while True:
        stage.tick()
        if abort.is_set():
            return False
        try:
            q.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue


def get(q: queue.Queue, stage: Stage, timeout: float = 0.2) -> Any | None:
    """Get with timeout (None when nothing came), beating before and after."""
    stage.tick()
    try:
        item = q.get(timeout=timeout)
    except queue.Empty:
        item = None
    stage.tick()
    return item


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, for health snapshots and rejection reasons."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300]
