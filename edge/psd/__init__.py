"""Particle size distribution statistics: Q0/Q3, quantiles, log-normal fit, edge correction.

Public API (see ``docs/architecture.md``)::

    PsdConfig, compute_psd(diameters_um, *, weights=None, config=None) -> PSDResult,
    edge_correction_weights(w_px, h_px, *, field_shape=None, roi=None, max_weight=None)
"""

from __future__ import annotations

from edge.psd.config import PsdConfig

__all__ = ["PsdConfig"]
