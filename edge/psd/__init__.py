"""Particle size distribution statistics: Q0/Q3, quantiles, log-normal fit, edge correction.

Owns the road from measured crystals to a size distribution; every door (batch, analyze
report, model card) uses :class:`PsdAccumulator`. Depends on nothing above it in ``edge``.

Public API (see ``docs/architecture.md``)::

    PsdConfig
    PsdAccumulator(config, *, clear_border)  # .add_frame(frame_result) / .frame_contribution
                                             # .add(crystals, roi=) / .contribution(...)
                                             # .add_contribution / .add_rejection / .result()
    kept_edge_weights(crystals, *, roi=None, max_weight=20.0, frame_hw=None)
    class_edges(config) -> edges (the fixed class grid, overflow class last)
    compute_psd(diameters_um, *, weights=None, config=None) -> PSDResult
    process_values(...) -> ProcessValues; FRAME_REJECT_REASONS, AGGLOMERATE_REASONS
    edge_correction_weights(w_px, h_px, *, field_shape=None, roi=None, max_weight=20.0)
    RoiSurvival(roi)  # precomputed ROI for many frames (pass as roi=...)
    lognormal_q3(x_um, x50_um, s_lnd), fit_lognormal(x_um, q3) -> LogNormalFit | None
"""

from __future__ import annotations

from edge.measure.crystals import AGGLOMERATE_REASONS
from edge.psd.accumulator import (
    CrystalTable,
    FrameContribution,
    MeasuredFrame,
    PsdAccumulator,
    PsdSummary,
    kept_edge_weights,
    kept_mask,
)
from edge.psd.config import PsdConfig
from edge.psd.edge_correction import RoiSurvival, edge_correction_weights, survival_probability
from edge.psd.lognormal import LogNormalFit, fit_lognormal, lognormal_q3
from edge.psd.process import (
    FRAME_REJECT_REASONS,
    ProcessValues,
    frame_reject_key,
    process_values,
)
from edge.psd.quantiles import (
    bootstrap_quantile_ci,
    weighted_quantile_sorted,
    woodruff_quantile_ci,
)
from edge.psd.stats import MAX_CLASSES, PSDResult, class_edges, compute_psd

__all__ = [
    "AGGLOMERATE_REASONS",
    "FRAME_REJECT_REASONS",
    "MAX_CLASSES",
    "CrystalTable",
    "FrameContribution",
    "LogNormalFit",
    "MeasuredFrame",
    "PSDResult",
    "ProcessValues",
    "PsdAccumulator",
    "PsdConfig",
    "PsdSummary",
    "RoiSurvival",
    "bootstrap_quantile_ci",
    "class_edges",
    "compute_psd",
    "edge_correction_weights",
    "fit_lognormal",
    "frame_reject_key",
    "kept_edge_weights",
    "kept_mask",
    "lognormal_q3",
    "process_values",
    "survival_probability",
    "weighted_quantile_sorted",
    "woodruff_quantile_ci",
]
