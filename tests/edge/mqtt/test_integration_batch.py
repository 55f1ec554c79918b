"""The runtime's real BatchReport (edge.service.pipeline.batch) through MqttSink, JSON and
Sparkplug."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edge.mqtt.sink import MqttSink
from edge.mqtt.sparkplug import codec
from edge.psd import FrameContribution, PsdConfig
from edge.service.pipeline.batch import BatchAggregator, BatchConfig, BatchCounter
from edge.sinks.psd_payload import psd_payload
from edge.sources.base import Frame
from tests.edge.mqtt.conftest import mqtt_config, wait_for

SCHEMA = Path(__file__).resolve().parents[3] / "edge" / "schemas" / "psd.schema.json"
MODEL = {"name": "crystal-seg", "sha256": "cd" * 32, "backend": "onnxruntime-cpu",
         "precision": "fp32"}


def _report(tmp_path: Path, *, empty: bool = False):
    tmp_path.mkdir(parents=True, exist_ok=True)
    agg = BatchAggregator(config=BatchConfig(frames=2), counter=BatchCounter(tmp_path),
                          device_id="dev1", px_size_um=1.45, model=MODEL,
                          psd_config=PsdConfig(bootstrap_n=50))
    rng = np.random.default_rng(3)
    for i in range(2):
        frame = Frame(name=f"f{i}", seq=i, image=np.zeros((4, 4, 3), np.uint8),
                      t_capture=time.time() + i, error=None, token=("f", i))
        d = np.array([]) if empty else rng.lognormal(np.log(60.0), 0.3, 120)
        agg.add_result(frame, FrameContribution(d, None, {"border": 2}),
                       timing_ms={"infer_ms": 10.0, "post_ms": 3.0})
    rep = agg.close("frames")
    assert rep is not None
    return rep


@pytest.mark.parametrize("mode", ["json", "sparkplug"])
def test_real_batch_report_end_to_end(broker, recorder_factory, tmp_path, mode):
    rec = recorder_factory(broker.port, "#")
    full, empty = _report(tmp_path / "a"), _report(tmp_path / "b", empty=True)
    sink = MqttSink(mqtt_config(broker.port, mode=mode, sparkplug_group_id="g"),
                    state_dir=tmp_path / "state")
    sink.open()
    try:
        sink.publish(full)
        sink.publish(empty)
        assert wait_for(lambda: sink.health()["published"] == 2)
    finally:
        sink.close()
    if mode == "json":
        got = [json.loads(m.payload) for m in rec.all if m.topic == "plant/cryst/dev1/psd"]
        for p in got:
            jsonschema.validate(p, json.loads(SCHEMA.read_text()))
        assert got[0] == psd_payload(full)  # the one psd payload, as the JSON-lines sink has it
        assert got[0]["crystals"]["measured"] == 240
        assert got[1]["statistics"]["x50_3_um"] is None
    else:
        data = [codec.decode(m.payload) for m in rec.all if m.topic == "spBv1.0/g/NDATA/dev1"]
        data = [d["metrics"] for d in data if "PSD/Batch ID" in d["metrics"]]
        assert len(data) == 2
        assert data[0]["PSD/x50_3 um"] == pytest.approx(full.psd.x50_3_um)
        assert data[0]["PSD/Crystals Measured"] == 240
        assert 40.0 < data[0]["PSD/LogNormal x50_3 um"] < 90.0
        assert data[1]["PSD/x50_3 um"] is None
