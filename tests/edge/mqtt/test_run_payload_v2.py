"""``crystal-edge run`` through a real Mosquitto: the psd message a DCS receives is schema
version 2 and validates against the shipped ``edge/schemas/psd.schema.json``."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import jsonschema
import pytest

from edge.psd import FRAME_REJECT_REASONS
from edge.service.config import load_config
from edge.service.pipeline.app import Service
from tests.edge.mqtt.conftest import Recorder, make_broker, wait_for
from tests.edge.sources.helpers import write_config, write_frames
from tests.fixtures.tiny_model import build_tiny_model

SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "edge" / "schemas"
                     / "psd.schema.json").read_text())


@pytest.fixture
def broker(tmp_path):
    b = make_broker(tmp_path)
    b.start()
    yield b
    b.stop()


def test_run_publishes_a_v2_payload_that_validates(tmp_path, broker, monkeypatch):
    monkeypatch.delenv("CRYSTAL_EDGE_STATE_DIR", raising=False)
    model = build_tiny_model(tmp_path / "model")
    (tmp_path / "in").mkdir()
    write_frames(tmp_path / "in", ["a.png", "b.png", "c.png"])
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    mqtt = (f'\n[sinks.mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n'
            'topic_prefix = "plant/cryst"\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n')
    write_config(tmp_path / "config.toml", model=model, batch_frames=4, extra=mqtt)
    rec = Recorder(broker.port, "plant/cryst/+/psd")
    svc = Service(load_config(tmp_path / "config.toml"), install_signals=False)
    rc: list[int] = []
    th = threading.Thread(target=lambda: rc.append(svc.run()))
    th.start()
    try:
        assert svc.ready.wait(30)
        assert wait_for(lambda: rec.on("/psd"), 30), "no psd message"
    finally:
        svc.pipeline.request_stop("test")
        th.join(30)
    assert rc == [0]
    p = json.loads(rec.on("/psd")[0].payload)
    jsonschema.validate(p, SCHEMA)
    assert p["schema_version"] == 2 and p["frames"]["used"] == 3
    assert list(p["frames"]["rejected_by_reason"]) == list(FRAME_REJECT_REASONS)
    assert p["frames"]["rejected_by_reason"]["unreadable"] == 1
    c = p["classes"]
    assert len(c["Q3"]) == len(c["lower_edges_um"]) == 101 and c["Q3"][-1] == 1.0
    assert p["process"]["crystals_per_frame"] == pytest.approx(p["crystals"]["measured"] / 3)
