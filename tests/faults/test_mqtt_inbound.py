"""Retained, malformed and repeated MQTT messages, and a broker that keeps dropping us.

The real service (:func:`running_service` in a thread), a real Mosquitto and a subscriber
standing in for the DCS. Junk on the command topic (retained before the service starts,
and live: nested 5000 levels deep, over ``max_inbound_bytes``, invalid UTF-8) must leave
the service on its one connection, with one log line per message naming the topic; every
batch arrives exactly once and in order; a retained ``reload_config`` reloads nothing and
a burst of ten live ones reloads once. A broker restarted again and again right after
each connection sees the reconnect delay grow instead of resetting.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest

from edge.mqtt.sparkplug import codec
from edge.mqtt.sparkplug import sparkplug_b_pb2 as pb
from tests.edge.mqtt.conftest import Recorder, make_broker
from tests.edge.sources.helpers import running_service
from tests.faults.conftest import wait_until, write_config, write_frames

CLIENT = "crystal-psd-test-01"
CMD = "plant/cryst/test-01/cmd"
NCMD = "spBv1.0/plant1/NCMD/test-01"
RECOVER_S = 30.0  # every wait below: the service has recovered within this time

DEEP_JSON = b"[" * 5000 + b"]" * 5000  # 10 kB: under the size cap, beyond any recursion
OVERSIZE_JSON = json.dumps({"command": "close_batch", "request_id": "x" * 40_000}).encode()
BAD_UTF8 = b'{"command": "close_batch", "request_id": "\xff\xfe"}'
RELOAD = json.dumps({"command": "reload_config", "request_id": "retained-1"}).encode()


def _mqtt_section(port: int, *, protocol: str, mode: str = "json",
                  commands: bool = True) -> str:
    return (f'\n[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n'
            f'topic_prefix = "plant/cryst"\ncommands_enabled = {str(commands).lower()}\n'
            f'protocol = "{protocol}"\nmode = "{mode}"\nsparkplug_group_id = "plant1"\n'
            'reconnect_min_s = 0.2\nreconnect_max_s = 4.0\n')


def _connects(broker) -> int:
    """CONNECTs of the service's client id in the broker's log."""
    return len(re.findall(rf"New client connected from \S+ as {CLIENT} ", broker.log_text()))


def _publish_retained(port: int, topic: str, payload: bytes) -> None:
    pub = Recorder(port, "nothing/here")
    info = pub.client.publish(topic, payload, qos=1, retain=True)
    info.wait_for_publish(5)
    pub.close()


def _mqtt_sink(svc):
    return next(s for s in svc.pipeline.sinks if s.name == "mqtt")


def _lines(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


def _psd_ids(rec: Recorder) -> list[int]:
    return [json.loads(m.payload)["batch_id"] for m in rec.on("/psd")]


def _status(rec: Recorder) -> list[dict]:
    return [json.loads(m.payload) for m in rec.on("/status")]


@pytest.mark.parametrize("case", [("5", DEEP_JSON), ("3.1.1", RELOAD)],
                         ids=["v5-retained-deep-json", "v311-retained-reload"])
def test_junk_commands_keep_one_connection_and_deliver_every_batch_once(
        workdir: Path, tiny_model: Path, broker, caplog, case: tuple[str, bytes]):
    protocol, retained = case
    caplog.set_level(logging.INFO)
    _publish_retained(broker.port, CMD, retained)  # waiting on the broker before we start
    cfg_path = workdir / "config.toml"
    write_config(cfg_path, model=tiny_model, batch_frames=2,
                 extra=_mqtt_section(broker.port, protocol=protocol))
    rec = Recorder(broker.port, "plant/cryst/#")
    try:
        with running_service(cfg_path) as svc:
            # the folder was empty at start: the backend loads with the first frame
            wait_until(lambda: _status(rec), RECOVER_S, "the retained status")
            assert _status(rec)[0]["backend"] == "pending"
            write_frames(workdir / "in", [f"a{i}.png" for i in range(4)])
            wait_until(lambda: _psd_ids(rec) == [1, 2], RECOVER_S, "batches 1 and 2")
            backend = json.loads(rec.on("/psd")[0].payload)["model"]["backend"]
            assert backend not in ("", "pending")
            wait_until(lambda: _status(rec)[-1]["backend"] == backend, RECOVER_S,
                       "the status republished with the loaded backend")
            for junk in (DEEP_JSON, OVERSIZE_JSON, BAD_UTF8):
                rec.client.publish(CMD, junk, qos=1)
            wait_until(lambda: len(_lines(caplog, f"ignored message on {CMD}")) == 3,
                       RECOVER_S, "one log line per junk message")
            time.sleep(1.0)  # time for a dropped connection to show
            assert _connects(broker) == 1 and svc.reloads == 0
            assert _mqtt_sink(svc).health()["connected"]

            first = svc.pipeline
            for i in range(10):
                rec.client.publish(CMD, json.dumps({"command": "reload_config",
                                                    "request_id": f"op-{i}"}), qos=1)
            wait_until(lambda: svc.reloads == 1 and svc.ready.is_set()
                       and svc.pipeline is not first, RECOVER_S, "the reload")
            write_frames(workdir / "in", ["b0.png", "b1.png"])
            wait_until(lambda: len(_psd_ids(rec)) == 3, RECOVER_S, "batch 3 after the reload")
            time.sleep(1.0)
            assert svc.reloads == 1
    finally:
        rec.close()
    assert _psd_ids(rec) == [1, 2, 3]  # each exactly once, in order
    assert _connects(broker) == 2  # the first session and the one after the reload
    refused = _lines(caplog, "refused: the last reload started")
    assert 1 <= len(refused) <= 9
    junk = _lines(caplog, f"ignored message on {CMD}")
    assert len(junk) == 3
    assert "JSON nested 5000 levels deep" in junk[0].getMessage()
    assert "more than sinks.mqtt.max_inbound_bytes" in junk[1].getMessage()
    assert "not UTF-8" in junk[2].getMessage()
    assert all(len(r.getMessage()) < 300 for r in junk)  # an excerpt, not the payload
    retained_lines = _lines(caplog, f"retained message on {CMD} ignored")
    # MQTT 5: the broker never sends it (Retain Handling 2); 3.1.1: dropped on arrival
    assert len(retained_lines) == (0 if protocol == "5" else 2)
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("edge.mqtt"))
    print(f"\n{protocol}: connects={_connects(broker)} psd={_psd_ids(rec)} reloads=1 "
          f"refused={len(refused)} status backends={[s['backend'] for s in _status(rec)]}")


def _nested_template(depth: int) -> bytes:
    p = pb.Payload()
    m = p.metrics.add(name="Node Control/Rebirth", datatype=pb.Template)
    for _ in range(depth):
        m = m.template_value.metrics.add(name="x", datatype=pb.Template)
    return p.SerializeToString()


def _rebirth() -> bytes:
    p = pb.Payload(timestamp=codec.now_ms())
    p.metrics.add(name="Node Control/Rebirth", datatype=pb.Boolean, boolean_value=True)
    return p.SerializeToString()


def test_sparkplug_ncmd_junk_and_a_retained_rebirth(workdir: Path, tiny_model: Path, broker,
                                                    caplog):
    caplog.set_level(logging.INFO)
    _publish_retained(broker.port, NCMD, _rebirth())
    cfg_path = workdir / "config.toml"
    write_config(cfg_path, model=tiny_model, batch_frames=2,
                 extra=_mqtt_section(broker.port, protocol="3.1.1", mode="sparkplug",
                                     commands=False))
    rec = Recorder(broker.port, "spBv1.0/#")

    def births() -> int:
        return len([m for m in rec.all if "/NBIRTH/" in m.topic])

    def batch_ids() -> list[int]:
        out = []
        for m in rec.all:
            if "/NDATA/" in m.topic:
                d = codec.decode(m.payload)["metrics"]
                if "PSD/Batch ID" in d:
                    out.append(d["PSD/Batch ID"])
        return out

    try:
        with running_service(cfg_path) as svc:
            wait_until(births, RECOVER_S, "NBIRTH")
            write_frames(workdir / "in", [f"a{i}.png" for i in range(2)])
            for junk in (b"\xff\xff garbage", _nested_template(200), b"\x0a" * 40_000):
                rec.client.publish(NCMD, junk, qos=1)
            wait_until(lambda: len(_lines(caplog, f"ignored message on {NCMD}")) == 3,
                       RECOVER_S, "one log line per junk NCMD")
            write_frames(workdir / "in", [f"b{i}.png" for i in range(2)])
            wait_until(lambda: batch_ids() == [1, 2], RECOVER_S, "batches 1 and 2")
            time.sleep(1.0)
            assert _mqtt_sink(svc).health()["connected"]
    finally:
        rec.close()
    assert births() == 1  # the retained Rebirth asked for none
    assert _connects(broker) == 1 and batch_ids() == [1, 2]
    assert len(_lines(caplog, f"retained message on {NCMD} ignored")) == 1
    junk = [r.getMessage() for r in _lines(caplog, f"ignored message on {NCMD}")]
    assert "not a Sparkplug B payload" in junk[0] and "not a Sparkplug B payload" in junk[1]
    assert "more than sinks.mqtt.max_inbound_bytes" in junk[2]


def test_a_broker_dropping_us_right_after_connect_meets_a_growing_backoff(
        workdir: Path, tiny_model: Path, caplog, tmp_path: Path):
    """Four broker restarts, each right after the service connected: the reconnect delay
    doubles (0.2 -> 0.4 -> 0.8 -> 1.6 s, jitter -25 %), and the batches closed meanwhile
    all reach a durable subscriber in order once the broker stays up."""
    caplog.set_level(logging.INFO)
    broker = make_broker(tmp_path, persistence=True)
    broker.start()
    try:
        dcs = Recorder(broker.port, "plant/cryst/test-01/psd", persistent_id="dcs-backoff")
        cfg_path = workdir / "config.toml"
        write_config(cfg_path, model=tiny_model, batch_frames=2,
                     extra=_mqtt_section(broker.port, protocol="5"))
        with running_service(cfg_path) as svc:
            sink = _mqtt_sink(svc)
            write_frames(workdir / "in", [f"a{i}.png" for i in range(6)])
            for n in range(1, 5):
                wait_until(lambda n=n: _connects(broker) >= n and sink.health()["connected"],
                           RECOVER_S, f"connection {n}")
                broker.stop()
                broker.start()
            wait_until(lambda: sink.health()["connected"], RECOVER_S, "the last connection")
            wait_until(lambda: svc.pipeline.batches_published == 3, RECOVER_S, "3 batches")
            wait_until(lambda: sink.health()["outbox_depth"] == 0, RECOVER_S, "empty outbox")
            wait_until(lambda: {json.loads(m.payload)["batch_id"] for m in dcs.all}
                       == {1, 2, 3}, RECOVER_S, "every batch at the DCS")
        dcs.close()
    finally:
        broker.stop()
    waits = [float(m.group(1)) for r in caplog.records
             if (m := re.search(r"after it was made .*reconnecting in ([\d.]+) s",
                                r.getMessage()))]
    assert len(waits) >= 3 and waits == sorted(waits) and waits[-1] >= 3 * waits[0], waits
    ids = [json.loads(m.payload)["batch_id"] for m in dcs.all]
    assert list(dict.fromkeys(ids)) == [1, 2, 3]
    print(f"\nreconnect waits after quick drops: {waits}; psd received {ids}")
