"""The synthetic flow-cell generator: determinism, exact labels, true sizes, statistics."""

from __future__ import annotations

import json
import math
import sys

import cv2
import numpy as np
import pytest

from edge.clikit import dispatch
from trainer.data import LabelledDataset
from trainer.synth import (
    SynthConfig,
    frame_seed,
    generate_dataset,
    make_outline,
    population_stats,
    render_frame,
    sample_diameters_um,
)

SMALL = {"width": 320, "height": 240}


def _cli(argv):
    return dispatch("crystal-train", "test", {"synth": "trainer.commands.synth",
                                             "check-data": "trainer.commands.check_data"}, argv)


def _shoelace(poly) -> float:
    p = np.asarray(poly, float)
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)))


def test_no_torch_needed():
    assert "torch" not in sys.modules or True  # other tests may import torch; check a subprocess
    import subprocess
    code = ("import sys, trainer.synth, trainer.data, trainer.weights; "
            "import trainer.commands.synth, trainer.commands.check_data, trainer.commands.weights; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_same_seed_same_bytes(tmp_path):
    cfg = SynthConfig(**SMALL, agglomerate_rate=0.3)
    generate_dataset(tmp_path / "a", 2, cfg, seed=7)
    generate_dataset(tmp_path / "b", 2, cfg, seed=7)
    generate_dataset(tmp_path / "c", 2, cfg, seed=8)
    a = tmp_path / "a"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 * 3 + 2  # images, labels, contacts; classes.json, truth.json
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (a / "truth.json").read_bytes() != (tmp_path / "c" / "truth.json").read_bytes()
    # a frame re-rendered alone is the same frame
    again = render_frame(frame_seed(7, 1), cfg)
    img = cv2.imread(str(tmp_path / "a" / "images" / "synth_00001.png"))
    np.testing.assert_array_equal(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), again.image)


def test_frame_content_and_label_classes():
    cfg = SynthConfig(**SMALL, fraction_um=(90, 125), density=0.2)
    f = render_frame(np.random.default_rng(3), cfg)
    assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8
    assert f.label.shape == (240, 320) and set(np.unique(f.label)) == {0, 1, 2}
    grey = f.image.astype(float).mean(axis=2)
    dark, light, crystal = (grey[f.label == k].mean() for k in (0, 1, 2))
    assert dark < 30 < crystal + 20 and crystal < light - 25 and light > 120
    # illuminated field: its label is the field circle
    cx, cy, r = f.field_xyr
    yy, xx = np.mgrid[0:240, 0:320]
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 < (r - 1.5) ** 2
    outside = (xx - cx) ** 2 + (yy - cy) ** 2 > (r + 1.5) ** 2
    assert (f.label[inside] != 0).all() and (f.label[outside] == 0).all()
    assert f.crystals and all(c.visible_fraction > 0 for c in f.crystals)


def test_labels_agree_with_truth_polygons():
    """Every isolated crystal is one connected label component of its polygon's area."""
    cfg = SynthConfig(width=640, height=480, agglomerate_rate=0.0, density=0.2,
                      fraction_um=(90, 125))
    poly_area = comp_area = 0.0
    n_checked = 0
    for i in range(4):
        f = render_frame(frame_seed(11, i), cfg)
        n, cc, stats, _ = cv2.connectedComponentsWithStats((f.label == 2).astype(np.uint8),
                                                           connectivity=8)
        assert n - 1 == len(f.crystals)        # separated crystals: one component each
        for c in f.crystals:
            assert c.diameter_um == pytest.approx(
                2 * math.sqrt(_shoelace(c.polygon_px) / math.pi) * 1.45, rel=1e-9)
            if not c.whole:
                continue
            x, y = (round(v) for v in c.centroid_px)
            k = cc[y, x]
            assert k > 0
            a = stats[k, cv2.CC_STAT_AREA]
            assert a == pytest.approx(c.area_px, rel=0.03, abs=4)
            poly_area += c.area_px
            comp_area += a
            n_checked += 1
    assert n_checked >= 15
    assert comp_area == pytest.approx(poly_area, rel=0.01)


def test_agglomerates_touch():
    cfg = SynthConfig(width=640, height=480, agglomerate_rate=0.6, density=0.2,
                      fraction_um=(90, 125))
    groups = 0
    for i in range(4):
        f = render_frame(frame_seed(5, i), cfg)
        _, cc = cv2.connectedComponents((f.label == 2).astype(np.uint8), connectivity=8)
        by_group: dict[int, set[int]] = {}
        for c in f.crystals:
            if c.agglomerate is None or not c.whole:
                continue
            x, y = (round(v) for v in c.centroid_px)
            by_group.setdefault(c.agglomerate, set()).add(int(cc[y, x]))
        for comps in by_group.values():
            assert len(comps) == 1 and 0 not in comps   # members share one blob
            groups += 1
        assert all(c.touches_other == (c.agglomerate is not None) for c in f.crystals)
    assert groups >= 3


def test_truth_json_statistics_recomputed(tmp_path):
    cfg = SynthConfig(**SMALL, fraction_um=(90, 125), agglomerate_rate=0.2, density=0.25)
    doc = generate_dataset(tmp_path / "d", 8, cfg, seed=2)
    on_disk = json.loads((tmp_path / "d" / "truth.json").read_text())
    assert on_disk["statistics"] == doc["statistics"]
    crystals = [c for fr in on_disk["frames"] for c in fr["crystals"]]
    d = np.array([2 * math.sqrt(_shoelace(c["polygon_px"]) / math.pi) * 1.45 for c in crystals])
    np.testing.assert_allclose(d, [c["diameter_um"] for c in crystals], rtol=1e-4)
    from edge.psd.quantiles import weighted_quantile_sorted
    for pop, keep in (("all", lambda c: True), ("centred", lambda c: c["centred"]),
                      ("whole", lambda c: not c["touches_border"] and not c["cut_by_field"]),
                      ("isolated_whole", lambda c: not c["touches_border"]
                       and not c["cut_by_field"] and not c["touches_other"])):
        dd = np.sort([di for di, c in zip(d, crystals, strict=True) if keep(c)])
        st = on_disk["statistics"][pop]
        assert st["n"] == dd.size > 5
        for q, key in ((0.1, "x10_3_um"), (0.5, "x50_3_um"), (0.9, "x90_3_um")):
            assert st[key] == pytest.approx(float(weighted_quantile_sorted(dd, dd ** 3, q)),
                                            abs=2e-3)


def test_truth_records_select_the_centred_population_also_from_older_files():
    from trainer.synth import centre_in_window, select_records

    cfg = SynthConfig.from_presets("field_cut", **SMALL, fraction_um=(90, 125), density=0.3)
    frame = render_frame(frame_seed(3, 0), cfg)
    cx, cy, r = frame.field_xyr
    records = frame.to_payload()["crystals"]
    centred = [c["id"] for c in records if c["centred"]]
    assert 0 < len(centred) < len(records)  # some centres lie outside the field or frame
    for c in records:
        x, y = c["centroid_px"]
        assert c["centred"] == ((x - cx) ** 2 + (y - cy) ** 2 <= r * r
                                and 0 <= x <= 319 and 0 <= y <= 239)
        assert c["centred"] == centre_in_window((x, y), frame.field_xyr, (240, 320))
    doc = {"field": {"cx": cx, "cy": cy, "r": r}, "crystals": records}
    assert [c["id"] for c in select_records(doc, "centred", (240, 320))] == centred
    old = {**doc, "crystals": [{k: v for k, v in c.items() if k != "centred"} for c in records]}
    assert [c["id"] for c in select_records(old, "centred", (240, 320))] == centred
    assert len(select_records(doc, "all", (240, 320))) == len(records)
    with pytest.raises(ValueError, match="unknown population"):
        select_records(doc, "visible", (240, 320))


def test_sieve_and_lognormal_size_distributions():
    rng = np.random.default_rng(0)
    d = sample_diameters_um(rng, SynthConfig(fraction_um=(125, 180), tail_fraction=0.0), 40000)
    assert d.min() >= 125 and d.max() <= 180
    st = population_stats(d)
    assert st["x50_3_um"] == pytest.approx(152.5, rel=0.01)   # uniform q3 in the fraction
    d = sample_diameters_um(rng, SynthConfig(fraction_um=(90, 125), tail_fraction=0.15), 40000)
    assert np.mean(d < 90) == pytest.approx(0.10, abs=0.01)
    assert np.mean(d > 125) == pytest.approx(0.05, abs=0.01)
    assert d.min() >= 0.45 * 90 - 1e-9 and d.max() <= 1.3 * 125 + 1e-9
    cfg = SynthConfig(size_mode="lognormal", lognormal_x50_um=100, lognormal_s=0.3)
    d = sample_diameters_um(rng, cfg, 200000)
    assert population_stats(d)["x50_3_um"] == pytest.approx(100, rel=0.01)
    assert np.std(np.log(d)) == pytest.approx(0.3, rel=0.02)


def test_outlines_are_convex_equant_and_exact_in_area():
    rng = np.random.default_rng(1)
    for _ in range(200):
        poly, shape, aspect = make_outline(rng, 60.0, aspect_max=1.6)
        assert _shoelace(poly) == pytest.approx(math.pi * 30 ** 2, rel=1e-9)
        assert cv2.isContourConvex(np.round(poly * 16).astype(np.int32))
        assert 1.0 <= aspect <= 1.6 * 1.001 and np.allclose(poly.mean(0), 0, atol=8)
        assert shape in ("hexagon", "octagon", "rhomb", "irregular")


def test_bubbles_and_debris_are_background():
    cfg = SynthConfig(**SMALL, density=0.0, bubbles_per_frame=6, debris_per_frame=20,
                      dust_probability=1.0)
    f = render_frame(np.random.default_rng(4), cfg)
    assert not f.crystals and not (f.label == 2).any()
    grey = f.image.astype(float).mean(axis=2)
    light = grey[f.label == 1]
    assert light.min() < 0.6 * np.median(light)    # dark bubble rings and debris are there


def test_synth_cli_and_check_data(tmp_path, capsys):
    out = tmp_path / "s"
    assert _cli(["synth", "--out", str(out), "--n", "2", "--size", "256x192",
                 "--fraction", "90-125", "--seed", "3", "--agglomerate-rate", "0.2",
                 "--density", "0.2"]) == 0
    assert "x50,3=" in capsys.readouterr().out
    truth = json.loads((out / "truth.json").read_text())
    assert truth["config"]["fraction_um"] == [90.0, 125.0] and truth["n_frames"] == 2
    ds = LabelledDataset(out)
    assert len(ds) == 2 and ds.crystal_class == 2 and ds.px_size_um == 1.45
    assert ds.load(0)[0].shape == (192, 256, 3)
    assert _cli(["check-data", str(out)]) == 0
    assert _cli(["synth", "--out", str(tmp_path / "l"), "--n", "1", "--size", "128x96",
                 "--lognormal", "80,0.3"]) == 0
    assert json.loads((tmp_path / "l" / "truth.json").read_text())["config"]["size_mode"] \
        == "lognormal"


@pytest.mark.parametrize(("argv", "match"), [
    (["--size", "12x"], "--size: expected two numbers"),
    (["--fraction", "180-125"], "fraction_um"),
    (["--n", "0"], "--n: need at least 1"),
    (["--density", "2"], "density"),
])
def test_synth_cli_bad_arguments(tmp_path, capsys, argv, match):
    base = ["synth", "--out", str(tmp_path / "x"), "--n", "1"]
    assert _cli(base + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


@pytest.mark.slow
@pytest.mark.parametrize("fraction", ["90-125", "125-180"])
def test_analyze_masks_recovers_true_x50_3(tmp_path, fraction):
    """End to end: ``crystal-edge analyze --masks`` on generated labels gives the true
    x50,3 of the crystals centred in the field within 3 % (border clearing + edge
    correction, agglomerate rejection and crystals cut by the field edge included)."""
    import subprocess

    out = tmp_path / "set"
    assert _cli(["synth", "--out", str(out), "--n", "36", "--fraction", fraction,
                 "--seed", "21", "--density", "0.2"]) == 0
    truth = json.loads((out / "truth.json").read_text())["statistics"]
    rep = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "analyze", "--masks", str(out / "labels"),
         "--crystal-class", "2", "--px-size-um", "1.45", "--bootstrap", "0",
         "--json", str(rep)], capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(rep.read_text())
    assert got["n_crystals"] >= 250
    print(f"{fraction}: x50,3 {got['x50_3_um']:.1f} um, truth centred "
          f"{truth['centred']['x50_3_um']:.1f} um, all {truth['all']['x50_3_um']:.1f} um")
    assert got["x50_3_um"] == pytest.approx(truth["centred"]["x50_3_um"], rel=0.03)
    lo, hi = (float(v) for v in fraction.split("-"))
    assert lo < got["x50_3_um"] < hi
