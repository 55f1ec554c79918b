"""Measurement core: crystal mask -> separated, measured crystals (numpy + OpenCV only)."""

from edge.measure.config import DEFAULT_WINDOW, PAPER_WINDOW, MeasureConfig

__all__ = ["DEFAULT_WINDOW", "PAPER_WINDOW", "MeasureConfig"]
