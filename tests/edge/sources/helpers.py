"""Helpers for source tests: pull frames from a source's generator in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

from edge.sources.base import Frame


class Collector:
    """Run ``source.frames(stop)`` in a thread and collect what it yields."""

    def __init__(self, source) -> None:
        self.source = source
        self.frames: list[Frame] = []
        self.beats = 0
        self.stop = threading.Event()
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for fr in self.source.frames(self.stop):
                if fr is None:  # idle heartbeat
                    self.beats += 1
                else:
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


# ---------------------------------------------------------------- run / pipeline tests
def write_frames(directory, names, *, seed: int = 0, h: int = 240, w: int = 320,
                 n_crystals: int = 8, t0: float | None = None):
    """Write back-lit frames with dark discs (tiny-model fixture) as image files, with
    increasing mtimes (arrival order = list order). Returns the paths."""
    import os

    import cv2
    import numpy as np

    from tests.fixtures.tiny_model import synth_frame

    rng = np.random.default_rng(seed)
    t0 = time.time() - 1000 if t0 is None else t0
    paths = []
    for i, name in enumerate(names):
        crystals = [(rng.uniform(40, w - 40), rng.uniform(40, h - 40), rng.uniform(5, 15))
                    for _ in range(n_crystals)]
        path = directory / name
        assert cv2.imwrite(str(path), synth_frame(h, w, crystals=crystals, seed=seed + i))
        os.utime(path, (t0 + i, t0 + i))
        paths.append(path)
    return paths


def write_config(path, *, model, extra: str = "", source: str | None = None,
                 batch_frames: int = 3) -> None:
    """A run configuration for tests: folder source 'in', JSON lines 'out.jsonl'."""
    source = source or ('type = "folder"\npath = "in"\npoll_s = 0.05\nstable_polls = 1\n')
    path.write_text(f"""
[device]
id = "test-01"

[source]
{source}
[model]
path = "{model}"

[backend]
name = "onnxruntime"
onnxruntime_device = "cpu"
threads = 1
max_batch = 2
warmup_runs = 0

[batch]
frames = {batch_frames}

[state]
dir = "state"

[sinks.jsonl]
path = "out.jsonl"

[psd]
bootstrap_n = 50

[health]
interval_s = 0.1
{extra}
""")


@contextmanager
def running_service(cfg_path, *, ready_timeout_s: float = 30.0):
    """``edge.service.pipeline.app.Service`` from ``cfg_path`` run in a thread, yielded once READY.

    On leaving: the pipeline is asked to stop and the thread joined; it must have ended.
    """
    from edge.service.config import load_config
    from edge.service.pipeline.app import Service

    svc = Service(load_config(cfg_path), install_signals=False, config_path=cfg_path)
    th = threading.Thread(target=svc.run)
    th.start()
    try:
        assert svc.ready.wait(ready_timeout_s), "the service did not become READY"
        yield svc
    finally:
        if svc.pipeline is not None:
            svc.pipeline.request_stop("test")
        th.join(30)
    assert not th.is_alive(), "the service thread did not end"
