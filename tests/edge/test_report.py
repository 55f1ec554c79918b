"""edge.report: per-input FrameResults -> one edge-corrected PSD, JSON/CSV writers, ROI
handling."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from edge.errors import UserError
from edge.measure import MeasureConfig, measure_crystals
from edge.psd import (
    PsdConfig,
    RoiSurvival,
    compute_psd,
    edge_correction_weights,
    kept_edge_weights,
)
from edge.report import build_report, write_csv, write_json
from edge.vision.result import FrameResult
from edge.vision.roi import Roi

PX = 1.45
NO_BOOT = PsdConfig(bootstrap_n=0)


def _field(shape=(300, 300), radii=(8, 14, 20), centre=(150, 150), big_r=140):
    roi = np.zeros(shape, np.uint8)
    cv2.circle(roi, centre, big_r, 1, -1)
    mask = np.zeros(shape, np.uint8)
    for i, r in enumerate(radii):
        cv2.circle(mask, (90 + 60 * i, 150), r, 1, -1)
    cv2.circle(mask, (150, 5), 12, 1, -1)  # cut by the frame edge and the ROI -> border
    return mask, roi


def test_roi_edge_correction_matches_psd_api():
    mask, roi = _field()
    c = measure_crystals(mask, px_size_um=PX, roi=roi)
    assert c.n_kept == 3 and c.rejected_counts()["border"] == 1
    field = Roi(roi != 0, "circle")
    files = [FrameResult.from_mask("a", c, roi=field), FrameResult.from_mask("b", c, roi=field)]
    rep = build_report(files, mode="images", px_size_um=PX, psd_config=NO_BOOT)
    bbox = c.bbox[c.kept]
    expect_w = edge_correction_weights(bbox[:, 2], bbox[:, 3], roi=RoiSurvival(roi))
    assert rep.weights[0] == pytest.approx(expect_w)
    assert kept_edge_weights(c, roi=roi) == pytest.approx(expect_w)
    # round crystals in a circular field are corrected more than in the full frame
    frame_w = kept_edge_weights(c)
    assert np.all(expect_w > frame_w)
    d = np.concatenate([c.diameters_um()] * 2)
    ref = compute_psd(d, weights=np.concatenate([expect_w] * 2), config=NO_BOOT)
    assert rep.psd.x50_3_um == pytest.approx(ref.x50_3_um)
    assert rep.psd.n == 6
    assert rep.n_rejected["border"] == 2


def test_payload_entries_timings_info_and_errors():
    mask, _roi = _field()
    c = measure_crystals(mask, px_size_um=PX)
    files = [
        FrameResult.from_mask("f1.png", c, timings_ms={"infer": 12.5, "measure": 3.25},
                              info={"backend": "onnxruntime-cpu"}),
        FrameResult.from_error("f2.png", "unreadable", "cannot decode as an image"),
    ]
    rep = build_report(files, mode="images", px_size_um=PX, psd_config=NO_BOOT,
                       measure_config=MeasureConfig.paper(), settings={"model": "m.onnx"})
    p = rep.to_payload()
    assert json.loads(json.dumps(p, allow_nan=False)) == p
    assert p["mode"] == "images" and p["n_images"] == 2 and p["n_images_failed"] == 1
    ok, bad = p["images"]
    assert ok["timings_ms"] == {"infer": 12.5, "measure": 3.25}
    assert ok["backend"] == "onnxruntime-cpu" and ok["status"] == "ok"
    assert ok["n_kept"] + sum(ok["n_rejected"].values()) == len(c) + sum(c.dropped.values())
    assert bad == {"frame": 1, "file": "f2.png", "status": "error", "reject_reason": "unreadable",
                   "error": "rejected: unreadable (cannot decode as an image)"}
    assert p["settings"]["model"] == "m.onnx"
    assert p["settings"]["measure"]["circularity_min"] == 0.85
    for key in ("n_crystals", "n_rejected", "x10_3_um", "x50_3_um", "x90_3_um", "x50_0_um",
                "x50_3_ci95_um", "lognormal", "bins", "span", "d32_um", "software"):
        assert key in p


def test_no_edge_correction_without_border_clearing():
    mask, _roi = _field()
    cfg = MeasureConfig(clear_border=False)
    c = measure_crystals(mask, px_size_um=PX, config=cfg)
    rep = build_report([FrameResult.from_mask("a", c)], mode="masks", px_size_um=PX,
                       measure_config=cfg, psd_config=NO_BOOT)
    assert rep.edge_correction_applied is False and rep.weights == [None]
    assert rep.psd.weighted is False and rep.psd.n == 4


def test_empty_report_and_csv_header(tmp_path):
    rep = build_report([FrameResult.from_error("x", "unreadable", "empty file")], mode="masks",
                       px_size_um=PX, psd_config=NO_BOOT)
    p = rep.to_payload()
    assert p["n_crystals"] == 0 and p["x50_3_um"] is None and p["lognormal"] is None
    out = write_csv(rep, tmp_path / "e.csv")
    header = out.read_text().strip().split(",")
    assert header[:6] == ["file", "frame", "id", "kept", "reason", "diameter_um"]
    assert header[-1] == "weight" and "bbox_w_frame_px" in header
    assert {"frame_px_size_um", "measure_px_size_um", "centroid_x_frame_px"} <= set(header)


def test_csv_rows_and_weights(tmp_path):
    mask, _roi = _field()
    c = measure_crystals(mask, px_size_um=PX)
    rep = build_report([FrameResult.from_mask("a.png", c)], mode="masks", px_size_um=PX,
                       psd_config=NO_BOOT)
    out = write_csv(rep, tmp_path / "c.csv")
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) == len(c)
    kept_rows = [r for r in rows if r["kept"] == "1"]
    assert [float(r["weight"]) for r in kept_rows] == pytest.approx(rep.weights[0])
    assert all(r["weight"] == "" for r in rows if r["kept"] == "0")
    assert {r["reason"] for r in rows if r["kept"] == "0"} == {"border"}


def test_writers_name_the_file_on_failure(tmp_path):
    rep = build_report([], mode="masks", px_size_um=PX, psd_config=NO_BOOT)
    target = tmp_path / "no_dir" / "r.json"
    with pytest.raises(UserError, match=r"no_dir/r\.json"):
        write_json(rep, target)
    with pytest.raises(UserError, match=r"no_dir/r\.csv"):
        write_csv(rep, tmp_path / "no_dir" / "r.csv")


def test_frame_result_constructors():
    mask, roi = _field()
    c = measure_crystals(mask, px_size_um=PX)
    ok = FrameResult.from_mask("a.png", c, roi=Roi(roi != 0, "circle"))
    assert ok.ok and ok.error is None and ok.reject_reason is None
    assert ok.px_size_um == PX and ok.frame_hw == (300, 300)
    assert ok.roi_mask is not None and ok.roi_mask.dtype == bool
    assert FrameResult.from_mask("b", c).roi_mask is None
    bad = FrameResult.from_error("c.png", "crowded", "crystal fraction 0.6 > 0.4")
    assert not bad.ok and bad.crystals is None
    assert bad.error == "rejected: crowded (crystal fraction 0.6 > 0.4)"
    assert FrameResult.from_error("d", None).reject_reason == "rejected"
    entry = ok.to_payload()
    assert entry["status"] == "ok" and entry["n_kept"] == c.n_kept
    assert entry["roi"]["kind"] == "circle" and "quality" not in entry
