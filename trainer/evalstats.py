"""How far an evaluation's figures can move by chance: the frame bootstrap.

A set of evaluation frames is a sample. The x50,3 error, the Q3 distance and the crystal
IoU measured on it would come out differently on another sample of the same kind, most
of all with few frames: x50,3 is the volume median, so a few large crystals carry it,
and the edge correction weights the crystals that reach into the field by chance. The
crystals of one frame are not independent of each other (the field, the light, the
crowding are the frame's), so the unit of resampling is the frame, not the crystal (a
cluster bootstrap, Davison & Hinkley 1997, section 3.8).

Resample ``b`` draws the ``F`` frames with replacement: frame ``f`` appears ``m_bf``
times, ``m_b ~ Multinomial(F, 1/F)``. Every figure is then recomputed with each frame's
crystals, true crystals and confusion matrix counted ``m_bf`` times:

* x50,3: the midpoint-rule weighted median (:func:`edge.psd.weighted_quantile_sorted`)
  of the diameters ``x_i`` with weights ``m_{b,f(i)} w_i x_i^3`` (``w_i`` the
  edge-correction weight; 1 for true crystals);
* the Q3 distance ``max_x |Q3_pred(x) - Q3_true(x)|`` on the evaluation's grid;
* crystal IoU ``TP / (TP + FP + FN)`` of ``sum_f m_bf C_f``.

The interval is the percentile one: the ``(1 - level) / 2`` and ``(1 + level) / 2``
quantiles of the ``B`` recomputed values. The Q3 distance is a largest absolute
difference, which noise can only raise: its resampled values lean above the figure, and
its interval says how much it moves between samples rather than where it would settle
with many more frames (there, lower). Two models evaluated on the same frames are
compared with the same ``m_b`` for both (a paired bootstrap): the interval of the
difference excludes 0 when the sample says which is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.psd.quantiles import weighted_quantile_sorted

#: Resamples of :func:`frame_intervals` and :func:`paired_intervals`.
N_BOOT = 1000
#: Coverage of the intervals.
LEVEL = 0.95


@dataclass(frozen=True)
class Sizes:
    """Diameters of a set of frames, frame by frame (one population: measured or true).

    Attributes
    ----------
    diameters_um, weights : ndarray, shape (n,)
        Every crystal of every frame; number weights (edge correction; ones for truth).
    frame : ndarray of int, shape (n,)
        Index of each crystal's frame (0 .. n_frames - 1).
    """

    diameters_um: np.ndarray
    weights: np.ndarray
    frame: np.ndarray

    @classmethod
    def from_frames(cls, frames: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> Sizes:
        """From ``[(diameters, weights or None), ...]``, one entry per frame in order."""
        d, w, f = [np.zeros(0)], [np.zeros(0)], [np.zeros(0, np.int64)]
        for i, (di, wi) in enumerate(frames):
            x = np.asarray(di, np.float64).reshape(-1)
            d.append(x)
            w.append(np.ones_like(x) if wi is None else np.asarray(wi, np.float64).reshape(-1))
            f.append(np.full(x.size, i, np.int64))
        order = np.argsort(np.concatenate(d), kind="stable")
        return cls(np.concatenate(d)[order], np.concatenate(w)[order],
                   np.concatenate(f)[order])

    def x50_3(self, m: np.ndarray) -> np.ndarray:
        """x50,3 (um) under frame multiplicities ``m`` (B, F); NaN where nothing is left."""
        v = self.weights * self.diameters_um ** 3
        return weighted_quantile_sorted(self.diameters_um, v[None, :] * m[:, self.frame], 0.5)

    def q3(self, m: np.ndarray, grid_um: np.ndarray) -> np.ndarray:
        """Cumulative volume distribution (B, G) on ``grid_um``: the share of volume in
        crystals of diameter <= x (NaN rows where nothing is left)."""
        v = (self.weights * self.diameters_um ** 3)[None, :] * m[:, self.frame]
        cum = np.concatenate([np.zeros((m.shape[0], 1)), np.cumsum(v, axis=1)], axis=1)
        at = cum[:, np.searchsorted(self.diameters_um, grid_um, side="right")]
        with np.errstate(invalid="ignore", divide="ignore"):
            return at / cum[:, -1:]


@dataclass(frozen=True)
class FrameSample:
    """An evaluation frame by frame: what :func:`frame_intervals` resamples.

    Attributes
    ----------
    stems : tuple of str
        The frames, in order.
    confusion : ndarray of int, shape (F, C, C)
        Per frame, the confusion matrix (rows true class, columns predicted).
    crystal_class : int
        Row / column of the crystal class.
    pred, label, truth : Sizes or None
        Kept crystals measured on the model's masks, on the true masks, and the true
        crystals of the population the errors refer to (None without a truth file); a
        frame the chain rejected has none of any.
    grid_um : ndarray or None
        Grid of the Q3 distance.
    """

    stems: tuple[str, ...]
    confusion: np.ndarray
    crystal_class: int
    pred: Sizes | None = None
    label: Sizes | None = None
    truth: Sizes | None = None
    grid_um: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return len(self.stems)

    def crystal_iou(self, m: np.ndarray) -> np.ndarray:
        """Crystal IoU (B,) of the pooled confusion matrices under multiplicities ``m``."""
        c = self.crystal_class
        cm = np.einsum("bf,fij->bij", m.astype(np.float64), self.confusion)
        tp = cm[:, c, c]
        den = cm[:, c, :].sum(axis=1) + cm[:, :, c].sum(axis=1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, tp / np.where(den > 0, den, 1.0), np.nan)

    def figures(self, m: np.ndarray) -> dict[str, np.ndarray]:
        """Every figure (B,) under multiplicities ``m``: ``iou_crystal`` and, with a
        truth, ``x50_3_rel_error``, ``x50_3_label_rel_error``, ``q3_max_abs_diff``,
        ``q3_label_max_abs_diff``."""
        out = {"iou_crystal": self.crystal_iou(m)}
        if self.truth is None or self.pred is None or self.label is None:
            return out
        x_t = self.truth.x50_3(m)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["x50_3_rel_error"] = self.pred.x50_3(m) / x_t - 1.0
            out["x50_3_label_rel_error"] = self.label.x50_3(m) / x_t - 1.0
        if self.grid_um is not None:
            q_t = self.truth.q3(m, self.grid_um)
            out["q3_max_abs_diff"] = np.max(np.abs(self.pred.q3(m, self.grid_um) - q_t), axis=1)
            out["q3_label_max_abs_diff"] = np.max(
                np.abs(self.label.q3(m, self.grid_um) - q_t), axis=1)
        return out


def multiplicities(n_frames: int, *, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n_frames) int: how often each frame appears in each resample."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_frames, np.full(n_frames, 1.0 / n_frames), size=n_boot)


def _interval(values: np.ndarray, level: float) -> dict[str, float] | None:
    v = values[np.isfinite(values)]
    if v.size < 2:
        return None
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return {"lo": float(lo), "hi": float(hi), "se": float(np.std(v, ddof=1))}


@dataclass(frozen=True)
class Pooled:
    """One quantity pooled over independent samples (:func:`pool_estimates`)."""

    value: float
    se: float
    lo: float
    hi: float
    q: float
    p_heterogeneity: float | None


def pool_estimates(values: Sequence[float], ses: Sequence[float], *,
                   level: float = LEVEL) -> Pooled:
    """Random-effects (DerSimonian-Laird) pooling of independent estimates of one quantity.

    Parameters
    ----------
    values, ses : sequence of float
        The estimates ``theta_k`` of ``K`` independent samples (sets of frames rendered
        with other seeds) and their standard errors ``s_k`` (the frame bootstrap's).
    level : float
        Coverage of the normal interval.

    Returns
    -------
    Pooled
        With the fixed-effect weights ``w_k = 1 / s_k^2`` and their mean ``theta_F =
        sum_k w_k theta_k / sum_k w_k``: ``q = sum_k w_k (theta_k - theta_F)^2``,
        Cochran's heterogeneity statistic, and ``p_heterogeneity`` its chi-squared tail
        probability on ``K - 1`` degrees of freedom (None for one sample; a small one says
        the samples disagree by more than their errors allow). The between-sample variance
        ``tau^2 = max(0, (q - (K - 1)) / (sum w - sum w^2 / sum w))`` widens every weight to
        ``w*_k = 1 / (s_k^2 + tau^2)``; ``value = sum w*_k theta_k / sum w*_k``, ``se =
        (sum w*_k)^(-1/2)``, ``lo``/``hi`` = value -+ z se (z the normal quantile of
        ``level``). Without heterogeneity (``q <= K - 1``) this is the fixed-effect mean.

    Raises
    ------
    ValueError
        Lengths differ, no estimate, an estimate that is not finite, or a standard error
        that is not positive and finite.
    """
    from scipy.stats import chi2, norm

    t, s = np.asarray(values, dtype=float), np.asarray(ses, dtype=float)
    if t.shape != s.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(f"values {t.shape} and ses {s.shape}: need two equal 1-D sequences")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"estimates must be finite, got {t.tolist()}")
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"standard errors must be positive and finite, got {s.tolist()}")
    w = 1.0 / s ** 2
    fixed = np.sum(w * t) / np.sum(w)
    q = float(np.sum(w * (t - fixed) ** 2))
    p = float(chi2.sf(q, t.size - 1)) if t.size > 1 else None
    tau2 = max(0.0, (q - (t.size - 1)) / (np.sum(w) - np.sum(w ** 2) / np.sum(w))) \
        if t.size > 1 else 0.0
    ws = 1.0 / (s ** 2 + tau2)
    value = float(np.sum(ws * t) / np.sum(ws))
    se = float(np.sum(ws) ** -0.5)
    z = float(norm.ppf((1 + level) / 2))
    return Pooled(value, se, value - z * se, value + z * se, q, p)


def frame_intervals(sample: FrameSample, *, n_boot: int = N_BOOT, seed: int = 0,
                    level: float = LEVEL) -> dict[str, dict[str, float] | None]:
    """Percentile intervals (``lo``, ``hi``) and standard errors (``se``) of every figure
    of :meth:`FrameSample.figures`, by the frame bootstrap (module docstring); None for a
    figure with fewer than two finite resamples. One frame gives no interval."""
    if sample.n_frames < 2:
        return {}
    m = multiplicities(sample.n_frames, n_boot=n_boot, seed=seed)
    return {k: _interval(v, level) for k, v in sample.figures(m).items()}


#: Figures of :func:`paired_intervals` and the sign that means "better": IoU up, the
#: size of the x50,3 error and the Q3 distance down.
PAIRED = {"iou_crystal": +1, "abs_x50_3_rel_error": -1, "q3_max_abs_diff": -1}


def paired_intervals(before: FrameSample, after: FrameSample, *, n_boot: int = N_BOOT,
                     seed: int = 0, level: float = LEVEL) -> dict[str, dict[str, object]]:
    """``after - before`` of crystal IoU, ``|x50,3 error|`` and the Q3 distance on the
    same frames, with the paired bootstrap interval and a verdict.

    Returns ``{figure: {"difference", "lo", "hi", "verdict"}}``; ``verdict`` is
    ``"better"`` or ``"worse"`` when the interval excludes 0, else ``"not
    distinguishable"``. ValueError when the two samples are not of the same frames.
    """
    if before.stems != after.stems:
        raise ValueError("the two evaluations are not of the same frames "
                         f"({before.n_frames} and {after.n_frames} frames)")
    m = multiplicities(before.n_frames, n_boot=n_boot, seed=seed)
    one = np.ones((1, before.n_frames), np.int64)
    fa, fb = before.figures(m), after.figures(m)
    pa, pb = before.figures(one), after.figures(one)
    out: dict[str, dict[str, object]] = {}
    for name, sign in PAIRED.items():
        key = name.removeprefix("abs_")
        if key not in fa or key not in fb:
            continue
        a, b, a0, b0 = fa[key], fb[key], pa[key][0], pb[key][0]
        if name.startswith("abs_"):
            a, b, a0, b0 = np.abs(a), np.abs(b), abs(a0), abs(b0)
        iv = _interval(b - a, level)
        if iv is None or not np.isfinite(b0 - a0):
            continue
        verdict = ("not distinguishable" if iv["lo"] <= 0 <= iv["hi"]
                   else "better" if sign * iv["lo"] > 0 else "worse")
        out[name] = {"difference": float(b0 - a0), "lo": iv["lo"], "hi": iv["hi"],
                     "verdict": verdict}
    return out


def compare_results(baseline: Any, result: Any) -> dict[str, Any]:
    """One :class:`trainer.evaluate.EvaluationResult` against another's on the same
    frames: :func:`paired_intervals` of their samples under ``figures``, and the two
    models. A UserError when the two saw different frames (one could not decode a
    frame)."""
    from edge.errors import UserError

    try:
        figures = paired_intervals(baseline.sample, result.sample)
    except ValueError as exc:
        raise UserError(f"--baseline: {exc}") from None
    return {"baseline": baseline.model, "model": result.model, "data": result.data,
            "n_frames": result.n_frames, "figures": figures}


_FIGURE_TEXT = {"iou_crystal": ("crystal IoU", 100.0, " points"),
                "abs_x50_3_rel_error": ("|x50,3 error|", 100.0, " points"),
                "q3_max_abs_diff": ("Q3 max |diff|", 1.0, "")}


def comparison_summary(comparison: dict[str, Any], baseline: Any, result: Any) -> str:
    """The lines ``crystal-train evaluate --baseline`` prints: per figure the change
    from the baseline, its 95 % interval and the verdict."""
    new, old = Path(result.model).name, Path(baseline.model).name
    if new == old:  # two files of one name: the paths tell them apart
        new, old = str(result.model), str(baseline.model)
    lines = [f"{new} against {old} on the same "
             f"{comparison['n_frames']} frames (paired frame bootstrap, 95 %):"]
    for key, (name, k, unit) in _FIGURE_TEXT.items():
        f = comparison["figures"].get(key)
        if f is None:  # no truth, or a model that kept no crystal on these frames
            lines.append(f"  {name}: n/a on these frames")
            continue
        digits = 3 if k == 1.0 else 2
        lines.append(f"  {name}: {k * f['difference']:+.{digits}f}{unit} "
                     f"({k * f['lo']:+.{digits}f} .. {k * f['hi']:+.{digits}f}): {f['verdict']}")
    return "\n".join(lines)
