"""Input validation and step 1 of the measurement: binarise and clean a crystal mask.

Binarise -> drop objects below ``min_area_px`` -> close with a disc of
``closing_radius_px`` -> fill holes -> (optionally) clear objects touching the border.

Two pitfalls handled here:

* Closing near the frame edge: with a constant 0 border the erosion half of the closing
  eats the pixels of an object that touches the edge, so it no longer touches it and
  border clearing misses it. We pad with *replicated* pixels, close, and crop.
* The region of interest (the illuminated field): its boundary is a border like the frame
  edge. Mask pixels outside it are discarded; the border zone is the frame edge plus the
  ROI pixels that have an 8-neighbour outside the ROI.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from edge.measure.config import MeasureConfig

_INT_KINDS = "biu"  # bool, signed and unsigned integers


def disc(radius: int) -> np.ndarray:
    """Flat disc structuring element ``x**2 + y**2 <= r**2`` (MATLAB ``strel('disk', r, 0)``).

    Parameters
    ----------
    radius : int
        Radius in px (>= 0).

    Returns
    -------
    ndarray of uint8, shape (2r+1, 2r+1)
    """
    r = int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return ((xx * xx + yy * yy) <= r * r).astype(np.uint8)


def validate_px_size(px_size_um: float) -> float:
    """Return ``px_size_um`` as a float; ValueError unless finite and > 0."""
    try:
        v = float(px_size_um)
    except (TypeError, ValueError):
        raise ValueError(f"px_size_um must be a number, got {px_size_um!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"px_size_um must be finite and > 0, got {px_size_um!r}")
    return v


def binarize(mask: np.ndarray, *, crystal_class: int | None = None,
             name: str = "mask") -> np.ndarray:
    """Validate a 2-D mask or class map and return a C-contiguous 0/1 uint8 crystal mask.

    Parameters
    ----------
    mask : ndarray, shape (H, W), bool or integer
        Crystal mask (non-zero = crystal), or a class map when ``crystal_class`` is given.
    crystal_class : int, optional
        Class id of the crystals in a class map.
    name : str
        Name used in error messages.

    Raises
    ------
    ValueError
        Not an array, not 2-D, empty, or not bool/integer (messages quote shape and dtype).
    """
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(mask).__name__}")
    if mask.ndim != 2:
        hint = " (a colour image? pass a single-channel mask or class map)" if (
            mask.ndim == 3 and mask.shape[-1] in (3, 4)) else ""
        raise ValueError(f"{name} must be 2-D (H, W), got shape {mask.shape}{hint}")
    if mask.size == 0:
        raise ValueError(f"{name} is empty, shape {mask.shape}")
    if mask.dtype.kind not in _INT_KINDS:
        raise ValueError(f"{name} must be bool or integer (0/1 mask or class map), got dtype "
                         f"{mask.dtype} with shape {mask.shape}")
    if crystal_class is not None:
        if isinstance(crystal_class, bool) or not isinstance(crystal_class, (int, np.integer)):
            raise ValueError(f"crystal_class must be an int, got {crystal_class!r}")
        return np.ascontiguousarray(mask == crystal_class, dtype=np.uint8)
    return np.ascontiguousarray(mask != 0, dtype=np.uint8)


def validate_roi(roi: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """0/1 uint8 ROI of the given shape, or None; ValueError on a mismatch or empty ROI."""
    if roi is None:
        return None
    r = binarize(roi, name="roi")
    if r.shape != tuple(shape):
        raise ValueError(f"roi shape {r.shape} differs from mask shape {tuple(shape)}")
    if not r.any():
        raise ValueError(f"roi of shape {r.shape} is empty (no valid pixel)")
    return r


def border_zone(shape: tuple[int, int], roi: np.ndarray | None = None) -> np.ndarray:
    """Pixels where a crystal counts as touching the border (uint8 0/1).

    The outermost pixel ring of the frame, plus (with a ROI) every ROI pixel with an
    8-neighbour outside the ROI.
    """
    valid = np.ones(shape, np.uint8) if roi is None else (roi != 0).astype(np.uint8)
    inner = cv2.erode(valid, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                      borderValue=0)
    return (valid & (1 - inner)).astype(np.uint8)


def remove_small(mask: np.ndarray, min_area_px: int, *, connectivity: int = 8,
                 boxes: list[tuple[int, int, int, int, int]] | None = None
                 ) -> tuple[np.ndarray, int]:
    """Drop objects of fewer than ``min_area_px`` pixels; return (mask, number dropped).

    8-connectivity: only objects whose outline has fewer than ``2 * min_area_px + 4``
    points can be that small, so only those are counted, on their own crops (no
    frame-sized pass besides the labelling). ``boxes`` (optional) receives
    ``(x, y, w, h, area_px)`` of each dropped object, for the reports' ``too_small`` rows;
    speckle noise (more than 500 candidates) and 4-connectivity are only counted.
    """
    if min_area_px <= 1:
        return mask, 0
    n, lab = cv2.connectedComponents(mask, connectivity=connectivity, ltype=cv2.CV_32S)
    candidates: list[int] = []
    if connectivity == 8 and n > 1:
        found = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        contours, hierarchy = found[-2], found[-1]
        limit = 2 * min_area_px + 4
        candidates = [k for k, c in enumerate(contours)
                      if hierarchy[0, k, 3] == -1 and len(c) < limit]
    if connectivity != 8 or len(candidates) > 500:  # 4-connectivity, or speckle noise
        small = np.bincount(lab.ravel(), minlength=n) < min_area_px
        small[0] = False
        n_small = int(np.count_nonzero(small))
        return (np.where(small[lab], 0, mask).astype(np.uint8) if n_small else mask), n_small
    out, n_small = mask, 0
    for k in candidates:
        c = contours[k]
        i = int(lab[c[0, 0, 1], c[0, 0, 0]])
        x, y, w, h = cv2.boundingRect(c)
        crop = lab[y:y + h, x:x + w] == i
        area = int(np.count_nonzero(crop))
        if area < min_area_px:
            if out is mask:
                out = mask.copy()
            out[y:y + h, x:x + w][crop] = 0
            n_small += 1
            if boxes is not None:
                boxes.append((x, y, w, h, area))
    return out, n_small


def close_disc(mask: np.ndarray, radius: int) -> np.ndarray:
    """Morphological closing with a flat disc; the frame edge neither adds nor erodes."""
    if radius <= 0:
        return mask
    r = int(radius)
    padded = cv2.copyMakeBorder(mask, r, r, r, r, cv2.BORDER_REPLICATE)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, disc(r),
                              borderType=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(closed[r:-r, r:-r])


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not connected (4-connectivity) to the frame edge."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    flood = padded.copy()
    ff_mask = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(flood, ff_mask, (0, 0), 1, flags=4)
    holes = flood[1:-1, 1:-1] == 0
    out = mask.copy()
    out[holes] = 1
    return out


def clear_border_objects(mask: np.ndarray, zone: np.ndarray, *, connectivity: int = 8
                         ) -> tuple[np.ndarray, int]:
    """Remove objects with a pixel in ``zone``; return (mask, number removed)."""
    n, lab = cv2.connectedComponents(mask, connectivity=connectivity, ltype=cv2.CV_32S)
    hit = np.zeros(n, bool)
    hit[np.unique(lab[(zone != 0) & (lab > 0)])] = True
    hit[0] = False
    n_hit = int(np.count_nonzero(hit))
    if n_hit == 0:
        return mask, 0
    return np.where(hit[lab], 0, mask).astype(np.uint8), n_hit


def clean_binary(mask01: np.ndarray, roi01: np.ndarray | None, cfg: MeasureConfig, *,
                 close: Callable[[np.ndarray, int], np.ndarray] = close_disc,
                 small: list[tuple[int, int, int, int, int]] | None = None
                 ) -> tuple[np.ndarray, int]:
    """Steps 1a-1d on a validated 0/1 mask: ROI, small objects, closing, holes.

    ``close`` is the closing implementation (:func:`close_disc`, or the CUDA one from
    :mod:`edge.measure.gpu`, which gives identical results); ``small`` receives the
    dropped objects (see :func:`remove_small`).
    Returns the cleaned mask and the number of objects dropped as too small.
    """
    m = mask01 if roi01 is None else (mask01 & roi01)
    m, n_small = remove_small(m, cfg.min_area_px, connectivity=cfg.connectivity, boxes=small)
    m = close(m, cfg.closing_radius_px)
    if roi01 is not None:
        m &= roi01
    if cfg.fill_holes:
        m = fill_holes(m)
        if roi01 is not None:
            m &= roi01
    return np.ascontiguousarray(m), n_small


def clean_mask(mask: np.ndarray, *, crystal_class: int | None = None,
               roi: np.ndarray | None = None, config: MeasureConfig | None = None
               ) -> np.ndarray:
    """Step 1 of the pipeline: binarise, drop small objects, close, fill holes, clear border.

    Parameters
    ----------
    mask : ndarray, shape (H, W), bool or integer
        Crystal mask (non-zero = crystal) or class map (with ``crystal_class``).
    crystal_class : int, optional
        Crystal class id when ``mask`` is a class map.
    roi : ndarray, shape (H, W), optional
        Valid (illuminated) field; its boundary counts as border.
    config : MeasureConfig, optional
        ``min_area_px``, ``closing_radius_px``, ``fill_holes``, ``clear_border``.

    Returns
    -------
    ndarray of uint8, shape (H, W)
        0/1 cleaned mask. With ``clear_border`` whole objects touching the border are
        removed here; :func:`edge.measure.measure_crystals` instead decides per crystal
        after splitting, so an interior crystal touching a border crystal survives.
    """
    cfg = config or MeasureConfig()
    m = binarize(mask, crystal_class=crystal_class)
    r = validate_roi(roi, m.shape)
    m, _ = clean_binary(m, r, cfg)
    if cfg.clear_border:
        m, _ = clear_border_objects(m, border_zone(m.shape, r), connectivity=cfg.connectivity)
    return m
