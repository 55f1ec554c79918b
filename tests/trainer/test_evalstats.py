"""Frame bootstrap of an evaluation: intervals of x50,3 error, Q3 distance, crystal IoU,
and the paired comparison of two models (crystal-train evaluate --baseline)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fixtures.tiny_model import build_tiny_model
from trainer.cli import main as cli
from trainer.engine import metrics_from_confusion
from trainer.evalstats import (
    FrameSample,
    Sizes,
    frame_intervals,
    multiplicities,
    paired_intervals,
    pool_estimates,
)
from trainer.synth import weighted_quantile

RNG = np.random.default_rng(3)


def _frames(n_frames=12, per_frame=15, scale=1.0):
    """Per frame a lognormal sample of diameters (um), each frame's median its own."""
    return [RNG.lognormal(np.log(100 * RNG.uniform(0.8, 1.25)), 0.3, per_frame) * scale
            for _ in range(n_frames)]


def _cm(tp, fp, fn):
    """A 3-class confusion matrix (rows true) with the crystal class's tp, fp, fn."""
    return np.array([[500, 0, 0], [0, 500, fp], [0, fn, tp]], np.int64)


def _sample(pred, truth, *, label=None, confusion=None, stems=None):
    n = len(truth)
    conf = np.stack(confusion) if confusion is not None else np.stack([_cm(90, 5, 5)] * n)
    grid = np.arange(0, 400, 10.0)
    return FrameSample(tuple(stems or (f"f{i}" for i in range(n))), conf, 2,
                       pred=Sizes.from_frames([(d, None) for d in pred]),
                       label=Sizes.from_frames([(d, None) for d in (label or truth)]),
                       truth=Sizes.from_frames([(d, None) for d in truth]), grid_um=grid)


def test_figures_of_the_whole_sample_are_the_plain_ones():
    truth = _frames()
    pred = [d * RNG.uniform(0.95, 1.05, d.size) for d in truth]
    w = [RNG.uniform(1, 2, d.size) for d in pred]
    s = FrameSample(tuple(f"f{i}" for i in range(12)),
                    np.stack([_cm(80 + i, 10, 3) for i in range(12)]), 2,
                    pred=Sizes.from_frames(list(zip(pred, w, strict=True))),
                    label=Sizes.from_frames([(d, None) for d in truth]),
                    truth=Sizes.from_frames([(d, None) for d in truth]),
                    grid_um=np.arange(0, 400, 10.0))
    f = s.figures(np.ones((1, 12), np.int64))
    dp, wp, dt = np.concatenate(pred), np.concatenate(w), np.concatenate(truth)
    x_p, x_t = weighted_quantile(dp, wp * dp ** 3, 0.5), weighted_quantile(dt, dt ** 3, 0.5)
    assert f["x50_3_rel_error"][0] == pytest.approx(x_p / x_t - 1, rel=1e-12)
    assert f["x50_3_label_rel_error"][0] == pytest.approx(0, abs=1e-15)
    grid = np.arange(0, 400, 10.0)

    def q3(d, wt):
        return np.array([(wt * d ** 3)[d <= g].sum() for g in grid]) / (wt * d ** 3).sum()
    ks = np.max(np.abs(q3(dp, wp) - q3(dt, np.ones_like(dt))))
    assert f["q3_max_abs_diff"][0] == pytest.approx(ks, abs=1e-12)
    cm = sum(_cm(80 + i, 10, 3) for i in range(12))
    assert f["iou_crystal"][0] == pytest.approx(
        metrics_from_confusion(cm, ["a", "b", "c"])["iou"]["c"], rel=1e-12)


def test_multiplicities_resample_the_frames():
    m = multiplicities(7, n_boot=500, seed=4)
    assert m.shape == (500, 7) and (m.sum(axis=1) == 7).all() and m.min() >= 0
    assert np.array_equal(m, multiplicities(7, n_boot=500, seed=4))
    assert abs(m.mean() - 1) < 0.05  # every frame equally likely
    with pytest.raises(ValueError, match="n_frames"):
        multiplicities(0)


def test_the_interval_is_the_frames_not_the_crystals():
    """Identical frames: resampling them changes nothing, however many crystals vary
    inside a frame; frames that differ give an interval around the estimate."""
    one = _frames(1)[0]
    same = _sample([one * 1.03] * 10, [one] * 10)
    iv = frame_intervals(same)
    assert iv["x50_3_rel_error"]["lo"] == pytest.approx(0.03, abs=1e-9)
    assert iv["x50_3_rel_error"]["hi"] == pytest.approx(0.03, abs=1e-9)
    truth = _frames(10)
    pred = [d * (1 + RNG.normal(0, 0.05)) for d in truth]  # a per-frame error
    s = _sample(pred, truth)
    est = s.figures(np.ones((1, 10), np.int64))["x50_3_rel_error"][0]
    iv = frame_intervals(s)["x50_3_rel_error"]
    assert iv["lo"] < est < iv["hi"] and iv["hi"] - iv["lo"] > 0.01 and iv["se"] > 0
    # a bias the same on every crystal is exactly that bias, whatever frames are drawn
    s = _sample([d * 0.95 for d in truth], truth)
    iv = frame_intervals(s)["x50_3_rel_error"]
    assert iv["lo"] == pytest.approx(-0.05, abs=1e-9) and iv["hi"] == pytest.approx(-0.05,
                                                                                   abs=1e-9)


def test_more_frames_give_a_narrower_interval():
    def width(n):
        truth = _frames(n)
        pred = [d * (1 + RNG.normal(0, 0.05)) for d in truth]
        iv = frame_intervals(_sample(pred, truth), seed=1)["x50_3_rel_error"]
        return iv["hi"] - iv["lo"]
    assert width(64) < 0.75 * width(8)


def test_frames_without_crystals_and_a_single_frame():
    truth = _frames(4)
    pred = [truth[0], np.zeros(0), truth[2] * 1.1, np.zeros(0)]
    s = _sample(pred, [truth[0], np.zeros(0), truth[2], np.zeros(0)])
    iv = frame_intervals(s)
    assert iv["x50_3_rel_error"]["lo"] <= iv["x50_3_rel_error"]["hi"]
    assert frame_intervals(_sample(pred[:1], truth[:1])) == {}
    # segmentation only (no truth): the IoU interval alone
    seg = FrameSample(("a", "b", "c"), np.stack([_cm(90, 5, 5), _cm(50, 40, 10),
                                                 _cm(70, 1, 1)]), 2)
    assert set(frame_intervals(seg)) == {"iou_crystal"}


def test_paired_comparison_says_better_worse_or_not_distinguishable():
    truth = _frames(16)
    base = _sample([d * (1 + RNG.normal(0, 0.05)) for d in truth], truth,
                   confusion=[_cm(80, 10, 10)] * 16)
    # same model: no difference
    same = paired_intervals(base, base)
    assert {f["verdict"] for f in same.values()} == {"not distinguishable"}
    assert all(f["difference"] == 0 for f in same.values())
    # better on every frame: IoU up, the x50,3 error gone
    better = _sample(truth, truth, confusion=[_cm(85, 6, 6)] * 16)
    c = paired_intervals(base, better)
    assert c["iou_crystal"]["verdict"] == "better" and c["iou_crystal"]["difference"] > 0
    assert c["abs_x50_3_rel_error"]["verdict"] == "better"
    assert c["abs_x50_3_rel_error"]["hi"] < 0
    assert paired_intervals(better, base)["iou_crystal"]["verdict"] == "worse"
    # a difference on one frame of 16 that the rest contradict is not distinguishable
    mixed = [_cm(80, 10, 10)] * 15 + [_cm(200, 0, 0)]
    one = _sample([d * (1 + RNG.normal(0, 0.05)) for d in truth], truth,
                  confusion=[_cm(79, 11, 10)] * 8 + [_cm(81, 9, 10)] * 7 + [mixed[-1]])
    assert paired_intervals(base, one)["iou_crystal"]["verdict"] == "not distinguishable"
    with pytest.raises(ValueError, match="not of the same frames"):
        paired_intervals(base, _sample(truth, truth, stems=[f"g{i}" for i in range(16)]))


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    from trainer.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("synth") / "set"
    generate_dataset(root, 4, SynthConfig(width=384, height=320, fraction_um=(90, 125)), seed=5)
    return root


def test_evaluate_reports_intervals_matching_its_figures(synth_set, tmp_path):
    from trainer.evaluate import evaluate_model

    model = build_tiny_model(tmp_path / "m")
    res = evaluate_model(model, synth_set)
    f = res.sample.figures(np.ones((1, res.n_frames), np.int64))
    m = res.measurement
    assert f["x50_3_rel_error"][0] == pytest.approx(m["x50_3_rel_error"], rel=1e-9)
    assert f["x50_3_label_rel_error"][0] == pytest.approx(m["x50_3_label_rel_error"], rel=1e-9)
    assert f["q3_max_abs_diff"][0] == pytest.approx(m["q3_max_abs_diff"], abs=1e-9)
    assert f["iou_crystal"][0] == pytest.approx(res.segmentation["iou"]["crystal"], rel=1e-9)
    iv = res.intervals["x50_3_rel_error"]
    assert iv["lo"] <= iv["hi"] and set(iv) == {"lo", "hi", "se"}
    assert "95 %:" in res.summary()
    json.dumps(res.to_payload(), allow_nan=False)


def test_evaluate_against_a_baseline(synth_set, tmp_path, capsys):
    a = build_tiny_model(tmp_path / "a")
    b = build_tiny_model(tmp_path / "b", name="other", bright=0.6)
    out = tmp_path / "r.json"
    assert cli(["evaluate", "--model", str(b), "--baseline", str(a), "--data", str(synth_set),
                "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "other.onnx against tiny-seg.onnx on the same 4 frames" in text
    assert "crystal IoU:" in text and "|x50,3 error|:" in text
    comp = json.loads(out.read_text())["comparison"]
    assert comp["n_frames"] == 4 and comp["baseline"] == str(a)
    assert comp["figures"]["iou_crystal"]["verdict"] in {"better", "worse",
                                                          "not distinguishable"}
    # the model against itself: nothing to tell apart
    assert cli(["evaluate", "--model", str(a), "--baseline", str(a), "--data",
                str(synth_set)]) == 0
    text = capsys.readouterr().out
    assert text.count("not distinguishable") == 3 and "better" not in text
    assert f"{a} against {a} on the same 4 frames" in text  # one name: the paths


def test_pooling_weights_by_error_and_widens_for_samples_that_disagree():
    # agreeing samples: the fixed-effect mean, its error shrinks as 1/sqrt(K)
    p = pool_estimates([0.010, 0.014], [0.01, 0.01])
    assert p.value == pytest.approx(0.012) and p.se == pytest.approx(0.01 / np.sqrt(2))
    assert p.lo == pytest.approx(0.012 - 1.959964 * p.se, abs=1e-6)
    assert p.q == pytest.approx(0.08) and p.p_heterogeneity == pytest.approx(0.777, abs=1e-3)
    # inverse-variance weights: the sample with half the error counts four times as much
    assert pool_estimates([0.0, 0.005], [0.01, 0.02]).value == pytest.approx(0.001)
    # disagreeing samples (DerSimonian-Laird by hand): q = 18, tau^2 = 17 / 200 * 1e-4 * 100
    d = pool_estimates([-0.03, 0.03], [0.01, 0.01])
    tau2 = (18 - 1) / (2e4 - 2e8 / 2e4)
    assert d.q == pytest.approx(18) and d.p_heterogeneity < 0.001
    assert d.value == pytest.approx(0.0, abs=1e-12)
    assert d.se == pytest.approx(np.sqrt((1e-4 + tau2) / 2))
    assert d.se > 3 * 0.01 / np.sqrt(2)  # far wider than the fixed-effect error
    one = pool_estimates([0.02], [0.01])
    assert (one.value, one.se, one.p_heterogeneity) == (0.02, 0.01, None)


@pytest.mark.parametrize("values, ses", [([0.1], [0.0]), ([0.1, 0.2], [0.1]), ([], []),
                                         ([np.nan], [0.1]), ([0.1], [np.inf])])
def test_pooling_refuses_what_it_cannot_weigh(values, ses):
    with pytest.raises(ValueError, match=r"sequences|standard errors|finite"):
        pool_estimates(values, ses)
