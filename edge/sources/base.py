"""The capture-source interface and the frame record it yields.

A source yields :class:`Frame` records from :meth:`FrameSource.frames` until the stop
event is set (or the source is exhausted). While it waits for input (an empty folder, a
camera being reconnected) it yields ``None`` at least every second or so: a heartbeat
that tells the pipeline the capture stage is idle, not hung (the systemd watchdog is
petted only while every stage beats). A frame it could not decode is still yielded,
with ``image=None`` and ``error`` set, so that the pipeline counts it as a rejection
with a reason instead of it vanishing. The pipeline calls :meth:`FrameSource.ack` with
the frames of a batch once that batch is closed and handed to the sinks; a source with
durable bookkeeping (the folder source) marks them done only then, so a crash never
loses a frame that was not yet counted into a delivered batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class Frame:
    """One captured frame (or one that failed to decode).

    Attributes
    ----------
    name : str
        Human-readable name: file name, ``cam:<seq>``, ``synthetic:<seq>``.
    seq : int
        Sequence number within this source run, from 0.
    image : numpy.ndarray or None
        The frame as stored, decoded by :mod:`edge.vision.decode` (files) or read from the
        camera: uint8 or uint16, grey ``(H, W)``, BGR ``(H, W, 3)`` or BGRA
        ``(H, W, 4)`` (:mod:`edge.vision.preprocess` handles each); None when ``error`` is set.
    t_capture : float
        Wall-clock time (UNIX seconds) the frame was captured: a camera frame's read
        time, a file's modification time.
    error : str or None
        Why the frame is unusable (``"unreadable: <detail>"``); counted as ``unreadable``.
    token : Any
        Opaque bookkeeping handle the source needs in :meth:`FrameSource.ack`.
    truth : dict
        Optional ground truth (synthetic source), carried through for tests and demos.
    """

    name: str
    seq: int
    image: np.ndarray | None
    t_capture: float
    error: str | None = None
    token: Any = None
    truth: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class FrameSource(Protocol):
    """A capture source (see the module docstring)."""

    #: registry name: ``"folder"``, ``"opencv"``, ``"synthetic"``
    name: str

    def open(self) -> None:
        """Prepare the source (databases, first connection). Raise UserError on bad config."""
        ...

    def frames(self, stop: threading.Event) -> Iterator[Frame | None]:
        """Yield frames (``None`` as an idle heartbeat) until ``stop`` is set or the
        source is exhausted."""
        ...

    def ack(self, frames: Iterable[Frame]) -> None:
        """The frames were counted into a batch that was handed to the sinks."""
        ...

    def health(self) -> dict[str, Any]:
        """Plain-JSON state for the health snapshot (reconnects, pending files, ...)."""
        ...

    def close(self) -> None:
        """Release devices and files. Idempotent."""
        ...


def wait(stop: threading.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; return True when ``stop`` was set meanwhile."""
    return stop.wait(max(0.0, seconds))


HEARTBEAT_S = 1.0


def idle(stop: threading.Event, seconds: float) -> Iterator[None]:
    """Wait ``seconds`` (until ``stop``), yielding ``None`` heartbeats every
    :data:`HEARTBEAT_S`; ``yield from idle(...)`` inside a source's ``frames``."""
    t_end = time.monotonic() + max(0.0, seconds)
    while not stop.is_set():
        left = t_end - time.monotonic()
        if left <= 0:
            return
        if stop.wait(min(left, HEARTBEAT_S)):
            return
        yield None
