"""Pipeline threading: back-pressure, close command, stall -> no watchdog, errors, sinks.

The per-frame analysis is the real one (tiny ONNX model through FrameAnalyzer); tests
wrap it to slow it down, hang it or make it fail, which only a test can arrange.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pytest

from edge.backends.config import BackendConfig
from edge.batch import BatchAggregator, BatchConfig, BatchCounter
from edge.frames import FrameAnalyzer
from edge.pipeline import Pipeline, PipelineOptions
from edge.pipeline.analysis import AnalyzerProcessor
from edge.psd import PsdConfig
from edge.sinks.jsonl import JsonlSink, JsonlSinkConfig, read_jsonl
from edge.sources.base import Frame
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


class Wrapped:
    """The real processor with hooks: delay, hang, fail on chosen frames."""

    def __init__(self, inner: AnalyzerProcessor, *, segment_delay: float = 0.0) -> None:
        self.inner = inner
        self.segment_delay = segment_delay
        self.gate: threading.Event | None = None
        self.fail_segment_value: int | None = None
        self.fail_measure: set[str] = set()

    def quality(self, image):
        return self.inner.quality(image)

    def segment(self, images):
        if self.gate is not None:
            self.gate.wait()
        time.sleep(self.segment_delay)
        if self.fail_segment_value is not None and any(
                int(im[0, 0, 0]) == self.fail_segment_value for im in images):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.inner.segment(images)

    def measure(self, frame, class_map):
        if frame.name in self.fail_measure:
            raise ValueError("watershed exploded")
        return self.inner.measure(frame, class_map)


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    onnx = build_tiny_model(tmp_path_factory.mktemp("m"))
    an = FrameAnalyzer(onnx, backend_config=BackendConfig(
        name="onnxruntime", onnxruntime_device="cpu", threads=1, warmup_runs=0))
    yield AnalyzerProcessor(an, psd_config=PsdConfig(bootstrap_n=20))
    an.close()


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        crystals = [(rng.uniform(40, 280), rng.uniform(40, 200), rng.uniform(6, 14))
                    for _ in range(6)]
        img = synth_frame(240, 320, crystals=crystals, seed=seed + i)
        img[0, 0] = i % 250  # a marker pixel (outside the lit field) to pick frames
        out.append(img)
    return out


def _pipeline(tmp_path, source, proc, *, frames_per_batch=4, sinks=None, **opt) -> Pipeline:
    agg = BatchAggregator(config=BatchConfig(frames=frames_per_batch),
                          counter=BatchCounter(tmp_path), device_id="t", px_size_um=1.45,
                          model=MODEL, psd_config=PsdConfig(bootstrap_n=20))
    if sinks is None:
        sinks = [JsonlSink(JsonlSinkConfig(path=str(tmp_path / "out.jsonl")))]
    for s in sinks:
        s.open()
    return Pipeline(source=source, processor=proc, aggregator=agg, sinks=sinks,
                    options=PipelineOptions(**{"health_interval_s": 0.1, **opt}),
                    state_dir=tmp_path, device_id="t")


def _run_in_thread(p: Pipeline) -> tuple[threading.Thread, list[int]]:
    rc: list[int] = []
    th = threading.Thread(target=lambda: rc.append(p.run()), daemon=True)
    p.start()
    th.start()
    return th, rc


def test_back_pressure_bounds_the_queues(tmp_path, processor):
    src = ListSource(_images(24))
    p = _pipeline(tmp_path, src, Wrapped(processor, segment_delay=0.03), queue_size=2,
                  frames_per_batch=8)
    depths: list[dict[str, int]] = []
    ahead: list[int] = []
    th, rc = _run_in_thread(p)
    while th.is_alive():
        depths.append(p.queue_depths())
        ahead.append(src.taken - p.stages["inference"].items)
        time.sleep(0.005)
    th.join()
    assert rc == [0]
    assert max(d["inference"] for d in depths) <= 2
    assert max(d["post"] for d in depths) <= 2
    # capture is held back: never more frames taken than the queue + the micro-batch + 1
    assert max(ahead) <= 2 + 1 + 1
    recs = read_jsonl(tmp_path / "out.jsonl")
    assert [r["payload"]["frames"]["used"] for r in recs] == [8, 8, 8]
    assert src.acked == [f"f{i}" for i in range(24)]
    assert p.frames_total == 24 and p.state == "stopped"


def test_close_command_and_multiple_post_workers(tmp_path, processor):
    hold = threading.Event()
    src = ListSource(_images(6), hold=hold)
    p = _pipeline(tmp_path, src, processor, frames_per_batch=100, post_workers=3)
    th, rc = _run_in_thread(p)
    t_end = time.monotonic() + 20
    while p.frames_total < 6 and time.monotonic() < t_end:
        time.sleep(0.02)
    assert p.frames_total == 6
    p.request_close_batch("test")
    while p.batches_published < 1 and time.monotonic() < t_end:
        time.sleep(0.02)
    p.request_stop("test")
    th.join(20)
    assert rc == [0]
    recs = read_jsonl(tmp_path / "out.jsonl")
    assert [(r["batch_id"], r["payload"]["frames"]["used"]) for r in recs] == [(1, 6)]
    assert sorted(src.acked) == sorted(f"f{i}" for i in range(6))
    assert sum(s.items for s in p.post_stages) == 6


def test_hung_stage_stops_the_watchdog(tmp_path, processor):
    hold = threading.Event()
    src = ListSource(_images(3), hold=hold)
    proc = Wrapped(processor)
    pets: list[float] = []
    p = _pipeline(tmp_path, src, proc, stall_s=0.4)
    p._watchdog = lambda: pets.append(time.monotonic())
    p._watchdog_interval = 0.1
    proc.gate = threading.Event()  # inference hangs
    th, _rc = _run_in_thread(p)
    t_end = time.monotonic() + 10
    while not pets and time.monotonic() < t_end:
        time.sleep(0.02)
    assert pets, "no watchdog pets while healthy"
    time.sleep(0.6)
    assert not p.healthy()
    n = len(pets)
    time.sleep(0.4)
    assert len(pets) == n, "watchdog petted while the inference stage hung"
    assert p.snapshot()["healthy"] is False
    proc.gate.set()  # it recovers
    t_end = time.monotonic() + 10
    while not (p.healthy() and len(pets) > n) and time.monotonic() < t_end:
        time.sleep(0.05)
    assert p.healthy() and len(pets) > n
    p.request_stop("test")
    th.join(20)
    assert read_jsonl(tmp_path / "out.jsonl")[0]["payload"]["frames"]["used"] == 3


def test_processing_errors_are_counted_not_fatal(tmp_path, processor):
    src = ListSource(_images(6))
    proc = Wrapped(processor)
    proc.fail_segment_value = 2   # frame f2's inference raises
    proc.fail_measure = {"f4"}
    p = _pipeline(tmp_path, src, proc, frames_per_batch=6)
    th, rc = _run_in_thread(p)
    th.join(30)
    assert rc == [0]
    pay = read_jsonl(tmp_path / "out.jsonl")[0]["payload"]
    assert pay["frames"]["used"] == 4
    assert pay["frames"]["rejected_by_reason"] == {"inference_error": 1,
                                                   "postprocess_error": 1}
    assert "watershed exploded" in p.last_error or "illegal memory" in p.last_error
    assert len(src.acked) == 6


class BrokenSink:
    name = "broken"

    def __init__(self):
        self.calls = 0

    def open(self):
        pass

    def publish(self, report):
        self.calls += 1
        raise OSError(28, "No space left on device")

    def publish_health(self, health):
        raise OSError(28, "No space left on device")

    def health(self):
        return {"calls": self.calls}

    def close(self):
        pass


def test_failed_sink_does_not_ack(tmp_path, processor):
    src = ListSource(_images(4))
    broken = BrokenSink()
    p = _pipeline(tmp_path, src, processor, sinks=[broken])
    th, rc = _run_in_thread(p)
    th.join(30)
    assert rc == [1]  # a batch closed and reached no sink
    assert broken.calls == 1 and src.acked == []
    assert p.batches_failed == 1 and "No space left" in p.last_error
    # with a working sink beside it, the batch counts as delivered
    src2 = ListSource(_images(4))
    good = JsonlSink(JsonlSinkConfig(path=str(tmp_path / "good.jsonl")))
    p2 = _pipeline(tmp_path, src2, processor, sinks=[BrokenSink(), good])
    th2, rc2 = _run_in_thread(p2)
    th2.join(30)
    assert rc2 == [0] and len(src2.acked) == 4
    assert read_jsonl(tmp_path / "good.jsonl")[0]["batch_id"] == 2


def test_metrics_snapshot_keys(tmp_path, processor):
    p = _pipeline(tmp_path, ListSource(_images(4)), processor)
    th, _rc = _run_in_thread(p)
    th.join(30)
    m = p.metrics_snapshot()
    assert m["frames_total"] == 4 and m["batches_total"] == 1
    assert set(m["queue_depth"]) == {"inference", "post", "aggregate", "sinks"}
    assert m["last_x50_um"] > 0 and m["last_batch_timestamp_s"] > 1.7e9
    from edge.metrics import render_metrics

    text = render_metrics(m)
    assert "crystal_edge_frames_total 4" in text


def test_abort_returns_even_with_a_hung_stage(tmp_path, processor):
    hold = threading.Event()
    src = ListSource(_images(6), hold=hold)
    proc = Wrapped(processor)
    p = _pipeline(tmp_path, src, proc, frames_per_batch=2)
    th, rc = _run_in_thread(p)
    t_end = time.monotonic() + 20
    while p.batches_published < 1 and time.monotonic() < t_end:
        time.sleep(0.02)
    proc.gate = threading.Event()  # inference now hangs (a wedged driver)
    time.sleep(0.3)
    t0 = time.monotonic()
    p.abort()
    th.join(10)
    assert not th.is_alive() and time.monotonic() - t0 < 5
    assert rc == [0]
    recs = read_jsonl(tmp_path / "out.jsonl")
    assert recs and all(r["payload"]["frames"]["used"] == 2 for r in recs)  # no partial
    assert p.stop_reason == "abort"
    proc.gate.set()
