"""OpenCV source: a real video file written by cv2.VideoWriter; a fake only for a camera."""

from __future__ import annotations

import itertools
import os
import shutil
import time
from typing import ClassVar

import cv2
import numpy as np
import pytest

from edge.sources.opencv import OpenCVSource, OpenCVSourceConfig
from tests.edge.sources.helpers import Collector


def write_video(path, n: int = 6, h: int = 48, w: int = 64) -> None:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    assert vw.isOpened(), "OpenCV cannot write MJPG/AVI here"
    for i in range(n):
        img = np.full((h, w, 3), 40 + 30 * i, np.uint8)
        vw.write(img)
    vw.release()


def test_video_file_frames_then_stop(tmp_path):
    video = tmp_path / "clip.avi"
    write_video(video, n=6)
    src = OpenCVSource(OpenCVSourceConfig(uri=str(video)))  # on_end auto -> stop for a file
    col = Collector(src)
    assert col.finished.wait(10), "source did not stop at the end of the file"
    col.close()
    assert len(col.frames) == 6
    assert [f.seq for f in col.frames] == list(range(6))
    assert col.frames[0].image.shape == (48, 64, 3)
    # the grey levels come back in order (MJPEG is lossy: within a few levels)
    levels = [float(f.image.mean()) for f in col.frames]
    assert levels == sorted(levels)
    assert abs(levels[0] - 40) < 4 and abs(levels[-1] - 190) < 4
    h = src.health()
    assert h["frames_read"] == 6 and h["connects"] == 1 and h["connected"] is False


def test_vanished_camera_reconnects_with_backoff(tmp_path):
    video = tmp_path / "cam.avi"
    spare = tmp_path / "spare.avi"
    write_video(spare, n=4)
    shutil.copy(spare, video)
    opens: list[float] = []

    def factory(*args):
        opens.append(time.monotonic())
        return cv2.VideoCapture(*args)

    cfg = OpenCVSourceConfig(uri=str(video), on_end="reconnect", reconnect_initial_s=0.05,
                             reconnect_max_s=0.4)
    src = OpenCVSource(cfg, capture_factory=factory)
    os.remove(video)  # the camera is gone before the first frame
    col = Collector(src)
    assert col.wait_for(lambda: len(opens) >= 5, 10)
    assert col.frames == [] and not col.finished.is_set()
    assert col.beats >= 4  # heartbeats while reconnecting: the service is not hung
    gaps = np.diff(opens[:5])
    # back-off: 0.05, 0.1, 0.2, 0.4 s (doubling, capped); allow scheduling slack
    assert gaps[0] >= 0.045 and gaps[-1] >= 0.35, gaps
    assert all(b >= a * 1.5 for a, b in itertools.pairwise(gaps)), gaps
    h = src.health()
    assert h["connected"] is False and h["reconnect_attempts"] >= 4
    assert "cannot open" in h["last_error"]
    # the camera comes back: frames flow again, the source never stopped
    shutil.copy(spare, video)
    col.wait_frames(4, timeout=10)
    os.remove(video)  # ... and drops again after its frames: counted as a drop
    assert col.wait_for(lambda: src.health()["drops"] >= 1, 10)
    col.close()
    assert src.health()["connects"] >= 1


class FakeCamera:
    """Stands in for /dev/video0 (no camera here): 3 frames, then the cable is pulled."""

    instances: ClassVar[list[FakeCamera]] = []

    def __init__(self, target, api=cv2.CAP_ANY):
        self.target, self.api = target, api
        self.n = 0
        self.props: dict[int, float] = {}
        FakeCamera.instances.append(self)

    def isOpened(self):
        return True

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def read(self):
        self.n += 1
        if self.n > 3:
            return False, None
        return True, np.full((8, 8), self.n * 10, np.uint8)  # grey camera

    def release(self):
        pass


def test_device_index_camera_drop_and_settings():
    FakeCamera.instances = []
    cfg = OpenCVSourceConfig(uri="0", api="v4l2", width=640, height=480, fourcc="MJPG",
                             reconnect_initial_s=0.01)
    src = OpenCVSource(cfg, capture_factory=FakeCamera)
    col = Collector(src)
    col.wait_frames(6)  # 3 frames, drop, reconnect, 3 more
    col.close()
    cam = FakeCamera.instances[0]
    assert cam.target == 0 and cam.api == cv2.CAP_V4L2
    assert cam.props[cv2.CAP_PROP_FRAME_WIDTH] == 640
    assert cam.props[cv2.CAP_PROP_FRAME_HEIGHT] == 480
    assert col.frames[0].image.shape == (8, 8, 3)  # grey converted to BGR
    assert src.health()["drops"] >= 1 and src.health()["connects"] >= 2


@pytest.mark.parametrize(("uri", "api", "target", "cap"), [
    ("2", "auto", 2, cv2.CAP_ANY),
    ("rtsp://cam.local/stream", "auto", "rtsp://cam.local/stream", cv2.CAP_ANY),
    ("nvarguscamerasrc ! nvvidconv ! appsink", "auto",
     "nvarguscamerasrc ! nvvidconv ! appsink", cv2.CAP_GSTREAMER),
    ("/data/clip.mp4", "ffmpeg", "/data/clip.mp4", cv2.CAP_FFMPEG),
])
def test_uri_kinds(uri, api, target, cap):
    src = OpenCVSource(OpenCVSourceConfig(uri=uri, api=api))
    assert src._target() == (target, cap)
    assert src._end_policy() == ("stop" if uri.startswith("/") else "reconnect")
