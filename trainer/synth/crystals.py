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

from trainer.synth.geometry import polygon_area, signed_polygon_area
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
        # inner (top) face inside an uneven rim, thicker away from the light
        c2 = c + light * p.r_in * rng.uniform(0.0, 0.08)
        d = poly - c2
        facing = (d @ light) / (np.linalg.norm(d, axis=1) + 1e-9)
        half = _half_thickness(poly, p.r_in)
        rim = half * rng.uniform(0.07, 0.16) * (1.0 - 0.5 * facing) * rng.uniform(0.8, 1.2, n)
        # every edge moves in by its own rim width: scaling the vertices towards the centre
        # would leave the long sides of a needle a fraction of a pixel of rim
        inner = _inset(poly, np.minimum(np.maximum(rim, 1.6), 0.45 * half))
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


def _half_thickness(poly: np.ndarray, r_in: float) -> float:
    """How far the crystal's middle lies from its outline (px): the inradius about the
    centroid, or area / perimeter where that is larger (a twin's centroid can lie near a
    re-entrant corner, where the inradius says nothing of its arms' width)."""
    perimeter = float(np.linalg.norm(np.roll(poly, -1, axis=0) - poly, axis=1).sum())
    return max(float(r_in), polygon_area(poly) / max(perimeter, 1e-9))


def _inset(poly: np.ndarray, width: np.ndarray) -> np.ndarray:
    """``poly`` with edge ``i`` (from vertex ``i`` to ``i + 1``) moved inwards by
    ``width[i]``; each vertex goes where the moved edges before and after it meet
    (edges without length are skipped), along their mean normal where they are parallel.

    The inward normal of edge :math:`e_i` is :math:`e_i` turned by +90 degrees for an
    anticlockwise polygon (positive shoelace area) and by -90 degrees otherwise; a vertex
    between edges :math:`j` and :math:`k` moves by :math:`\\delta` solving
    :math:`n_j \\cdot \\delta = w_j`, :math:`n_k \\cdot \\delta = w_k`.
    """
    n = len(poly)
    e = np.roll(poly, -1, axis=0) - poly
    length = np.linalg.norm(e, axis=1)
    nrm = np.stack([-e[:, 1], e[:, 0]], 1) / np.maximum(length, 1e-9)[:, None]
    if signed_polygon_area(poly) < 0:
        nrm = -nrm
    real = np.flatnonzero(length > 1e-6)
    if len(real) < 2:
        return poly.copy()
    out = poly.copy()
    for i in range(n):
        after = int(real[np.searchsorted(real, i) % len(real)])  # first edge from i on
        before = int(real[np.searchsorted(real, i) - 1])          # last edge ending at i
        a, b = nrm[before], nrm[after]
        m = np.array([a, b])
        if abs(np.linalg.det(m)) > 1e-3:
            out[i] = poly[i] + np.linalg.solve(m, np.array([width[before], width[after]]))
        else:
            mean = a + b
            out[i] = poly[i] + mean / max(float(np.linalg.norm(mean)), 1e-9) * max(
                width[before], width[after])
    return out
