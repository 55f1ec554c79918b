"""compute_psd: classes, Q0/Q3, characteristic diameters, log-normal fit, N = 0 / 1."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from edge.psd import PsdConfig, compute_psd, fit_lognormal, lognormal_q3

NO_BOOT = PsdConfig(bootstrap_n=0)


def test_two_crystals_classes_and_fractions():
    r = compute_psd([12.0, 24.0], config=NO_BOOT)
    # the fixed grid: 0..1000 um in 10 um classes, then the overflow class
    assert r.edges_um.size == 102 and r.edges_um[:4].tolist() == [0.0, 10.0, 20.0, 30.0]
    assert r.edges_um[-2] == 1000.0 and r.edges_um[-1] == np.inf
    assert r.counts[1:3].tolist() == [1, 1] and r.counts.sum() == 2
    assert r.q0[1:3].tolist() == [0.5, 0.5]
    v1, v2 = 12.0**3, 24.0**3
    assert r.q3[1:3] == pytest.approx([v1 / (v1 + v2), v2 / (v1 + v2)])
    assert r.Q3[:4] == pytest.approx([0.0, v1 / (v1 + v2), 1.0, 1.0])
    assert r.Q0[:3] == pytest.approx([0.0, 0.5, 1.0]) and r.Q3[-1] == 1.0
    assert r.q3_density_per_um[:-1] == pytest.approx(r.q3[:-1] / 10.0)
    assert r.d32_um == pytest.approx((v1 + v2) / (12.0**2 + 24.0**2))
    assert r.class_largest_um[1:3].tolist() == [12.0, 24.0]
    # midpoint rule: F = v1/2/V, (v1 + v2/2)/V; x50_0 = mean of the two
    assert r.x50_0_um == pytest.approx(18.0)
    f1, f2 = 0.5 * v1 / (v1 + v2), (v1 + 0.5 * v2) / (v1 + v2)
    assert r.x50_3_um == pytest.approx(12 + (0.5 - f1) / (f2 - f1) * 12)
    assert r.span == pytest.approx((r.x90_3_um - r.x10_3_um) / r.x50_3_um)


def test_empty_classes_inside_the_range_and_class_min():
    r = compute_psd([5.0, 47.0], config=PsdConfig(bootstrap_n=0, class_width_um=20,
                                                   class_min_um=10))
    # 5 um lies below class_min_um: counted in the first class [10, 30)
    assert r.edges_um[:3].tolist() == [10.0, 30.0, 50.0] and r.edges_um[-2] == 1000.0
    assert r.counts[:2].tolist() == [1, 1]
    r2 = compute_psd([11.0, 55.0], config=NO_BOOT)
    assert r2.counts[1:6].tolist() == [1, 0, 0, 0, 1]
    assert r2.Q3[2:5] == pytest.approx([r2.Q3[1]] * 3)


def test_overflow_class_and_a_grid_that_is_not_a_multiple_of_the_width():
    cfg = PsdConfig(bootstrap_n=0, class_width_um=30, class_max_um=100)
    r = compute_psd([10.0, 95.0, 100.0, 5000.0], config=cfg)
    assert r.edges_um.tolist() == [0.0, 30.0, 60.0, 90.0, 100.0, np.inf]
    assert r.counts.tolist() == [1, 0, 0, 1, 2]
    p = r.to_payload()
    assert p["bins"][-1]["upper_um"] is None and p["bins"][-1]["lower_um"] == 100.0
    assert p["class_max_um"] == 100.0 and p["bins"][-1]["q3_density_per_um"] == 0.0
    json.dumps(p, allow_nan=False)


def test_the_grid_does_not_depend_on_the_crystals():
    a = compute_psd([12.0, 30.0], config=NO_BOOT)
    b = compute_psd([300.0, 700.0, 1200.0], config=NO_BOOT)
    empty = compute_psd([], config=NO_BOOT)
    assert a.edges_um.tolist() == b.edges_um.tolist() == empty.edges_um.tolist()
    assert empty.counts.sum() == 0 and empty.Q3.sum() == 0.0


def test_weights_are_number_weights():
    d = np.array([10.0, 20.0])
    r = compute_psd(d, weights=[3.0, 1.0], config=NO_BOOT)
    assert r.weighted
    assert r.q0[1:3] == pytest.approx([0.75, 0.25])
    assert r.q3[1:3] == pytest.approx([3000 / 11000, 8000 / 11000])
    assert r.weight_sum == 4.0
    # same as repeating the first crystal three times
    r3 = compute_psd([10.0, 10.0, 10.0, 20.0], config=NO_BOOT)
    assert r3.q3 == pytest.approx(r.q3) and r3.d32_um == pytest.approx(r.d32_um)


@pytest.mark.parametrize("n", [0, 1])
def test_zero_and_one_crystal_no_warnings(n):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = compute_psd(np.full(n, 42.0))
    p = r.to_payload()
    json.dumps(p, allow_nan=False)
    assert p["n_crystals"] == n
    assert p["x50_3_ci95_um"] is None and p["lognormal"] is None
    assert len(p["bins"]) == 101
    if n == 0:
        assert p["x50_3_um"] is None and p["span"] is None
        assert all(b["count"] == 0 and b["Q3"] == 0.0 for b in p["bins"])
    else:
        assert p["x50_3_um"] == 42.0 and p["x10_3_um"] == 42.0 and p["span"] == 0.0
        assert p["bins"][4] == {"lower_um": 40.0, "upper_um": 50.0, "count": 1, "q0": 1.0,
                                "q3": 1.0, "Q0": 1.0, "Q3": 1.0, "q3_density_per_um": 0.1,
                                "max_um": 42.0}


def test_all_weights_zero_is_empty():
    r = compute_psd([10.0, 20.0], weights=[0.0, 0.0])
    assert r.n == 0 and r.x50_3_um is None


@pytest.mark.parametrize("bad, match", [
    (np.array([[1.0, 2.0]]), r"shape \(1, 2\)"),
    (np.array([1.0, -2.0]), "> 0"),
    (np.array([1.0, np.nan]), "finite"),
])
def test_bad_diameters(bad, match):
    with pytest.raises(ValueError, match=match):
        compute_psd(bad)


def test_bad_weights():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        compute_psd([1.0, 2.0], weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=">= 0"):
        compute_psd([1.0, 2.0], weights=[1.0, -1.0])


def test_payload_is_plain_json():
    d = np.random.default_rng(0).lognormal(np.log(80), 0.3, 400)
    p = compute_psd(d, config=PsdConfig(bootstrap_n=200)).to_payload()
    text = json.dumps(p, allow_nan=False)
    assert json.loads(text) == p
    assert sum(b["count"] for b in p["bins"]) == 400
    assert p["bins"][-1]["Q3"] == 1.0
    lo, hi = p["x50_3_ci95_um"]
    assert lo < p["x50_3_um"] < hi


def test_lognormal_recovered_from_number_sample():
    # ISO 9276-5: drawn by number with median x50,0 and s, the volume distribution is
    # log-normal with the same s and ln x50,3 = ln x50,0 + 3 s^2
    rng = np.random.default_rng(2024)
    s, x50_0 = 0.30, 110.0
    d = rng.lognormal(np.log(x50_0), s, 20000)
    r = compute_psd(d, config=NO_BOOT)
    x50_3 = x50_0 * np.exp(3 * s**2)
    assert r.lognormal is not None
    assert r.lognormal.x50_3_um == pytest.approx(x50_3, rel=0.01)
    assert r.lognormal.s_lnd == pytest.approx(s, rel=0.03)
    assert r.lognormal.rmse < 0.01
    assert r.x50_3_um == pytest.approx(x50_3, rel=0.01)
    assert r.x50_0_um == pytest.approx(x50_0, rel=0.01)
    # Sauter diameter of a log-normal by number: x50,0 exp(2.5 s^2)
    assert r.d32_um == pytest.approx(x50_0 * np.exp(2.5 * s**2), rel=0.01)
    # the study's plotting points (largest crystal per class) give a close fit too
    rc = compute_psd(d, config=PsdConfig(bootstrap_n=0, fit_points="class_max"))
    assert rc.lognormal.x50_3_um == pytest.approx(x50_3, rel=0.03)


def test_fit_needs_three_points_and_can_be_disabled():
    assert compute_psd([10.0, 11.0, 12.0], config=NO_BOOT).lognormal is None  # one class
    assert compute_psd([10.0, 25.0, 40.0], config=NO_BOOT).lognormal is not None
    assert compute_psd([10.0, 25.0], config=NO_BOOT).lognormal is None  # fit_min_crystals
    off = PsdConfig(bootstrap_n=0, lognormal_fit=False)
    assert compute_psd([10.0, 25.0, 40.0], config=off).lognormal is None


def test_fit_lognormal_exact_curve():
    x = np.arange(20.0, 400.0, 10.0)
    fit = fit_lognormal(x, lognormal_q3(x, 150.0, 0.25))
    assert fit.x50_3_um == pytest.approx(150.0, rel=1e-6)
    assert fit.s_lnd == pytest.approx(0.25, rel=1e-6)
    assert fit.rmse < 1e-8 and fit.n_points == x.size
    assert lognormal_q3(np.array([0.0, 150.0]), 150.0, 0.25).tolist() == [0.0, 0.5]


def test_too_many_classes_or_an_empty_grid_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"1000000 classes \(at most 10000\)"):
        PsdConfig(class_width_um=0.001)
    with pytest.raises(ValidationError, match="must be above class_min_um"):
        PsdConfig(class_min_um=50, class_max_um=20)
