"""Settings of the synthetic flow-cell frame generator."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainer.synth.presets import preset_fields

Range = tuple[float, float]


class SynthConfig(BaseModel):
    """Everything that changes a synthetic frame; ``model_dump()`` goes into ``truth.json``.

    Ranges ``(lo, hi)`` are sampled uniformly per frame (or per object).
    """

    model_config = ConfigDict(extra="forbid")

    # camera and optics
    width: int = Field(1024, ge=32, le=8192, description="frame width (px)")
    height: int = Field(768, ge=32, le=8192, description="frame height (px)")
    px_size_um: float = Field(1.45, gt=0, description="pixel size in the object plane (um)")
    field_radius_frac: Range = Field(
        (0.62, 0.72),
        description="radius of the illuminated circular field relative to half the frame "
                    "diagonal (0.62-0.72 on 1024x768: the circle is cut at top and bottom, "
                    "dark corners and sides)")
    field_jitter_frac: float = Field(
        0.03, ge=0, le=0.2,
        description="random shift of the field centre, relative to width and height")
    brightness: Range = Field((185.0, 235.0), description="light level at the field centre (DN)")
    vignetting: Range = Field(
        (0.15, 0.35), description="relative darkening at the field edge (1 - I_edge/I_centre)")
    illumination_gradient: Range = Field(
        (0.0, 0.12), description="linear illumination gradient across the field radius")
    illumination_texture: float = Field(
        0.025, ge=0, le=0.5,
        description="relative amplitude of the lamp's low-frequency unevenness over the field")
    black_level: Range = Field((5.0, 14.0), description="camera black level outside the field (DN)")
    field_edge_px: Range = Field((1.5, 4.0), description="softness of the field stop edge (px)")
    psf_sigma_px: Range = Field((0.5, 0.9), description="optical blur of everything in focus (px)")
    noise: float = Field(1.0, ge=0, le=5, description="sensor noise scale (1 = typical camera)")
    tint: Range = Field(
        (0.86, 0.97),
        description="blue (and, halved, green) gain of the lamp colour relative to red")
    chromatic_aberration: Range = Field(
        (0.0, 0.0015),
        description="lateral colour: relative magnification of red (+) and blue (-) "
                    "about the field centre (colour fringes towards the field edge)")
    # crystals
    size_mode: Literal["sieve", "lognormal"] = Field(
        "sieve", description="'sieve': a sieve fraction with tails; 'lognormal': x50,3 and s")
    fraction_um: Range = Field(
        (125.0, 180.0),
        description="sieve fraction (um): area-equivalent diameters; within it the volume "
                    "density q3 is uniform (number density ~ x^-3)")
    tail_fraction: float = Field(
        0.08, ge=0, le=0.5,
        description="number fraction of imperfectly sieved crystals outside the fraction: "
                    "2/3 fines (0.45-1x lower limit), 1/3 oversize (1-1.3x upper limit)")
    lognormal_x50_um: float = Field(150.0, gt=0, description="log-normal x50,3 (um)")
    lognormal_s: float = Field(0.25, gt=0, le=1.5, description="log-normal s_LND (ln units)")
    min_diameter_um: float = Field(8.0, gt=0, description="smallest crystal generated (um)")
    density: float = Field(
        0.15, ge=0, le=0.45,
        description="fraction of the illuminated field covered by crystals (projected area)")
    agglomerate_rate: float = Field(
        0.10, ge=0, le=0.9,
        description="target fraction of crystals that touch or overlap another crystal "
                    "(agglomerates of 2-3); all other crystals keep a gap")
    aspect_max: float = Field(
        1.6, ge=1.0, le=3.0,
        description="largest aspect ratio of 'compact' and 'rounded' crystals")
    habit: Literal["compact", "prism", "needle", "plate", "rhomb", "twin", "rounded"] = Field(
        "compact",
        description="crystal habit (trainer.synth.habits): 'compact' faceted equant crystals "
                    "(hexagon, octagon, rhomb, irregular), 'prism' and 'needle' elongated "
                    "prisms with pointed or flat ends, 'plate' hexagonal or rectangular "
                    "plates, 'rhomb', 'twin' two prisms crossing or meeting at one end, "
                    "'rounded' compact crystals with worn corners")
    habit_aspect: Range | None = Field(
        None,
        description="aspect ratio range (length / width of the minimum rectangle) of the "
                    "habit; None = the habit's own (prism 1.5-4, needle 3-10, plate 1-1.6, "
                    "rhomb 1.3-2.5, twin 2-5 per part)")
    outside_margin: float = Field(
        0.35, ge=0, le=1.0,
        description="crystal centres may lie this many area-equivalent diameters outside "
                    "the field circle and the frame (larger: more crystals cut by the field "
                    "stop and the frame border)")
    transparent_fraction: float = Field(
        0.5, ge=0, le=1,
        description="fraction of transparent crystals (dark refracting rim, bright core); "
                    "the others are opaque (dark, faceted)")
    defocus_fraction: float = Field(0.12, ge=0, le=1, description="fraction of defocused crystals")
    defocus_sigma_px: Range = Field((1.2, 3.0), description="blur of a defocused crystal (px)")
    motion_blur_px: Range = Field((0.0, 5.0), description="motion blur length along the flow (px)")
    flow_angle_deg: float = Field(0.0, description="flow direction in the frame (0 = along +x)")
    # artefacts (labelled background)
    bubbles_per_frame: float = Field(
        0.6, ge=0, description="mean number of air bubbles (bright core, dark ring)")
    bubble_radius_um: Range = Field((12.0, 70.0), description="air bubble radius (um)")
    debris_per_frame: float = Field(
        6.0, ge=0, description="mean number of debris items (fibres, specks)")
    dust_probability: float = Field(
        0.35, ge=0, le=1, description="probability of out-of-focus dust on the optics in a frame")

    @classmethod
    def from_presets(cls, *names: str, **overrides: Any) -> SynthConfig:
        """Settings of the named presets (:data:`trainer.synth.presets.PRESETS`, combined
        in order), then ``overrides``; e.g. ``from_presets("needles", "crowded")``."""
        return cls(**{**preset_fields(*names), **overrides})

    @model_validator(mode="after")
    def _ranges(self) -> SynthConfig:
        for name in ("field_radius_frac", "brightness", "vignetting", "illumination_gradient",
                     "black_level", "field_edge_px", "psf_sigma_px", "tint", "fraction_um",
                     "defocus_sigma_px", "motion_blur_px", "bubble_radius_um",
                     "chromatic_aberration"):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"{name}: need 0 <= lo <= hi, got ({lo}, {hi})")
        if self.habit_aspect is not None and not 1 <= self.habit_aspect[0] <= self.habit_aspect[1]:
            raise ValueError(f"habit_aspect: need 1 <= lo <= hi, got {self.habit_aspect}")
        if self.fraction_um[0] <= 0:
            raise ValueError(f"fraction_um: lower limit must be > 0, got {self.fraction_um}")
        if self.brightness[1] > 250:
            raise ValueError(f"brightness: at most 250 DN, got {self.brightness}")
        return self
