"""Store-and-forward against a real broker: outages, restarts, SIGKILL, last will."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge.mqtt.outbox import Outbox
from edge.mqtt.sink import MqttSink
from tests.edge.mqtt.conftest import fake_report, mqtt_config, psd_payload, wait_for

REPO = Path(__file__).resolve().parents[3]


def _batch_ids(rec) -> list[int]:
    return [json.loads(m.payload)["batch_id"] for m in rec.on("/psd")]


def test_broker_outage_every_batch_arrives_in_order(recorder_factory, tmp_path):
    """The DCS is a durable subscriber on a persistent broker: what the sink publishes after
    the broker comes back reaches it even if the sink reconnects before the DCS does."""
    from tests.edge.mqtt.conftest import make_broker

    broker = make_broker(tmp_path, persistence=True)
    broker.start()
    rec = recorder_factory(broker.port, "plant/cryst/dev1/psd", persistent_id="dcs-outage")
    sink = MqttSink(mqtt_config(broker.port, reconnect_min_s=1.0, reconnect_max_s=1.0,
                                max_inflight=3), state_dir=tmp_path / "state")
    sink.open()
    try:
        for i in range(1, 6):
            sink.publish(fake_report(i))
        assert wait_for(lambda: _batch_ids(rec) == [1, 2, 3, 4, 5])
        assert wait_for(lambda: sink.health()["outbox_depth"] == 0)
        broker.stop()
        assert wait_for(lambda: sink.health()["connection"] != "connected")
        slowest = 0.0
        for i in range(6, 31):
            t = time.perf_counter()
            sink.publish(fake_report(i))  # never blocks on the network
            slowest = max(slowest, time.perf_counter() - t)
        assert slowest < 0.5
        time.sleep(1.5)  # a few failed reconnects
        h = sink.health()
        assert h["outbox_depth"] == 25 and h["connection"] != "connected"
        assert "connection refused" in h["last_error"]
        broker.start()
        # QoS 1 may deliver a report twice when a connection drops before its PUBACK:
        # wait for every distinct batch, not for 30 messages
        assert wait_for(lambda: len(set(_batch_ids(rec))) >= 30, timeout=15)
        assert list(dict.fromkeys(_batch_ids(rec))) == list(range(1, 31))
        assert wait_for(lambda: sink.health()["outbox_depth"] == 0)
        assert sink.health()["published"] == 30
    finally:
        sink.close()
        broker.stop()


def _spawn(cfg: dict, state: Path, n: int, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "tests.edge.mqtt.publisher_proc",
                             json.dumps(cfg), str(state), str(n), *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)


def _wait_line(proc: subprocess.Popen[str], expected: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if line.strip().startswith(expected):
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"publisher never printed {expected!r} (rc {proc.poll()})")


def test_last_will_marks_a_killed_appliance_offline(broker, recorder_factory, tmp_path):
    rec = recorder_factory(broker.port, "plant/cryst/dev1/status")
    cfg = mqtt_config(broker.port, keepalive=5).model_dump()
    proc = _spawn(cfg, tmp_path / "state", 2)
    try:
        _wait_line(proc, "CONNECTED")
        assert wait_for(lambda: [json.loads(m.payload)["state"] for m in rec.all] == ["online"])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert wait_for(lambda: len(rec.all) == 2, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()  # type: ignore[union-attr]
    will = json.loads(rec.all[1].payload)
    assert will["state"] == "offline" and will["since"] is None
    assert will["reason"] == "connection lost (last will)"
    late = recorder_factory(broker.port, "plant/cryst/dev1/status")
    assert wait_for(lambda: len(late.all) == 1)
    assert late.all[0].retain and json.loads(late.all[0].payload)["state"] == "offline"


def test_backlog_of_a_killed_appliance_is_delivered_after_restart(broker, recorder_factory,
                                                                   tmp_path):
    state = tmp_path / "state"
    broker.stop()  # the plant network is down while the appliance works
    cfg = mqtt_config(broker.port).model_dump()
    proc = _spawn(cfg, state, 40)
    try:
        _wait_line(proc, "QUEUED")
        os.kill(proc.pid, signal.SIGKILL)  # power cut: nothing flushed on purpose
        proc.wait(10)
    finally:
        proc.stdout.close()  # type: ignore[union-attr]
    box = Outbox(state / "outbox.sqlite3")
    assert box.depth == 40
    assert [i.batch_id for i in box.peek(0, 100)] == list(range(1, 41))
    box.close()
    broker.start()
    rec = recorder_factory(broker.port, "plant/cryst/dev1/psd")
    proc = _spawn(cfg, state, 5, "--first", "41", "--close")
    try:
        _wait_line(proc, "CLOSED", timeout=30)
        assert proc.wait(10) == 0
    finally:
        proc.stdout.close()  # type: ignore[union-attr]
    assert wait_for(lambda: len(_batch_ids(rec)) >= 45)
    assert _batch_ids(rec) == list(range(1, 46))
    assert Outbox(state / "outbox.sqlite3").depth == 0


def test_restart_with_inflight_reports_may_duplicate_but_never_loses(broker, recorder_factory,
                                                                      tmp_path):
    """A crash between sending and PUBACK: the report comes again with the same batch_id."""
    state = tmp_path / "state"
    box = Outbox(state / "outbox.sqlite3")
    for i in range(1, 4):
        box.put(i, json.dumps(psd_payload(i)))
    box.close()
    rec = recorder_factory(broker.port, "plant/cryst/dev1/psd")
    # first life: delivers all three, then we pretend the PUBACKs were lost by restoring rows
    sink = MqttSink(mqtt_config(broker.port), state_dir=state)
    sink.open()
    assert wait_for(lambda: _batch_ids(rec) == [1, 2, 3])
    sink.close()
    box = Outbox(state / "outbox.sqlite3")
    box.put(3, json.dumps(psd_payload(3)))
    box.close()
    sink = MqttSink(mqtt_config(broker.port), state_dir=state)
    sink.open()
    try:
        assert wait_for(lambda: _batch_ids(rec) == [1, 2, 3, 3])
    finally:
        sink.close()


def test_broker_stopped_mid_stream_nothing_lost_order_kept(tmp_path, recorder_factory):
    """Reports flow continuously while the broker goes down and comes back (a durable
    subscriber on a persistent broker sees what the broker acknowledged)."""
    from tests.edge.mqtt.conftest import make_broker

    b = make_broker(tmp_path, persistence=True)
    b.start()
    try:
        rec = recorder_factory(b.port, "plant/cryst/dev1/psd", persistent_id="dcs-1")
        sink = MqttSink(mqtt_config(b.port, reconnect_min_s=0.3, reconnect_max_s=0.6,
                                    max_inflight=5), state_dir=tmp_path / "state")
        sink.open()
        n = 150
        try:
            for i in range(1, n + 1):
                sink.publish(fake_report(i))
                time.sleep(0.004)
                if i == 60:
                    assert wait_for(lambda: len(rec.all) >= 20)
                    b.stop()
                    assert wait_for(lambda: sink.health()["connection"] != "connected")
                if i == 100:
                    b.start()
            assert wait_for(lambda: sink.health()["outbox_depth"] == 0, timeout=20)
            assert wait_for(lambda: set(_batch_ids(rec)) == set(range(1, n + 1)), timeout=15)
        finally:
            sink.close()
        ids = _batch_ids(rec)
        first_seen = list(dict.fromkeys(ids))
        assert first_seen == list(range(1, n + 1))  # in order; duplicates only re-sends
        assert len(ids) - n <= 5  # at most one in-flight window re-sent
        print(f"received {len(ids)} for {n} produced ({len(ids) - n} duplicates)")
    finally:
        b.stop()


def test_unreadable_outbox_entry_is_removed_not_blocking(broker, recorder_factory, tmp_path,
                                                         caplog):
    state = tmp_path / "state"
    box = Outbox(state / "outbox.sqlite3")
    box.put(1, json.dumps(psd_payload(1)))
    box.put(2, "{truncated")
    box.put(3, json.dumps(psd_payload(3)))
    box.close()
    rec = recorder_factory(broker.port, "plant/cryst/dev1/psd")
    sink = MqttSink(mqtt_config(broker.port), state_dir=state)
    sink.open()
    try:
        assert wait_for(lambda: _batch_ids(rec) == [1, 3])
        assert wait_for(lambda: sink.health()["outbox_depth"] == 0)
    finally:
        sink.close()
    assert "outbox entry 2 (batch 2) cannot be encoded, removed" in caplog.text
