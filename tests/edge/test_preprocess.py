"""Pre-processing: channels, bit depths, scale/pixel size, padding, class-map cropping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.vision.preprocess import (
    auto_inference_scale,
    flip_averaged,
    grey_u8,
    infer_bit_depth,
    inference_px_size,
    logits_to_class_maps,
    pad_to,
    padded_hw,
    prepare_for_inference,
    resize_for_inference,
    resize_label,
    to_nchw,
    to_rgb_float,
    upsample_class_map,
)


def test_bgr_from_opencv_becomes_rgb(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[:, :, 0] = 255  # blue in OpenCV order
    path = tmp_path / "blue.png"
    cv2.imwrite(str(path), bgr)
    rgb = to_rgb_float(cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.float32
    np.testing.assert_array_equal(rgb[0, 0], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(to_rgb_float(bgr, color_order="rgb")[0, 0], [1.0, 0.0, 0.0])


def test_grey_and_bgra_and_single_channel():
    grey = np.full((3, 3), 51, np.uint8)
    out = to_rgb_float(grey)
    assert out.shape == (3, 3, 3)
    np.testing.assert_allclose(out, 0.2)
    np.testing.assert_allclose(to_rgb_float(grey[:, :, None]), out)
    bgra = np.dstack([np.full((2, 2), v, np.uint8) for v in (0, 0, 255, 7)])
    np.testing.assert_allclose(to_rgb_float(bgra)[0, 0], [1.0, 0.0, 0.0])


def test_16bit_scaled_by_actual_bit_depth(tmp_path):
    twelve = np.array([[0, 4095], [2048, 1000]], np.uint16)  # 12-bit camera in uint16
    path = tmp_path / "g16.png"
    cv2.imwrite(str(path), twelve)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and infer_bit_depth(back) == 12
    out = to_rgb_float(back)
    np.testing.assert_allclose(out[:, :, 0], twelve / 4095.0, rtol=1e-6)
    full = np.array([[0, 65535]], np.uint16)
    np.testing.assert_allclose(to_rgb_float(full)[0, :, 0], [0.0, 1.0])
    np.testing.assert_allclose(to_rgb_float(twelve, bit_depth=16)[0, 1, 0], 4095 / 65535)
    assert grey_u8(twelve)[0, 1] == 255


def test_bad_inputs_quote_the_shape():
    with pytest.raises(ValueError, match=r"got shape \(4, 4, 2\)"):
        to_rgb_float(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="must be in"):
        to_rgb_float(np.full((2, 2), 3.0, np.float32))
    with pytest.raises(ValueError, match="dtype int64"):
        to_rgb_float(np.zeros((2, 2), np.int64))


def test_scale_and_pixel_size():
    assert inference_px_size(1.45, 0.5) == pytest.approx(2.9)
    assert auto_inference_scale(1.45, 2.9) == pytest.approx(0.5)
    assert auto_inference_scale(0.5, 2.9) == pytest.approx(0.5 / 2.9)  # no training scale


@pytest.mark.parametrize(("px", "scale"), [
    (1.45, 0.5),  # the training frames: the model's pixel size
    (2.0, 2.0 / 2.9),  # between the training frames' and the model's: the model's
    (0.5, 0.5),  # finer: shrunk no further than the training frames (1.0 um/px)
    (0.2, 3 * 0.2 / 2.9),  # much finer: the network's pixel size at a third of the model's
    (2.9, 1.0),  # the model's pixel size: as they are
    (5.0, (5.0 / 2.9) ** 0.5),  # coarser: enlarged halfway (geometrically) to the model's
])
def test_auto_scale_never_shrinks_further_than_training_did(px, scale):
    assert auto_inference_scale(px, 2.9, trained_scale=0.5) == pytest.approx(scale)
    img = np.random.default_rng(0).uniform(0, 1, (768, 1024, 3)).astype(np.float32)
    assert resize_for_inference(img, 0.5).shape == (384, 512, 3)
    assert resize_for_inference(img, 1.0) is img
    assert padded_hw((384, 500), 16) == (384, 512)
    assert padded_hw((241, 320), 32) == (256, 320)


def test_pad_then_crop_round_trip():
    rng = np.random.default_rng(1)
    imgs = [rng.uniform(0, 1, (30, 41, 3)).astype(np.float32),
            rng.uniform(0, 1, (32, 48, 3)).astype(np.float32)]
    batch = to_nchw(imgs, (32, 48))
    assert batch.shape == (2, 3, 32, 48)
    np.testing.assert_array_equal(batch[0, :, :30, :41], imgs[0].transpose(2, 0, 1))
    # reflected padding continues the image, not zeros
    np.testing.assert_array_equal(batch[0, :, 30, :41], imgs[0][28].T)
    logits = np.zeros((2, 3, 32, 48), np.float32)
    logits[:, 2] = 1.0
    maps = logits_to_class_maps(logits, [(30, 41), (32, 48)])
    assert [m.shape for m in maps] == [(30, 41), (32, 48)]
    assert all(m.dtype == np.uint8 and (m == 2).all() for m in maps)
    with pytest.raises(ValueError, match="cannot pad"):
        pad_to(imgs[1], (16, 16))


def test_upsample_class_map_replicates_on_an_integer_factor():
    cm = np.array([[0, 1], [2, 2]], np.uint8)
    up = upsample_class_map(cm, (4, 4))
    np.testing.assert_array_equal(up, np.repeat(np.repeat(cm, 2, 0), 2, 1))
    assert upsample_class_map(cm, (2, 2)) is cm


def test_upsample_class_map_through_its_logits_places_outlines_between_pixels():
    """A disk of radius 5.3 px whose crystal logit is its signed distance: enlarged 4x
    through the logits it is the disk of radius 21.2 px, closer than the map enlarged as
    a label (whose outline stays on the 4-pixel grid)."""
    from edge.vision.contact import with_class_logits

    yy, xx = np.mgrid[:32, :32] + 0.5
    sd = (5.3 - np.hypot(xx - 15.7, yy - 16.2)).astype(np.float32)
    logits = np.stack([np.full_like(sd, -9.0), np.zeros_like(sd), sd])
    cm = logits.argmax(0).astype(np.uint8)
    truth = _disk_label(4 * 15.7, 4 * 16.2, 4 * 5.3, hw=(128, 128)) == 2
    plain = upsample_class_map(cm, (128, 128)) == 2
    through = upsample_class_map(with_class_logits(cm, logits), (128, 128))
    assert through.dtype == np.uint8 and set(np.unique(through)) == {1, 2}

    def iou(a):
        return (a & truth).sum() / (a | truth).sum()

    assert iou(through == 2) > 0.99 > iou(plain)
    assert (through == 2).sum() == pytest.approx(np.pi * (4 * 5.3) ** 2, rel=0.01)
    # shrinking goes through area averages of the logits
    small = upsample_class_map(with_class_logits(cm, logits), (16, 16))
    assert small.shape == (16, 16) and (small == 2).sum() == pytest.approx(
        np.pi * (5.3 / 2) ** 2, rel=0.15)
    with pytest.raises(ValueError, match=r"class logits \(3, 8, 8\) do not lie"):
        with_class_logits(cm, logits[:, :8, :8])


def _disk_label(cx: float, cy: float, r: float, hw=(96, 128)) -> np.ndarray:
    yy, xx = np.mgrid[:hw[0], :hw[1]] + 0.5
    lab = np.ones(hw, np.uint8)
    lab[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = 2
    return lab


def test_resize_label_keeps_outlines_in_place_where_nearest_moves_them():
    """Shrunk by 2, a disk's centroid stays put (pixel centres at i + 0.5); nearest
    neighbour takes each target pixel's top-left source pixel and moves it by 1/4 px."""
    moved_ours, moved_nearest = [], []
    for cx in np.linspace(40.0, 41.0, 5):
        lab = _disk_label(cx, 47.3, 13.0)
        for resize, moved in ((resize_label, moved_ours), (
                lambda a, s: cv2.resize(a, s, interpolation=cv2.INTER_NEAREST), moved_nearest)):
            ys, xs = np.nonzero(resize(lab, (64, 48)) == 2)
            moved.append(((xs + 0.5).mean() * 2 - cx, (ys + 0.5).mean() * 2 - 47.3))
    assert np.abs(np.mean(moved_ours, axis=0)).max() < 0.1
    assert np.mean(moved_nearest, axis=0) == pytest.approx((0.5, 0.5), abs=0.15)


def test_resize_label_area_is_unbiased_and_ties_do_not_favour_one_value():
    """Half-plane edges at every offset: the shrunk crystal area matches on average (an
    even shrink ties two of four pixels; a fixed tie-break would shift every edge)."""
    errors = []
    for edge in range(20, 36):
        lab = np.zeros((32, 64), np.uint8)
        lab[:, :edge] = 2
        small = resize_label(lab, (32, 16))
        errors.append((small == 2).sum() * 4 - (lab == 2).sum())
    assert abs(np.mean(errors)) <= 0.05 * 32 * 2


@pytest.mark.parametrize("size", [(40, 30), (37, 23), (160, 120), (200, 90)])
def test_resize_label_takes_only_values_of_the_label(size):
    rng = np.random.default_rng(3)
    lab = rng.choice(np.array([0, 2, 255, 0x82], np.uint8), size=(60, 80))
    lab = cv2.resize(lab, (80, 60), interpolation=cv2.INTER_NEAREST)
    out = resize_label(lab, size)
    assert out.shape == (size[1], size[0]) and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 2, 255, 0x82}
    assert (resize_label(np.full((6, 8), 7, np.uint16), size) == 7).all()
    with pytest.raises(ValueError, match=r"\(H, W\), got shape \(6, 8, 3\)"):
        resize_label(np.zeros((6, 8, 3), np.uint8), size)


def test_resize_label_majority_on_a_small_block():
    """A target pixel takes the value covering three of its four source pixels (nearest
    neighbour takes the top-left one: 1 and 2 here)."""
    lab = np.array([[1, 2, 2, 0], [2, 2, 0, 0]], np.uint8)
    np.testing.assert_array_equal(resize_label(lab, (2, 1)), [[2, 0]])


@pytest.mark.parametrize("dtype, peak", [(np.uint8, 255), (np.uint16, 4095), (np.uint16, 65535)])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_scaled_before_float_matches_float_then_scaled(dtype, peak, channels):
    rng = np.random.default_rng(7)
    shape = (768, 1024) if channels == 1 else (768, 1024, channels)
    img = rng.integers(0, peak + 1, shape).astype(dtype)
    img[0, 0] = peak  # the bit depth comes from the full frame, not the averaged one
    old = resize_for_inference(to_rgb_float(img), 0.5)
    new = prepare_for_inference(img, 0.5)
    assert new.shape == old.shape == (384, 512, 3) and new.dtype == np.float32
    np.testing.assert_allclose(new, old, atol=0.5 / 255 + 1e-6)  # integer rounding only
    np.testing.assert_array_equal(prepare_for_inference(img, 1.0), to_rgb_float(img))


def test_flip_average_is_the_mean_of_the_view_and_the_mirrored_view():
    """For a network that reads one pixel to the right, the mirror average reads both
    neighbours; for a mirror-symmetric one it changes nothing."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 5, 7)).astype(np.float32)

    def right(b):  # output at column j = input at column j + 1 (zero beyond the edge)
        out = np.zeros_like(b)
        out[..., :-1] = b[..., 1:]
        return out

    got = flip_averaged(right, x, right(x))
    want = np.zeros_like(x)
    want[..., :-1] += x[..., 1:]
    want[..., 1:] += x[..., :-1]
    np.testing.assert_allclose(got, 0.5 * want, rtol=0, atol=1e-6)

    def square(b):
        return b * b

    np.testing.assert_allclose(flip_averaged(square, x, square(x)), x * x, rtol=1e-6)


def test_flip_average_takes_half_precision_logits_and_checks_shapes():
    x = np.ones((1, 3, 4, 4), np.float32)
    half = np.full((1, 4, 4, 4), 2.0, np.float16)
    out = flip_averaged(lambda b: half, x, half)
    assert out.dtype == np.float32 and np.all(out == 2.0)
    with pytest.raises(ValueError, match=r"shape \(1, 4, 4, 3\).*\(1, 4, 4, 4\)"):
        flip_averaged(lambda b: half[..., :3], x, half)
