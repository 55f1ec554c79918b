"""Pipeline sinks: a required sink is retried alone and holds back the ack; a sink not
required does not block; a required sink failing at a stop gives up at the deadline."""

# ruff: noqa: F811 (the fixtures imported from tests.edge.pipeline_helpers)
from __future__ import annotations

import threading
import time

from edge.sinks.jsonl import JsonlSink, JsonlSinkConfig
from tests.edge.pipeline_helpers import (  # noqa: F401 (fixtures)
    ListSource,
    make_images,
    make_pipeline,
    processor,
    run_in_thread,
)


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
    src = ListSource(make_images(4))
    flaky = FlakySink()
    good = JsonlSink(JsonlSinkConfig(path=str(tmp_path / "good.jsonl")))
    good_calls = _count_calls(good)
    p = make_pipeline(tmp_path, src, processor, sinks=[good, flaky],
                      retry_backoff_s=(0.05, 0.2))
    th, rc = run_in_thread(p)
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
    src = ListSource(make_images(4))
    broken = BrokenSink()
    good = JsonlSink(JsonlSinkConfig(path=str(tmp_path / "good.jsonl")))
    p = make_pipeline(tmp_path, src, processor, sinks=[broken, good], required_sinks={"jsonl"})
    with caplog.at_level("WARNING"):
        th, rc = run_in_thread(p)
        th.join(30)
    assert rc == [0] and broken.calls == 1 and len(src.acked) == 4
    lines = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()]
    assert len(lines) == 1 and "not required" in lines[0] and "batch 1" in lines[0]


def test_required_sink_failing_at_a_stop_gives_up_at_the_deadline(tmp_path, processor):
    src = ListSource(make_images(4), hold=threading.Event())
    broken = BrokenSink()
    p = make_pipeline(tmp_path, src, processor, sinks=[broken], drain_timeout_s=1.0,
                      final_s=0.5, retry_backoff_s=(0.05, 0.2))
    th, rc = run_in_thread(p)
    t_end = time.monotonic() + 20
    while broken.calls < 2 and time.monotonic() < t_end:
        time.sleep(0.02)
    t0 = time.monotonic()
    p.request_stop("SIGTERM")
    th.join(10)
    assert not th.is_alive() and time.monotonic() - t0 < 3.0
    assert rc == [1] and src.acked == [] and p.batches_failed == 1
    assert "No space left" in p.last_error
