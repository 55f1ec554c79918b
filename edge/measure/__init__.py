"""Measurement core: crystal mask -> separated, measured crystals (numpy + OpenCV only).

Public API::

    from edge.measure import MeasureConfig, measure_crystals
    crystals = measure_crystals(class_map, px_size_um=1.45, crystal_class=2, roi=roi)
    crystals.diameters_um()          # kept crystals, area-equivalent diameter (um)
    crystals.bbox[crystals.kept]     # x, y, w, h px (edge correction)
    crystals.rejected_counts()       # {'too_small': .., 'border': .., 'agglomerate': ..}
"""

from edge.measure.clean import border_zone, clean_mask, disc
from edge.measure.config import DEFAULT_WINDOW, PAPER_WINDOW, MeasureConfig
from edge.measure.crystals import REASONS, Crystals
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
    "DEFAULT_WINDOW",
    "PAPER_WINDOW",
    "REASONS",
    "SIGMA_PX",
    "CpuMorphology",
    "Crystals",
    "CudaMorphology",
    "MeasureConfig",
    "Morphology",
    "border_zone",
    "chain_length",
    "circularity",
    "clean_mask",
    "contour_length",
    "disc",
    "feret",
    "measure_crystals",
    "perimeter",
    "select_morphology",
    "split_touching",
]
