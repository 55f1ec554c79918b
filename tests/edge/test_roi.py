"""Region of interest: the illuminated field, found in real synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest

from edge.vision.preprocess import grey_u8
from edge.vision.roi import FieldTracker, RoiConfig, detect_roi, fit_circle
from tests.fixtures.tiny_model import synth_frame


def test_circle_fit_recovers_the_field_despite_dark_crystals_on_its_edge():
    frame = synth_frame(480, 640, field_radius=200,
                        crystals=[(320, 240, 25), (320 + 195, 240, 18), (320, 240 - 196, 15)])
    roi = detect_roi(grey_u8(frame), RoiConfig(margin_px=0))
    assert roi is not None and roi.kind == "circle"
    cx, cy, r = roi.circle
    assert cx == pytest.approx(320, abs=1.0) and cy == pytest.approx(240, abs=1.0)
    assert r == pytest.approx(200, abs=1.5)
    assert roi.area_px == pytest.approx(np.pi * 200 ** 2, rel=0.02)
    # the crystal on the edge is inside the ROI (the bay was bridged by the circle)
    assert roi.mask[240, 320 + 190]
    payload = roi.to_payload(scale=0.5)
    assert payload["circle_frame_px"] == pytest.approx([640, 480, 400], abs=3)


def test_margin_shrinks_the_roi():
    grey = grey_u8(synth_frame(240, 320, field_radius=100))
    r0 = detect_roi(grey, RoiConfig(margin_px=0))
    r3 = detect_roi(grey, RoiConfig(margin_px=3))
    assert r3.area_px == pytest.approx(np.pi * 97 ** 2, rel=0.03)
    assert r3.area_px < r0.area_px


def test_field_cut_by_frame_edges_is_fitted_from_the_visible_arcs():
    grey = grey_u8(synth_frame(240, 320))  # default field: only the corners are black
    roi = detect_roi(grey, RoiConfig(margin_px=0))
    assert roi.kind == "circle"
    assert roi.circle[2] == pytest.approx(0.5 * np.hypot(240, 320) - 12, abs=1.5)
    assert 0.97 < roi.fraction < 1.0


def test_no_field_and_full_and_fixed_modes():
    assert detect_roi(np.full((60, 80), 3, np.uint8)) is None
    tiny_field = grey_u8(synth_frame(240, 320, field_radius=15))
    assert detect_roi(tiny_field, RoiConfig(min_field_fraction=0.05)) is None
    full = detect_roi(np.zeros((60, 80), np.uint8), RoiConfig(mode="full"))
    assert full.kind == "full" and full.mask.all()
    rect = detect_roi(np.zeros((60, 80), np.uint8),
                      RoiConfig(mode="fixed", fixed_rect=(10, 20, 40, 20), margin_px=0), scale=0.5)
    assert rect.bbox() == (5, 10, 20, 10)
    circ = detect_roi(np.zeros((200, 200), np.uint8),
                      RoiConfig(mode="fixed", fixed_circle=(100, 100, 50), margin_px=0))
    assert circ.area_px == pytest.approx(np.pi * 50 ** 2, rel=0.02)
    with pytest.raises(ValueError, match="exactly one"):
        RoiConfig(mode="fixed")


def test_model_mode_uses_the_class_map():
    cm = np.full((100, 100), 0, np.uint8)
    cm[10:90, 20:80] = 1
    roi = detect_roi(np.zeros((100, 100), np.uint8), RoiConfig(mode="model", margin_px=0,
                                                               shape="component"), class_map=cm)
    assert roi.kind == "component" and roi.area_px == 80 * 60
    with pytest.raises(ValueError, match="class map of shape"):
        detect_roi(np.zeros((100, 100), np.uint8), RoiConfig(mode="model"))


def test_fit_circle_exact_points():
    t = np.linspace(0, 2 * np.pi, 50, endpoint=False)
    pts = np.column_stack([7 + 3 * np.cos(t), -2 + 3 * np.sin(t)])
    assert fit_circle(pts) == pytest.approx((7, -2, 3))
    assert fit_circle(pts[:2]) is None


def test_field_of_realistic_synthetic_frames_matches_the_generator_truth():
    """trainer.synth frames: vignetted rim, faceted crystals cut by the field edge."""
    synth = pytest.importorskip("trainer.synth")
    for seed in (0, 1, 8):  # 0 and 8: dark crystals on the field edge, strong vignetting
        frame = synth.render_frame(np.random.default_rng(seed), synth.SynthConfig())
        truth = frame.label != synth.BLACK_BACKGROUND
        roi = detect_roi(grey_u8(frame.image), RoiConfig(margin_px=0))
        assert roi.kind == "circle"
        iou = np.count_nonzero(roi.mask & truth) / np.count_nonzero(roi.mask | truth)
        assert iou > 0.985, (seed, iou)


def test_field_tracker_keeps_the_field_until_it_moves():
    tracker = FieldTracker(RoiConfig(), black_class=0, scale=1.0)
    none = np.ones((240, 320), np.uint8)  # the class map: no black background
    first = tracker.field(grey_u8(synth_frame(240, 320, field_radius=100, seed=1)), none)
    again = tracker.field(grey_u8(synth_frame(240, 320, field_radius=100, seed=2)), none)
    assert first is not None and again is first  # new noise, same field: the same object
    moved = tracker.field(grey_u8(synth_frame(240, 320, field_radius=90, seed=3)), none)
    assert moved is not first and moved.circle[2] == pytest.approx(first.circle[2] - 10, abs=1.5)
    # a frame at another size than the class map is brought to the class map's scale
    half = tracker.field(grey_u8(synth_frame(480, 640, field_radius=180, seed=4)), none)
    assert half.mask.shape == (240, 320) and half.circle[2] == pytest.approx(90, abs=1.5)
    assert tracker.field(np.zeros((240, 320), np.uint8), none) is None
