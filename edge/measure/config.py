"""Configuration of the measurement core (``edge.measure``).

Defaults follow the published study where it states a value (objects below 20 px2 dropped,
closing with a 2-px disc, fill holes, clear border, watershed). Single crystal or
agglomerate is decided by convexity (``agglomerate_rule = "convexity"``: solidity and
concavity depths, the same for every habit; ``docs/measurement.md``). The study's
circularity window stays available (``agglomerate_rule = "circularity"``); it differs from
the study's 0.85-0.95 because our perimeter estimator is unbiased (a disc measures ~1.0,
a regular hexagon 0.907); see ``DEFAULT_WINDOW``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Circularity window used by the study (with its own, biased perimeter estimator).
PAPER_WINDOW: tuple[float, float] = (0.85, 0.95)
#: Default window for the unbiased estimator used here (``edge.measure.shape``).
#: Single crystals measure: disc 0.98-1.0, octagon 0.94, hexagon 0.91, hexagon stretched
#: 1.6x 0.84, ellipse 1.4 0.94, rhomb of aspect 1.4 0.75 (1.6: 0.71). Agglomerates the
#: watershed cannot split (compact clusters, heavy overlaps) measure 0.66-0.94, e.g. three
#: hexagons sharing edges 0.70. Measured on the synthetic generator's outlines
#: (``trainer.synth.geometry.make_outline``; ``bench/bench_measure.py --window-study
#: --seed 1``: 600 singles, 400 random 2-3 crystal clumps, 236 of them left unsplit):
#: a lower bound of 0.72 rejects 1.8 % of single crystals (elongated rhombs; not
#: size-dependent) and 17 % of the unsplit clumps (0.70: 0.3 % / 7 %, 0.75: 4 % / 31 %).
#: Clumps are large and bias Q3 upwards, lost singles do not bias it, hence 0.72. The
#: upper bound only catches estimator noise on tiny objects (a 29-px disc scores 1.07).
DEFAULT_WINDOW: tuple[float, float] = (0.72, 1.10)

#: Defaults of the 'convexity' rule (measured in ``docs/measurement.md``).
SOLIDITY_MIN = 0.85
CONCAVE_SOLIDITY_MIN = 0.95
CONCAVITY_REL = 0.10
CONCAVITY_PX = 2.0
CONCAVITIES_MAX = 1
#: Defaults of the air-bubble test (``edge.measure.bubbles``; ``docs/measurement.md``).
BUBBLE_CIRCULARITY_MIN = 0.9
BUBBLE_CORE_MIN = 1.02
BUBBLE_RING_MAX = 0.55


class MeasureConfig(BaseModel):
    """Post-processing of a crystal mask: cleaning, splitting, shape filter."""

    model_config = ConfigDict(extra="forbid")

    min_area_px: int = Field(
        20, ge=1,
        description="objects smaller than this (px2) are rejected as 'too_small' (study: 20)")
    closing_radius_px: int = Field(
        2, ge=0,
        description="radius (px) of the closing disc; 0 = no closing (study: 2)")
    fill_holes: bool = Field(True, description="fill holes inside objects (study: yes)")
    clear_border: bool = Field(
        True,
        description="reject crystals touching the frame edge or the ROI boundary as 'border'; "
                    "False = keep them (still flagged touches_border)")
    split_touching: bool = Field(
        True,
        description="split touching crystals (marker-controlled watershed on the distance map)")
    h_px: float = Field(
        1.0, ge=0,
        description="marker suppression: a distance-map maximum needs a dynamic (peak minus "
                    "saddle, px) of at least max(h_px, h_rel * peak) to become its own crystal")
    h_rel: float = Field(
        0.08, ge=0, lt=1,
        description="marker suppression relative to the object's largest inscribed radius "
                    "(peak of the distance map); see h_px. 0.08: no synthetic single crystal "
                    "split; pairs at a centre distance of 0.7-0.8 (0.9-1.0) times the mean "
                    "diameter split in 72 % (97 %) of cases")
    connectivity: int = Field(
        8, description="pixel connectivity of objects, 4 or 8 (study, MATLAB bwlabel: 8)")
    contact_threshold: float = Field(
        0.4, gt=0, le=1,
        description="models with a 'contact' output channel only: crystal pixels whose "
                    "predicted contact probability is below this form the watershed markers "
                    "(one per crystal; edge.measure.contact), instead of the distance map's "
                    "maxima; ignored for models without the channel. 0.4: chosen for the "
                    "default model on held-out agglomerate-rich frames, where 0.35-0.4 give "
                    "the lowest Q3 distance and 0.5 leaves more touching pairs whole")
    contact_high: float = Field(
        0.9, gt=0, le=1,
        description="models with a 'contact' output channel only: a band of pixels at or "
                    "above contact_threshold separates markers only when it reaches this "
                    "probability somewhere (hysteresis, as Canny's edges); at or below "
                    "contact_threshold: every such band separates. 0.9: on held-out frames "
                    "the default model's x50,3 error on needles -7.6 / -7.1 % (0.7) -> "
                    "-4.4 / -3.8 %, twins -2.3 -> +0.2 %, agglomerate-rich frames unchanged "
                    "up to 0.95 and worse at 0.98 (Q3 distance 0.056 -> 0.087)")
    contact_splits_convex: bool = Field(
        True,
        description="models with a 'contact' output channel, 'convexity' rule: split an "
                    "object whose whole outline is convex at its learned contacts (two "
                    "prisms side by side); false: a convex outline stays one crystal, as "
                    "without the channel")
    contact_clears_concave: bool = Field(
        True,
        description="models with a 'contact' output channel, 'convexity' rule: an object (or "
                    "split part) without a pixel of a learned contact band is one crystal "
                    "even when its outline is concave (a twin, an L-shaped intergrowth, a bent "
                    "needle); false: the outline's convexity judges every object, as without "
                    "the channel")
    contact_share_max: float = Field(
        0.35, gt=0, le=1,
        description="models with a 'contact' output channel, 'convexity' rule: an object (or "
                    "split part) more than this share of whose pixels lie in a learned "
                    "contact band is an agglomerate. The band covers the overlap of crystals "
                    "lying on each other; when it covers a whole crystal, that crystal gets "
                    "no watershed marker and is measured as part of its neighbour. 0.35: on "
                    "108 agglomerate-rich frames per set the default model's x50,3 error "
                    "+2.9 / +2.5 % (off, 1) -> +1.5 / -0.2 %, Q3 KS 0.067 / 0.088 -> "
                    "0.034 / 0.030 (0.5: +2.6 / +1.6 %, 0.051 / 0.047); 1: off")
    agglomerate_rule: Literal["convexity", "circularity"] = Field(
        "convexity",
        description="how a measured object is found to be an agglomerate (reason "
                    "'agglomerate'): 'convexity' = solidity below solidity_min or more than "
                    "concavities_max deep concavities, the same for every habit (needles, "
                    "plates, prisms are kept); 'circularity' = the study's window "
                    "circularity_min-circularity_max, which rejects elongated habits and "
                    "must be tuned per substance (chosen when a window is given without a "
                    "rule)")
    solidity_min: float = Field(
        SOLIDITY_MIN, ge=0, le=1,
        description="'convexity' rule: objects whose pixel count is below this fraction of "
                    "their convex hull's pixel count are agglomerates (a digitised convex "
                    "crystal scores 1)")
    concave_solidity_min: float = Field(
        CONCAVE_SOLIDITY_MIN, ge=0, le=1,
        description="'convexity' rule: an object with one counted concavity is an agglomerate "
                    "when its solidity is below this (a contact takes a bay of area out of "
                    "the hull, a chipped corner or a ragged edge hardly any)")
    concavity_rel: float = Field(
        CONCAVITY_REL, ge=0, le=1,
        description="'convexity' rule: a concavity of the outline counts when it is deeper "
                    "than this fraction of the object's area-equivalent diameter (and than "
                    "concavity_px)")
    concavity_px: float = Field(
        CONCAVITY_PX, ge=0,
        description="'convexity' rule: a concavity counts only when deeper than this many "
                    "px (a digitised straight edge deviates from its chord by < 1 px)")
    concavities_max: int = Field(
        CONCAVITIES_MAX, ge=0,
        description="'convexity' rule: objects with more counted concavities than this are "
                    "agglomerates (two crystals stuck together leave a pair, one either side "
                    "of the contact; a chipped single crystal one)")
    reject_bubbles: bool = Field(
        True,
        description="with the frame's grey values (the image chains, not --masks): reject "
                    "round objects with a thick dark ring and a centre as bright as the "
                    "background around them as 'bubble' (an air bubble totally reflects "
                    "the light beyond ~0.75 of its radius; edge.measure.bubbles)")
    bubble_circularity_min: float = Field(
        BUBBLE_CIRCULARITY_MIN, ge=0,
        description="bubble test: only objects at least this circular are examined (bubbles "
                    "measure 0.93-1.0 on generated frames)")
    bubble_core_min: float = Field(
        BUBBLE_CORE_MIN, ge=0,
        description="bubble test: median grey value within 0.3 R of the centroid over the "
                    "median of the light background 1.3-1.8 R away must be at least this "
                    "(a crystal's centre is darker than its surroundings)")
    bubble_ring_max: float = Field(
        BUBBLE_RING_MAX, ge=0,
        description="bubble test: median grey value at 0.8-0.95 R over the same background "
                    "must be at most this (a bubble's totally reflecting ring; a crystal's "
                    "dark rim is thinner). Defaults: on the 17 domains of two card sets 2 "
                    "of 11781 round crystals rejected, 67-84 % of the volume of the round "
                    "non-crystals the chain had kept (docs/measurement.md)")
    circularity_min: float = Field(
        DEFAULT_WINDOW[0], ge=0,
        description="'circularity' rule: crystals with circularity 4*pi*A/P^2 below this "
                    "are rejected as 'agglomerate' (study: 0.85, with a biased perimeter)")
    morphology_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="where the runtime thresholds the class map and runs the closing: 'auto' = "
                    "the faster of CPU and GPU, timed at start-up where OpenCV has CUDA "
                    "(JetPack), else the CPU; results identical")
    circularity_max: float = Field(
        DEFAULT_WINDOW[1], ge=0,
        description="'circularity' rule: crystals with circularity above this are rejected "
                    "as 'agglomerate' (study: 0.95, with a biased perimeter)")

    @model_validator(mode="before")
    @classmethod
    def _window_selects_its_rule(cls, data: Any) -> Any:
        # a circularity window given without a rule (a configuration written for the
        # study's rule) keeps meaning what it meant: the window decides
        if isinstance(data, dict) and "agglomerate_rule" not in data and (
                "circularity_min" in data or "circularity_max" in data):
            return {**data, "agglomerate_rule": "circularity"}
        return data

    @model_validator(mode="after")
    def _check(self) -> MeasureConfig:
        if self.connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {self.connectivity}")
        if self.circularity_min > self.circularity_max:
            raise ValueError(f"circularity_min ({self.circularity_min}) > "
                             f"circularity_max ({self.circularity_max})")
        return self

    @classmethod
    def paper(cls, **overrides: object) -> MeasureConfig:
        """The study's settings, including its circularity window 0.85-0.95."""
        kw: dict[str, object] = {"agglomerate_rule": "circularity",
                                 "circularity_min": PAPER_WINDOW[0],
                                 "circularity_max": PAPER_WINDOW[1]}
        kw.update(overrides)
        return cls(**kw)
