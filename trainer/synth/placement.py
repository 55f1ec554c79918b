"""Placing crystal outlines in the field: singles with a gap, agglomerates of 2-3 touching.

All coordinates are pixels with pixel centres at integers (OpenCV's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from trainer.synth.config import SynthConfig
from trainer.synth.geometry import inradius, sample_diameters_um
from trainer.synth.habits import habit_outline


@dataclass(eq=False)
class Placed:
    """A crystal outline placed in the frame (before rendering)."""

    polygon: np.ndarray            # (N, 2) px, absolute
    centre: np.ndarray             # (2,) centroid px
    diameter_um: float
    shape: str
    aspect: float
    r_out: float                   # circumradius about the centroid (px)
    r_in: float                    # inradius about the centroid (px)
    group: int | None = None       # agglomerate id
    extra: dict = field(default_factory=dict)
    parts: list[np.ndarray] | None = None  # convex parts (absolute px) of a non-convex twin

    def move_to(self, centre: np.ndarray, outline: np.ndarray,
                parts: list[np.ndarray] | None) -> None:
        """Place the centred ``outline`` (and ``parts``) at ``centre``."""
        self.polygon, self.centre = outline + centre, centre
        self.parts = None if parts is None else [q + centre for q in parts]


def _new(rng, cfg: SynthConfig, d_um: float, centre: np.ndarray) -> Placed:
    d_px = d_um / cfg.px_size_um
    outline, parts, shape, aspect = habit_outline(rng, d_px, cfg.habit, aspect=cfg.habit_aspect,
                                                  aspect_max=cfg.aspect_max)
    r_out = float(np.sqrt((outline ** 2).sum(1)).max())
    r_in = inradius(outline, np.zeros(2))
    p = Placed(outline + centre, centre.astype(np.float64), float(d_um), shape, aspect,
               r_out, r_in)
    if parts is not None:
        p.parts = [q + centre for q in parts]
    return p
def _clear(p: Placed, others: list[Placed], gap: float, skip_group: int | None = None) -> bool:
    for o in others:
        if skip_group is not None and o.group == skip_group:
            continue
        if np.hypot(*(p.centre - o.centre)) < p.r_out + o.r_out + gap:
            return False
    return True


def place_crystals(rng: np.random.Generator, cfg: SynthConfig,
                   field_xyr: tuple[float, float, float], field_area_px: float) -> list[Placed]:
    """Place crystals until ``density`` of the field area is covered (or space runs out).

    Centres lie in the field circle enlarged by ``outside_margin`` times the crystal's
    area-equivalent diameter (so some crystals are cut by the field edge) and within the
    frame enlarged likewise (some are cut by the frame border). Single crystals keep a
    gap of >= 2 px to every other crystal; with probability chosen so that
    ``agglomerate_rate`` of all crystals are in agglomerates, a crystal gets 1-2 partners
    whose inscribed circles overlap its own (the outlines surely touch or overlap).
    """
    cx, cy, rf = field_xyr
    w, h = cfg.width, cfg.height
    target = cfg.density * field_area_px
    k_mean = 1.3  # mean partners of an agglomerate seed
    r = cfg.agglomerate_rate
    p_seed = r / ((1 + k_mean) - r * k_mean) if r > 0 else 0.0
    placed: list[Placed] = []
    covered, fails, group = 0.0, 0, 0
    sizes = iter(())
    while covered < target and fails < 300:
        d_um = next(sizes, None)
        if d_um is None:
            sizes = iter(sample_diameters_um(rng, cfg, 64).tolist())
            d_um = next(sizes)
        d_px = d_um / cfg.px_size_um
        out = cfg.outside_margin * d_px
        rho = (rf + out) * math.sqrt(rng.random())
        phi = rng.uniform(0, 2 * math.pi)
        c = np.array([cx + rho * math.cos(phi), cy + rho * math.sin(phi)])
        if not (-out <= c[0] <= w - 1 + out and -out <= c[1] <= h - 1 + out):
            fails += 1
            continue
        p = _new(rng, cfg, d_um, c)
        if not _clear(p, placed, gap=2.5):
            fails += 1
            continue
        fails = 0
        placed.append(p)
        covered += math.pi * p.r_in * p.r_out
        if rng.random() < p_seed:
            members = [p]
            n_partners = 1 if rng.random() < 0.7 else 2
            for _ in range(n_partners):
                anchor = members[int(rng.integers(len(members)))]
                d2 = float(sample_diameters_um(rng, cfg, 1)[0])
                q = _new(rng, cfg, d2, np.zeros(2))
                outline = q.polygon.copy()
                parts = None if q.parts is None else [x.copy() for x in q.parts]
                others = [o for o in placed if all(o is not m for m in members)]
                for _try in range(6):  # a few directions before giving up
                    phi2 = rng.uniform(0, 2 * math.pi)
                    dist = (anchor.r_in + q.r_in) * rng.uniform(0.72, 0.98)
                    shift = anchor.centre + dist * np.array([math.cos(phi2), math.sin(phi2)])
                    q.move_to(shift, outline, parts)
                    if _clear(q, others, gap=2.5):
                        q.group = group
                        members.append(q)
                        break
            if len(members) > 1:
                for m in members:
                    m.group = group
                placed.extend(members[1:])
                covered += sum(math.pi * m.r_in * m.r_out for m in members[1:])
                group += 1
    return placed
