"""FrameAnalyzer end to end on real synthetic frames with the real tiny ONNX model."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from edge.backends import BackendConfig
from edge.errors import UserError
from edge.vision.analyzer import FrameAnalyzer
from edge.vision.quality import QualityConfig
from edge.vision.roi import RoiConfig
from tests.fixtures.tiny_model import build_tiny_model, synth_frame

RADII = [10.0, 14.0, 18.0, 22.0, 26.0]
CENTRES = [(120, 120), (300, 110), (480, 130), (200, 300), (420, 320)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("m"), px_size_um=1.45)


@pytest.fixture(scope="module")
def model_coarse(tmp_path_factory):
    """Trained (nominally) at 2.9 um/px: frames of 1.45 um/px need scale 0.5."""
    return build_tiny_model(tmp_path_factory.mktemp("c"), name="coarse", px_size_um=2.9)


def _frame(seed=0):
    crystals = [(cx, cy, r) for (cx, cy), r in zip(CENTRES, RADII, strict=True)]
    return synth_frame(440, 600, crystals=crystals, seed=seed)


def _true_d_um(px=1.45):
    return np.array(RADII) * 2 * px


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_diameters_right_at_any_inference_scale(model, scale):
    with FrameAnalyzer(model, px_size_um=1.45, inference_scale=scale,
                       backend_config=BackendConfig(threads=1)) as fa:
        r = fa.analyze("f0", _frame())
    assert r.ok, r.reject_detail
    assert r.px_size_um == pytest.approx(1.45 / scale)
    d = np.sort(r.crystals.diameters_um())
    assert len(d) == 5
    # area-equivalent diameters of digitised discs: within 1.5 px of the truth
    np.testing.assert_allclose(d, _true_d_um(), atol=1.5 * 1.45 / scale)
    assert r.roi is not None and r.roi.kind == "circle"
    assert r.roi.mask.shape == (round(440 * scale), round(600 * scale))
    assert set(r.timings_ms) >= {"quality_ms", "preprocess_ms", "inference_ms", "postprocess_ms"}


def test_auto_scale_follows_the_model_pixel_size(model_coarse):
    fa = FrameAnalyzer(model_coarse, px_size_um=1.45, inference_scale="auto")
    assert fa.inference_scale == pytest.approx(0.5)
    assert fa.px_size_um == pytest.approx(2.9)
    r = fa.analyze("f", _frame())
    np.testing.assert_allclose(np.sort(r.crystals.diameters_um()), _true_d_um(), atol=3.0)
    info = fa.model_info
    assert info["measure_px_size_um"] == pytest.approx(2.9) and info["backend"] == "onnxruntime"
    assert info["sha256"] == fa.meta.sha256 and info["precision"] == "fp32"
    fa.close()


def test_frame_px_size_defaults_to_the_training_frames_not_the_network_input(
        tmp_path, caplog):
    """A model trained at half resolution (2.9 um/px at the input, frames of 1.45 um/px):
    without a pixel size the frames are taken as 1.45 um/px (with a warning), the auto
    scale is 0.5 and diameters stay right; the network-input size must never be used as
    the frame pixel size (that measured every crystal twice as large)."""
    import json

    from edge.modelmeta import meta_path_for

    onnx = build_tiny_model(tmp_path, name="half", px_size_um=2.9)
    mpath = meta_path_for(onnx)
    meta = json.loads(mpath.read_text())
    meta.pop("frame_px_size_um", None)
    meta["training"] = {"input_scale": 0.5}  # an export that predates frame_px_size_um
    mpath.write_text(json.dumps(meta))
    with FrameAnalyzer(onnx, inference_scale="auto") as fa:
        assert fa.frame_px_size_um == pytest.approx(1.45)
        assert fa.inference_scale == pytest.approx(0.5)
        r = fa.analyze("f", _frame())
    np.testing.assert_allclose(np.sort(r.crystals.diameters_um()), _true_d_um(), atol=3.0)
    assert any("assuming 1.45 um/px" in rec.getMessage() for rec in caplog.records)
    meta["frame_px_size_um"] = 1.6
    mpath.write_text(json.dumps(meta))
    with FrameAnalyzer(onnx, inference_scale="auto") as fa:
        assert fa.frame_px_size_um == pytest.approx(1.6)


def test_auto_scale_for_fine_pixels_is_the_training_shrink_with_one_info_line(
        tmp_path, caplog):
    """Trained at 2.9 um/px from frames of 1.45 um/px: frames of 0.5 um/px are halved
    (1.0 um/px at the network), not shrunk to a sixth; a model that does not record its
    training frames' pixel size keeps the plain ratio."""
    import json

    from edge.modelmeta import meta_path_for

    onnx = build_tiny_model(tmp_path, name="half", px_size_um=2.9)
    with FrameAnalyzer(onnx, px_size_um=0.5, inference_scale="auto") as fa:
        assert fa.inference_scale == pytest.approx(0.5 / 2.9)
    mpath = meta_path_for(onnx)
    meta = json.loads(mpath.read_text())
    mpath.write_text(json.dumps(dict(meta, frame_px_size_um=1.45)))
    with caplog.at_level(logging.INFO, logger="edge.vision.scale"):
        fa = FrameAnalyzer(onnx, px_size_um=0.5, inference_scale="auto")
    assert fa.inference_scale == pytest.approx(0.5) and fa.px_size_um == pytest.approx(1.0)
    r = fa.analyze("f", _frame())
    fa.close()
    assert r.ok and r.px_size_um == pytest.approx(1.0)
    lines = [r for r in caplog.records if r.name == "edge.vision.scale"]
    assert [r.levelno for r in lines] == [logging.INFO]
    assert lines[0].getMessage().startswith(
        "inference_scale auto: frames of 0.5 um/px are segmented at 1.000 um/px, not at "
        "the model's 2.900 um/px")


def test_auto_scale_enlarges_coarse_frames_halfway_with_one_info_line(tmp_path, caplog):
    """Frames of 11.6 um/px for a model at 2.9 um/px (trained from 1.45 um/px frames) are
    enlarged by 2 = sqrt(4), to 5.8 um/px at the network, and measured right there."""
    import json

    from edge.modelmeta import meta_path_for

    onnx = build_tiny_model(tmp_path, name="half", px_size_um=2.9)
    mpath = meta_path_for(onnx)
    mpath.write_text(json.dumps(dict(json.loads(mpath.read_text()), frame_px_size_um=1.45)))
    with caplog.at_level(logging.INFO, logger="edge.vision.scale"):
        fa = FrameAnalyzer(onnx, px_size_um=11.6, inference_scale="auto")
    assert fa.inference_scale == pytest.approx(2.0) and fa.px_size_um == pytest.approx(5.8)
    fa.close()
    lines = [r for r in caplog.records if r.name == "edge.vision.scale"]
    assert [r.levelno for r in lines] == [logging.INFO]
    assert lines[0].getMessage().startswith(
        "inference_scale auto: frames of 11.6 um/px are enlarged by 2.000 to 5.800 um/px, "
        "halfway to the model's 2.900 um/px")
    # 12 um/px implies an enlargement of 4.1 (outside 0.05..4): a unit slip, refused even
    # though auto would enlarge by only 2.03
    with pytest.raises(UserError, match=r"^px_size_um .*: 12 um/px at inference scale 2\.03"):
        FrameAnalyzer(onnx, px_size_um=12.0, inference_scale="auto")


def test_mismatched_scale_warns(model_coarse, caplog):
    FrameAnalyzer(model_coarse, px_size_um=1.45, inference_scale=1.0).close()
    assert any("differs by 50 %" in r.getMessage() for r in caplog.records)


def test_batched_equals_one_by_one_and_keeps_order(model):
    frames = [(f"f{i}", _frame(seed=i)) for i in range(5)]
    frames.insert(2, ("bad", None))
    frames.insert(4, ("grey", np.full((440, 600), 128, np.uint8)))
    fa = FrameAnalyzer(model, backend_config=BackendConfig(max_batch=2), keep_class_maps=True)
    batched = fa.analyze_many(frames)
    single = [fa.analyze(n, im) for n, im in frames]
    assert [r.name for r in batched] == [n for n, _ in frames]
    assert [r.reject_reason for r in batched] == [None, None, "unreadable", None, "blank",
                                                  None, None]
    for a, b in zip(batched, single, strict=True):
        assert a.ok == b.ok
        if a.ok:
            np.testing.assert_array_equal(a.class_map, b.class_map)
            np.testing.assert_allclose(a.crystals.diameter_um, b.crystals.diameter_um)
    assert batched[0].to_payload()["n_kept"] == 5


def test_sixteen_bit_grey_frame_gives_the_same_crystals(model, tmp_path):
    grey8 = cv2.cvtColor(_frame(), cv2.COLOR_BGR2GRAY)
    grey12 = (grey8.astype(np.uint16) * 16)  # 12-bit camera, values up to 4080
    path = tmp_path / "f16.png"
    cv2.imwrite(str(path), grey12)
    fa = FrameAnalyzer(model)
    r8 = fa.analyze("8", grey8)
    r16 = fa.analyze("16", cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    assert r16.ok and r8.ok
    np.testing.assert_allclose(np.sort(r16.crystals.diameter_um), np.sort(r8.crystals.diameter_um))


def test_crowded_and_no_field_rejections(model):
    rng = np.random.default_rng(5)
    many = [(rng.uniform(40, 560), rng.uniform(40, 400), 22.0) for _ in range(120)]
    fa = FrameAnalyzer(model, quality_config=QualityConfig(max_crystal_fraction=0.2))
    r = fa.analyze("crowded", synth_frame(440, 600, crystals=many))
    assert not r.ok and r.reject_reason == "crowded"
    assert r.quality["crystal_fraction"] > 0.2
    small_field = synth_frame(440, 600, field_radius=30)
    r = fa.analyze("tiny-field", small_field)
    assert r.reject_reason == "no_field"
    assert fa.check_quality(small_field) == "no_field"


def test_crystal_cut_by_the_field_edge_is_a_border_crystal(model):
    frame = synth_frame(440, 600, field_radius=180, crystals=[(300, 220, 15), (300 + 178, 220, 12)])
    fa = FrameAnalyzer(model, roi_config=RoiConfig(margin_px=2))
    r = fa.analyze("edge", frame)
    c = r.crystals
    assert c.n_kept == 1
    assert c.rejected_counts()["border"] == 1


def test_bad_model_files_are_user_errors(tmp_path, model):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"GIF89a not a model")
    with pytest.raises(UserError, match=r"fake.onnx: not an ONNX model"):
        FrameAnalyzer(fake)
    with pytest.raises(UserError, match="model file not found"):
        FrameAnalyzer(tmp_path / "missing.onnx")
    wrong = build_tiny_model(tmp_path, name="wrong", out_channels=2)
    with pytest.raises(UserError, match=r"wrong.onnx: model outputs 2 classes"):
        FrameAnalyzer(wrong, frame_hw=(64, 64))
    with pytest.raises(UserError, match="inference_scale"):
        FrameAnalyzer(model, inference_scale="half")


def test_backend_loaded_up_front_when_size_is_known(model):
    fa = FrameAnalyzer(model, frame_hw=(440, 600), inference_scale=0.5)
    assert fa.backend is not None and fa.backend.input_hw == (224, 304)
    cfg = BackendConfig(input_height=100, input_width=200)
    fb = FrameAnalyzer(model, backend_config=cfg)
    assert fb.backend.input_hw == (112, 208)
    assert FrameAnalyzer(model).backend is None


def test_roi_is_reused_while_the_field_stays_put(model):
    fa = FrameAnalyzer(model)
    a = fa.analyze("a", synth_frame(440, 600, field_radius=200, seed=1, crystals=[(300, 220, 9)]))
    b = fa.analyze("b", synth_frame(440, 600, field_radius=200, seed=2, crystals=[(250, 200, 12)]))
    assert a.roi is b.roi  # same object: same mask, same edge-correction survival map
    moved = fa.analyze("c", synth_frame(440, 600, field_radius=180, seed=3))
    assert moved.roi is not a.roi
    assert moved.roi.circle[2] == pytest.approx(180, abs=1.5)


def test_segment_mixed_sizes_keeps_order_and_shapes(model):
    fa = FrameAnalyzer(model, inference_scale=0.5, backend_config=BackendConfig(max_batch=2))
    frames = [synth_frame(h, w, crystals=[(w / 2, h / 2, 10)], seed=i)
              for i, (h, w) in enumerate([(120, 160), (200, 100), (120, 160), (64, 64),
                                          (120, 160)])]
    maps = fa.segment(frames)
    assert [m.shape for m in maps] == [(60, 80), (100, 50), (60, 80), (32, 32), (60, 80)]
    for m in maps:
        # the centre disc is crystal, a point near the left edge is lit background
        assert m[m.shape[0] // 2, m.shape[1] // 2] == 2
        assert m[m.shape[0] // 2, 2] == 1
    assert set(fa.last_timings) == {"preprocess_ms", "inference_ms", "segment_ms"}


def test_locked_frame_size_rejects_other_sizes_without_a_new_backend(model):
    """The service locks the frame size; analyze (no lock) takes any size."""
    fa = FrameAnalyzer(model, inference_scale=0.5, lock_frame_size=True, frame_hw=(300, 400))
    assert fa.size_lock.frame_hw is None  # the preloaded size is a hint: the first frame decides
    ok = fa.analyze("a", _frame(1))
    assert ok.ok and fa.size_lock.frame_hw == (440, 600)
    backend = fa.backend
    other = fa.analyze("b", synth_frame(480, 640, crystals=[(300, 200, 12)], seed=2))
    assert not other.ok and other.reject_reason == "bad_shape"
    assert "640x480 px" in other.reject_detail and "600x440 px" in other.reject_detail
    assert fa.backend is backend
    assert fa.analyze("c", _frame(3)).ok and fa.backend is backend
    with pytest.raises(ValueError, match="bad_shape"):
        fa.segment([synth_frame(480, 640, seed=4)])
    free = FrameAnalyzer(model, inference_scale=0.5)
    assert free.analyze("a", _frame(1)).ok
    assert free.analyze("b", synth_frame(480, 640, crystals=[(300, 200, 12)], seed=2)).ok
