"""Pixel size from certified reference beads: the median diameter of the round ones.

The frame is flat-fielded (:func:`edge.calibrate.image.flat_field`), smoothed lightly
and split by Otsu's threshold; the smaller class is the beads (dark or bright). Holes are
filled; a component is dropped when it touches the border, is not round (axis ratio of
its second moments over 1.25 or solidity under 0.92), is a merged group (area over 1.6
times the median) or debris (under half the median), or has no background around it.

Each remaining bead is measured by its **integrated contrast**, which a blur does not
change: with ``b`` the (trimmed) mean background in a ring around it, ``t`` that of its
inner 40 % (by radius) and ``z`` its zone (its own pixels, widened by a margin ``m`` that holds the
blurred edge, never into a neighbour's zone),

    A = sum_z (I - b) / (t - b),      d = 2 sqrt(A / pi)

(a threshold's area would move with the blur and the threshold). ``px_size_um =
diameter_um / median(d)``; the relative standard uncertainty is the standard error of
the median, ``1.2533 * 1.4826 * MAD(d) / sqrt(N)``, over the median.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from edge.calibrate.image import flat_field, grey_float
from edge.calibrate.result import Calibration, CalibrationError

MIN_BEADS = 5
#: beads smaller than this (px) are noise or debris, not measured
MIN_DIAMETER_PX = 6.0
MAX_AXIS_RATIO = 1.25
MIN_SOLIDITY = 0.92


def measure_beads(image: np.ndarray, *, diameter_um: float, min_beads: int = MIN_BEADS
                  ) -> Calibration:
    """Measure the pixel size on a frame of round reference beads (see the module).

    Parameters
    ----------
    image : np.ndarray
        The decoded frame (grey or colour, 8 or 16 bit).
    diameter_um : float
        The beads' certified diameter in micrometres.

    Raises
    ------
    CalibrationError
        Fewer than ``min_beads`` round, separate beads inside the frame.
    """
    if not diameter_um > 0:
        raise ValueError(f"diameter_um must be > 0, got {diameter_um}")
    f = flat_field(grey_float(image))
    mask, dark = _segment(f)
    labels, beads = _components(mask)
    _classify(beads, mask.shape)
    kept = [b for b in beads if b["reason"] is None]
    if len(kept) < min_beads:
        raise CalibrationError(_too_few(len(kept), beads, min_beads))
    _measure(f, labels, kept)
    for b in kept:
        if b["d_px"] is None:
            b["reason"] = "crowded"
    kept = [b for b in kept if b["reason"] is None]
    if len(kept) < min_beads:
        raise CalibrationError(_too_few(len(kept), beads, min_beads))
    return _result(diameter_um, beads, kept, dark)


def _too_few(n: int, beads: list[dict[str, Any]], need: int) -> str:
    dropped = _dropped(beads)
    why = ", ".join(f"{v} {k}" for k, v in dropped.items() if v)
    return f"found {n} beads, need >= {need}" + (f" (dropped: {why})" if why else "")


def _dropped(beads: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for b in beads:
        if b["reason"] is not None:
            out[b["reason"]] = out.get(b["reason"], 0) + 1
    return out


def _result(diameter_um: float, beads: list[dict[str, Any]], kept: list[dict[str, Any]],
            dark: bool) -> Calibration:
    d = np.array([b["d_px"] for b in kept])
    med = float(np.median(d))
    mad = 1.4826 * float(np.median(np.abs(d - med)))
    se = 1.2533 * mad / math.sqrt(len(d))
    notes = []
    if len(d) < 10:
        notes.append(f"only {len(d)} beads measured: the uncertainty is itself uncertain; "
                     f"a frame with 10 or more separate beads is better")
    return Calibration(
        px_size_um=diameter_um / med,
        uncertainty_pct=100.0 * se / med,
        method="beads",
        reference_um=diameter_um,
        found={"beads": len(d), "dropped": _dropped(beads), "median_diameter_px": med,
               "mad_diameter_px": mad, "beads_polarity": "dark" if dark else "bright",
               "diameters_px": [round(float(v), 3) for v in d]},
        notes=notes,
        drawing={"beads": beads},
    )


def _segment(f: np.ndarray) -> tuple[np.ndarray, bool]:
    """Filled bead mask by Otsu's threshold on the lightly smoothed frame; whether the
    beads are dark (the smaller class is the beads)."""
    s = cv2.GaussianBlur(f.astype(np.float32), (0, 0), 1.0)
    lo, hi = np.percentile(s, [0.5, 99.5])
    u8 = np.clip((s - lo) / max(hi - lo, 1e-9) * 255.0, 0, 255).astype(np.uint8)
    _, above = cv2.threshold(u8, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark = above.mean() > 0.5
    mask = (1 - above if dark else above).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    cnts, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, cnts, -1, 1, cv2.FILLED)
    return filled, bool(dark)


def _components(mask: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Labels and, per component of at least :data:`MIN_DIAMETER_PX`, its label, area,
    bounding box, outline, axis ratio and solidity."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_area = math.pi / 4 * MIN_DIAMETER_PX ** 2
    beads = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area:
            continue
        sub = (labels[y:y + h, x:x + w] == i).astype(np.uint8)
        cnts, _ = cv2.findContours(sub, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cnt = max(cnts, key=cv2.contourArea) + np.array([x, y])
        hull = cv2.contourArea(cv2.convexHull(cnt))
        m = cv2.moments(sub, binaryImage=True)
        cov = np.array([[m["mu20"], m["mu11"]], [m["mu11"], m["mu02"]]]) / m["m00"]
        ev = np.linalg.eigvalsh(cov)
        beads.append({"label": i, "area": area, "bbox": (x, y, w, h), "contour": cnt,
                      "axis_ratio": math.sqrt(ev[1] / max(ev[0], 1e-9)),
                      "solidity": area / max(hull, 1.0), "reason": None, "d_px": None})
    return labels, beads


def _classify(beads: list[dict[str, Any]], shape: tuple[int, int]) -> None:
    """Set each component's ``reason`` for not measuring it (None: measured)."""
    h, w = shape
    for b in beads:
        x, y, bw, bh = b["bbox"]
        if x <= 0 or y <= 0 or x + bw >= w or y + bh >= h:
            b["reason"] = "border"
        elif b["axis_ratio"] > MAX_AXIS_RATIO or b["solidity"] < MIN_SOLIDITY:
            b["reason"] = "not_round"
    areas = [b["area"] for b in beads if b["reason"] is None]
    if not areas:
        return
    med = float(np.median(areas))
    for b in beads:
        if b["reason"] in (None, "not_round") and b["area"] > 1.6 * med:
            b["reason"] = "merged"
        elif b["reason"] is None and b["area"] < 0.5 * med:
            b["reason"] = "small"


def _measure(f: np.ndarray, labels: np.ndarray, kept: list[dict[str, Any]]) -> None:
    """Each kept bead's integrated-contrast diameter ``d_px`` (None when its zone has no
    background ring or no interior)."""
    dist, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    nearest = labels[iy, ix]
    h, w = f.shape
    for b in kept:
        r = math.sqrt(b["area"] / math.pi)
        m = max(6, math.ceil(0.5 * r))
        x, y, bw, bh = b["bbox"]
        pad = m + 5
        sl = (slice(max(0, y - pad), min(h, y + bh + pad)),
              slice(max(0, x - pad), min(w, x + bw + pad)))
        own = nearest[sl] == b["label"]
        dd, fz = dist[sl], f[sl]
        zone = own & (dd <= m)
        ring = own & (dd > m) & (dd <= m + 6)
        inside = ndimage.distance_transform_edt(labels[sl] == b["label"]) > 0.6 * r
        if ring.sum() < 20 or inside.sum() < 5:
            continue
        bg, top = _trimmed_mean(fz[ring]), _trimmed_mean(fz[inside])
        if abs(top - bg) < 1e-6:
            continue
        area = float(np.sum((fz[zone] - bg) / (top - bg)))
        b["d_px"] = 2.0 * math.sqrt(max(area, 0.0) / math.pi)


def _trimmed_mean(v: np.ndarray) -> float:
    """Mean of the values within 3 robust sigmas of the median (a neighbour's halo or
    dust drops out; the mean of the rest scatters less than the median)."""
    med = float(np.median(v))
    sigma = 1.4826 * float(np.median(np.abs(v - med)))
    near = v[np.abs(v - med) <= 3 * sigma] if sigma > 0 else v
    return float(near.mean()) if near.size else med
