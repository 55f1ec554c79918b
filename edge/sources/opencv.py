"""OpenCV capture source: a V4L2 camera, a video file, an RTSP stream or a GStreamer pipeline.

``uri`` is a device index (``"0"``), a file path, a URL (``rtsp://...``) or a GStreamer
pipeline string (anything containing ``!``, e.g. the Jetson's
``nvarguscamerasrc ! ... ! appsink``). When the camera drops (``read()`` fails, the
stream ends, the device or file disappears) the source releases it and reconnects with
exponential back-off (``reconnect_initial_s`` doubling up to ``reconnect_max_s``); the
service keeps running meanwhile and the health snapshot shows ``connected = false``
and the number of attempts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import cv2
from pydantic import BaseModel, ConfigDict, Field

from edge.sources.base import Frame, idle

log = logging.getLogger(__name__)

_APIS = {
    "auto": cv2.CAP_ANY,
    "v4l2": cv2.CAP_V4L2,
    "gstreamer": cv2.CAP_GSTREAMER,
    "ffmpeg": cv2.CAP_FFMPEG,
}


class OpenCVSourceConfig(BaseModel):
    """``[source]`` with ``type = "opencv"``: a camera or stream read with cv2.VideoCapture."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["opencv"] = Field("opencv", description="source type")
    uri: str = Field(
        "0",
        description="device index ('0' = /dev/video0), video file, rtsp:// URL, or a "
                    "GStreamer pipeline ending in appsink")
    api: Literal["auto", "v4l2", "gstreamer", "ffmpeg"] = Field(
        "auto",
        description="OpenCV capture backend; 'auto' picks GStreamer for a pipeline "
                    "string, else lets OpenCV choose")
    width: int | None = Field(None, ge=1, description="requested capture width (cameras)")
    height: int | None = Field(None, ge=1, description="requested capture height (cameras)")
    fps: float | None = Field(None, gt=0, description="requested camera frame rate")
    fourcc: str | None = Field(
        None, min_length=4, max_length=4, description="requested pixel format, e.g. 'MJPG'")
    max_fps: float | None = Field(
        None, gt=0,
        description="take at most this many frames per second (the others are read and "
                    "dropped); None = every frame")
    on_end: Literal["auto", "reconnect", "stop", "loop"] = Field(
        "auto",
        description="when read() fails or the stream ends: 'reconnect' with back-off "
                    "(cameras, streams), 'stop' the source, 'loop' (reopen at once: "
                    "replay a file); 'auto' = 'stop' for a file, else 'reconnect'")
    reconnect_initial_s: float = Field(
        0.5, gt=0, description="first reconnect delay; doubles after every failure")
    reconnect_max_s: float = Field(30.0, gt=0, description="longest reconnect delay")
    open_timeout_s: float = Field(
        10.0, gt=0, description="open / read timeout for network streams (FFmpeg backend)")


class OpenCVSource:
    """Frames from ``cv2.VideoCapture`` with reconnection (see the module docstring)."""

    name = "opencv"

    def __init__(self, config: OpenCVSourceConfig, *, state_dir: str | Path | None = None,
                 capture_factory: Any = None) -> None:
        self.config = config
        # The factory is cv2.VideoCapture; tests without a camera may pass another.
        self._factory = capture_factory or cv2.VideoCapture
        self._seq = 0
        self._last_t = 0.0  # time of the last frame passed on (max_fps pacing)
        self._connected = False
        self._stats = {"frames_read": 0, "connects": 0, "reconnect_attempts": 0,
                       "drops": 0, "frames_skipped": 0}
        self._last_error: str | None = None
        self._next_delay_s: float | None = None
        self._lock = threading.Lock()
        self._announced = False

    # -- helpers -----------------------------------------------------------------
    def _target(self) -> tuple[Any, int]:
        uri = self.config.uri.strip()
        api = self.config.api
        if api == "auto" and "!" in uri:
            api = "gstreamer"
        target: Any = int(uri) if uri.isdigit() else uri
        return target, _APIS[api]

    def _is_file(self) -> bool:
        uri = self.config.uri.strip()
        return not uri.isdigit() and "!" not in uri and "://" not in uri

    def _end_policy(self) -> str:
        if self.config.on_end != "auto":
            return self.config.on_end
        return "stop" if self._is_file() else "reconnect"

    def _open_capture(self) -> Any | None:
        target, api = self._target()
        params: list[int] = []
        if "://" in str(target) and hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC") and hasattr(
                cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):  # OpenCV >= 4.6
            ms = int(self.config.open_timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        try:
            cap = self._factory(target, api, params) if params else self._factory(target, api)
        except cv2.error as exc:
            self._last_error = f"open failed: {exc}"
            return None
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            self._last_error = f"cannot open {self.config.uri!r}"
            return None
        c = self.config
        if c.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*c.fourcc))
        if c.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, c.width)
        if c.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, c.height)
        if c.fps:
            cap.set(cv2.CAP_PROP_FPS, c.fps)
        return cap

    # -- lifecycle ---------------------------------------------------------------
    def open(self) -> None:
        """Nothing to prepare: the first connection is made in :meth:`frames`, so a
        camera that is off at start-up is retried like one that drops later."""
        if not self._announced:  # once per run, not on every restart of the source
            self._announced = True
            log.info("opencv source: reading %r (at end: %s)", self.config.uri,
                     self._end_policy())

    def close(self) -> None:
        pass

    def frames(self, stop: threading.Event) -> Iterator[Frame | None]:
        c = self.config
        delay = c.reconnect_initial_s
        first = True
        while not stop.is_set():
            if not first:
                self._stats["reconnect_attempts"] += 1
            first = False
            cap = self._open_capture()
            if cap is None:
                log.warning("opencv source: %s; retrying in %.1f s", self._last_error, delay)
            else:
                got_any = yield from self._stream(cap, stop)
                if stop.is_set():
                    return
                if got_any:
                    delay = c.reconnect_initial_s  # it worked: start the back-off afresh
                policy = self._end_policy()
                if policy == "stop":
                    log.info("opencv source: end of %r", c.uri)
                    return
                if policy == "loop" and got_any:
                    continue
                self._stats["drops"] += 1
                self._last_error = "stream ended or read failed"
                log.warning("opencv source: %r dropped; reconnecting in %.1f s", c.uri, delay)
            self._next_delay_s = delay
            yield None
            yield from idle(stop, delay)
            delay = min(delay * 2, c.reconnect_max_s)

    def _stream(self, cap: Any, stop: threading.Event) -> Generator[Frame, None, bool]:
        """Frames of one connection until it ends (paced to ``max_fps``); returns whether
        any frame was read."""
        min_dt = 1.0 / self.config.max_fps if self.config.max_fps else 0.0
        self._connected = True
        self._next_delay_s = None
        self._stats["connects"] += 1
        log.info("opencv source: connected to %r", self.config.uri)
        got_any = False
        try:
            while not stop.is_set():
                ok, img = cap.read()
                if not ok or img is None:
                    break
                got_any = True
                now = time.time()
                if min_dt and now - self._last_t < min_dt:
                    self._stats["frames_skipped"] += 1
                    continue
                self._last_t = now
                if img.ndim == 2:
                    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
                self._stats["frames_read"] += 1
                frame = Frame(name=f"cam:{self._seq}", seq=self._seq, image=img, t_capture=now)
                self._seq += 1
                yield frame
        finally:
            cap.release()
            self._connected = False
        return got_any

    def ack(self, frames: Iterable[Frame]) -> None:
        """Camera frames need no bookkeeping."""

    def health(self) -> dict[str, Any]:
        return {"type": self.name, "uri": self.config.uri, "connected": self._connected,
                "next_reconnect_s": self._next_delay_s, "last_error": self._last_error,
                **self._stats}
