"""Shared pieces of the pipeline tests (test_pipeline.py, test_pipeline_sinks.py): an
in-memory source, the real analysis processor on the tiny model, frames, a pipeline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pytest

from edge.backends.config import BackendConfig
from edge.psd import PsdConfig
from edge.service.pipeline.analysis import AnalyzerProcessor
from edge.service.pipeline.batch import BatchAggregator, BatchConfig, BatchCounter
from edge.service.pipeline.runtime import Pipeline, PipelineOptions
from edge.sinks.jsonl import JsonlSink, JsonlSinkConfig
from edge.sources.base import Frame
from edge.vision.analyzer import FrameAnalyzer
from tests.fixtures.tiny_model import build_tiny_model, synth_frame

MODEL = {"name": "tiny", "sha256": "0" * 64, "backend": "onnxruntime", "precision": "fp32"}


class ListSource:
    """In-memory frames (the source interface without files); records acks."""

    name = "list"

    def __init__(self, images: list[np.ndarray], *, hold: threading.Event | None = None):
        self.images = images
        self.acked: list[str] = []
        self.taken = 0
        self.hold = hold

    def open(self) -> None:
        pass

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        for i, img in enumerate(self.images):
            if stop.is_set():
                return
            self.taken = i + 1
            yield Frame(name=f"f{i}", seq=i, image=img.copy(), t_capture=time.time(),
                        token=f"f{i}")
        while self.hold is not None and not stop.is_set():  # a live source: waits
            stop.wait(0.05)
            yield None  # idle heartbeat

    def ack(self, frames: Iterable[Frame]) -> None:
        self.acked.extend(f.token for f in frames)

    def health(self) -> dict[str, Any]:
        return {"type": self.name, "taken": self.taken}

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    onnx = build_tiny_model(tmp_path_factory.mktemp("m"))
    an = FrameAnalyzer(onnx, backend_config=BackendConfig(
        name="onnxruntime", onnxruntime_device="cpu", threads=1, warmup_runs=0))
    yield AnalyzerProcessor(an, psd_config=PsdConfig(bootstrap_n=20))
    an.close()


def make_images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        crystals = [(rng.uniform(40, 280), rng.uniform(40, 200), rng.uniform(6, 14))
                    for _ in range(6)]
        img = synth_frame(240, 320, crystals=crystals, seed=seed + i)
        img[0, 0] = i % 250  # a marker pixel (outside the lit field) to pick frames
        out.append(img)
    return out


def make_pipeline(tmp_path, source, proc, *, frames_per_batch=4, sinks=None,
                  required_sinks=None, **opt) -> Pipeline:
    agg = BatchAggregator(config=BatchConfig(frames=frames_per_batch),
                          counter=BatchCounter(tmp_path), device_id="t", px_size_um=1.45,
                          model=MODEL, psd_config=PsdConfig(bootstrap_n=20))
    if sinks is None:
        sinks = [JsonlSink(JsonlSinkConfig(path=str(tmp_path / "out.jsonl")))]
    for s in sinks:
        s.open()
    return Pipeline(source=source, processor=proc, aggregator=agg, sinks=sinks,
                    options=PipelineOptions(**{"health_interval_s": 0.1, **opt}),
                    state_dir=tmp_path, device_id="t", required_sinks=required_sinks)


def run_in_thread(p: Pipeline) -> tuple[threading.Thread, list[int]]:
    rc: list[int] = []
    th = threading.Thread(target=lambda: rc.append(p.run()), daemon=True)
    p.start()
    th.start()
    return th, rc
