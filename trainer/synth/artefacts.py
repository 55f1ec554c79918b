"""Things in a flow-cell frame that are not crystals (all labelled background).

Air bubbles (bright core, dark refracting ring, nearly perfect circles), debris (thin
fibres and small specks) and out-of-focus dust on the optics (faint, blurred, sometimes
ring-shaped). Each multiplies its transmission into the frame's transmission map.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from trainer.synth.config import SynthConfig
from trainer.synth.placement import Placed

SHIFT = 4
ONE = 1 << SHIFT


def _pt(p) -> tuple[int, int]:
    return round(float(p[0]) * ONE), round(float(p[1]) * ONE)


def _paste(trans: np.ndarray, t: np.ndarray, x0: int, y0: int) -> None:
    h, w = trans.shape
    ph, pw = t.shape
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + pw, w), min(y0 + ph, h)
    if fx1 > fx0 and fy1 > fy0:
        trans[fy0:fy1, fx0:fx1] *= t[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]


def draw_bubbles(rng: np.random.Generator, cfg: SynthConfig, trans: np.ndarray,
                 crystals: list[Placed]) -> list[tuple[float, float, float]]:
    """Air bubbles away from crystals; returns the circles drawn (centre x, y, radius px)."""
    h, w = trans.shape
    n = int(rng.poisson(cfg.bubbles_per_frame))
    drawn: list[tuple[float, float, float]] = []
    for _ in range(n):
        rb = rng.uniform(*cfg.bubble_radius_um) / cfg.px_size_um
        c = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        if any(np.hypot(*(c - p.centre)) < rb + p.r_out + 3 for p in crystals):
            continue
        m = math.ceil(rb) + 4
        t = np.ones((2 * m + 1, 2 * m + 1), np.float32)
        cc = (m + (c[0] % 1), m + (c[1] % 1))
        ring = float(rng.uniform(0.2, 0.45))
        cv2.circle(t, _pt(cc), round(rb * ONE), ring, -1, cv2.LINE_8, SHIFT)
        cv2.circle(t, _pt(cc), round(rb * rng.uniform(0.62, 0.8) * ONE),
                   float(rng.uniform(0.85, 1.0)), -1, cv2.LINE_8, SHIFT)
        cv2.circle(t, _pt(cc), round(max(1.0, rb * rng.uniform(0.2, 0.4)) * ONE),
                   float(rng.uniform(1.1, 1.3)), -1, cv2.LINE_8, SHIFT)
        t = cv2.GaussianBlur(t, (0, 0), max(0.8, rb * 0.04))
        _paste(trans, t, int(c[0]) - m, int(c[1]) - m)
        drawn.append((float(c[0]), float(c[1]), float(rb)))
    return drawn


def draw_debris(rng: np.random.Generator, cfg: SynthConfig, trans: np.ndarray) -> int:
    """Thin fibres (random-walk polylines) and small dark specks."""
    h, w = trans.shape
    n = int(rng.poisson(cfg.debris_per_frame))
    for _ in range(n):
        c = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        val = float(rng.uniform(0.35, 0.75))
        if rng.random() < 0.35:  # fibre
            steps = int(rng.integers(5, 12))
            seg = rng.uniform(4, 12)  # px per step
            ang = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, 0.35, steps))
            pts = c + np.cumsum(np.stack([np.cos(ang), np.sin(ang)], 1) * seg, 0)
            pts = np.vstack([c, pts])
            cv2.polylines(trans, [np.round(pts * ONE).astype(np.int32).reshape(-1, 1, 2)],
                          False, val, int(rng.integers(1, 3)), cv2.LINE_8, SHIFT)
        else:  # speck: a tiny irregular blob
            r = rng.uniform(0.8, 2.6)
            axes = (round(r * ONE), round(r * rng.uniform(0.5, 1.0) * ONE))
            cv2.ellipse(trans, _pt(c), axes, float(rng.uniform(0, 180)), 0, 360, val, -1,
                        cv2.LINE_8, SHIFT)
    return n


def draw_dust(rng: np.random.Generator, cfg: SynthConfig, trans: np.ndarray) -> int:
    """Out-of-focus dust on the optics: faint blurred spots or rings (after the PSF)."""
    if rng.random() >= cfg.dust_probability:
        return 0
    h, w = trans.shape
    n = int(rng.integers(1, 4))
    for _ in range(n):
        r = rng.uniform(5, 22)
        sig = rng.uniform(2.5, 7.0)
        m = math.ceil(r + 3 * sig) + 1
        t = np.ones((2 * m + 1, 2 * m + 1), np.float32)
        depth = float(rng.uniform(0.82, 0.95))
        cv2.circle(t, (m, m), int(r), depth, -1)
        if rng.random() < 0.4:  # donut: diffraction of a far out-of-focus particle
            cv2.circle(t, (m, m), int(r * 0.55), float(1 - (1 - depth) * 0.3), -1)
        t = cv2.GaussianBlur(t, (0, 0), sig)
        _paste(trans, t, int(rng.uniform(0, w)) - m, int(rng.uniform(0, h)) - m)
    return n
