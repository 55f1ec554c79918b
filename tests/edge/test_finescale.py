"""Thin crystals segmented finer: the width measure, the second pass's scale, and the
bundled model's analyzer taking needle frames through the second pass (and compact ones
not), with its field, pixel size and out-of-domain score at that scale."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge.service.sections import ModelSection
from edge.vision.analyzer import FrameAnalyzer
from edge.vision.contact import scale_of
from edge.vision.finescale import crystal_width_px, fine_scale

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "crystal-seg.onnx"


def _bar(cm: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    cm[y:y + h, x:x + w] = 2


def test_width_of_a_bar_and_a_disc() -> None:
    cm = np.ones((200, 300), np.uint8)
    _bar(cm, 20, 20, 80, 6)  # 6 px wide
    assert crystal_width_px(cm, crystal_class=2) == pytest.approx(6.0, abs=0.5)
    disc = np.ones((200, 300), np.uint8)
    cv2.circle(disc, (150, 100), 20, 2, thickness=-1)  # 41 px across
    assert crystal_width_px(disc, crystal_class=2) == pytest.approx(40.0, abs=2.0)


def test_width_is_area_weighted_and_ignores_specks() -> None:
    cm = np.ones((300, 400), np.uint8)
    cv2.circle(cm, (200, 150), 40, 2, thickness=-1)  # 5000 px of a wide crystal
    for k in range(6):
        _bar(cm, 10 + 60 * k, 10, 40, 5)  # six thin ones, 1200 px together
    for k in range(30):
        cm[280, 5 + 12 * k] = 2  # single-pixel specks are left out
    assert crystal_width_px(cm, crystal_class=2) > 70
    for k in range(6, 36):
        _bar(cm, 10 + 11 * (k % 36), 230, 5, 40)  # now the thin ones hold most pixels
    assert crystal_width_px(cm, crystal_class=2) < 8


def test_width_without_crystals_and_bad_shapes() -> None:
    assert crystal_width_px(np.ones((50, 50), np.uint8), crystal_class=2) == float("inf")
    with pytest.raises(ValueError, match=r"\(2, 50, 50\)"):
        crystal_width_px(np.ones((2, 50, 50), np.uint8), crystal_class=2)


@pytest.mark.parametrize(("scale", "factor", "expected"), [
    (0.5, 1.5, 0.75), (0.8, 1.5, 1.0), (1.0, 1.5, None), (1.31, 1.5, None),
    (0.5, 1.0, None), (0.2, 3.0, 0.6)])
def test_fine_scale_never_enlarges_past_the_frame(scale: float, factor: float,
                                                  expected: float | None) -> None:
    got = fine_scale(scale, factor)
    assert got == (None if expected is None else pytest.approx(expected))


def test_config_fields() -> None:
    m = ModelSection()
    assert m.thin_width_px == 12.0 and m.thin_scale_factor == 1.5
    with pytest.raises(ValidationError, match="thin_scale_factor"):
        ModelSection(thin_scale_factor=0.8)
    with pytest.raises(ValidationError, match="thin_width_px"):
        ModelSection(thin_width_px=-1)


def _frames(preset: str, n: int, seed: int) -> list[np.ndarray]:
    from trainer.synth import SynthConfig
    from trainer.synth.dataset import frame_seed
    from trainer.synth.render import render_frame

    cfg = SynthConfig.from_presets(preset, width=640, height=480)
    return [np.ascontiguousarray(render_frame(frame_seed(seed, i), cfg).image)
            for i in range(n)]


@pytest.fixture(scope="module")
def needles_and_compact() -> list[np.ndarray]:
    return _frames("needles", 2, 71) + _frames("compact", 1, 72)


def test_needle_frames_take_the_second_pass(needles_and_compact: list[np.ndarray]) -> None:
    with FrameAnalyzer(MODEL, px_size_um=1.45) as an:
        assert an.inference_scale == pytest.approx(0.5) and an.fine_scale == pytest.approx(0.75)
        results = an.analyze_many([(f"f{i}", im) for i, im in enumerate(needles_and_compact)])
        maps = an.segment(needles_and_compact)
    assert [r.inference_scale for r in results] == pytest.approx([0.75, 0.75, 0.5])
    assert [r.px_size_um for r in results] == pytest.approx([1.45 / 0.75] * 2 + [2.9])
    assert [m.shape for m in maps] == [(360, 480), (360, 480), (240, 320)]
    assert [scale_of(m, 0.5) for m in maps] == pytest.approx([0.75, 0.75, 0.5])
    for r in results:
        assert r.ok, r.reject_detail
        assert r.roi is not None and r.roi.mask.shape == (round(480 * r.inference_scale),
                                                          round(640 * r.inference_scale))
        assert r.quality["domain_score"] >= 0.9  # the first pass's uncertainty, moved over
        assert len(r.crystals) >= 3


def test_second_pass_off_explicit_scale_or_zero_width(
        needles_and_compact: list[np.ndarray]) -> None:
    needle = needles_and_compact[:1]
    for kwargs in ({"thin_width_px": 0}, {"inference_scale": 0.5}):
        with FrameAnalyzer(MODEL, px_size_um=1.45, **kwargs) as an:
            assert an.fine_scale is None
            assert an.analyze_many([("n", needle[0])])[0].inference_scale == pytest.approx(0.5)


def test_one_engine_per_scale_under_tensorrt(monkeypatch, tmp_path: Path) -> None:
    """A fixed-shape backend (the TensorRT stand-in) gets one engine for each pass, built
    once: frames that alternate between the passes do not reload either."""
    import json

    from edge.backends import BackendConfig
    from tests.edge.backends import fake_tensorrt
    from tests.fixtures.tiny_model import build_tiny_model, synth_frame

    trt, _ = fake_tensorrt.install(monkeypatch)
    model = build_tiny_model(tmp_path / "m")  # a threshold network: dark discs are crystals
    meta_file = model.with_suffix(".json")
    meta = json.loads(meta_file.read_text())
    meta["frame_px_size_um"] = 0.725  # trained on frames halved to its 1.45 um/px
    meta_file.write_text(json.dumps(meta))
    cfg = BackendConfig(name="tensorrt", engine_cache_dir=tmp_path / "engines")
    thin = synth_frame(240, 320, crystals=[(90 + 45 * k, 120, 7) for k in range(4)])
    wide = synth_frame(240, 320, crystals=[(160, 120, 50)])
    with FrameAnalyzer(model, backend_config=cfg, px_size_um=0.725) as fa:
        assert (fa.inference_scale, fa.fine_scale) == pytest.approx((0.5, 0.75))
        results = fa.analyze_many([("t1", thin), ("w", wide), ("t2", thin)])
        assert [r.inference_scale for r in results] == pytest.approx([0.75, 0.5, 0.75])
        assert trt.builds == 2
        again = fa.analyze_many([("w2", wide), ("t3", thin)])
        assert trt.builds == 2 and fa.backend.input_hw == (128, 160)
    with FrameAnalyzer(model, backend_config=BackendConfig(name="onnxruntime"),
                       px_size_um=0.725, thin_width_px=0) as coarse:
        one_pass = coarse.analyze("t", thin)
    # the same discs measured at either scale: 14 px across at 0.725 um/px
    for r in (results[0], again[1], one_pass):
        assert r.ok and r.crystals.n_kept == 4
        d = np.sqrt(4 * r.crystals.area_px * r.px_size_um**2 / np.pi)
        assert d == pytest.approx(np.full(4, 14 * 0.725), rel=0.15)
