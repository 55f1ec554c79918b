"""Overlays: outlines in the status colours at frame resolution."""

from __future__ import annotations

import numpy as np
import pytest

from edge.vision.analyzer import FrameAnalyzer
from edge.vision.overlay import COLOURS, header_height, render_overlay
from tests.fixtures.tiny_model import build_tiny_model, synth_frame


@pytest.fixture(scope="module")
def fa(tmp_path_factory):
    return FrameAnalyzer(build_tiny_model(tmp_path_factory.mktemp("m")), inference_scale=0.5,
                         px_size_um=0.725)


def _count(img, colour):
    return int(np.count_nonzero(np.all(img == np.array(colour, np.uint8), axis=2)))


def test_kept_and_border_outlines_are_drawn_where_the_crystals_are(fa):
    frame = synth_frame(400, 560, field_radius=170,
                        crystals=[(280, 200, 20), (280 + 168, 200, 14)])
    r = fa.analyze("f", frame)
    assert r.crystals.n_kept == 1 and r.crystals.rejected_counts()["border"] == 1
    out = render_overlay(frame, r)
    top = header_height(560, 400)
    assert out.shape == (400 + top, 560, 3) and out.dtype == np.uint8
    out = out[top:]  # the frame below the header band
    np.testing.assert_array_equal(out[200, 280], frame[200, 280])  # pixels kept
    green = np.all(out == np.array(COLOURS["kept"], np.uint8), axis=2)
    ys, xs = np.nonzero(green)
    # the kept outline hugs the disc of radius 20 around (280, 200)
    rad = np.hypot(xs - 280, ys - 200)
    near = rad < 40
    assert near.sum() > 60
    assert np.median(rad[near]) == pytest.approx(20, abs=2.5)
    orange = np.all(out == np.array(COLOURS["border"], np.uint8), axis=2)
    _oy, ox = np.nonzero(orange[:, 300:])
    assert len(ox) > 20 and np.median(ox + 300) == pytest.approx(440, abs=15)
    # the input frame is untouched
    assert _count(frame, COLOURS["kept"]) == 0


def test_rejected_frame_and_16_bit_input(fa):
    blank = np.full((200, 300), 30000, np.uint16)
    r = fa.analyze("blank", blank)
    assert r.reject_reason == "blank"
    out = render_overlay(blank, r)
    top = header_height(300, 200)
    assert out.shape == (200 + top, 300, 3)
    redish = (out[:, :, 2].astype(int) - out[:, :, 1] > 80) & (out[:, :, 2] > 150)
    assert redish[:top].sum() > 20 and redish[top:].sum() == 0  # red "REJECTED" header
