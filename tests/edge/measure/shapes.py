"""Digital test shapes for the measurement tests (numpy + OpenCV, sub-pixel vertices)."""

from __future__ import annotations

import math

import cv2
import numpy as np

_SHIFT = 4  # fillPoly fixed-point bits


def blank(h: int, w: int) -> np.ndarray:
    return np.zeros((h, w), np.uint8)


def _window(img: np.ndarray, cx: float, cy: float, ext: float
            ) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
    h, w = img.shape
    y0, y1 = max(0, int(cy - ext) - 1), min(h, int(cy + ext) + 2)
    x0, x1 = max(0, int(cx - ext) - 1), min(w, int(cx + ext) + 2)
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return slice(y0, y1), slice(x0, x1), xx, yy


def add_disc(img: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Set pixels whose centre lies within ``r`` of (cx, cy)."""
    win = _window(img, cx, cy, r)
    if win is not None:
        sy, sx, xx, yy = win
        img[sy, sx][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = 1
    return img


def add_polygon(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.round(np.asarray(pts, np.float64) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(img, [p], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return img


def regular_polygon(cx: float, cy: float, r: float, n: int, angle: float = 0.0, *,
                    stretch: float = 1.0) -> np.ndarray:
    """Vertices of a regular n-gon of circumradius r, stretched along x by ``stretch``."""
    t = np.arange(n) * 2 * math.pi / n
    x, y = r * np.cos(t) * stretch, r * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def rhomb(cx: float, cy: float, half: float, aspect: float, angle: float = 0.0) -> np.ndarray:
    """Rhomb with diagonals 2*half*aspect (x) and 2*half (y), rotated by angle."""
    x = np.array([half * aspect, 0, -half * aspect, 0])
    y = np.array([0, half, 0, -half])
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def add_ellipse(img: np.ndarray, cx: float, cy: float, a: float, b: float, *,
                angle: float = 0.0) -> np.ndarray:
    win = _window(img, cx, cy, max(a, b))
    if win is None:
        return img
    sy, sx, xx, yy = win
    c, s = math.cos(angle), math.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    img[sy, sx][(u / a) ** 2 + (v / b) ** 2 <= 1] = 1
    return img


def notched_hexagon(size: int = 120, r: float = 40.0, depth: float = 0.3,
                    angle: float = 0.2) -> np.ndarray:
    """Hexagon with a V-notch cut from one edge towards the centre (``depth`` * inradius)."""
    img = add_polygon(blank(size, size), regular_polygon(size / 2, size / 2, r, 6, angle))
    inr = r * math.cos(math.pi / 6)
    # notch: triangle from the midpoint of one edge inwards
    mid_t = angle + math.pi / 6
    ux, uy = math.cos(mid_t), math.sin(mid_t)
    px, py = -uy, ux
    tip = (size / 2 + ux * inr * (1 - depth), size / 2 + uy * inr * (1 - depth))
    half_w = 0.35 * inr * depth + 1.5
    base1 = (size / 2 + ux * (inr + 2) + px * half_w, size / 2 + uy * (inr + 2) + py * half_w)
    base2 = (size / 2 + ux * (inr + 2) - px * half_w, size / 2 + uy * (inr + 2) - py * half_w)
    notch = blank(size, size)
    add_polygon(notch, np.array([tip, base1, base2]))
    img[notch > 0] = 0
    return img


def random_scene(h: int, w: int, n: int, *, seed: int, r_range: tuple[float, float] = (8, 30),
                 pair_fraction: float = 0.3) -> np.ndarray:
    """Random equant crystals (discs, hexagons, octagons, ellipses <= 1.4) without overlap,
    some of them as touching pairs with a clear neck (centre distance 1.5 radii)."""
    rng = np.random.default_rng(seed)
    img = blank(h, w)
    placed: list[tuple[float, float, float]] = []
    tries = 0
    while len(placed) < n and tries < 50 * n:
        tries += 1
        r = float(rng.uniform(*r_range))
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        pair = rng.random() < pair_fraction
        ang = float(rng.uniform(0, math.pi))
        ext = r * (2.6 if pair else 1.0)
        if any(math.hypot(cx - x, cy - y) < ext + rr + 4 for x, y, rr in placed):
            continue
        placed.append((cx, cy, ext))
        kind = int(rng.integers(0, 4))
        centres = [(cx, cy)]
        if pair:
            dx, dy = math.cos(ang) * 0.75 * r, math.sin(ang) * 0.75 * r
            centres = [(cx - dx, cy - dy), (cx + dx, cy + dy)]
            kind = 0
        for x, y in centres:
            if kind == 0:
                add_disc(img, x, y, r)
            elif kind == 1:
                add_polygon(img, regular_polygon(x, y, r, 6, ang))
            elif kind == 2:
                add_polygon(img, regular_polygon(x, y, r, 8, ang))
            else:
                add_ellipse(img, x, y, r, r / float(rng.uniform(1.0, 1.4)), angle=ang)
    return img
