"""The page's view of the frames: references kept by the pipeline's post-processing
stage, images made only when a client asks.

:meth:`FrameTap.__call__` runs in the post-processing thread once per frame. It keeps a
reference to the frame's array and its :class:`~edge.vision.result.FrameResult` (no
copy: the pipeline lets go of the array right after, so the reference keeps one frame
alive) and, for a rejected frame, appends it to a short ring per reason. That is a few
attribute stores per frame; nothing is drawn, encoded or locked there.

The web thread draws and encodes: :meth:`FrameTap.latest_png` renders
:func:`edge.vision.overlay.render_overlay` and encodes PNG at most once per
``interval_s`` (a cached image in between), and :meth:`FrameTap.thumbnail_png` a small
image of one of the last rejected frames.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge.vision.overlay import render_overlay, to_bgr_u8
from edge.vision.result import FrameResult

__all__ = ["FrameTap", "Seen"]


@dataclass(frozen=True)
class Seen:
    """One frame the tap holds: its name, array, result (None before measuring), time."""

    name: str
    image: np.ndarray
    result: FrameResult | None
    reason: str | None
    t: float


class FrameTap:
    """Latest frame and last rejected frames (see the module docstring).

    Parameters
    ----------
    interval_s : float
        Least seconds between two encodes of the latest overlay.
    per_reason : int
        Rejected frames kept per reason.
    thumb_width : int
        Width of a rejected frame's thumbnail (pixels).
    """

    def __init__(self, *, interval_s: float = 1.0, per_reason: int = 4,
                 thumb_width: int = 240) -> None:
        self.interval_s = interval_s
        self.per_reason = per_reason
        self.thumb_width = thumb_width
        self.latest: Seen | None = None
        self.rejected: dict[str, deque[Seen]] = {}
        self._encode = threading.Lock()
        self._png: bytes | None = None
        self._png_of: Seen | None = None
        self._png_at = -float("inf")
        self.encodes = 0

    # ------------------------------------------------------------ pipeline side
    def __call__(self, item: Any, result: FrameResult | None) -> None:
        """Keep a reference to one post-processed item's frame (post thread)."""
        image = item.frame.image
        if image is None:
            return
        seen = Seen(item.frame.name, image, result, item.reject, time.time())
        if item.reject is None:
            self.latest = seen  # one reference store: atomic under the GIL
        elif self.per_reason:
            ring = self.rejected.get(item.reject)
            if ring is None:
                ring = self.rejected.setdefault(item.reject, deque(maxlen=self.per_reason))
            ring.append(seen)

    # ------------------------------------------------------------ web side
    def latest_png(self) -> bytes | None:
        """The latest frame with its overlay as PNG (None before the first frame)."""
        with self._encode:
            seen = self.latest
            now = time.monotonic()
            if seen is None:
                return None
            if seen is self._png_of or now - self._png_at < self.interval_s:
                return self._png
            self._png = _png(_draw(seen))
            self._png_of, self._png_at = seen, now
            self.encodes += 1
            return self._png

    def rejected_list(self) -> dict[str, list[dict[str, Any]]]:
        """Reason -> the kept rejected frames (name, time, index), newest first."""
        out: dict[str, list[dict[str, Any]]] = {}
        for reason, ring in list(self.rejected.items()):
            frames = list(ring)
            out[reason] = [{"name": s.name, "time": s.t, "index": i}
                           for i, s in reversed(list(enumerate(frames)))]
        return out

    def thumbnail_png(self, reason: str, index: int) -> bytes | None:
        """Thumbnail of the rejected frame ``index`` of ``reason`` (None: not kept)."""
        frames = list(self.rejected.get(reason, ()))
        if not 0 <= index < len(frames):
            return None
        img = _draw(frames[index])
        h, w = img.shape[:2]
        if w > self.thumb_width:
            size = (self.thumb_width, max(1, round(h * self.thumb_width / w)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        return _png(img)


def _draw(seen: Seen) -> np.ndarray:
    if seen.result is not None:
        return render_overlay(seen.image, seen.result)
    return to_bgr_u8(seen.image)


def _png(bgr: np.ndarray) -> bytes:
    # Level 1: a frame encodes in milliseconds; the page shows it once and drops it.
    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
