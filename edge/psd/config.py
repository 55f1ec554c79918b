"""Settings of the particle size distribution (PSD) statistics.

Everything that changes a number in :class:`edge.psd.PSDResult` is a field here, so a
report that records ``PsdConfig.model_dump()`` can be reproduced exactly.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

#: Most regular size classes one grid may have (guards against a unit mistake, 0.001 um).
MAX_CLASSES = 10_000


class PsdConfig(BaseModel):
    """Size classes, edge correction, confidence interval and log-normal fit settings."""

    model_config = ConfigDict(extra="forbid")

    class_width_um: float = Field(
        10.0, gt=0,
        description="width of the size classes in um (the study uses 10 um classes)")
    class_min_um: float = Field(
        0.0, ge=0,
        description="lower edge of the first size class in um; classes are "
                    "[class_min_um + k*class_width_um, class_min_um + (k+1)*class_width_um) "
                    "up to class_max_um; crystals below it count in the first class")
    class_max_um: float = Field(
        1000.0, gt=0, validate_default=True,
        description="upper edge of the last regular size class in um; one overflow class "
                    "holds every crystal at or above it, so every batch and report carries "
                    "the same fixed grid (a DCS maps each class to a fixed tag)")
    fines_below_um: float = Field(
        20.0, ge=0,
        description="process value 'fines': the number and volume fraction of kept crystals "
                    "whose area-equivalent diameter is below this (um)")
    edge_correction: bool = Field(
        True,
        description="weight each kept crystal by the inverse of its probability to survive "
                    "border clearing (Miles-Lantuejoul), removing the bias against large "
                    "crystals; only meaningful when border crystals were dropped")
    edge_weight_max: float = Field(
        20.0, ge=1,
        description="upper limit of one crystal's edge-correction weight (a crystal nearly as "
                    "large as the field would otherwise dominate the volume distribution)")
    bootstrap_n: int = Field(
        1000, ge=0,
        description="bootstrap resamples for the 95 % percentile interval of x50,3 "
                    "(0 = no interval)")
    bootstrap_max_n: int = Field(
        20000, ge=2,
        description="above this many crystals the 95 % interval of x50,3 comes from the "
                    "Woodruff formula (CDF inversion, one pass) instead of the bootstrap, "
                    "whose cost grows as bootstrap_n * N; both agree closely at this size")
    bootstrap_seed: int = Field(
        0, description="seed of the bootstrap random generator (results are reproducible)")
    lognormal_fit: bool = Field(
        True,
        description="fit the study's Eq. 2, Q3(x) = 1/2 (1 + erf(ln(x/x50,3) / (sqrt(2) s))), "
                    "to the cumulative Q3 points by least squares")
    fit_points: Literal["upper_edge", "class_max"] = Field(
        "upper_edge",
        description="abscissa of the cumulative Q3 points that the log-normal is fitted to: "
                    "'upper_edge' = upper edge of each class (exact sample Q3 there), "
                    "'class_max' = largest crystal of each class (the study's Fig. 6)")
    fit_min_crystals: int = Field(
        3, ge=2, description="fewer kept crystals than this: no log-normal fit (fields None)")

    @field_validator("class_max_um")
    @classmethod
    def _grid(cls, v: float, info: ValidationInfo) -> float:
        lo, width = info.data.get("class_min_um"), info.data.get("class_width_um")
        if lo is None or width is None:  # already refused on their own
            return v
        if v <= lo:
            raise ValueError(f"class_max_um ({v:g}) must be above class_min_um ({lo:g})")
        n = math.ceil((v - lo) / width - 1e-9)
        if n > MAX_CLASSES:
            raise ValueError(f"{lo:g}..{v:g} um in classes of {width:g} um gives {n} classes "
                             f"(at most {MAX_CLASSES}); widen class_width_um")
        return v

    @property
    def n_classes(self) -> int:
        """Size classes of the grid: the regular ones plus the overflow class."""
        span = (self.class_max_um - self.class_min_um) / self.class_width_um
        return math.ceil(span - 1e-9) + 1
