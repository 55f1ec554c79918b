"""Helpers for source tests: pull frames from a source's generator in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from edge.sources.base import Frame


class Collector:
    """Run ``source.frames(stop)`` in a thread and collect what it yields."""

    def __init__(self, source) -> None:
        self.source = source
        self.frames: list[Frame] = []
        self.stop = threading.Event()
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for fr in self.source.frames(self.stop):
                self.frames.append(fr)
        finally:
            self.finished.set()

    def wait_for(self, cond: Callable[[], bool], timeout: float = 10.0) -> bool:
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if cond():
                return True
            time.sleep(0.02)
        return cond()

    def wait_frames(self, n: int, timeout: float = 10.0) -> list[Frame]:
        assert self.wait_for(lambda: len(self.frames) >= n, timeout), (
            f"got {len(self.frames)} frames, expected {n}")
        return list(self.frames)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10.0)
        assert not self.thread.is_alive(), "source did not stop"
