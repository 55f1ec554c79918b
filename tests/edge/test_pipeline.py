"""Pipeline threading: back-pressure, close command, stall -> no watchdog, errors (the
sinks: test_pipeline_sinks.py).

The per-frame analysis is the real one (tiny ONNX model through FrameAnalyzer); tests
wrap it to slow it down, hang it or make it fail, which only a test can arrange.
"""

# ruff: noqa: F811 (the fixtures imported from tests.edge.pipeline_helpers)
from __future__ import annotations

import json
import threading
import time

from edge.service.pipeline.analysis import AnalyzerProcessor
from edge.sinks.jsonl import JsonlSink, JsonlSinkConfig, read_jsonl
from tests.edge.pipeline_helpers import (  # noqa: F401 (fixtures)
    ListSource,
    make_images,
    make_pipeline,
    processor,
    run_in_thread,
)


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


def test_back_pressure_bounds_the_queues(tmp_path, processor):
    src = ListSource(make_images(24))
    p = make_pipeline(tmp_path, src, Wrapped(processor, segment_delay=0.03), queue_size=2,
                      frames_per_batch=8)
    depths: list[dict[str, int]] = []
    ahead: list[int] = []
    th, rc = run_in_thread(p)
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
    src = ListSource(make_images(6), hold=hold)
    p = make_pipeline(tmp_path, src, processor, frames_per_batch=100, post_workers=3)
    th, rc = run_in_thread(p)
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
    src = ListSource(make_images(3), hold=hold)
    proc = Wrapped(processor)
    pets: list[float] = []
    p = make_pipeline(tmp_path, src, proc, stall_s=0.4, final_s=1.0)
    p._watchdog = lambda: pets.append(time.monotonic())
    p._watchdog_interval = 0.1
    proc.gate = threading.Event()  # inference hangs
    th, rc = run_in_thread(p)
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

    p = make_pipeline(tmp_path, ListSource(make_images(3), hold=threading.Event()),
                      Dying(processor), final_s=1.0)
    th, rc = run_in_thread(p)
    th.join(10)
    assert not th.is_alive() and rc == [1]
    assert "stage post0 died: Fatal: worker killed" in p.failed
    assert p.snapshot().stages["post0"].died == "Fatal: worker killed"


def test_processing_errors_are_counted_not_fatal(tmp_path, processor):
    src = ListSource(make_images(6))
    proc = Wrapped(processor)
    proc.fail_segment_value = 2   # frame f2's inference raises
    proc.fail_measure = {"f4"}
    p = make_pipeline(tmp_path, src, proc, frames_per_batch=6)
    th, rc = run_in_thread(p)
    th.join(30)
    assert rc == [0]
    pay = read_jsonl(tmp_path / "out.jsonl")[0]["payload"]
    assert pay["frames"]["used"] == 4
    nonzero = {k: v for k, v in pay["frames"]["rejected_by_reason"].items() if v}
    assert nonzero == {"inference_error": 1, "postprocess_error": 1}
    assert "watershed exploded" in p.last_error or "illegal memory" in p.last_error
    assert len(src.acked) == 6


def test_failed_close_keeps_the_batch_and_closes_it_later(tmp_path, processor):
    """The batch counter cannot be written (its path is a directory): the batch stays
    open, frames keep coming into it, and once the counter can be written it closes
    with the next id and every frame is delivered and acknowledged once."""
    src = ListSource(make_images(6), hold=threading.Event())
    p = make_pipeline(tmp_path, src, processor, frames_per_batch=2,
                      retry_backoff_s=(0.05, 0.2))
    (tmp_path / "batch_counter.json").mkdir()  # after the counter was loaded
    th, rc = run_in_thread(p)
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
    p = make_pipeline(tmp_path, ListSource(make_images(4)), processor, sinks=[sink])
    th, _rc = run_in_thread(p)
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
    src = ListSource(make_images(6), hold=hold)
    proc = Wrapped(processor)
    p = make_pipeline(tmp_path, src, proc, frames_per_batch=2)
    th, rc = run_in_thread(p)
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
