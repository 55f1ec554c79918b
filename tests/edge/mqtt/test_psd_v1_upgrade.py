"""A version-1 report waiting in the outbox across an upgrade: Sparkplug sends it in the
version-2 metrics (classes moved onto the fixed grid) instead of dropping it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edge.mqtt.outbox import OutboxItem
from edge.mqtt.sparkplug import codec
from edge.mqtt.sparkplug.mode import SparkplugMode
from edge.sinks.psd_v1 import upgrade_v1
from tests.edge.mqtt.conftest import mqtt_config

SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "edge" / "schemas"
                     / "psd.schema.json").read_text())

#: The version-1 example of docs/mqtt.md (classes from 20 to 60 um only, cumulative q).
V1 = {"schema_id": "crystal-psd/psd", "schema_version": 1, "device_id": "dev1", "batch_id": 42,
      "batch_start": "2026-11-30T08:42:00Z", "batch_end": "2026-11-30T08:43:00Z",
      "frames": {"used": 10, "rejected": 2, "rejected_by_reason": {"blur": 1, "blank": 1}},
      "crystals": {"measured": 40, "rejected": 3, "rejected_by_reason": {"border": 3}},
      "px_size_um": 1.45, "class_width_um": 10.0,
      "classes": {"upper_edges_um": [30.0, 40.0, 50.0, 60.0],
                  "q3": [0.1, 0.1, 0.6, 1.0], "q0": [0.25, 0.25, 0.75, 1.0],
                  "counts": [10.0, 0.0, 20.0, 10.0]},
      "statistics": {"x10_3_um": 30.0, "x50_3_um": 45.0, "x90_3_um": 58.0, "x50_0_um": 42.0,
                     "span": 0.6, "d32_um": 44.0, "x50_3_ci95_um": [43.0, 47.0]},
      "lognormal": {"x50_3_um": 45.5, "s_lnd": 0.2, "rmse": 0.01},
      "model": {"name": "m", "sha256": "ab" * 32, "backend": "tensorrt", "precision": "fp16"},
      "software_version": "0.1.0"}


def test_upgrade_moves_the_classes_onto_the_fixed_grid():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(V1, SCHEMA)
    p = upgrade_v1(V1)
    jsonschema.validate(p, SCHEMA)
    c = p["classes"]
    assert len(c["Q3"]) == 101 and c["lower_edges_um"][2:6] == [20.0, 30.0, 40.0, 50.0]
    assert c["counts"][2:6] == [10.0, 0.0, 20.0, 10.0] and sum(c["counts"]) == 40
    assert c["Q3"][:7] == pytest.approx([0.0, 0.0, 0.1, 0.1, 0.6, 1.0, 1.0])
    assert c["q3"][2:6] == pytest.approx([0.1, 0.0, 0.5, 0.4])
    assert c["Q0"][-1] == 1.0 and np.sum(c["q0"]) == pytest.approx(1.0)
    assert p["frames"]["rejected_by_reason"]["other"] == 1  # 'blur' is not on the list
    assert p["frames"]["rejected_by_reason"]["blank"] == 1
    assert p["process"]["crystals_per_frame"] == 4.0 and p["confidence"] is None
    assert upgrade_v1(p) is p  # version 2 passes through
    assert V1["schema_version"] == 1  # the stored report is not changed


def test_sparkplug_sends_a_stored_v1_report_as_v2_metrics(tmp_path):
    mode = SparkplugMode(mqtt_config(1883, mode="sparkplug"), device_id="dev1",
                         state_dir=tmp_path)
    item = OutboxItem(id=1, batch_id=42, created=0.0, payload=json.dumps(V1))
    msg = mode.batch(item, json.loads(item.payload), historical=True)
    m = codec.decode(msg.payload)["metrics"]
    assert m["PSD/Batch ID"] == 42 and m["PSD/x50_3 um"] == 45.0
    assert m["PSD/Classes"]["Q3"][:6] == pytest.approx([0.0, 0.0, 0.1, 0.1, 0.6, 1.0])
    assert m["PSD/Process/crystals_per_frame"] == 4.0
    assert json.loads(m["PSD/Report JSON"])["schema_version"] == 2
