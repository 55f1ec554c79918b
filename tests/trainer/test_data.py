"""The labelled-dataset reader: format, every kind of error, palettes, split, crops."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import UserError
from trainer.data import (
    LabelledDataset,
    crop_central_quarter,
    crop_cornered_quarter,
    crop_lens_square,
    crop_whole,
    decode_label,
    load_classes,
    make_crops,
    split_indices,
    write_classes,
)

NAMES = ["black_background", "light_background", "crystal"]
PALETTE = {"black_background": (0, 0, 128), "light_background": (255, 128, 0),
           "crystal": (255, 255, 0)}


def _frame(h: int = 48, w: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image RGB + label ids: a light disc (1) in black (0) with one crystal square (2)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.uint8)
    cv2.circle(lab, (w // 2, h // 2), min(h, w) // 2 + 6, 1, -1)
    y, x = h // 2 - 5 + seed % 3, w // 2 - 5
    lab[y:y + 8, x:x + 8] = 2
    img = np.stack([lab * 90 + rng.integers(0, 20, lab.shape)] * 3, -1).astype(np.uint8)
    return img, lab


def _write(path: Path, rgb_or_grey: np.ndarray) -> None:
    a = rgb_or_grey
    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), a)


def make_ds(root: Path, n: int = 4, *, ids=(0, 1, 2), palette: bool = False,
            crystal_class: int | str = 2) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    write_classes(root / "classes.json", NAMES, ids=ids, crystal_class=crystal_class,
                  px_size_um=1.45, palette=PALETTE if palette else None)
    for i in range(n):
        img, lab = _frame(seed=i)
        _write(root / "images" / f"f{i:02d}.png", img)
        if palette:
            rgb = np.zeros((*lab.shape, 3), np.uint8)
            for k, name in enumerate(NAMES):
                rgb[lab == k] = PALETTE[name]
            _write(root / "labels" / f"f{i:02d}.png", rgb)
        else:
            _write(root / "labels" / f"f{i:02d}.png", np.asarray(ids, np.uint8)[lab])
    return root


def test_reads_pairs_and_maps_ids(tmp_path):
    ds = LabelledDataset(make_ds(tmp_path / "d"))
    assert len(ds) == 4 and ds.class_names == NAMES
    assert ds.crystal_class == 2 and ds.dark_class == 0 and ds.px_size_um == 1.45
    img, lab = ds.load(1)
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    assert lab.shape == (48, 64) and lab.dtype == np.uint8
    np.testing.assert_array_equal(lab, _frame(seed=1)[1])
    assert not ds.issues


def test_matlab_one_based_ids_map_to_contiguous(tmp_path):
    ds = LabelledDataset(make_ds(tmp_path / "d", ids=(1, 2, 3), crystal_class="crystal"))
    _, lab = ds.load(0)
    np.testing.assert_array_equal(lab, _frame(seed=0)[1])
    assert ds.crystal_class == 2
    rep = ds.validate()
    assert rep.ok and rep.n_valid == 4


def test_rgb_palette_labels(tmp_path):
    ds = LabelledDataset(make_ds(tmp_path / "d", palette=True))
    for i in range(len(ds)):
        _, lab = ds.load(i)
        np.testing.assert_array_equal(lab, _frame(seed=i)[1])
    assert ds.classes[2].color == (255, 255, 0)


def test_palette_unknown_colour_is_reported(tmp_path):
    p = tmp_path / "classes.json"
    write_classes(p, NAMES, palette=PALETTE)
    cf_classes = load_classes(p)[1]
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:] = PALETTE["crystal"]
    rgb[0, 0] = (1, 2, 3)
    with pytest.raises(UserError, match=r"lab\.png: label colours not in the palette: \[1, 2, 3\]"):
        decode_label(rgb, cf_classes, path="lab.png")


def test_validate_reports_every_error_at_once(tmp_path):
    root = make_ds(tmp_path / "d", n=7)
    (root / "labels" / "f00.png").unlink()                       # missing label
    _write(root / "labels" / "extra.png", np.zeros((48, 64), np.uint8))   # missing image
    (root / "images" / "f01.png").write_bytes(b"not a png")      # unreadable image
    (root / "labels" / "f02.png").write_bytes(b"\x89PNG broken")  # unreadable label
    _write(root / "labels" / "f03.png", np.ones((40, 64), np.uint8))       # size mismatch
    bad = _frame(seed=4)[1].copy()
    bad[0, :3] = 7
    _write(root / "labels" / "f04.png", bad)                     # unknown value
    (root / "labels" / "f05.png").rename(root / "labels" / "f05.jpg")  # lossy label
    ds = LabelledDataset(root)
    rep = ds.validate()
    kinds = sorted((Path(i.path).name, i.kind) for i in rep.issues)
    assert kinds == [("extra.png", "missing_image"), ("f00.png", "missing_label"),
                     ("f01.png", "unreadable"), ("f02.png", "unreadable"),
                     ("f03.png", "size_mismatch"), ("f04.png", "unknown_label_value"),
                     ("f05.jpg", "bad_format"), ("f05.png", "missing_label")]
    msgs = {Path(i.path).name: str(i) for i in rep.issues}
    assert "label size 64x40 differs from image 64x48" in msgs["f03.png"]
    assert "label values not in classes.json ids [0, 1, 2]: 7 (3 px)" in msgs["f04.png"]
    assert all("\n" not in m for m in msgs.values())
    # the good pairs still count
    assert rep.n_pairs == 5 and rep.n_valid == 1
    assert rep.class_pixels.sum() == 1 * 48 * 64
    # load() of a bad pair raises a one-line UserError naming the file
    i3 = [p.stem for p in ds.items].index("f03")
    with pytest.raises(UserError, match=r"f03\.png: label size"):
        ds.load(i3)


@pytest.mark.parametrize(("doc", "match"), [
    ("{not json", "not readable JSON"),
    ({"classes": [{"id": 0, "name": "a"}]}, "field 'classes'"),
    ({"classes": [{"id": 0, "name": "a"}, {"id": 0, "name": "b"}]}, "duplicate id 0"),
    ({"classes": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}], "crystal_class": 5},
     "field 'crystal_class': 5 is not a class id"),
    ({"classes": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}], "crystal_class": 1,
      "palette": {"a": [0, 0, 0]}}, "no colour for class 'b'"),
    ({"classes": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}], "crystal_class": 1,
      "extra": 1}, "field 'extra'"),
])
def test_bad_classes_json(tmp_path, doc, match):
    root = make_ds(tmp_path / "d", n=1)
    (root / "classes.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(UserError, match=match) as ei:
        LabelledDataset(root)
    assert str(ei.value).startswith(str(root / "classes.json"))


def test_missing_folders(tmp_path):
    with pytest.raises(UserError, match="dataset folder not found"):
        LabelledDataset(tmp_path / "nope")
    root = make_ds(tmp_path / "d", n=1)
    (root / "classes.json").unlink()
    with pytest.raises(UserError, match=r"classes\.json: missing"):
        LabelledDataset(root)


def test_split_is_seeded_and_by_file(tmp_path):
    tr, va = split_indices(10, 0.2, seed=3)
    assert (tr, va) == split_indices(10, 0.2, seed=3)
    assert len(va) == 2 and sorted(tr + va) == list(range(10))
    assert split_indices(10, 0.2, seed=4) != (tr, va)
    assert split_indices(2, 0.01, seed=0)[1] != []           # at least one for validation
    ds = LabelledDataset(make_ds(tmp_path / "d", n=5))
    a, b = ds.split(0.4, seed=1)
    assert len(a) == 3 and len(b) == 2
    assert {p.stem for p in a.items}.isdisjoint({p.stem for p in b.items})
    assert b.crystal_class == 2 and b.load(0)[1].shape == (48, 64)
    with pytest.raises(UserError, match="val_fraction"):
        split_indices(5, 1.5)


def _field_label(h=120, w=160, cx=80, cy=60, r=50):
    lab = np.zeros((h, w), np.uint8)
    cv2.circle(lab, (cx, cy), r, 1, -1)
    lab[55:65, 70:90] = 2
    return lab


def test_crops():
    lab = _field_label()
    img = np.dstack([lab * 100] * 3).astype(np.uint8)
    wi, wl = crop_whole(img, lab, dark_class=0)
    assert wl.shape == (101, 101)                   # the field circle's bounding box
    assert wi.shape == (101, 101, 3)
    _, cq = crop_central_quarter(img, lab, dark_class=0)
    assert cq.shape == (50, 50) and (cq == 2).any()
    _, c0 = crop_cornered_quarter(img, lab, corner=0, dark_class=0)
    _, c3 = crop_cornered_quarter(img, lab, corner=3, dark_class=0)
    assert c0.shape == c3.shape == (50, 50)
    assert c0[0, 0] == 0 and c3[-1, -1] == 0        # holds the dark corner
    _, ls = crop_lens_square(img, lab, dark_class=0)
    side = ls.shape[0]
    assert ls.shape == (side, side) and (ls != 0).all()
    assert 2 * 50 / np.sqrt(2) - 4 <= side <= 2 * 50 / np.sqrt(2) + 1   # inscribed square
    kinds = [k for k, _, _ in make_crops(img, lab, dark_class=0)]
    assert kinds == ["whole", "central_quarter"] + ["cornered_quarter"] * 4 + ["lens_square"]
    one = make_crops(img, lab, ["cornered_quarter"], rng=np.random.default_rng(0))
    assert len(one) == 1
    with pytest.raises(ValueError, match="share"):
        crop_whole(img[:10], lab)


def test_16_bit_frames_scale_like_the_edge(tmp_path):
    root = make_ds(tmp_path / "d", n=1)
    img8, _ = _frame(seed=0)
    grey12 = (img8[:, :, 0].astype(np.uint16) * 16)           # a 12-bit camera, 16-bit PNG
    assert cv2.imwrite(str(root / "images" / "f00.png"), grey12)
    img, _ = LabelledDataset(root).load(0)
    assert img.dtype == np.uint8 and img.shape == (48, 64, 3)
    expected = np.round(grey12.astype(np.float64) / 4095 * 255)
    assert np.abs(img[:, :, 1].astype(float) - expected).max() <= 1


def test_crops_of_a_synthetic_frame():
    from trainer.synth import SynthConfig, render_frame
    f = render_frame(np.random.default_rng(2), SynthConfig(width=320, height=240))
    crops = dict((k, (i, lab)) for k, i, lab in make_crops(f.image, f.label, corner=1))
    img, lab = crops["whole"]
    assert img.shape == (*lab.shape, 3)
    r = f.field_xyr[2]
    assert lab.shape[1] == pytest.approx(min(2 * r, 320), abs=2)   # the circle's width
    assert (lab[:, 0] != 0).any() and (lab[:, -1] != 0).any()       # field touches the sides
    _, ls = crops["lens_square"]
    assert ls.shape[0] == ls.shape[1] and (ls != 0).all()
    assert ls.shape[0] >= min(int(r * np.sqrt(2)) - 4, 240 - 4)
    assert (crops["cornered_quarter"][1] == 0).any()
