"""Payload models, shipped JSON Schemas (in sync with the models) and payload-schema CLI."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from edge.clikit import dispatch
from edge.commands.payload_schema import render_all
from edge.mqtt.payloads import PAYLOAD_MODELS, HealthPayload, PsdPayload, StatusPayload
from tests.edge.mqtt.conftest import psd_payload

SCHEMAS = Path(__file__).resolve().parents[3] / "edge" / "schemas"
CMDS = {"payload-schema": "edge.commands.payload_schema"}


def test_shipped_schemas_are_generated_from_the_models():
    shipped = {p.name.removesuffix(".schema.json"): p.read_text()
               for p in SCHEMAS.glob("*.schema.json")}
    assert set(shipped) == set(PAYLOAD_MODELS)
    generated = render_all()
    for name, text in generated.items():
        assert shipped[name] == text, (
            f"edge/schemas/{name}.schema.json is stale: run "
            "crystal-edge payload-schema --out edge/schemas")


def test_schemas_are_valid_2020_12_and_accept_real_payloads():
    for text in render_all().values():
        jsonschema.Draft202012Validator.check_schema(json.loads(text))
    schema = json.loads((SCHEMAS / "psd.schema.json").read_text())
    jsonschema.validate(psd_payload(1), schema)
    jsonschema.validate(psd_payload(2, empty=True), schema)
    bad = psd_payload(3)
    bad["statistics"]["x50_3_um"] = "58"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = psd_payload(3)
    bad["extra_field"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    # every field is required in the serialised form: integrators can rely on presence
    assert {"batch_id", "statistics", "lognormal", "model"} <= set(schema["required"])


def test_psd_payload_round_trip_and_checks():
    p = psd_payload(5)
    again = PsdPayload.model_validate(json.loads(json.dumps(p))).to_payload()
    assert again == p
    assert p["classes"]["Q3"][-1] == pytest.approx(1.0)
    assert sum(p["classes"]["q3"]) == pytest.approx(1.0)
    assert p["statistics"]["x50_3_ci95_um"] == [56.0, 61.5]
    short = psd_payload(5)
    short["classes"]["q0"] = short["classes"]["q0"][:3]
    with pytest.raises(ValidationError, match=r"classes\.q0 has 3 values, upper_edges_um has 101"):
        PsdPayload.model_validate(short)
    backwards = psd_payload(5)
    backwards["batch_end"], backwards["batch_start"] = (backwards["batch_start"],
                                                       backwards["batch_end"])
    with pytest.raises(ValidationError, match="batch_end is before batch_start"):
        PsdPayload.model_validate(backwards)
    naive = psd_payload(5)
    naive["batch_start"] = datetime(2026, 1, 1).isoformat()
    with pytest.raises(ValidationError, match="timezone"):
        PsdPayload.model_validate(naive)


def test_status_and_health_defaults():
    s = StatusPayload(device_id="d", state="offline").to_payload()
    assert s["since"] is None and s["schema_id"] == "crystal-psd/status"
    h = HealthPayload(device_id="d", time=datetime.fromisoformat("2026-11-30T00:00:00+00:00"))
    assert h.to_payload()["time"] == "2026-11-30T00:00:00Z"


def test_cli_writes_and_prints_schemas(tmp_path, capsys):
    assert dispatch("crystal-edge", "t", CMDS, ["payload-schema", "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["command.schema.json", "health.schema.json", "psd.schema.json",
                       "status.schema.json"]
    assert (tmp_path / "psd.schema.json").read_text() == (SCHEMAS / "psd.schema.json").read_text()
    capsys.readouterr()
    assert dispatch("crystal-edge", "t", CMDS, ["payload-schema", "--name", "status"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["$id"].endswith("/status.v1.schema.json")
    assert dispatch("crystal-edge", "t", CMDS, ["payload-schema"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == set(PAYLOAD_MODELS)


def test_cli_unwritable_out_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = dispatch("crystal-edge", "t", CMDS, ["payload-schema", "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("crystal-edge: error: --out ") and err.count("\n") == 1


def test_health_from_a_status_snapshot():
    """The MQTT health message of a snapshot: the snapshot's fields under their own
    names, the MQTT sink's state from the sink, the rest in details."""
    from edge.mqtt.payloads import HealthPayload
    from edge.service.snapshot import StatusSnapshot

    snap = StatusSnapshot(
        state="running", device_id="dev1", time="2026-11-30T00:00:00+00:00",
        uptime_s=12.5, frames_per_s=14.2, frames_total=180, batches_total=3,
        queue_depths={"inference": 1, "post": 0}, current_batch_id=4, last_batch_id=3,
        last_batch={"batch_id": 3, "x50_3_um": 80.0}, sinks={"mqtt": {"connected": True}},
        stages={"inference": {"items": 180}}, outbox_depth=5)
    own = {"connection": "connected", "outbox_depth": 2, "outbox_dropped": 0, "published": 3}
    h = HealthPayload.from_snapshot(snap, device_id="dev1", sink=own, uptime_s=99.0)
    p = h.to_payload()
    assert p["time"] == "2026-11-30T00:00:00Z"  # the snapshot's time, not the send time
    assert p["uptime_s"] == 12.5 and p["frames_per_s"] == 14.2
    assert p["frames_total"] == 180 and p["batches_total"] == 3 and p["state"] == "running"
    assert p["queue_depths"] == {"inference": 1, "post": 0}
    assert p["outbox_depth"] == 2 and p["last_batch_id"] == 3  # the sink's own depth
    assert "last_batch" not in p["details"] and "frames_per_s" not in p["details"]
    assert p["details"]["stages"]["inference"]["items"] == 180
    assert p["details"]["frames_used_total"] == 0
    # before the pipeline's first snapshot: the sink's uptime
    assert HealthPayload.from_snapshot({}, device_id="dev1", sink=own,
                                       uptime_s=99.0).uptime_s == 99.0
    # without the sink's state: the snapshot's outbox depth
    assert HealthPayload.from_snapshot(snap, device_id="dev1").outbox_depth == 5
    with pytest.raises(ValidationError):
        HealthPayload.from_snapshot({"queue_depths": "full"}, device_id="dev1", sink=own)


def test_shipped_schemas_load_as_package_data():
    from edge import schemas

    for name in schemas.NAMES:
        version = 2 if name == "psd" else 1  # the psd payload has its own version
        assert schemas.load(name)["$id"].endswith(f"/{name}.v{version}.schema.json")
    with pytest.raises(ValueError, match="unknown payload schema 'x'"):
        schemas.load("x")
