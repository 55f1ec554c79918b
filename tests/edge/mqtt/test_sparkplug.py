"""Sparkplug B on the wire (real broker, payloads decoded with the committed protobuf code):
NBIRTH/NDATA/NDEATH, bdSeq pairing and persistence, seq wrap, rebirth, NDEATH as will."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge.mqtt.sink import MqttSink
from edge.mqtt.sparkplug import codec
from edge.mqtt.sparkplug import sparkplug_b_pb2 as pb
from edge.mqtt.sparkplug.mode import BdSeqStore
from tests.edge.mqtt.conftest import fake_report, make_broker, mqtt_config, wait_for

REPO = Path(__file__).resolve().parents[3]
NODE = "spBv1.0/plant1/{}/dev1"


def sp_config(port: int, **kw):
    return mqtt_config(port, mode="sparkplug", sparkplug_group_id="plant1", **kw)


def _of(rec, kind: str) -> list[dict]:
    return [codec.decode(m.payload) for m in rec.all if m.topic == NODE.format(kind)]


def _psd(rec) -> list[dict]:
    """NDATA carrying a batch (health goes in NDATA too)."""
    return [d for d in _of(rec, "NDATA") if "PSD/Batch ID" in d["metrics"]]


def _seq_trace(rec) -> list[tuple[str, int]]:
    out = []
    for m in rec.all:
        kind = m.topic.split("/")[2]
        if kind in ("NBIRTH", "NDATA"):
            out.append((kind, codec.decode(m.payload)["seq"]))
    return out


def test_proto_field_numbers_match_tahu():
    f = pb.Payload.DESCRIPTOR.fields_by_name
    assert (f["timestamp"].number, f["metrics"].number, f["seq"].number, f["uuid"].number,
            f["body"].number) == (1, 2, 3, 4, 5)
    m = pb.Payload.Metric.DESCRIPTOR.fields_by_name
    assert {k: m[k].number for k in ("name", "alias", "timestamp", "datatype", "is_historical",
                                      "is_null", "int_value", "long_value", "double_value",
                                      "boolean_value", "string_value", "dataset_value")} == {
        "name": 1, "alias": 2, "timestamp": 3, "datatype": 4, "is_historical": 5,
        "is_null": 7, "int_value": 10, "long_value": 11, "double_value": 13,
        "boolean_value": 14, "string_value": 15, "dataset_value": 17}
    assert (pb.Double, pb.DataSet, pb.DateTime, pb.UInt64, pb.DateTimeArray) == (10, 16, 13, 8, 34)
    # a known wire encoding: metric 'a' Double 1.5, seq 3 (independently hand-encoded)
    p = pb.Payload(seq=3)
    p.metrics.add(name="a", datatype=pb.Double, double_value=1.5)
    assert p.SerializeToString() == bytes.fromhex("12 0e 0a 01 61 20 0a 69 00 00 00 00 00 00 f8 3f"
                                                  " 18 03".replace(" ", ""))


def test_birth_data_death_sequence_and_rebirth(broker, recorder_factory, tmp_path):
    rec = recorder_factory(broker.port, "spBv1.0/#")
    state = tmp_path / "state"
    sink = MqttSink(sp_config(broker.port, sparkplug_ndata_qos=1), state_dir=state,
                    software_version="9.9.9")
    sink.open()
    sink.publish_health({"state": "running"})  # the pipeline's snapshot
    try:
        assert wait_for(lambda: len(_of(rec, "NBIRTH")) == 1)
        for i in range(1, 301):
            sink.publish(fake_report(i, empty=(i == 300)))
        assert wait_for(lambda: len(_psd(rec)) == 300, timeout=20)
        # NCMD rebirth from a host application
        cmd = pb.Payload(timestamp=codec.now_ms())
        cmd.metrics.add(name="Node Control/Rebirth", datatype=pb.Boolean, boolean_value=True)
        rec.client.publish(NODE.format("NCMD"), cmd.SerializeToString(), qos=0)
        assert wait_for(lambda: len(_of(rec, "NBIRTH")) == 2)
        sink.publish(fake_report(301))
        assert wait_for(lambda: len(_psd(rec)) == 301)
    finally:
        sink.close()
    assert wait_for(lambda: len(_of(rec, "NDEATH")) == 1)
    births, data, deaths = _of(rec, "NBIRTH"), _psd(rec), _of(rec, "NDEATH")
    b0 = births[0]
    assert b0["seq"] == 0 and b0["metrics"]["bdSeq"] == 0
    assert b0["datatypes"]["bdSeq"] == pb.UInt64
    assert b0["metrics"]["Node Control/Rebirth"] is False
    assert b0["metrics"]["Properties/Software Version"] == "9.9.9"
    assert b0["metrics"]["PSD/x50_3 um"] is None  # known type, no value yet
    assert b0["datatypes"]["PSD/x50_3 um"] == pb.Double
    assert b0["datatypes"]["PSD/Classes"] == pb.DataSet
    # seq: 1..255, 0, 1, ... consecutive after the birth
    trace = _seq_trace(rec)  # every NDATA (batches and health) follows its NBIRTH
    assert trace[0] == ("NBIRTH", 0)
    for (_, prev), (kind, seq) in itertools.pairwise(trace):
        assert seq == (0 if kind == "NBIRTH" else (prev + 1) % 256), trace
    assert len(trace) >= 303 and sum(1 for k, s in trace if k == "NDATA" and s == 0) >= 1
    health = [d for d in _of(rec, "NDATA") if "Health/Outbox Depth" in d["metrics"]]
    assert health and health[0]["datatypes"]["Health/Outbox Depth"] == pb.UInt64
    first = data[0]["metrics"]
    assert first["PSD/Batch ID"] == 1 and first["PSD/x50_3 um"] == pytest.approx(58.7)
    assert first["PSD/Classes"]["upper_edges_um"][:3] == [10.0, 20.0, 30.0]
    assert first["PSD/Classes"]["Q3"][-1] == pytest.approx(1.0)
    assert json.loads(first["PSD/Report JSON"])["batch_id"] == 1
    assert data[299]["metrics"]["PSD/x50_3 um"] is None  # empty batch: nulls
    # rebirth: seq restarts at 0 with the same bdSeq and the last values
    b1 = births[1]
    assert b1["seq"] == 0 and b1["metrics"]["bdSeq"] == 0
    assert b1["metrics"]["PSD/Batch ID"] == 300
    assert data[300]["seq"] >= 1
    # clean stop: NDEATH carries the bdSeq of the birth
    assert deaths[0]["metrics"]["bdSeq"] == 0
    # bdSeq persisted for the next connection
    assert BdSeqStore(state / "sparkplug_bdseq.json").peek() == 1


def test_ndeath_will_on_kill_matches_birth_and_bdseq_increments(broker, recorder_factory,
                                                                tmp_path):
    rec = recorder_factory(broker.port, "spBv1.0/#")
    state = tmp_path / "state"
    cfg = sp_config(broker.port, keepalive=5).model_dump()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for life in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "tests.edge.mqtt.publisher_proc",
                                 json.dumps(cfg), str(state), "3", "--first", str(10 * life + 1)],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda n=life: len(_psd(rec)) == 3 * (n + 1), timeout=20)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            proc.stdout.close()  # type: ignore[union-attr]
        assert wait_for(lambda n=life: len(_of(rec, "NDEATH")) == n + 1, timeout=10)
    births, deaths = _of(rec, "NBIRTH"), _of(rec, "NDEATH")
    assert [b["metrics"]["bdSeq"] for b in births] == [0, 1]
    assert [d["metrics"]["bdSeq"] for d in deaths] == [0, 1]  # will pairs with its birth
    ndeath_msgs = [m for m in rec.all if m.topic == NODE.format("NDEATH")]
    assert all(m.qos == 1 and not m.retain for m in ndeath_msgs)
    nbirth_msgs = [m for m in rec.all if m.topic == NODE.format("NBIRTH")]
    assert all(m.qos == 0 for m in nbirth_msgs)  # Sparkplug: NBIRTH/NDATA QoS 0


def test_backlog_is_flagged_historical(recorder_factory, tmp_path):
    # a persistent broker and a durable subscriber: what the sink sends while the
    # subscriber is still reconnecting after the broker's restart is queued for it. Only
    # QoS 1 is queued for an offline session, so NDATA goes at QoS 1 here: at QoS 0 the
    # backlog is lost whenever the sink reconnects before the subscriber does.
    broker = make_broker(tmp_path, persistence=True)
    broker.start()
    try:
        rec = recorder_factory(broker.port, "spBv1.0/#", persistent_id="sp-historical-rec")
        state = tmp_path / "state"
        broker.stop()
        sink = MqttSink(sp_config(broker.port, reconnect_min_s=0.3, reconnect_max_s=0.3,
                                  sparkplug_ndata_qos=1), state_dir=state)
        sink.open()
        try:
            sink.publish(fake_report(1))
            sink.publish(fake_report(2))
            broker.start()
            assert wait_for(lambda: len(_psd(rec)) == 2, timeout=20)
            sink.publish(fake_report(3))
            assert wait_for(lambda: len(_psd(rec)) == 3, timeout=20)
        finally:
            sink.close()
    finally:
        broker.stop()
    data = _psd(rec)
    assert [d["metrics"]["PSD/Batch ID"] for d in data] == [1, 2, 3]
    assert [d["historical"]["PSD/x50_3 um"] for d in data] == [True, True, False]


def test_malformed_ncmd_ignored_with_log(broker, recorder_factory, tmp_path, caplog):
    rec = recorder_factory(broker.port, "spBv1.0/#")
    sink = MqttSink(sp_config(broker.port), state_dir=tmp_path)
    sink.open()
    try:
        assert wait_for(lambda: len(_of(rec, "NBIRTH")) == 1)
        rec.client.publish(NODE.format("NCMD"), b"\xff\xff garbage", qos=0)
        bad = pb.Payload()
        bad.metrics.add(name="Node Control/Close Batch", datatype=pb.Boolean, boolean_value=True)
        rec.client.publish(NODE.format("NCMD"), bad.SerializeToString(), qos=0)
        assert wait_for(lambda: len([r for r in caplog.records
                                     if "ignored message" in r.getMessage()]) == 2)
        assert len(_of(rec, "NBIRTH")) == 1  # no rebirth, still connected
        assert sink.health()["connected"]
    finally:
        sink.close()
    msgs = [r.getMessage() for r in caplog.records if "ignored message" in r.getMessage()]
    assert "not a Sparkplug B payload" in msgs[0]
    assert "commands are disabled" in msgs[1]
