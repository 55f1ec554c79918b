"""Batch counter, aggregator and report -> psd payload."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edge.psd import FRAME_REJECT_REASONS, FrameContribution, PsdConfig, compute_psd
from edge.service.pipeline.batch import BatchAggregator, BatchConfig, BatchCounter
from edge.sinks.psd_payload import PsdPayload, psd_payload
from edge.sources.base import Frame

SCHEMA = Path(__file__).resolve().parents[2] / "edge" / "schemas" / "psd.schema.json"
MODEL = {"name": "m", "sha256": "ab" * 32, "backend": "onnxruntime", "precision": "fp32"}


def _frame(i: int, t: float | None = None, error: str | None = None) -> Frame:
    return Frame(name=f"f{i}", seq=i, image=np.zeros((4, 4, 3), np.uint8),
                 t_capture=time.time() if t is None else t, error=error, token=("f", i))


def _contrib(d, weights=None, rejected=None) -> FrameContribution:
    return FrameContribution(np.asarray(d, np.float64), weights, dict(rejected or {}))


def _agg(tmp_path, **kw) -> BatchAggregator:
    return BatchAggregator(config=BatchConfig(**kw), counter=BatchCounter(tmp_path),
                           device_id="dev-1", px_size_um=1.45, model=MODEL,
                           psd_config=PsdConfig(bootstrap_n=100))


def test_counter_persists(tmp_path):
    c = BatchCounter(tmp_path)
    assert c.last == 0
    assert [c.next(), c.next(), c.next()] == [1, 2, 3]
    assert BatchCounter(tmp_path).last == 3
    assert json.loads((tmp_path / "batch_counter.json").read_text())["last_batch_id"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["batch_counter.json"]  # no temp files


@pytest.mark.parametrize(("text", "outbox_ids", "expected"), [
    ('{"last_batch_id": 120, "upd', [], 120),        # cut short: the id is still legible
    ('{"last_batch_id": 12', [], "time"),            # cut inside the number: not trusted
    ('{"last_batch_id": 7, "x": 1}garbage', [98, 99], 99),  # outbox holds a higher id
    ('{"last_batch_id": -4}', [], "time"),
    ("", [], "time"),
])
def test_a_damaged_counter_continues_above_the_highest_known_id(tmp_path, text, outbox_ids,
                                                                expected, caplog):
    from edge.mqtt.outbox import Outbox

    if outbox_ids:
        box = Outbox(tmp_path / "outbox.sqlite3")
        for b in outbox_ids:
            box.put(b, "{}")
        box.close()
    (tmp_path / "batch_counter.json").write_text(text)
    t0 = int(time.time())
    c = BatchCounter(tmp_path)
    if expected == "time":
        assert t0 <= c.last <= time.time()
    else:
        assert c.last == expected
    assert c.next() == c.last and c.last > 0
    assert BatchCounter(tmp_path).last == c.last  # the new file is good
    (moved,) = tmp_path.glob("batch_counter.json.corrupt-*")
    assert moved.read_text() == text
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "batch_counter.json: batch counter unusable" in errors[0]


def test_close_by_frames_with_rejections(tmp_path):
    agg = _agg(tmp_path, frames=4)
    rng = np.random.default_rng(0)
    d1 = rng.lognormal(np.log(60), 0.3, 80)
    d2 = rng.lognormal(np.log(60), 0.3, 50)
    t0 = 1_700_000_000.0
    agg.add_result(_frame(0, t0), _contrib(d1, rejected={"border": 3}),
                   timing_ms={"infer_ms": 10, "post_ms": 4})
    agg.add_rejection(_frame(1, t0 + 1, error="unreadable: x"), "unreadable")
    assert agg.due() is None
    agg.add_result(_frame(2, t0 + 2), _contrib(d2, rejected={"border": 1, "agglomerate": 2}),
                   timing_ms={"infer_ms": 20, "post_ms": 6})
    agg.add_rejection(_frame(3, t0 + 3), "defocused")
    assert agg.n_frames == 4 and agg.due() == "frames"
    rep = agg.close("frames")
    assert rep.batch_id == 1 and agg.n_frames == 0 and agg.close("frames") is None
    assert rep.frames_used == 2 and rep.frames_rejected == 2
    assert rep.frames_rejected_by_reason == {"defocused": 1, "unreadable": 1}
    assert rep.crystals_measured == 130
    assert rep.crystals_rejected_by_reason == {"agglomerate": 2, "border": 4}
    assert rep.timing["infer_ms_mean"] == 15 and rep.timing["post_ms_mean"] == 5
    assert rep.timing["duration_s"] == 3
    assert [f.name for f in rep.frames] == ["f0", "f1", "f2", "f3"]
    assert all(f.image is None for f in rep.frames)  # no images kept in the batch
    ref = compute_psd(np.concatenate([d1, d2]), config=PsdConfig(bootstrap_n=100))
    assert rep.psd.x50_3_um == pytest.approx(ref.x50_3_um)
    pay = psd_payload(rep)
    PsdPayload.model_validate(pay)
    jsonschema.validate(pay, json.loads(SCHEMA.read_text()))
    json.dumps(pay, allow_nan=False)
    assert pay["batch_id"] == 1 and pay["device_id"] == "dev-1"
    assert pay["frames"]["used"] == 2 and pay["frames"]["rejected"] == 2
    by_reason = pay["frames"]["rejected_by_reason"]
    assert by_reason == {r: int(r in ("defocused", "unreadable")) for r in FRAME_REJECT_REASONS}
    assert pay["crystals"]["measured"] == 130 and pay["crystals"]["rejected"] == 6
    assert pay["batch_start"].startswith("2023-11-14T22:13:20")
    assert pay["statistics"]["x50_3_um"] == pytest.approx(ref.x50_3_um)
    assert pay["lognormal"]["x50_3_um"] == pytest.approx(ref.lognormal.x50_3_um)
    assert pay["classes"]["upper_edges_um"] == [*ref.edges_um[1:-1], None]
    assert pay["classes"]["lower_edges_um"] == list(ref.edges_um[:-1])
    assert pay["classes"]["Q3"][-1] == pytest.approx(1.0)
    assert sum(pay["classes"]["q3"]) == pytest.approx(1.0)
    assert pay["model"] == MODEL and pay["px_size_um"] == 1.45
    lo, hi = pay["statistics"]["x50_3_ci95_um"]
    assert lo < pay["statistics"]["x50_3_um"] < hi
    # ids continue after a restart
    agg2 = _agg(tmp_path, frames=1)
    agg2.add_rejection(_frame(9), "blank")
    rep2 = agg2.close("frames")
    assert rep2.batch_id == 2
    assert psd_payload(rep2)["statistics"]["x50_3_um"] is None  # no crystals: nulls


def test_weights_change_the_volume_distribution(tmp_path):
    agg = _agg(tmp_path, frames=10)
    d = np.array([20.0, 30.0, 40.0, 200.0])
    w = np.array([1.0, 1.0, 1.0, 5.0])
    agg.add_result(_frame(0), _contrib(d, w))
    rep = agg.close("command")
    ref_w = compute_psd(d, weights=w, config=PsdConfig(bootstrap_n=100))
    ref_u = compute_psd(d, config=PsdConfig(bootstrap_n=100))
    assert rep.psd.weighted and rep.psd.x10_3_um == pytest.approx(ref_w.x10_3_um)
    assert ref_w.x10_3_um != pytest.approx(ref_u.x10_3_um)
    with pytest.raises(ValueError, match=r"weights of shape \(2,\)"):
        agg.add_result(_frame(1), _contrib(d, w[:2]))


def test_close_by_seconds_and_discard(tmp_path):
    agg = _agg(tmp_path, frames=1000, seconds=0.15)
    agg.add_result(_frame(0), _contrib([50.0]))
    assert agg.due() is None
    time.sleep(0.2)
    assert agg.due() == "seconds"
    agg.add_result(_frame(1), _contrib([55.0]))
    dropped = agg.discard()
    assert [f.name for f in dropped] == ["f0", "f1"]
    assert agg.n_frames == 0 and agg.due() is None
    assert agg.counter.last == 0  # a discarded batch uses no id


def test_model_identity_may_be_resolved_at_close(tmp_path):
    ident = {"name": "m", "sha256": "0" * 64, "backend": "pending", "precision": ""}
    agg = BatchAggregator(config=BatchConfig(frames=1), counter=BatchCounter(tmp_path),
                          device_id="d", px_size_um=2.0, model=lambda: dict(ident))
    ident["backend"] = "tensorrt"
    agg.add_result(_frame(0), _contrib([10.0, 12.0, 14.0]))
    assert psd_payload(agg.close("frames"))["model"]["backend"] == "tensorrt"


def test_a_missing_counter_continues_above_the_waiting_outbox(tmp_path, caplog):
    from edge.mqtt.outbox import Outbox

    assert BatchCounter(tmp_path).last == 0  # first start: ids from 1
    box = Outbox(tmp_path / "outbox.sqlite3")
    box.put(30, "{}")
    box.close()
    assert BatchCounter(tmp_path).next() == 31  # counter deleted by hand: no repeat
    assert "batch ids continue above the outbox's waiting batch 30" in caplog.text


def test_a_failed_close_keeps_the_batch_and_uses_no_id(tmp_path):
    """The counter cannot be written (its path is a directory, as a full disk refuses
    it): close() raises, the batch keeps its frames, and the next close gets id 1."""
    agg = _agg(tmp_path, frames=2)
    for i in range(2):
        agg.add_result(_frame(i), _contrib([10.0, 20.0]))
    (tmp_path / "batch_counter.json").mkdir()
    with pytest.raises(OSError):
        agg.close("frames")
    assert agg.n_frames == 2 and agg.counter.last == 0
    agg.add_result(_frame(2), _contrib([30.0]))
    (tmp_path / "batch_counter.json").rmdir()
    rep = agg.close("frames")
    assert rep.batch_id == 1 and rep.frames_used == 3 and rep.crystals_measured == 5
    assert [f.name for f in rep.frames] == ["f0", "f1", "f2"] and agg.n_frames == 0
