"""Named generator settings (habits and domains) for :meth:`SynthConfig.from_presets`.

Each preset is a partial set of :class:`trainer.synth.SynthConfig` fields; several can be
combined (later ones win) and followed by field overrides, e.g.
``SynthConfig.from_presets("needles", "dim", px_size_um=2.0)``. ``compact`` is the default
generator (no changes).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # habits
    "compact": {},
    "prisms": {"habit": "prism"},
    "needles": {"habit": "needle", "fraction_um": (40.0, 90.0)},
    "plates": {"habit": "plate", "transparent_fraction": 0.85},
    "rhombs": {"habit": "rhomb"},
    "twins": {"habit": "twin"},
    "rounded": {"habit": "rounded"},
    # crowding and agglomerates
    "isolated": {"agglomerate_rate": 0.0},
    "crowded": {"density": 0.35, "agglomerate_rate": 0.35},
    "agglomerates": {"agglomerate_rate": 0.6},
    # illumination
    "dim": {"brightness": (70.0, 120.0), "noise": 1.5},
    "bright": {"brightness": (238.0, 250.0), "vignetting": (0.05, 0.15)},
    "uneven": {"vignetting": (0.35, 0.6), "illumination_gradient": (0.15, 0.35),
               "illumination_texture": 0.08},
    # field stop and pixel size
    "field_cut": {"field_radius_frac": (0.45, 0.55), "outside_margin": 0.6},
    "fine_pixels": {"px_size_um": 0.5, "fraction_um": (40.0, 63.0)},
    "coarse_pixels": {"px_size_um": 5.0},
}


def preset_fields(*names: str) -> dict[str, Any]:
    """The merged fields of the named presets (later names win); ValueError for a typo."""
    out: dict[str, Any] = {}
    for name in names:
        if name not in PRESETS:
            raise ValueError(f"unknown synth preset {name!r}; choose from {', '.join(PRESETS)}")
        out.update(PRESETS[name])
    return out
