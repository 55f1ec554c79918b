"""``run`` with ``[sinks.mqtt] enabled`` against a real Mosquitto: batches on the psd topic, an
inbound ``close_batch`` command closes the open batch, health reaches the broker."""

from __future__ import annotations

import json
import threading

import pytest

from edge.service.config import load_config
from edge.service.pipeline.app import Service
from edge.service.state import read_status
from edge.sinks.jsonl import read_jsonl
from tests.edge.mqtt.conftest import Recorder, make_broker, wait_for
from tests.edge.sources.helpers import running_service, write_config, write_frames
from tests.fixtures.tiny_model import build_tiny_model


@pytest.fixture
def broker(tmp_path):
    b = make_broker(tmp_path)
    b.start()
    yield b
    b.stop()


def _setup(tmp_path, monkeypatch):
    """Tiny model, a watched folder with three frames waiting; returns the model path."""
    monkeypatch.delenv("CRYSTAL_EDGE_STATE_DIR", raising=False)
    model = build_tiny_model(tmp_path / "model")
    (tmp_path / "in").mkdir()
    write_frames(tmp_path / "in", ["a.png", "b.png", "c.png"])
    return model


def test_mqtt_batches_and_close_command(tmp_path, broker, monkeypatch):
    model = _setup(tmp_path, monkeypatch)
    mqtt = (f'\n[sinks.mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n'
            'topic_prefix = "plant/cryst"\ncommands_enabled = true\n'
            'reconnect_min_s = 0.2\nreconnect_max_s = 1.0\nhealth_interval_s = 0.3\n')
    write_config(tmp_path / "config.toml", model=model, batch_frames=100, extra=mqtt)
    rec = Recorder(broker.port, "plant/cryst/#")
    svc = Service(load_config(tmp_path / "config.toml"), install_signals=False)
    rc: list[int] = []
    th = threading.Thread(target=lambda: rc.append(svc.run()))
    th.start()
    try:
        assert svc.ready.wait(30)
        pipe = svc.pipeline
        assert wait_for(lambda: pipe.frames_total == 3, 30)
        assert wait_for(lambda: rec.on("/status"), 10)
        assert rec.on("/psd") == []  # the batch (100 frames) is still open
        rec.client.publish("plant/cryst/test-01/cmd", json.dumps(
            {"schema_id": "crystal-psd/command", "command": "close_batch",
             "request_id": "op-7"}), qos=1)
        assert wait_for(lambda: rec.on("/psd"), 15), "no psd message after close_batch"
        assert wait_for(lambda: rec.on("/health"), 10)
    finally:
        svc.pipeline.request_stop("test")
        th.join(30)
    assert rc == [0]
    psd = [json.loads(m.payload) for m in rec.on("/psd")]
    assert [(p["batch_id"], p["frames"]["used"]) for p in psd] == [(1, 3)]
    assert psd[0]["device_id"] == "test-01" and psd[0]["crystals"]["measured"] > 0
    status = json.loads(rec.on("/status")[0].payload)
    assert status["state"] == "online" and status["model_name"] == "tiny-seg"
    health = json.loads(rec.on("/health")[-1].payload)
    assert health["device_id"] == "test-01" and "queue_depths" in health
    # the same batch went to the JSON-lines sink; nothing left in the outbox
    assert [r["batch_id"] for r in read_jsonl(tmp_path / "out.jsonl")] == [1]
    final = read_status(tmp_path / "state")  # written at stop, before the sinks close
    assert final["sinks"]["mqtt"]["outbox_depth"] == 0
    assert final["sinks"]["mqtt"]["published"] == 1


def test_mqtt_reload_config_command(tmp_path, broker, monkeypatch):
    """``reload_config`` from the DCS: the open batch goes out, the service comes back with
    the re-read file (new batch size) on a new MQTT session, batch ids continue."""
    model = _setup(tmp_path, monkeypatch)
    mqtt = (f'\n[sinks.mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n'
            'topic_prefix = "plant/cryst"\ncommands_enabled = true\n'
            'reconnect_min_s = 0.2\nreconnect_max_s = 1.0\n')
    cfg_path = tmp_path / "config.toml"
    write_config(cfg_path, model=model, batch_frames=100, extra=mqtt)
    rec = Recorder(broker.port, "plant/cryst/#")
    with running_service(cfg_path) as svc:
        first = svc.pipeline
        assert wait_for(lambda: first.frames_total == 3, 30)
        cfg_path.write_text(cfg_path.read_text().replace("frames = 100\n", "frames = 2\n"))
        rec.client.publish("plant/cryst/test-01/cmd", json.dumps(
            {"schema_id": "crystal-psd/command", "command": "reload_config",
             "request_id": "op-8"}), qos=1)
        assert wait_for(lambda: svc.reloads == 1 and svc.pipeline is not None
                        and svc.pipeline is not first and svc.ready.is_set(), 30)
        write_frames(tmp_path / "in", ["d.png", "e.png"])
        assert wait_for(lambda: len(rec.on("/psd")) == 2, 30), "no batch after the reload"
    psd = [json.loads(m.payload) for m in rec.on("/psd")]
    assert [(p["batch_id"], p["frames"]["used"]) for p in psd] == [(1, 3), (2, 2)]
    assert svc.cfg.batch.frames == 2
