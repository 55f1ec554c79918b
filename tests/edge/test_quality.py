"""Frame quality gate on synthetic frames: each reason triggers, good frames pass."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.vision.preprocess import grey_u8
from edge.vision.quality import QualityConfig, check_crowding, check_frame, focus_measure
from tests.fixtures.tiny_model import synth_frame

RNG = np.random.default_rng(7)
CRYSTALS = [(RNG.uniform(80, 560), RNG.uniform(60, 420), RNG.uniform(6, 20)) for _ in range(15)]


@pytest.fixture(scope="module")
def sharp():
    return grey_u8(synth_frame(480, 640, crystals=CRYSTALS))


def _blur(grey, sigma):
    b = cv2.GaussianBlur(grey, (0, 0), sigma).astype(np.float32)
    return np.clip(b + np.random.default_rng(3).normal(0, 3, b.shape), 0, 255).astype(np.uint8)


def test_good_frame_passes_with_metrics(sharp):
    r = check_frame(sharp)
    assert r.ok and r.reason is None
    assert r.metrics["focus"] > 100
    assert r.metrics["field_fraction"] > 0.9
    assert r.to_payload()["ok"] is True


def test_empty_field_is_not_called_defocused():
    r = check_frame(grey_u8(synth_frame(480, 640, crystals=[])))
    assert r.ok and r.metrics["content_fraction"] == 0.0


@pytest.mark.parametrize(("sigma", "expected"), [(1.0, None), (4.0, "defocused")])
def test_defocus(sharp, sigma, expected):
    assert check_frame(_blur(sharp, sigma)).reason == expected


def test_focus_does_not_depend_on_crystal_count():
    few = check_frame(grey_u8(synth_frame(480, 640, crystals=CRYSTALS[:2]))).metrics["focus"]
    many = check_frame(grey_u8(synth_frame(480, 640, crystals=CRYSTALS))).metrics["focus"]
    assert few == pytest.approx(many, rel=0.5)
    assert focus_measure(np.full((20, 20), 9, np.uint8)) == 0.0


def test_each_reject_reason(sharp):
    assert check_frame(np.full((100, 100), 128, np.uint8)).reason == "blank"
    assert check_frame((sharp * 0.25).astype(np.uint8)).reason == "underexposed"
    over = np.clip(sharp.astype(np.int32) * 2, 0, 255).astype(np.uint8)
    r = check_frame(over)
    assert r.reason == "overexposed" and r.metrics["saturated_fraction"] > 0.9
    assert check_frame(grey_u8(synth_frame(480, 640, field_radius=40))).reason == "no_field"
    assert "< 15" in check_frame(_blur(sharp, 4.0)).detail


def test_disabled_gate_accepts_everything():
    assert check_frame(np.full((50, 50), 0, np.uint8), QualityConfig(enabled=False)).ok


def test_crowding():
    cm = np.ones((100, 100), np.uint8)
    roi = np.zeros((100, 100), bool)
    roi[:, :50] = True
    cm[:, :20] = 2  # 40 % of the ROI
    r = check_crowding(cm, roi, crystal_class=2)
    assert r.reason == "crowded" and r.metrics["crystal_fraction"] == pytest.approx(0.4)
    assert check_crowding(cm, roi, crystal_class=2,
                          config=QualityConfig(max_crystal_fraction=0.5)).ok
    with pytest.raises(ValueError, match="differ in shape"):
        check_crowding(cm, roi[:50], crystal_class=2)


def test_wrong_input_quotes_shape():
    with pytest.raises(ValueError, match=r"\(4, 4, 3\)"):
        check_frame(np.zeros((4, 4, 3), np.uint8))
