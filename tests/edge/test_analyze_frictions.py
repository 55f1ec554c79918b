"""What a newcomer reads in the analyze outputs: which input a CSV row comes from,
positions in frame pixels with the frame's pixel size, a pixel size the model cannot
work with refused before any work, and a note on objects removed as too small."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest

from edge.errors import UserError
from edge.measure import measure_crystals
from edge.psd import PsdConfig
from edge.report import build_report, write_csv
from edge.vision.analyzer import FrameAnalyzer
from edge.vision.overlay import units_caption
from edge.vision.result import FrameResult
from tests.fixtures.tiny_model import build_tiny_model, synth_frame

FRAME_PX = 0.725  # frames at half the model's 1.45 um/px, analysed at inference scale 0.5
NO_BOOT = PsdConfig(bootstrap_n=0)
#: One disc per frame, (cx, cy, r) in frame pixels, away from the field's edge.
DISCS = [(200.0, 150.0, 16.0), (330.0, 210.0, 22.0)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("m"))


@pytest.fixture(scope="module")
def report(model):
    fa = FrameAnalyzer(model, inference_scale=0.5, px_size_um=FRAME_PX)
    frames = [(f"f{k}.png", synth_frame(400, 560, crystals=[d], seed=k))
              for k, d in enumerate(DISCS)]
    results = fa.analyze_many(frames)
    return build_report(results, mode="images", px_size_um=fa.px_size_um, psd_config=NO_BOOT)


def _csv(report, path):
    return list(csv.DictReader(write_csv(report, path).read_text().splitlines()))


def test_csv_rows_name_their_input_and_give_frame_pixels(report, tmp_path):
    rows = [r for r in _csv(report, tmp_path / "r.csv") if r["kept"] == "1"]
    assert [(r["file"], r["frame"]) for r in rows] == [("f0.png", "0"), ("f1.png", "1")]
    for r, (cx, cy, rad) in zip(rows, DISCS, strict=True):
        assert float(r["frame_px_size_um"]) == pytest.approx(FRAME_PX)
        assert float(r["measure_px_size_um"]) == pytest.approx(2 * FRAME_PX)
        # positions in frame pixels (the measured map is half the size)
        assert float(r["centroid_x_frame_px"]) == pytest.approx(cx, abs=1.0)
        assert float(r["centroid_y_frame_px"]) == pytest.approx(cy, abs=1.0)
        assert int(r["bbox_x_frame_px"]) == pytest.approx(cx - rad, abs=2)
        assert int(r["bbox_w_frame_px"]) == pytest.approx(2 * rad, abs=3)
        # the measurement itself is unchanged: the diameter in um
        assert float(r["diameter_um"]) == pytest.approx(2 * rad * FRAME_PX, abs=2 * FRAME_PX)
    entries = report.to_payload()["images"]
    assert [e["frame"] for e in entries] == [0, 1]
    assert entries[0]["frame_px_size_um"] == pytest.approx(FRAME_PX)


def test_overlay_caption_states_the_frame_pixel_size(report):
    caption = units_caption(report.files[0])
    assert caption.startswith("frame 0.725 um/px") and "measured at 1.45 um/px" in caption


@pytest.mark.parametrize("px, scale", [(0.01, "auto"), (100.0, "auto"), (0.01, 1.0),
                                       (float("nan"), "auto")])
def test_absurd_pixel_size_is_one_line_before_any_work(model, px, scale):
    with pytest.raises(UserError) as err:
        FrameAnalyzer(model, px_size_um=px, inference_scale=scale)
    msg = str(err.value)
    assert "\n" not in msg and "--px-size-um / [optics] px_size_um" in msg
    if np.isfinite(px):
        assert f"{px:.4g} um/px" in msg and "trained at 1.45 um/px" in msg


def test_far_off_pixel_size_is_a_warning(model, caplog):
    with caplog.at_level(logging.WARNING, logger="edge.vision.scale"):
        fa = FrameAnalyzer(model, px_size_um=2.9, inference_scale=1.0)
    assert fa.px_size_um == pytest.approx(2.9)
    assert "differs by 100 %" in caplog.text


def test_too_small_objects_have_rows():
    mask = np.zeros((120, 120), np.uint8)
    mask[20:40, 20:40] = 1
    mask[80, 80] = 1  # one pixel: removed as too small before measuring
    c = measure_crystals(mask, px_size_um=1.0)
    rep = build_report([FrameResult.from_mask("a", c)], mode="masks", px_size_um=1.0,
                       psd_config=NO_BOOT)
    assert rep.n_rejected["too_small"] >= 1
    rows = [r for r in rep.csv_rows() if r["reason"] == "too_small"]
    assert [(r["bbox_x_frame_px"], r["bbox_y_frame_px"], r["area_px"]) for r in rows] == \
        [(80, 80, 1)]
    assert not any("no CSV row" in n for n in rep.notes())
