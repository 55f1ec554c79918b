"""The broader generator: habits, presets, exact instance ids and contact maps."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from trainer.synth import (
    CRYSTAL,
    HABIT_ASPECT,
    HABITS,
    PRESETS,
    SynthConfig,
    boundary_map,
    contact_map,
    habit_outline,
    make_outline,
    polygon_area,
    render_frame,
)
from trainer.synth.geometry import convex_mask

SMALL = {"width": 320, "height": 240}


def test_compact_habit_is_the_default_outline() -> None:
    a = make_outline(np.random.default_rng(5), 40.0)
    b = habit_outline(np.random.default_rng(5), 40.0, "compact")
    np.testing.assert_array_equal(a[0], b[0])
    assert b[1] is None and SynthConfig().habit == "compact"


@pytest.mark.parametrize("habit", [h for h in HABITS if h != "compact"])
def test_habit_outlines_have_their_area_and_aspect(habit: str) -> None:
    rng = np.random.default_rng(11)
    lo, hi = HABIT_ASPECT.get(habit, (1.0, 1.6))
    for _ in range(40):
        poly, parts, shape, aspect = habit_outline(rng, 50.0, habit)
        assert shape == habit
        assert polygon_area(poly) == pytest.approx(math.pi * 25.0 ** 2, rel=1e-6)
        assert np.allclose(poly.mean(0), 0, atol=20)  # about the centroid
        if habit == "twin":  # a union of two convex prisms: not convex
            assert parts is not None and len(parts) == 2
            a, b = (polygon_area(q) for q in parts)
            assert max(a, b) < polygon_area(poly) < a + b  # the parts overlap
            hull = cv2.convexHull(poly.astype(np.float32)).reshape(-1, 2)
            assert polygon_area(hull) > 1.05 * polygon_area(poly)
        elif habit in ("prism", "needle", "plate", "rhomb"):
            assert parts is None
            assert lo * 0.99 <= aspect <= hi * 1.01, (habit, aspect)


def test_needles_reach_aspect_ten() -> None:
    rng = np.random.default_rng(3)
    got = [habit_outline(rng, 40.0, "needle")[3] for _ in range(200)]
    assert min(got) >= 2.97 and max(got) > 9.0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_renders(name: str) -> None:
    cfg = SynthConfig.from_presets(name, **SMALL)
    f = render_frame(np.random.default_rng(1), cfg)
    assert f.image.shape == (240, 320, 3)
    assert ((f.instances > 0) == (f.label == CRYSTAL)).all()


def test_presets_combine_and_typos_are_named() -> None:
    cfg = SynthConfig.from_presets("needles", "crowded", px_size_um=2.0)
    assert (cfg.habit, cfg.density, cfg.px_size_um) == ("needle", 0.35, 2.0)
    with pytest.raises(ValueError, match="unknown synth preset 'needle'"):
        SynthConfig.from_presets("needle")


def test_synth_cli_takes_presets(tmp_path, capsys) -> None:
    from trainer.cli import main as cli

    out = tmp_path / "needles"
    assert cli(["synth", "--out", str(out), "--n", "1", "--size", "320x240",
                "--preset", "needles,crowded", "--px-size-um", "2.0"]) == 0
    recipe = json.loads((out / "truth.json").read_text())["config"]
    assert (recipe["habit"], recipe["density"], recipe["px_size_um"]) == ("needle", 0.35, 2.0)
    fine = tmp_path / "fine"  # a preset's pixel size holds unless --px-size-um is given
    assert cli(["synth", "--out", str(fine), "--n", "1", "--size", "320x240",
                "--preset", "fine_pixels"]) == 0
    assert json.loads((fine / "truth.json").read_text())["config"]["px_size_um"] == 0.5
    capsys.readouterr()
    assert cli(["synth", "--out", str(tmp_path / "x"), "--n", "1", "--preset", "needle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--preset: unknown synth preset 'needle'" in err[0]


def _true_mask(c, shape) -> np.ndarray:
    polys = c.parts_px if c.parts_px is not None else [c.polygon_px]
    return np.maximum.reduce([convex_mask(p, shape) for p in polys]).astype(bool)


@pytest.mark.parametrize("presets", [("crowded",), ("needles", "crowded"), ("twins", "crowded")])
def test_instance_ids_are_exact(presets: tuple[str, ...]) -> None:
    cfg = SynthConfig.from_presets(*presets, **SMALL, agglomerate_rate=0.6)
    f = render_frame(np.random.default_rng(4), cfg)
    h, w = f.label.shape
    cx, cy, r = f.field_xyr
    yy, xx = np.mgrid[0:h, 0:w]
    field = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    masks = [_true_mask(c, (h, w)) & field for c in f.crystals]
    assert [c.id for c in f.crystals] == list(range(len(f.crystals)))
    coverage = np.sum(masks, axis=0)
    np.testing.assert_array_equal(f.coverage, coverage)
    on_top = np.zeros((h, w), np.int32)
    for k, m in enumerate(masks):  # drawn in id order, later on top
        on_top[m] = k + 1
    np.testing.assert_array_equal(f.instances, on_top)
    # every crystal with a visible pixel not covered by a later one owns exactly those
    touching = [c for c in f.crystals if c.touches_other]
    assert len(touching) >= 2
    for c in touching:
        ids = set(np.unique(f.instances[masks[c.id]])) - {0}
        assert c.id + 1 in ids or coverage[masks[c.id]].min() >= 2
    # touching crystals of one agglomerate carry distinct ids and meet in the contact map
    contacts = contact_map(f.instances, f.coverage)
    groups: dict[int, list[int]] = {}
    for c in touching:
        groups.setdefault(c.agglomerate, []).append(c.id)
    assert any(len(v) >= 2 for v in groups.values())
    for ids in groups.values():
        union = np.any([masks[i] for i in ids], axis=0)
        if len(set(np.unique(f.instances[union])) - {0}) >= 2:
            assert contacts[union].any()


def test_contact_and_boundary_maps_of_two_touching_squares() -> None:
    ids = np.zeros((10, 14), np.int32)
    ids[2:8, 2:7] = 1
    ids[2:8, 7:12] = 2
    ids[0, 0] = 3  # alone
    c = contact_map(ids)
    assert c[2:8, 6].all() and c[2:8, 7].all()
    assert c.sum() == 12  # the two columns along the shared edge, nothing else
    b = boundary_map(ids)
    assert b[2, 2:12].all() and b[2:8, 6:8].all() and b[0, 0] == 1
    assert b[4, 4] == 0 and b[4, 9] == 0
    cov = np.zeros_like(ids, np.uint8)
    cov[4, 4] = 2
    assert contact_map(ids, cov)[4, 4] == 1
