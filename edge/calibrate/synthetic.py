"""Synthetic reference frames of known pixel size, for tests and the docs' example.

:func:`micrometer_frame` renders a ruled stage micrometer (lines of a given spacing, at
any angle, with longer index lines every 5 and 10 divisions) and :func:`bead_frame`
round reference beads (some touching); both then apply the microscope's faults: a
Gaussian blur (the optics), uneven illumination (a tilted, vignetted field, applied as a
multiplicative gain), Gaussian noise and quantisation to 8 or 16 bits.

Edges are drawn with a one-pixel linear ramp, ``coverage = clip(R - r + 1/2, 0, 1)``,
whose integral over the plane is ``pi (R^2 + 1/12)``: a bead's area is right to
``1 / (12 R^2)``, and a line's centre is unbiased by construction (a symmetric profile).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def _illumination(shape: tuple[int, int], uneven: float, rng: np.random.Generator
                  ) -> np.ndarray:
    """A gain field in ``[1 - uneven, 1]``: a tilted plane times a radial vignette."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    yn, xn = (y - h / 2) / max(h, w), (x - w / 2) / max(h, w)
    a = rng.uniform(0, 2 * math.pi)
    field = 0.5 * (xn * math.cos(a) + yn * math.sin(a)) + (xn ** 2 + yn ** 2)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-9)
    return 1.0 - uneven * field


def _finish(ideal: np.ndarray, *, blur_px: float, noise: float, uneven: float,
            bits: int, rng: np.random.Generator) -> np.ndarray:
    """Blur, illuminate, add noise, quantise to uint8 (``bits=8``) or uint16."""
    img = ndimage.gaussian_filter(ideal, blur_px, mode="reflect") if blur_px > 0 else ideal
    img = img * _illumination(ideal.shape, uneven, rng)
    img = img + rng.normal(0.0, noise, img.shape)
    peak = 2 ** bits - 1
    out = np.clip(np.round(img * peak), 0, peak)
    return out.astype(np.uint8 if bits <= 8 else np.uint16)


def micrometer_frame(shape: tuple[int, int] = (480, 640), *, spacing_um: float = 10.0,
                     px_size_um: float = 1.0, angle_deg: float = 0.0,
                     line_width_um: float | None = None, blur_px: float = 1.0,
                     noise: float = 0.02, uneven: float = 0.3, dark_lines: bool = True,
                     index_lines: bool = True, bits: int = 8, seed: int = 0) -> np.ndarray:
    """A stage micrometer: lines every ``spacing_um`` along the normal at ``angle_deg``.

    ``angle_deg`` is the lines' direction from the image x axis (clockwise on screen,
    since image y points down). Ordinary lines span 40 % of the frame's diagonal, every
    5th 60 %, every 10th 80 %, all starting from one baseline, like a ruler's ticks.
    The line width defaults to a fifth of the spacing; the pattern's phase is random.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    t = math.radians(angle_deg)
    # u: across the lines (along their normal), v: along them; both in micrometres
    u = ((x - w / 2) * -math.sin(t) + (y - h / 2) * math.cos(t)) * px_size_um
    v = ((x - w / 2) * math.cos(t) + (y - h / 2) * math.sin(t)) * px_size_um
    u = u + rng.uniform(0, spacing_um)
    k = np.round(u / spacing_um)
    dist_px = np.abs(u - k * spacing_um) / px_size_um
    half_px = 0.5 * (line_width_um or spacing_um / 5) / px_size_um
    line = np.clip(half_px - dist_px + 0.5, 0.0, 1.0)
    if index_lines:
        diag_um = math.hypot(h, w) * px_size_um
        length = np.where(k % 10 == 0, 0.8, np.where(k % 5 == 0, 0.6, 0.4)) * diag_um
        v0 = -0.4 * diag_um
        along = (np.clip(v - v0 + 0.5 * px_size_um, 0, px_size_um)
                 * np.clip(v0 + length - v + 0.5 * px_size_um, 0, px_size_um))
        line = line * along / px_size_um ** 2
    bright, dim = 0.85, 0.25
    ideal = bright - (bright - dim) * line if dark_lines else dim + (bright - dim) * line
    return _finish(ideal, blur_px=blur_px, noise=noise, uneven=uneven, bits=bits, rng=rng)


def _bead_centres(shape: tuple[int, int], d_px: float, n: int, n_touching: int,
                  rng: np.random.Generator) -> list[tuple[float, float]]:
    """Random centres at least ``d_px + 6`` apart, plus ``n_touching`` touching pairs."""
    h, w = shape
    centres: list[tuple[float, float]] = []

    def free(cy: float, cx: float) -> bool:
        return all(math.hypot(cy - a, cx - b) >= d_px + 6 for a, b in centres)

    for _ in range(200 * (n + n_touching)):
        if len(centres) >= n + 2 * n_touching:
            break
        cy, cx = rng.uniform(0.6 * d_px, h - 0.6 * d_px), rng.uniform(0.6 * d_px, w - 0.6 * d_px)
        pair = len(centres) >= n
        a = rng.uniform(0, 2 * math.pi)
        cy2, cx2 = cy + d_px * math.sin(a), cx + d_px * math.cos(a)
        if not free(cy, cx) or (pair and not free(cy2, cx2)):
            continue
        centres.append((cy, cx))
        if pair:
            centres.append((cy2, cx2))
    return centres


def bead_frame(shape: tuple[int, int] = (480, 640), *, diameter_um: float = 20.0,
               px_size_um: float = 1.0, n_beads: int = 20, n_touching: int = 2,
               blur_px: float = 1.0, noise: float = 0.02, uneven: float = 0.3,
               dark_beads: bool = True, bits: int = 8, seed: int = 0) -> np.ndarray:
    """Uniform round beads of ``diameter_um`` at random places (some cut by the border,
    ``n_touching`` pairs touching), on an even background before the faults."""
    rng = np.random.default_rng(seed)
    h, w = shape
    r_px = 0.5 * diameter_um / px_size_um
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    cover = np.zeros(shape)
    for cy, cx in _bead_centres(shape, 2 * r_px, n_beads, n_touching, rng):
        y0, y1 = max(0, int(cy - r_px - 2)), min(h, int(cy + r_px + 3))
        x0, x1 = max(0, int(cx - r_px - 2)), min(w, int(cx + r_px + 3))
        r = np.hypot(y[y0:y1, x0:x1] - cy, x[y0:y1, x0:x1] - cx)
        cover[y0:y1, x0:x1] = np.maximum(cover[y0:y1, x0:x1],
                                         np.clip(r_px - r + 0.5, 0.0, 1.0))
    bright, dim = 0.8, 0.3
    ideal = bright - (bright - dim) * cover if dark_beads else dim + (bright - dim) * cover
    return _finish(ideal, blur_px=blur_px, noise=noise, uneven=uneven, bits=bits, rng=rng)
