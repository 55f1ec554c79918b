"""Pipeline threading: back-pressure, close command, stall -> no watchdog, errors, sinks.

The per-frame analysis is the real one (tiny ONNX model through FrameAnalyzer); tests
wrap it to slow it down, hang it or make it fail, which only a test can arrange.
"""

from __future__ import annotations

import json
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
from edge.sinks.jsonl import JsonlSink, JsonlSinkConfig, read_jsonl
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


def _pipeline(tmp_path, source, proc, *, frames_per_batch=4, sinks=None,
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
        depths.append(p.flow.depths())
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


def test_hung_stage_stops_the_watchdog_and_fails_the_run(tmp_path, processor):
    """A stage stuck on one item past stall_s: the watchdog pets stop, the health says
    which stage, and run() returns 1 within final_s (systemd then restarts us)."""
    hold = threading.Event()
    src = ListSource(_images(3), hold=hold)
    proc = Wrapped(processor)
    pets: list[float] = []
    p = _pipeline(tmp_path, src, proc, stall_s=0.4, final_s=1.0)
    p._watchdog = lambda: pets.append(time.monotonic())
    p._watchdog_interval = 0.1
    proc.gate = threading.Event()  # inference hangs
    th, rc = _run_in_thread(p)
    t_end = time.monotonic() + 10
    while not pets and time.monotonic() < t_end:
        time.sleep(0.02)
    assert pets, "no watchdog pets while healthy"
    t_end = time.monotonic() + 10
    while p.failed is None and time.monotonic() < t_end:
        time.sleep(0.02)
    t_failed = time.monotonic()
    assert p.failed and "stage inference stalled" in p.failed
    n = len(pets)
    snap = p.snapshot()
    assert snap.healthy is False and any("inference" in x for x in snap.problems)
    th.join(10)
    assert not th.is_alive() and time.monotonic() - t_failed < 3.0
    assert rc == [1] and p.state == "failed"
    assert len(pets) == n, "watchdog petted after the stage hung"
    assert src.acked == []  # nothing got out: the frames are read again next start
    proc.gate.set()


def test_a_stage_that_dies_fails_the_run(tmp_path, processor):
    """A BaseException (not an Exception) kills a post-processing thread: dead stage ->
    run() returns 1 at once; the health names the stage and the error."""
    class Fatal(BaseException):
        pass

    class Dying(Wrapped):
        def measure(self, frame, class_map):
            raise Fatal("worker killed")

    p = _pipeline(tmp_path, ListSource(_images(3), hold=threading.Event()),
                  Dying(processor), final_s=1.0)
    th, rc = _run_in_thread(p)
    th.join(10)
    assert not th.is_alive() and rc == [1]
    assert "stage post0 died: Fatal: worker killed" in p.failed
    assert p.snapshot().stages["post0"].died == "Fatal: worker killed"


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
    nonzero = {k: v for k, v in pay["frames"]["rejected_by_reason"].items() if v}
    assert nonzero == {"inference_error": 1, "postprocess_error": 1}
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


class FlakySink(BrokenSink):
    """Fails until ``fixed`` is set; records the batch ids it took."""

    name = "flaky"

    def __init__(self):
        super().__init__()
        self.fixed = threading.Event()
        self.took: list[int] = []

    def publish(self, report):
        self.calls += 1
        if not self.fixed.is_set():
            raise OSError(28, "No space left on device")
        self.took.append(report.batch_id)


def _count_calls(sink):
    seen: list[int] = []
    real = sink.publish

    def publish(report):
        seen.append(report.batch_id)
        real(report)

    sink.publish = publish
    return seen


def test_required_sink_is_retried_alone_and_blocks_the_ack(tmp_path, processor):
    src = ListSource(_images(4))
    flaky = FlakySink()
    good = JsonlSink(JsonlSinkConfig(path=str(tmp_path / "good.jsonl")))
    good_calls = _count_calls(good)
    p = _pipeline(tmp_path, src, processor, sinks=[good, flaky],
                  retry_backoff_s=(0.05, 0.2))
    th, rc = _run_in_thread(p)
    t_end = time.monotonic() + 20
    while flaky.calls < 3 and time.monotonic() < t_end:
        time.sleep(0.02)
    assert flaky.calls >= 3 and src.acked == []
    snap = p.snapshot()
    assert snap.healthy is False and "flaky" in snap.sink_faults
    assert any("required sink flaky" in x and "No space left" in x for x in snap.problems)
    flaky.fixed.set()
    th.join(20)
    assert rc == [0] and flaky.took == [1] and good_calls == [1]  # not twice to 'good'
    assert len(src.acked) == 4 and p.snapshot().sink_faults == {}


def test_sink_not_required_does_not_block(tmp_path, processor, caplog):
    src = ListSource(_images(4))
    broken = BrokenSink()
    good = JsonlSink(JsonlSinkConfig(path=str(tmp_path / "good.jsonl")))
    p = _pipeline(tmp_path, src, processor, sinks=[broken, good], required_sinks={"jsonl"})
    with caplog.at_level("WARNING"):
        th, rc = _run_in_thread(p)
        th.join(30)
    assert rc == [0] and broken.calls == 1 and len(src.acked) == 4
    lines = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()]
    assert len(lines) == 1 and "not required" in lines[0] and "batch 1" in lines[0]


def test_required_sink_failing_at_a_stop_gives_up_at_the_deadline(tmp_path, processor):
    src = ListSource(_images(4), hold=threading.Event())
    broken = BrokenSink()
    p = _pipeline(tmp_path, src, processor, sinks=[broken], drain_timeout_s=1.0,
                  final_s=0.5, retry_backoff_s=(0.05, 0.2))
    th, rc = _run_in_thread(p)
    t_end = time.monotonic() + 20
    while broken.calls < 2 and time.monotonic() < t_end:
        time.sleep(0.02)
    t0 = time.monotonic()
    p.request_stop("SIGTERM")
    th.join(10)
    assert not th.is_alive() and time.monotonic() - t0 < 3.0
    assert rc == [1] and src.acked == [] and p.batches_failed == 1
    assert "No space left" in p.last_error


def test_failed_close_keeps_the_batch_and_closes_it_later(tmp_path, processor):
    """The batch counter cannot be written (its path is a directory): the batch stays
    open, frames keep coming into it, and once the counter can be written it closes
    with the next id and every frame is delivered and acknowledged once."""
    src = ListSource(_images(6), hold=threading.Event())
    p = _pipeline(tmp_path, src, processor, frames_per_batch=2,
                  retry_backoff_s=(0.05, 0.2))
    (tmp_path / "batch_counter.json").mkdir()  # after the counter was loaded
    th, rc = _run_in_thread(p)
    t_end = time.monotonic() + 20
    while p.frames_total < 6 and time.monotonic() < t_end:
        time.sleep(0.02)
    assert p.frames_total == 6 and p.batches_closed == 0 and p.agg.n_frames == 6
    snap = p.snapshot()
    assert snap.batch_close_error["attempts"] >= 1 and not snap.healthy
    assert p.healthy()  # a failing close is not a dead stage: no restart
    (tmp_path / "batch_counter.json").rmdir()
    t_end = time.monotonic() + 10
    while p.batches_published < 1 and time.monotonic() < t_end:
        time.sleep(0.02)
    p.request_stop("test")
    th.join(20)
    assert rc == [0]
    recs = read_jsonl(tmp_path / "out.jsonl")
    assert [(r["batch_id"], r["payload"]["frames"]["used"]) for r in recs] == [(1, 6)]
    assert sorted(src.acked) == [f"f{i}" for i in range(6)]
    assert p.snapshot().batch_close_error is None


def test_the_snapshot_published_is_what_status_json_sinks_and_metrics_show(tmp_path,
                                                                           processor):
    """One snapshot, built at a health tick: status.json, every sink's health and the
    metrics endpoint's collect show it, under the same names."""
    from edge.service.metrics import render_metrics
    from edge.service.snapshot import StatusSnapshot

    seen: list[dict] = []
    sink = JsonlSink(JsonlSinkConfig(path=str(tmp_path / "out.jsonl")))
    sink.publish_health = seen.append  # type: ignore[method-assign]
    p = _pipeline(tmp_path, ListSource(_images(4)), processor, sinks=[sink])
    th, _rc = _run_in_thread(p)
    th.join(30)
    snap = p.latest_snapshot()
    assert snap.state == "stopped" and snap.frames_total == 4 and snap.batches_total == 1
    assert set(snap.queue_depths) == {"inference", "post", "aggregate", "sinks"}
    assert snap.last_batch_id == 1 and snap.last_batch.x50_3_um > 0
    status = json.loads((tmp_path / "status.json").read_text())
    assert status == seen[-1] == snap.to_json()
    assert StatusSnapshot.from_mapping(status) == snap
    text = render_metrics(snap)
    assert "crystal_edge_frames_total 4\n" in text
    assert f"crystal_edge_frames_per_s {snap.frames_per_s!r}\n" in text
    assert 'crystal_edge_queue_depths{queue="inference"} 0\n' in text
    assert "crystal_edge_last_batch_id 1\n" in text


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


def test_the_call_that_loaded_the_backend_is_not_stuck_when_the_load_ends():
    """An engine build of minutes inside the inference stage's first call: while it
    loads the stage is busy (allowed up to load_timeout_s); when the load ends its clock
    starts again, so the health check between the end of the load and the end of the
    call does not find it stuck (it did: a spurious restart right after every build)."""
    from edge.service.pipeline.health import stage_problems
    from edge.service.pipeline.stages import Stage

    st = Stage("inference")
    st.thread = threading.current_thread()  # a live stage thread
    st.set("working")
    t0 = st.since
    loading = ("loading the backend for input 512x384", t0 + 0.01)
    assert stage_problems([st], now=t0 + 600, stall_s=120, busy=loading,
                          load_timeout_s=3600) == []
    # the load is over (t0 + 900 s); the first inference runs for a moment
    after = stage_problems([st], now=t0 + 900.5, stall_s=120, busy=None,
                           load_timeout_s=3600, loaded_at=t0 + 900)
    assert after == []
    # that call, stuck for longer than stall_s after the load, is a stall again
    late = stage_problems([st], now=t0 + 1100, stall_s=120, busy=None,
                          load_timeout_s=3600, loaded_at=t0 + 900)
    assert len(late) == 1 and "stage inference stalled" in late[0]
