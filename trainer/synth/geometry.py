"""Crystal sizes and faceted convex crystal outlines (placement: ``trainer.synth.placement``).

All coordinates are pixels with pixel centres at integers (OpenCV's convention): pixel
``(x, y)`` covers ``[x-0.5, x+0.5] x [y-0.5, y+0.5]``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from trainer.synth.config import SynthConfig

SHAPES = ("hexagon", "octagon", "rhomb", "irregular")
_SHAPE_P = (0.40, 0.22, 0.16, 0.22)


# ----------------------------------------------------------------------------- polygons
def signed_polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a simple polygon ``(N, 2)`` (px2), positive when its vertices run
    anticlockwise (x right, y up)."""
    x, y = poly[:, 0].astype(np.float64), poly[:, 1].astype(np.float64)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a simple polygon ``(N, 2)`` (absolute value, px2)."""
    return abs(signed_polygon_area(poly))


def polygon_centroid(poly: np.ndarray) -> np.ndarray:
    x, y = poly[:, 0].astype(np.float64), poly[:, 1].astype(np.float64)
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    a = cross.sum() / 2.0
    if abs(a) < 1e-12:
        return poly.mean(axis=0)
    return np.array([((x + xn) * cross).sum() / (6 * a), ((y + yn) * cross).sum() / (6 * a)])


def inradius(poly: np.ndarray, centre: np.ndarray) -> float:
    """Distance from ``centre`` to the nearest edge of a convex polygon."""
    p, q = poly, np.roll(poly, -1, axis=0)
    d = q - p
    t = np.clip(((centre - p) * d).sum(1) / np.maximum((d * d).sum(1), 1e-12), 0, 1)
    foot = p + t[:, None] * d
    return float(np.sqrt(((foot - centre) ** 2).sum(1)).min())


def convex_sdf(poly: np.ndarray, shape: tuple[int, int],
               origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Signed distance (px, float64, > 0 inside) of pixel centres to a convex polygon's
    edge lines (the max over edges of the outside distance; exact inside and near edges).
    """
    h, w = shape
    p = np.asarray(poly, np.float64) - np.asarray(origin, np.float64)
    x, y = p[:, 0], p[:, 1]
    if float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) < 0:
        p = p[::-1]
    xs = np.arange(w, dtype=np.float64)[None, :]
    ys = np.arange(h, dtype=np.float64)[:, None]
    sd = np.full((h, w), np.inf)
    for (px, py), (qx, qy) in zip(p, np.roll(p, -1, axis=0), strict=True):
        ln = math.hypot(qx - px, qy - py)
        if ln < 1e-12:
            continue
        ex, ey = (qx - px) / ln, (qy - py) / ln
        np.minimum(sd, ex * (ys - py) - ey * (xs - px), out=sd)
    return sd


def convex_mask(poly: np.ndarray, shape: tuple[int, int],
                origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Exact pixel-centre rasterisation of a convex polygon: uint8 0/1 of ``shape``.

    A pixel is set when its centre lies inside or on the polygon, so the expected pixel
    count equals the polygon's area (``cv2.fillPoly`` also sets pixels the outline
    touches and overestimates the area by about 0.46 px times the perimeter).
    ``origin`` is the frame coordinate of the mask's top-left pixel.
    """
    return (convex_sdf(poly, shape, origin) >= -1e-9).astype(np.uint8)


def area_equivalent_diameter(area: float) -> float:
    return 2.0 * math.sqrt(max(area, 0.0) / math.pi)


def make_outline(rng: np.random.Generator, d_px: float, *, aspect_max: float = 1.6,
                 shape: str | None = None) -> tuple[np.ndarray, str, float]:
    """A faceted, convex, mostly equant crystal outline centred on its centroid.

    The outline is a hexagon, octagon, rhomb or irregular 5-7-gon with jittered vertices,
    optionally truncated corners, stretched to an aspect ratio in [1, aspect_max] (mostly
    low) and rotated; then scaled so that its area is exactly ``pi (d_px/2)^2``.

    Returns
    -------
    (polygon (N, 2) float64 centred at its centroid, shape name, aspect ratio)
    """
    shape = shape or str(rng.choice(SHAPES, p=_SHAPE_P))
    if shape == "rhomb":
        k = rng.uniform(0.62, 0.9)
        pts = np.array([[1.0, 0.0], [0.0, k], [-1.0, 0.0], [0.0, -k]])
        pts *= 1 + rng.normal(0, 0.04, (4, 1))
    else:
        n = {"hexagon": 6, "octagon": 8}.get(shape, int(rng.integers(5, 8)))
        step = 2 * math.pi / n
        jitter = 0.12 if shape != "irregular" else 0.3
        ang = np.arange(n) * step + rng.uniform(-jitter, jitter, n) * step
        rad = 1 + rng.normal(0, 0.05 if shape != "irregular" else 0.1, n)
        pts = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
    if rng.random() < 0.35:  # truncate corners: more facets
        f = rng.uniform(0.08, 0.2)
        nxt, prv = np.roll(pts, -1, 0), np.roll(pts, 1, 0)
        pts = np.stack([pts + f * (prv - pts), pts + f * (nxt - pts)], 1).reshape(-1, 2)
    stretch = float(min(1.0 + abs(rng.normal(0, 0.22)), aspect_max))
    pts = pts * np.array([math.sqrt(stretch), 1 / math.sqrt(stretch)])
    for _ in range(3):  # cap the aspect ratio (sides of the minimum-area rectangle)
        aspect = min_rect_aspect(pts)
        if aspect <= aspect_max * (1 + 1e-6):
            break
        (_, _), (rw, rh), ang = cv2.minAreaRect(pts.astype(np.float32))
        th = math.radians(ang) + (0.0 if rw >= rh else math.pi / 2)
        u = np.array([math.cos(th), math.sin(th)])
        along = pts @ u
        pts = pts - np.outer(along * (1 - 0.998 * aspect_max / aspect), u)
    th = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(th), math.sin(th)
    pts = pts @ np.array([[c, s], [-s, c]])
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    hull -= polygon_centroid(hull)
    hull *= math.sqrt(math.pi * (d_px / 2) ** 2 / polygon_area(hull))
    return hull, shape, min_rect_aspect(hull)


def min_rect_aspect(poly: np.ndarray) -> float:
    """Aspect ratio (long / short side) of the polygon's minimum-area bounding rectangle."""
    (_, _), (rw, rh), _ = cv2.minAreaRect(np.asarray(poly, np.float32))
    return float(max(rw, rh) / max(min(rw, rh), 1e-9))


# ----------------------------------------------------------------------------- sizes
def sample_diameters_um(rng: np.random.Generator, cfg: SynthConfig, n: int) -> np.ndarray:
    """``n`` true area-equivalent diameters (um) from the configured size distribution.

    sieve ``[a, b]``: number density ~ x^-3 (uniform volume density q3) inside the
    fraction; ``tail_fraction`` of the crystals are fines (log-uniform 0.45a..a) or
    oversize (log-uniform b..1.3b) in the ratio 2:1. lognormal: number distribution
    ``ln x ~ N(ln x50,3 - 3 s^2, s)``, whose Q3 has median x50,3 and the same s.
    """
    if cfg.size_mode == "lognormal":
        mu0 = math.log(cfg.lognormal_x50_um) - 3 * cfg.lognormal_s ** 2
        d = np.exp(rng.normal(mu0, cfg.lognormal_s, n))
    else:
        a, b = cfg.fraction_um
        u = rng.random(n)
        kind = rng.random(n)
        core = (a ** -2 - u * (a ** -2 - b ** -2)) ** -0.5 if b > a else np.full(n, a)
        fines = np.exp(np.log(0.45 * a) + u * math.log(1 / 0.45))
        over = np.exp(np.log(b) + u * math.log(1.3))
        t = cfg.tail_fraction
        d = np.where(kind < t * 2 / 3, fines, np.where(kind < t, over, core))
    return np.maximum(d, cfg.min_diameter_um)
