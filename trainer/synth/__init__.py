"""Synthetic flow-cell microscope frames with exactly known crystal sizes.

Needs only numpy, OpenCV and pydantic (no torch): the edge's synthetic frame source and
``make demo`` use it. Typical use::

    from trainer.synth import SynthConfig, render_frame
    rng = np.random.default_rng(0)
    frame = render_frame(rng, SynthConfig(fraction_um=(90, 125)))
    frame.image, frame.label, frame.crystals

or ``generate_dataset(out, n, cfg, seed)`` / ``crystal-train synth``. Other habits and
domains by name: ``SynthConfig.from_presets("needles", "crowded")`` (:data:`PRESETS`);
``frame.instances`` / ``frame.coverage`` give every crystal's pixels and the contacts
between crystals exactly (:func:`contact_map`, :func:`boundary_map`).
"""

from trainer.synth.config import SynthConfig
from trainer.synth.dataset import (
    PALETTE,
    POPULATIONS,
    colorize_label,
    frame_seed,
    generate_dataset,
    population_stats,
    select_records,
    truth_statistics,
    weighted_quantile,
)
from trainer.synth.geometry import (
    area_equivalent_diameter,
    make_outline,
    polygon_area,
    sample_diameters_um,
)
from trainer.synth.habits import HABIT_ASPECT, HABITS, habit_outline
from trainer.synth.instances import boundary_map, contact_map
from trainer.synth.presets import PRESETS
from trainer.synth.render import (
    BLACK_BACKGROUND,
    CLASS_NAMES,
    CRYSTAL,
    LIGHT_BACKGROUND,
    SynthCrystal,
    SynthFrame,
    centre_in_window,
    render_frame,
)

__all__ = [
    "BLACK_BACKGROUND",
    "CLASS_NAMES",
    "CRYSTAL",
    "HABITS",
    "HABIT_ASPECT",
    "LIGHT_BACKGROUND",
    "PALETTE",
    "POPULATIONS",
    "PRESETS",
    "SynthConfig",
    "SynthCrystal",
    "SynthFrame",
    "area_equivalent_diameter",
    "boundary_map",
    "centre_in_window",
    "colorize_label",
    "contact_map",
    "frame_seed",
    "generate_dataset",
    "habit_outline",
    "make_outline",
    "polygon_area",
    "population_stats",
    "render_frame",
    "sample_diameters_um",
    "select_records",
    "truth_statistics",
    "weighted_quantile",
]
