"""scripts/field_band.py: crystal IoU at the field stop and inside it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from trainer.cli import main as train_cli

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "crystal-seg.onnx"


def _script():
    spec = importlib.util.spec_from_file_location("field_band", ROOT / "scripts" / "field_band.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_field_distance_is_positive_inside_and_scales_with_the_map():
    fb = _script()
    d = fb.field_distance((4, 8), {"cx": 8.0, "cy": 4.0, "r": 6.0}, 0.5)
    # the circle is in pixel-index coordinates (frame pixel 8 spans 8..9, centre 8.5): map
    # pixel (row 1, col 3) has its centre at (3.5, 1.5), the circle's centre (4.25, 2.25)
    # at map scale, radius 3
    assert d[1, 3] == pytest.approx(3.0 - np.hypot(3.5 - 4.25, 1.5 - 2.25))
    assert d[0, 0] < 0 < d[2, 4]
    # at the frame's own scale the zero level is the generator's field test
    # (trainer.synth.render: (x - cx)^2 + (y - cy)^2 <= r^2 at pixel indices)
    field = {"cx": 20.3, "cy": 14.7, "r": 11.2}
    yy, xx = np.mgrid[0:30, 0:40]
    inside = (xx - field["cx"]) ** 2 + (yy - field["cy"]) ** 2 <= field["r"] ** 2
    assert np.array_equal(fb.field_distance((30, 40), field, 1.0) >= 0, inside)


@pytest.mark.slow
def test_the_zones_split_the_frames_confusion(tmp_path, capsys):
    fb = _script()
    data = tmp_path / "needles"
    assert train_cli(["synth", "--out", str(data), "--preset", "needles", "--n", "2",
                      "--seed", "7", "--size", "480x352"]) == 0
    res = fb.band_iou(MODEL, data, band_um=35.0)
    frame, band, inside = res["frame"], res["band"], res["inside"]
    assert res["frames"] == 2 and frame["tp"] > 0
    for key in ("tp", "fp", "fn"):  # band and inside are disjoint parts of the frame
        assert band[key] + inside[key] <= frame[key]
    assert 0.0 < band["iou_crystal"] <= 1.0 and 0.0 < inside["iou_crystal"] <= 1.0
    every = fb.band_iou(MODEL, data, band_um=1e6)  # a band wider than the frame
    assert {k: every["band"][k] for k in ("tp", "fp", "fn")} == \
        {k: frame[k] for k in ("tp", "fp", "fn")}
    assert every["inside"]["tp"] == 0
    assert fb.main(["--model", str(MODEL), "--data", str(data)]) == 0
    assert "inside  crystal IoU" in capsys.readouterr().out


def test_a_folder_without_truth_is_one_line_and_exit_2(tmp_path, capsys):
    assert _script().main(["--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no truth.json" in err[0]


@pytest.mark.slow
def test_an_unreadable_frame_is_named_in_one_line(tmp_path, capsys):
    data = tmp_path / "set"
    assert train_cli(["synth", "--out", str(data), "--n", "1", "--seed", "3",
                      "--size", "320x240"]) == 0
    frame = next((data / "images").iterdir())
    frame.write_bytes(b"not a png")
    assert _script().main(["--model", str(MODEL), "--data", str(data)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and frame.name in err[0]
