"""Q0 / Q3 size distributions, characteristic diameters and the log-normal fit.

Input: area-equivalent diameters (um) of the kept crystals, optionally number weights
(edge correction, :mod:`edge.psd.edge_correction`). Volume weights are number weights
times ``x**3`` (spheres of the area-equivalent diameter). Several frames are combined by
concatenating their diameters and weights and calling :func:`compute_psd` once.

The size classes are a fixed grid per device (:func:`class_edges` of the
:class:`PsdConfig`): the same in every batch and every report, whatever the crystals.
Names follow ISO 9276-1: ``Q0``/``Q3`` are the cumulative number / volume fractions at
each class's upper edge, ``q0``/``q3`` the fraction in each class (``sum q3 = 1``);
``q3_density_per_um = q3 / class width`` is the density.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.psd.config import MAX_CLASSES, PsdConfig
from edge.psd.lognormal import LogNormalFit, fit_lognormal
from edge.psd.quantiles import (
    bootstrap_quantile_ci,
    weighted_quantile_sorted,
    woodruff_quantile_ci,
)

__all__ = ["MAX_CLASSES", "PSDResult", "class_edges", "compute_psd"]


def class_edges(config: PsdConfig | None = None) -> np.ndarray:
    """The fixed class grid of ``config``: ``K + 2`` edges of ``K + 1`` classes.

    Parameters
    ----------
    config : PsdConfig, optional
        ``class_min_um`` ``x0``, ``class_width_um`` ``w``, ``class_max_um`` ``x_max``.

    Returns
    -------
    ndarray, shape (K + 2,)
        ``x0, x0 + w, ..., x0 + (K - 1) w, x_max, inf`` with ``K = ceil((x_max - x0) / w)``
        regular classes (the last one ends at ``x_max``, narrower when the span is not a
        multiple of ``w``) and the overflow class ``[x_max, inf)``.
    """
    cfg = config or PsdConfig()
    k = cfg.n_classes - 1
    edges = cfg.class_min_um + cfg.class_width_um * np.arange(k + 2, dtype=np.float64)
    edges[k] = cfg.class_max_um
    edges[k + 1] = np.inf
    return edges


def _f(v: float | None) -> float | None:
    """Plain float, NaN/inf -> None (JSON has no NaN)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class PSDResult:
    """Size distribution of one set of crystals (one image, one report, one batch).

    Arrays are per size class of the fixed grid (:func:`class_edges`: ``K + 1`` classes,
    ``edges_um`` has ``K + 2`` entries, the last one ``inf`` for the overflow class).
    ``q0``/``q3`` are the number / volume fractions in each class (Delta Q, summing to 1),
    ``Q0``/``Q3`` the cumulative fractions at each class's upper edge (ISO 9276-1),
    ``q3_density_per_um = q3 / class width``; ``class_largest_um`` is the largest crystal
    of each class (NaN when empty). Without crystals every fraction is 0. Characteristic
    diameters are None when there are no crystals.
    """

    n: int
    weight_sum: float
    n_eff_volume: float
    edges_um: np.ndarray
    counts: np.ndarray
    q0: np.ndarray
    q3: np.ndarray
    Q0: np.ndarray
    Q3: np.ndarray
    class_largest_um: np.ndarray
    x10_3_um: float | None
    x50_3_um: float | None
    x90_3_um: float | None
    x10_0_um: float | None
    x50_0_um: float | None
    x90_0_um: float | None
    span: float | None
    d32_um: float | None
    x50_3_ci95_um: tuple[float, float] | None
    lognormal: LogNormalFit | None
    weighted: bool
    config: PsdConfig = field(default_factory=PsdConfig)
    ci_method: str | None = None

    @property
    def q3_density_per_um(self) -> np.ndarray:
        """``q3`` over each class's width (the overflow class, unbounded: 0)."""
        width = np.diff(self.edges_um)
        return np.divide(self.q3, width, out=np.zeros_like(self.q3),
                         where=np.isfinite(width) & (width > 0))

    def fit_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The cumulative points ``(x_um, Q3)`` the log-normal is (or would be) fitted to."""
        return _fit_points(self.edges_um, self.counts, self.Q3, self.class_largest_um,
                           self.config.fit_points)

    def bins_payload(self) -> list[dict[str, Any]]:
        dens = self.q3_density_per_um
        return [
            {"lower_um": float(self.edges_um[k]), "upper_um": _f(self.edges_um[k + 1]),
             "count": int(self.counts[k]), "q0": float(self.q0[k]), "q3": float(self.q3[k]),
             "Q0": float(self.Q0[k]), "Q3": float(self.Q3[k]),
             "q3_density_per_um": float(dens[k]),
             "max_um": _f(self.class_largest_um[k])}
            for k in range(self.counts.size)
        ]

    def to_payload(self) -> dict[str, Any]:
        """Plain-JSON dict (NaN -> None)."""
        ci = self.x50_3_ci95_um
        return {
            "n_crystals": self.n,
            "weight_sum": _f(self.weight_sum),
            "n_eff_volume": _f(self.n_eff_volume),
            "weighted": self.weighted,
            "x10_3_um": _f(self.x10_3_um),
            "x50_3_um": _f(self.x50_3_um),
            "x90_3_um": _f(self.x90_3_um),
            "x10_0_um": _f(self.x10_0_um),
            "x50_0_um": _f(self.x50_0_um),
            "x90_0_um": _f(self.x90_0_um),
            "span": _f(self.span),
            "d32_um": _f(self.d32_um),
            "x50_3_ci95_um": None if ci is None else [_f(ci[0]), _f(ci[1])],
            "x50_3_ci_method": self.ci_method,
            "lognormal": None if self.lognormal is None else self.lognormal.to_payload(),
            "class_min_um": self.config.class_min_um,
            "class_width_um": self.config.class_width_um,
            "class_max_um": self.config.class_max_um,
            "bins": self.bins_payload(),
        }


def _fit_points(edges: np.ndarray, counts: np.ndarray, Q3: np.ndarray, cmax: np.ndarray,
                mode: str) -> tuple[np.ndarray, np.ndarray]:
    nz = np.flatnonzero(counts > 0)
    if nz.size == 0:
        return np.zeros(0), np.zeros(0)
    if mode == "class_max":
        return cmax[nz], Q3[nz]
    # the occupied span of the grid: the lower edge of the first occupied class (Q3 = 0
    # there) and the finite upper edges up to the last occupied class
    lo, hi = int(nz[0]), int(nz[-1])
    xs = edges[lo:hi + 2]
    ys = np.concatenate([[0.0], Q3[lo:hi + 1]])
    keep = (xs > 0) & np.isfinite(xs)
    return xs[keep], ys[keep]


def _validate(diameters_um: np.ndarray | Sequence[float],
              weights: np.ndarray | Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(diameters_um, dtype=np.float64)
    if d.ndim != 1:
        raise ValueError(f"diameters_um must be 1-D, got shape {d.shape}")
    if d.size and (not np.all(np.isfinite(d)) or d.min() <= 0):
        raise ValueError(f"diameters_um (shape {d.shape}) must be finite and > 0")
    if weights is None:
        return d, np.ones_like(d)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != d.shape:
        raise ValueError(f"weights of shape {w.shape} do not match diameters of shape {d.shape}")
    if w.size and (not np.all(np.isfinite(w)) or w.min() < 0):
        raise ValueError(f"weights (shape {w.shape}) must be finite and >= 0")
    return d, w


def compute_psd(diameters_um: np.ndarray | Sequence[float], *,
                weights: np.ndarray | Sequence[float] | None = None,
                config: PsdConfig | None = None) -> PSDResult:
    """Q0/Q3 distributions, x10/x50/x90, span, d32, bootstrap CI and log-normal fit.

    Parameters
    ----------
    diameters_um : array_like, shape (N,)
        Area-equivalent diameters of the kept crystals (um), > 0.
    weights : array_like, shape (N,), optional
        Number weights (e.g. :func:`edge.psd.edge_correction_weights`); default 1.
        Crystals of weight 0 are left out.
    config : PsdConfig, optional
        Classes, bootstrap and fit settings.

    Returns
    -------
    PSDResult
        On the fixed grid of :func:`class_edges`. For ``N = 0`` all statistics are None
        and every class holds 0; for ``N = 1`` the
        quantiles equal the single diameter, the span is 0 and there is no interval or fit.

    Notes
    -----
    Quantiles come from the raw weighted sample (:mod:`edge.psd.quantiles`), not from the
    binned Q3, so they do not depend on the class width. The 95 % interval of x50,3: the
    bootstrap resamples crystals (with their weights) ``config.bootstrap_n`` times with
    ``config.bootstrap_seed``; above ``config.bootstrap_max_n`` crystals the Woodruff
    interval is used (``ci_method``).
    """
    cfg = config or PsdConfig()
    d, w = _validate(diameters_um, weights)
    weighted = weights is not None
    keep = w > 0
    d, w = d[keep], w[keep]
    n = int(d.size)
    if n == 0:
        edges = class_edges(cfg)
        k = edges.size - 1
        return PSDResult(
            n=0, weight_sum=0.0, n_eff_volume=0.0, edges_um=edges, counts=np.zeros(k, int),
            q0=np.zeros(k), q3=np.zeros(k), Q0=np.zeros(k), Q3=np.zeros(k),
            class_largest_um=np.full(k, np.nan),
            x10_3_um=None, x50_3_um=None, x90_3_um=None, x10_0_um=None, x50_0_um=None,
            x90_0_um=None, span=None, d32_um=None, x50_3_ci95_um=None, lognormal=None,
            weighted=weighted, config=cfg)

    order = np.argsort(d, kind="stable")
    d, w = d[order], w[order]
    w3 = w * d ** 3

    edges, counts, q0, q3, Q0, Q3, cmax = _classes(d, w, w3, cfg)

    x10_3, x50_3, x90_3 = (float(weighted_quantile_sorted(d, w3, q)) for q in (0.1, 0.5, 0.9))
    x10_0, x50_0, x90_0 = (float(weighted_quantile_sorted(d, w, q)) for q in (0.1, 0.5, 0.9))
    span = (x90_3 - x10_3) / x50_3
    d32 = float(w3.sum() / (w * d ** 2).sum())
    n_eff = float(w3.sum() ** 2 / (w3 ** 2).sum())
    ci, ci_method = _x50_3_interval(d, w3, cfg)
    fit = None
    if cfg.lognormal_fit and n >= cfg.fit_min_crystals:
        fit = _fit(d, w3, edges=edges, counts=counts, Q3=Q3, cmax=cmax, x50_3=x50_3,
                   cfg=cfg)

    return PSDResult(
        n=n, weight_sum=float(w.sum()), n_eff_volume=n_eff, edges_um=edges, counts=counts,
        q0=q0, q3=q3, Q0=Q0, Q3=Q3, class_largest_um=cmax,
        x10_3_um=x10_3, x50_3_um=x50_3, x90_3_um=x90_3, x10_0_um=x10_0, x50_0_um=x50_0,
        x90_0_um=x90_0, span=span, d32_um=d32, x50_3_ci95_um=ci, lognormal=fit,
        weighted=weighted, config=cfg, ci_method=ci_method if ci is not None else None)


def _classes(d: np.ndarray, w: np.ndarray, w3: np.ndarray, cfg: PsdConfig
             ) -> tuple[np.ndarray, ...]:
    """``edges, counts, q0, q3, Q0, Q3, class_largest`` of sorted diameters ``d``.

    The classes are the fixed grid :func:`class_edges`; crystals below ``class_min_um``
    are counted in the first class, those at or above ``class_max_um`` in the overflow
    class.
    """
    edges = class_edges(cfg)
    n_cls = edges.size - 1
    kk = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, n_cls - 1)
    counts = np.bincount(kk, minlength=n_cls)
    w0_cls = np.bincount(kk, weights=w, minlength=n_cls)
    w3_cls = np.bincount(kk, weights=w3, minlength=n_cls)
    cmax = np.full(n_cls, np.nan)
    np.fmax.at(cmax, kk, d)
    q0 = w0_cls / w0_cls.sum()
    q3 = w3_cls / w3_cls.sum()
    Q0 = np.minimum(np.cumsum(q0), 1.0)
    Q3 = np.minimum(np.cumsum(q3), 1.0)
    Q0[-1] = Q3[-1] = 1.0

    return edges, counts, q0, q3, Q0, Q3, cmax


def _x50_3_interval(d: np.ndarray, w3: np.ndarray, cfg: PsdConfig
                    ) -> tuple[tuple[float, float] | None, str | None]:
    """95 % interval of x50,3 and its method (bootstrap, or Woodruff for large N)."""
    if cfg.bootstrap_n <= 0 or d.size < 2:
        return None, None
    if d.size <= cfg.bootstrap_max_n:
        return bootstrap_quantile_ci(d, w3, 0.5, n_boot=cfg.bootstrap_n,
                                     seed=cfg.bootstrap_seed), "bootstrap"
    return woodruff_quantile_ci(d, w3, 0.5), "woodruff"


def _fit(d: np.ndarray, w3: np.ndarray, *, edges: np.ndarray, counts: np.ndarray,
         Q3: np.ndarray, cmax: np.ndarray, x50_3: float, cfg: PsdConfig
         ) -> LogNormalFit | None:
    """Log-normal fit of Q3 at the configured points, started from the sample's moments."""
    xs, ys = _fit_points(edges, counts, Q3, cmax, cfg.fit_points)
    lnd = np.log(d)
    mu = np.average(lnd, weights=w3)
    s0 = float(np.sqrt(np.average((lnd - mu) ** 2, weights=w3)))
    return fit_lognormal(xs, ys, x50_guess=x50_3, s_guess=s0)
