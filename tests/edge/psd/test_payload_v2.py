"""psd payload schema version 2: a fixed class grid, ISO 9276-1 names, process values.

Two batches of different sieve fractions carry the same classes; the shipped JSON Schema
accepts both; ``Q``/``q`` mean the same in the analyze report, its CSV, the payload and the
Sparkplug metrics (decoded from the real protobuf, DataSet and DoubleArray modes); the
process values are exact on a hand-computed case.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from edge.measure import MeasureConfig, measure_crystals
from edge.measure.crystals import COLUMNS, Crystals
from edge.mqtt.sparkplug import codec
from edge.mqtt.sparkplug import sparkplug_b_pb2 as pb
from edge.psd import (
    AGGLOMERATE_REASONS,
    FRAME_REJECT_REASONS,
    PsdAccumulator,
    PsdConfig,
    class_edges,
)
from edge.report import CLASSES_CSV_COLUMNS, build_report, write_classes_csv
from edge.service.pipeline.batch import BatchAggregator, BatchConfig, BatchCounter
from edge.sinks.psd_payload import PSD_SCHEMA_VERSION, PsdPayload, psd_payload
from edge.sources.base import Frame
from edge.vision.quality import REASONS as QUALITY_REASONS
from edge.vision.result import FrameResult

SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "edge" / "schemas"
                     / "psd.schema.json").read_text())
PX = 1.45
CFG = PsdConfig(bootstrap_n=50)
MODEL = {"name": "m", "sha256": "0" * 64, "backend": "onnxruntime-cpu", "precision": "fp32"}


def _sieve_frame(seed: int, r_px: tuple[int, int], n: int = 14) -> np.ndarray:
    """A mask of separate discs with radii in ``r_px`` (one sieve fraction)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((400, 400), np.uint8)
    placed: list[tuple[int, int, int]] = []
    for _ in range(400):
        if len(placed) == n:
            break
        r = int(rng.integers(*r_px))
        x, y = (int(v) for v in rng.integers(r + 2, 400 - r - 2, 2))
        if all((x - a) ** 2 + (y - b) ** 2 > (r + c + 4) ** 2 for a, b, c in placed):
            placed.append((x, y, r))
            cv2.circle(mask, (x, y), r, 1, -1)
    return mask


def _batch(tmp_path: Path, r_px: tuple[int, int], seed: int) -> dict:
    """A closed batch of three frames of one sieve fraction, as the sinks publish it."""
    tmp_path.mkdir()
    agg = BatchAggregator(config=BatchConfig(frames=3), counter=BatchCounter(tmp_path),
                          device_id="dev", px_size_um=PX, model=MODEL, psd_config=CFG)
    acc = PsdAccumulator(CFG)
    for i in range(3):
        c = measure_crystals(_sieve_frame(seed + i, r_px), px_size_um=PX)
        agg.add_result(Frame(name=f"f{i}", seq=i, image=None, t_capture=1.7e9 + i),
                       acc.contribution(c))
    rep = agg.close("frames")
    assert rep is not None
    return psd_payload(rep)


def _check_iso(classes: dict) -> None:
    """``Q3`` cumulative, monotone, ending at 1; ``q3`` the class fractions summing to 1."""
    Q3, q3 = np.array(classes["Q3"]), np.array(classes["q3"])
    assert np.all(np.diff(Q3) >= -1e-12) and Q3[-1] == pytest.approx(1.0)
    assert q3.sum() == pytest.approx(1.0) and np.allclose(np.cumsum(q3), Q3)
    assert np.array(classes["q0"]).sum() == pytest.approx(1.0)
    assert np.allclose(np.cumsum(classes["q0"]), classes["Q0"])


def test_two_sieve_fractions_carry_identical_grids_and_validate(tmp_path):
    fine = _batch(tmp_path / "a", (4, 9), seed=1)
    coarse = _batch(tmp_path / "b", (22, 34), seed=7)
    assert fine["statistics"]["x50_3_um"] < 30 and coarse["statistics"]["x50_3_um"] > 60
    for p in (fine, coarse):
        jsonschema.validate(p, SCHEMA)
        assert p["schema_version"] == PSD_SCHEMA_VERSION == 2
        _check_iso(p["classes"])
    grid = ("lower_edges_um", "upper_edges_um")
    assert [fine["classes"][k] for k in grid] == [coarse["classes"][k] for k in grid]
    edges = class_edges(CFG)
    assert fine["classes"]["lower_edges_um"] == edges[:-1].tolist()
    assert fine["classes"]["upper_edges_um"] == [*edges[1:-1].tolist(), None]
    assert len(fine["classes"]["Q3"]) == len(coarse["classes"]["Q3"]) == 101
    for p in (fine, coarse):
        assert (p["class_min_um"], p["class_width_um"], p["class_max_um"]) == (0, 10, 1000)
        assert set(p["frames"]["rejected_by_reason"]) == set(FRAME_REJECT_REASONS)
        assert p["process"]["crystals_per_frame"] == pytest.approx(
            p["crystals"]["measured"] / 3)
        assert p["confidence"] is None  # no frame carries a domain score
    # a schema-valid payload with one key renamed the version-1 way is refused
    old = json.loads(json.dumps(fine))
    old["classes"]["q3"] = old["classes"].pop("Q3")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(old, SCHEMA)


def _crystals(rows: list[dict], *, frame_shape=(100, 100)) -> Crystals:
    """Real ``Crystals`` with the given columns (the others zero)."""
    n = len(rows)
    cols = {name: np.zeros((n, *tail), dtype=dtype) for name, (dtype, tail) in COLUMNS.items()}
    for i, row in enumerate(rows):
        for key, value in row.items():
            cols[key][i] = value
    cols["kept"] = cols["reason"] == ""
    return Crystals(**cols, contours=[np.zeros((1, 2), np.int32)] * n, frame_shape=frame_shape,
                    px_size_um=1.0, roi_area_px=frame_shape[0] * frame_shape[1])


def _kept(d, fmax, fmin, circ):
    return {"diameter_um": d, "feret_max_um": fmax, "feret_min_um": fmin,
            "aspect_ratio": fmax / fmin, "circularity": circ, "reason": ""}


def _constructed_frames() -> list[FrameResult]:
    agglo = AGGLOMERATE_REASONS[0]
    f1 = _crystals([_kept(10.0, 12.0, 8.0, 0.90), _kept(30.0, 40.0, 20.0, 0.80),
                    _kept(50.0, 60.0, 45.0, 0.85),
                    {"diameter_um": 40.0, "reason": agglo},
                    {"diameter_um": 70.0, "reason": "border"}])
    f2 = _crystals([_kept(15.0, 18.0, 12.0, 0.95)])
    return [FrameResult.from_mask("f1", f1, domain_score=0.9),
            FrameResult.from_mask("f2", f2, domain_score=0.7),
            FrameResult.from_error("f3", "out_of_domain", domain_score=0.2),
            FrameResult.from_error("f4", "a_reason_nobody_listed")]


def test_process_values_on_a_constructed_case():
    acc = PsdAccumulator(PsdConfig(bootstrap_n=0, fines_below_um=20.0), clear_border=False)
    for f in _constructed_frames():
        acc.add_frame(f)
    pv = acc.result().process
    kept_v = 10.0**3 + 30.0**3 + 50.0**3 + 15.0**3
    assert pv.crystals_per_frame == 2.0  # 4 kept crystals in 2 used frames
    assert pv.agglomerate_fraction_number == pytest.approx(1 / 5)
    assert pv.agglomerate_fraction_volume == pytest.approx(40.0**3 / (40.0**3 + kept_v))
    # number medians of 4 values (midpoint rule): halfway between the 2nd and 3rd
    assert pv.x50_feret_max_um == pytest.approx((18.0 + 40.0) / 2)
    assert pv.x50_feret_min_um == pytest.approx((12.0 + 20.0) / 2)
    ratios = sorted([12 / 8, 40 / 20, 60 / 45, 18 / 12])
    assert pv.median_aspect_ratio == pytest.approx((ratios[1] + ratios[2]) / 2)
    assert pv.median_circularity == pytest.approx((0.85 + 0.90) / 2)
    assert pv.fines_fraction_number == 0.5  # 10 and 15 um of 4
    assert pv.fines_fraction_volume == pytest.approx((10.0**3 + 15.0**3) / kept_v)
    assert pv.confidence == pytest.approx((0.9 + 0.7 + 0.2) / 3)
    expected = dict.fromkeys(FRAME_REJECT_REASONS, 0) | {"out_of_domain": 1, "other": 1}
    assert pv.frames_rejected_by_reason == expected


def test_closed_reason_list_covers_the_quality_gate():
    assert set(QUALITY_REASONS) <= set(FRAME_REJECT_REASONS)
    assert {"out_of_domain", "unreadable", "bad_shape", "other"} <= set(FRAME_REJECT_REASONS)
    assert all(meaning and "\n" not in meaning for meaning in FRAME_REJECT_REASONS.values())


def test_report_and_csv_use_the_iso_names_and_the_same_grid(tmp_path):
    frames = _constructed_frames()
    rep = build_report(frames, mode="masks", px_size_um=1.0,
                       measure_config=MeasureConfig(clear_border=False),
                       psd_config=PsdConfig(bootstrap_n=0))
    doc = rep.to_payload()
    json.dumps(doc, allow_nan=False)
    assert len(doc["bins"]) == 101 and doc["bins"][-1]["upper_um"] is None
    bins = {k: [b[k] for b in doc["bins"]] for k in ("Q3", "q3", "Q0", "q0")}
    _check_iso(bins)
    assert doc["process"]["x50_feret_max_um"] == pytest.approx(29.0)
    assert doc["confidence"] == pytest.approx(0.6)
    assert doc["frames_rejected_by_reason"]["out_of_domain"] == 1
    assert [i.get("domain_score") for i in doc["images"]] == [0.9, 0.7, 0.2, None]
    path = write_classes_csv(rep, tmp_path / "r.classes.csv")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CLASSES_CSV_COLUMNS
    assert [float(r["Q3"]) for r in rows] == pytest.approx(bins["Q3"])
    assert sum(float(r["q3"]) for r in rows) == pytest.approx(1.0)
    assert rows[-1]["upper_um"] == "" and float(rows[-1]["lower_um"]) == 1000.0


def _sparkplug(payload: dict, classes: str) -> dict:
    """The NDATA metrics of ``payload`` as a host decodes them from the wire."""
    p = pb.Payload(seq=1)
    codec.add_psd_metrics(p, PsdPayload.model_validate(payload), classes=classes)
    return codec.decode(p.SerializeToString())


@pytest.mark.parametrize("mode", ["dataset", "arrays"])
def test_sparkplug_metrics_carry_the_payload_values(tmp_path, mode):
    frames = _constructed_frames()
    agg = BatchAggregator(config=BatchConfig(frames=10), counter=BatchCounter(tmp_path),
                          device_id="dev", px_size_um=1.0, model=MODEL,
                          psd_config=PsdConfig(bootstrap_n=0), clear_border=False)
    acc = PsdAccumulator(PsdConfig(bootstrap_n=0), clear_border=False)
    for i, f in enumerate(frames):
        fr = Frame(name=f.name, seq=i, image=None, t_capture=datetime(
            2026, 1, 1, tzinfo=timezone.utc).timestamp() + i)
        contrib = acc.frame_contribution(f)
        if contrib is None:
            agg.add_rejection(fr, f.reject_reason or "", domain_score=f.domain_score)
        else:
            agg.add_result(fr, contrib)
    payload = psd_payload(agg.close("frames"))
    jsonschema.validate(payload, SCHEMA)
    got = _sparkplug(payload, mode)
    m, types = got["metrics"], got["datatypes"]
    columns = ("lower_edges_um", "upper_edges_um", "counts", "q0", "q3", "Q0", "Q3")
    if mode == "dataset":
        assert types["PSD/Classes"] == pb.DataSet
        table = m["PSD/Classes"]
        assert not any(k.startswith("PSD/Classes/") for k in m)
    else:
        assert "PSD/Classes" not in m
        assert all(types[f"PSD/Classes/{c}"] == pb.DoubleArray for c in columns)
        table = {c: m[f"PSD/Classes/{c}"] for c in columns}
    for c in columns:
        want = [np.nan if v is None else v for v in payload["classes"][c]]
        np.testing.assert_array_equal(np.array(table[c], float), np.array(want, float))
    for key, value in payload["process"].items():
        assert m[f"PSD/Process/{key}"] == (pytest.approx(value) if value is not None else None)
    for reason, n in payload["frames"]["rejected_by_reason"].items():
        assert m[f"PSD/Frames Rejected/{reason}"] == n
    assert m["PSD/Confidence"] == pytest.approx(0.6) == payload["confidence"]
    assert m["PSD/Class Max um"] == 1000.0 and m["PSD/Class Min um"] == 0.0
    # a birth without a batch declares the same metrics, null
    birth = pb.Payload(seq=0)
    codec.add_psd_metrics(birth, None, classes=mode)
    names = {x.name for x in birth.metrics}
    assert names == set(m) and all(x.is_null for x in birth.metrics)


def test_a_grid_without_classes_is_one_line_naming_the_key(tmp_path):
    from edge.errors import UserError
    from edge.service.config import load_config

    path = tmp_path / "c.toml"
    path.write_text("[psd]\nclass_min_um = 50.0\nclass_max_um = 20.0\n")
    with pytest.raises(UserError) as err:
        load_config(path)
    assert "\n" not in str(err.value) and "psd.class_max_um" in str(err.value)
    path.write_text("[psd]\nclass_width_um = 0.01\nclass_max_um = 1000.0\n")
    with pytest.raises(UserError, match=r"100000 classes \(at most 10000\)"):
        load_config(path)
