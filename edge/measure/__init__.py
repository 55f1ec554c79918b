"""Measurement core: crystal mask -> separated, measured crystals (numpy + OpenCV only).

Public API::

    from edge.measure import MeasureConfig, measure_crystals
    crystals = measure_crystals(class_map, px_size_um=1.45, crystal_class=2, roi=roi)
    crystals.diameters_um()          # kept crystals, area-equivalent diameter (um)
    crystals.bbox[crystals.kept]     # x, y, w, h px (edge correction)
    crystals.rejected_counts()       # {'too_small': .., 'border': .., 'bubble': .., ...}

Reject reasons: :data:`REASONS`; the agglomerate reason is :data:`AGGLOMERATE`
(``AGGLOMERATE_REASONS`` for consumers that count agglomerates), the same name under both
``[measure] agglomerate_rule`` settings. Air bubbles (:mod:`edge.measure.bubbles`) are
told from crystals by the frame's grey values along their radius: reason :data:`BUBBLE`.
"""

from edge.measure.bubbles import air_bubbles, radial_contrast
from edge.measure.clean import border_zone, clean_mask, disc
from edge.measure.config import DEFAULT_WINDOW, PAPER_WINDOW, MeasureConfig
from edge.measure.convexity import concavity_depths, convexity, hull_area
from edge.measure.crystals import AGGLOMERATE, AGGLOMERATE_REASONS, BUBBLE, REASONS, Crystals
from edge.measure.gpu import CpuMorphology, CudaMorphology, Morphology, select_morphology
from edge.measure.measure import measure_crystals
from edge.measure.shape import (
    SIGMA_PX,
    chain_length,
    circularity,
    contour_length,
    feret,
    perimeter,
)
from edge.measure.split import split_touching

__all__ = [
    "AGGLOMERATE",
    "AGGLOMERATE_REASONS",
    "BUBBLE",
    "DEFAULT_WINDOW",
    "PAPER_WINDOW",
    "REASONS",
    "SIGMA_PX",
    "CpuMorphology",
    "Crystals",
    "CudaMorphology",
    "MeasureConfig",
    "Morphology",
    "air_bubbles",
    "border_zone",
    "chain_length",
    "circularity",
    "clean_mask",
    "concavity_depths",
    "contour_length",
    "convexity",
    "disc",
    "feret",
    "hull_area",
    "measure_crystals",
    "perimeter",
    "radial_contrast",
    "select_morphology",
    "split_touching",
]
