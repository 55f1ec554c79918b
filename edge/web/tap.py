"""The page's view of the frames: references kept by the pipeline's post-processing
stage, images made only when a client asks.

:meth:`FrameTap.__call__` runs in the post-processing thread once per frame. It keeps a
reference to the frame's array and its :class:`~edge.vision.result.FrameResult` (no
copy: the pipeline lets go of the array right after, so the reference keeps one frame
alive) and, for a rejected frame, appends it to a short ring per reason. That is a few
attribute stores per frame; nothing is drawn, encoded or locked there.

The web thread draws and encodes: :meth:`FrameTap.latest_image` renders
:func:`edge.vision.overlay.render_overlay` and encodes it (PNG, lossless, about 40 ms for
a 1024 x 768 frame; JPEG, about 2 ms, what the page shows) at most once per
``interval_s`` and format (the cached image in between), and
:meth:`FrameTap.thumbnail_png` a small image of one of the last rejected frames.
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
        self._cache: dict[str, tuple[Seen, float, bytes]] = {}  # format -> (of, at, bytes)
        self._drawn: tuple[Seen, np.ndarray] | None = None  # one drawing for both formats
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
    def latest_image(self, fmt: str = "png") -> bytes | None:
        """The latest frame with its overlay, ``fmt`` ``"png"`` or ``"jpg"`` (None before
        the first frame); encoded again only for a newer frame and ``interval_s`` after
        the last encode of that format."""
        with self._encode:
            seen = self.latest
            if seen is None:
                return None
            now = time.monotonic()
            cached = self._cache.get(fmt)
            if cached is not None and (cached[0] is seen or now - cached[1] < self.interval_s):
                return cached[2]
            if self._drawn is None or self._drawn[0] is not seen:
                self._drawn = (seen, _draw(seen))
            data = _encode(self._drawn[1], fmt)
            self._cache[fmt] = (seen, now, data)
            self.encodes += 1
            return data

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
        return _encode(img, "png")


def _draw(seen: Seen) -> np.ndarray:
    if seen.result is not None:
        return render_overlay(seen.image, seen.result)
    return to_bgr_u8(seen.image)


_ENCODE = {"png": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]),  # the fastest deflate
           "jpg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 88])}


def _encode(bgr: np.ndarray, fmt: str) -> bytes:
    ext, params = _ENCODE[fmt]
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise RuntimeError(f"{ext} encoding failed")
    return buf.tobytes()
