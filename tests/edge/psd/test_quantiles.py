"""Weighted quantiles (midpoint rule on the raw sample) and the bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from edge.psd import bootstrap_quantile_ci, compute_psd, weighted_quantile_sorted
from edge.psd.config import PsdConfig


def test_equal_weights_odd_n_gives_median():
    x = np.array([1.0, 2.0, 7.0, 9.0, 30.0])
    assert weighted_quantile_sorted(x, np.ones(5), 0.5) == pytest.approx(7.0)


def test_midpoint_rule_interpolates_between_items():
    # F = (0.5, 1.5, 2.5, 3.5) / 4 = 0.125, 0.375, 0.625, 0.875
    x = np.array([10.0, 20.0, 30.0, 40.0])
    assert weighted_quantile_sorted(x, np.ones(4), 0.5) == pytest.approx(25.0)
    assert weighted_quantile_sorted(x, np.ones(4), 0.25) == pytest.approx(15.0)
    # outside the first/last midpoint: clamped to the extreme values
    assert weighted_quantile_sorted(x, np.ones(4), 0.05) == pytest.approx(10.0)
    assert weighted_quantile_sorted(x, np.ones(4), 0.95) == pytest.approx(40.0)


def test_weights_and_zero_weights():
    x = np.array([10.0, 20.0, 30.0])
    # weights 1, 0, 3: F = 0.125 (x=10), 0.625 (x=30); the zero-weight item is ignored
    w = np.array([1.0, 0.0, 3.0])
    assert weighted_quantile_sorted(x, w, 0.5) == pytest.approx(10 + (0.5 - 0.125) / 0.5 * 20)
    assert np.isnan(weighted_quantile_sorted(x, np.zeros(3), 0.5))


def test_rows_match_single_vectors():
    rng = np.random.default_rng(3)
    x = np.sort(rng.uniform(1, 100, 50))
    w = rng.uniform(0, 2, (6, 50))
    w[:, ::7] = 0
    rows = weighted_quantile_sorted(x, w, 0.3)
    assert rows.shape == (6,)
    for i in range(6):
        assert rows[i] == pytest.approx(weighted_quantile_sorted(x, w[i], 0.3))


def test_quantiles_do_not_depend_on_class_width():
    d = np.random.default_rng(5).lognormal(np.log(100), 0.4, 3000)
    a = compute_psd(d, config=PsdConfig(class_width_um=10, bootstrap_n=0))
    b = compute_psd(d, config=PsdConfig(class_width_um=37, bootstrap_n=0))
    assert a.x50_3_um == b.x50_3_um and a.x10_3_um == b.x10_3_um and a.x50_0_um == b.x50_0_um
    # and it is the raw-sample volume median, not a binned value
    ds = np.sort(d)
    assert a.x50_3_um == pytest.approx(weighted_quantile_sorted(ds, ds**3, 0.5))


def test_bad_arguments_quote_shapes():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        weighted_quantile_sorted(np.arange(4.0), np.ones(3), 0.5)
    with pytest.raises(ValueError, match="outside"):
        weighted_quantile_sorted(np.arange(4.0), np.ones(4), 1.5)


def test_bootstrap_interval_seeded_and_covers_truth():
    rng = np.random.default_rng(11)
    s, x50_0 = 0.3, 100.0
    d = np.sort(rng.lognormal(np.log(x50_0), s, 5000))
    true_x50_3 = x50_0 * np.exp(3 * s**2)
    ci1 = bootstrap_quantile_ci(d, d**3, 0.5, n_boot=500, seed=1)
    ci2 = bootstrap_quantile_ci(d, d**3, 0.5, n_boot=500, seed=1)
    ci3 = bootstrap_quantile_ci(d, d**3, 0.5, n_boot=500, seed=2)
    assert ci1 == ci2 and ci1 != ci3
    lo, hi = ci1
    est = weighted_quantile_sorted(d, d**3, 0.5)
    assert lo < est < hi
    assert lo < true_x50_3 < hi
    # width ~ 2 * 1.96 * 1.25 s / sqrt(N_eff) relative; N_eff = N / exp(9 s^2) for volume weights
    n_eff = 5000 / np.exp(9 * s**2)
    expected_rel = 2 * 1.96 * 1.2533 * s / np.sqrt(n_eff)
    assert (hi - lo) / est == pytest.approx(expected_rel, rel=0.35)


def test_bootstrap_none_for_small_or_disabled():
    assert bootstrap_quantile_ci(np.array([5.0]), np.array([1.0]), 0.5, n_boot=100, seed=0) is None
    assert bootstrap_quantile_ci(np.arange(1.0, 9), np.ones(8), 0.5, n_boot=0, seed=0) is None


@pytest.mark.parametrize("n", [2, 3, 10, 999])
def test_bootstrap_row_rule_matches_point_estimate(n):
    # a "resample" that takes every crystal once must give the point estimate exactly
    from edge.psd.quantiles import _resampled_quantile

    x = np.sort(np.random.default_rng(n).lognormal(4, 0.4, n))
    for q in (0.01, 0.1, 0.5, 0.9, 0.99):
        row = _resampled_quantile(x, x**3, np.arange(n)[None, :], q)[0]
        assert row == pytest.approx(weighted_quantile_sorted(x, x**3, q), rel=1e-12)


@pytest.mark.parametrize("n", [300, 5000])
def test_woodruff_agrees_with_bootstrap(n):
    from edge.psd import woodruff_quantile_ci

    rng = np.random.default_rng(n)
    x = np.sort(rng.lognormal(np.log(100), 0.35, n))
    w = x**3 * rng.uniform(1, 3, n)  # volume weights times edge-correction-like weights
    b_lo, b_hi = bootstrap_quantile_ci(x, w, 0.5, n_boot=1000, seed=0)
    w_lo, w_hi = woodruff_quantile_ci(x, w, 0.5)
    assert w_hi - w_lo == pytest.approx(b_hi - b_lo, rel=0.25)
    mid = weighted_quantile_sorted(x, w, 0.5)
    assert w_lo < mid < w_hi
    assert w_lo == pytest.approx(b_lo, rel=0.02) and w_hi == pytest.approx(b_hi, rel=0.02)


def test_large_samples_switch_to_woodruff():
    d = np.random.default_rng(0).lognormal(np.log(100), 0.3, 3000)
    small = compute_psd(d, config=PsdConfig(bootstrap_n=200))
    large = compute_psd(d, config=PsdConfig(bootstrap_n=200, bootstrap_max_n=1000))
    assert small.ci_method == "bootstrap" and large.ci_method == "woodruff"
    assert large.to_payload()["x50_3_ci_method"] == "woodruff"
    (a, b), (c, e) = small.x50_3_ci95_um, large.x50_3_ci95_um
    assert c == pytest.approx(a, rel=0.02) and e == pytest.approx(b, rel=0.02)
    assert compute_psd(d, config=PsdConfig(bootstrap_n=0)).ci_method is None
