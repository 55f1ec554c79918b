"""How one crystal looks in bright-field transmitted light (its transmission patch).

Opaque crystals: dark, with facets shaded by an oblique light direction, a darker outline
and sometimes a lighter flat top face. Transparent crystals: a dark refracting rim of
uneven width (thicker away from the light), a core close to the background, a few internal
facet edges and sometimes a small bright focus spot. Both get a thickness gradient and a
little internal texture. Everything is drawn on a patch around the crystal at 1/16 px.
"""

from __future__ import annotations

import cv2
import numpy as np

from trainer.synth.placement import Placed

SHIFT = 4
ONE = 1 << SHIFT


def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts, np.float64) * ONE).astype(np.int32).reshape(-1, 1, 2)


def _pt(p: np.ndarray) -> tuple[int, int]:
    return round(float(p[0]) * ONE), round(float(p[1]) * ONE)


def crystal_patch(rng: np.random.Generator, p: Placed, *, kind: str, alpha: np.ndarray,
                  org: tuple[int, int]) -> np.ndarray:
    """Transmission (float32, 1 = clear) of crystal ``p`` on the patch of ``alpha``.

    ``alpha`` is the crystal's pixel coverage (0..1) on the patch whose top-left frame
    pixel is ``org``; the result is 1 where it is 0 (defocus is applied by the caller).
    """
    ph, pw = alpha.shape
    poly = p.polygon - np.asarray(org, np.float64)
    c = p.centre - np.asarray(org, np.float64)
    n = len(poly)
    light = rng.normal(0, 1, 2)
    light /= np.linalg.norm(light) + 1e-9
    t = np.ones((ph, pw), np.float32)
    if kind == "opaque":
        base = float(rng.uniform(0.14, 0.4))
        cv2.fillPoly(t, [_fixed(poly)], base, cv2.LINE_8, SHIFT)
        apex = c + rng.normal(0, 0.15, 2) * p.r_in
        # facets: a fan from the apex over runs of 1-3 edges
        i = 0
        start = int(rng.integers(n))
        while i < n:
            run = int(rng.integers(1, 4))
            idx = [(start + i + k) % n for k in range(min(run, n - i) + 1)]
            fan = np.vstack([apex[None], poly[idx]])
            mid = poly[idx].mean(0) - apex
            shade = float(np.dot(mid / (np.linalg.norm(mid) + 1e-9), light))
            val = float(np.clip(base * (1 + 0.5 * shade + rng.normal(0, 0.1)), 0.05, 0.75))
            cv2.fillPoly(t, [_fixed(fan)], val, cv2.LINE_8, SHIFT)
            i += run
        if rng.random() < 0.45:  # flat top face lets light through
            f = rng.uniform(0.25, 0.55) * (1 + rng.normal(0, 0.08, (n, 1)))
            top = apex + (poly - apex) * np.clip(f, 0.15, 0.7)
            cv2.fillPoly(t, [_fixed(top)], float(rng.uniform(0.4, 0.75)), cv2.LINE_8, SHIFT)
        cv2.polylines(t, [_fixed(poly)], True, base * 0.6, 2, cv2.LINE_8, SHIFT)
    else:
        rim_val = float(rng.uniform(0.16, 0.42))
        cv2.fillPoly(t, [_fixed(poly)], rim_val, cv2.LINE_8, SHIFT)
        # inner (top) face: vertices pulled in by an uneven rim, thicker away from the light
        c2 = c + light * p.r_in * rng.uniform(0.0, 0.08)
        d = poly - c2
        facing = (d @ light) / (np.linalg.norm(d, axis=1) + 1e-9)
        rim = p.r_in * rng.uniform(0.07, 0.16) * (1.0 - 0.5 * facing) * rng.uniform(0.8, 1.2, n)
        rim = np.maximum(rim, 1.6)
        f = np.clip(1 - rim / (np.linalg.norm(d, axis=1) + 1e-9), 0.25, 0.95)[:, None]
        inner = c2 + d * f
        core = float(rng.uniform(0.8, 0.99))
        cv2.fillPoly(t, [_fixed(inner)], core, cv2.LINE_8, SHIFT)
        # a few internal facet edges: part of a top-face outline and lines to corners
        top = c2 + (inner - c2) * rng.uniform(0.4, 0.7)
        for k in rng.choice(n, size=min(n, int(rng.integers(2, 5))), replace=False):
            ev = float(core * rng.uniform(0.5, 0.85))
            cv2.line(t, _pt(top[k]), _pt(top[(k + 1) % n]), ev, 1, cv2.LINE_8, SHIFT)
            cv2.line(t, _pt(top[k]), _pt(inner[k]), ev, 1, cv2.LINE_8, SHIFT)
        if rng.random() < 0.3:  # small bright focus spot of the lens-like crystal
            spot = c2 + rng.normal(0, 0.15, 2) * p.r_in
            cv2.circle(t, _pt(spot), round(max(1.0, p.r_in * 0.07) * ONE),
                       float(min(1.2, core * 1.25)), -1, cv2.LINE_8, SHIFT)
    # thickness gradient and faint internal texture
    yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
    ramp = ((xx - c[0]) * light[0] + (yy - c[1]) * light[1]) * (1 / max(p.r_out, 1.0))
    tex = cv2.resize(rng.normal(0, 1, (4, 4)).astype(np.float32), (pw, ph),
                     interpolation=cv2.INTER_CUBIC)
    t *= 1 + float(rng.uniform(0.05, 0.2)) * ramp + 0.04 * tex
    return (1 + (t - 1) * alpha).astype(np.float32)
