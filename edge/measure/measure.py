"""``measure_crystals``: crystal mask -> separated, measured, filtered crystals.

Pipeline (the study's, see ``docs/architecture.md``): binarise -> drop objects below
``min_area_px`` -> close with a disc -> fill holes -> split touching crystals (watershed
on the distance map, :mod:`edge.measure.split`) -> measure each crystal on its own small
crop -> reject ``too_small`` / ``border`` / ``bubble`` (with the frame's grey values:
:mod:`edge.measure.bubbles`) / ``agglomerate`` (``[measure] agglomerate_rule``: convexity by
default, the study's circularity window as an option).

Border clearing is decided per crystal *after* splitting: a crystal touching the frame
edge or the ROI boundary is rejected, its interior neighbour in the same clump is not.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge.measure.bubbles import air_bubbles
from edge.measure.clean import (
    binarize,
    border_zone,
    clean_binary,
    validate_px_size,
    validate_roi,
)
from edge.measure.config import MeasureConfig
from edge.measure.contact import contact_band, contact_crop, split_at_band
from edge.measure.convexity import convexity, hull_area
from edge.measure.crystals import AGGLOMERATE, BUBBLE, COLUMNS, Crystals
from edge.measure.gpu import Morphology
from edge.measure.shape import contour_length, feret, outer_contours
from edge.measure.split import PAD, iter_objects, split_object


def _measure_one(sub: np.ndarray, ox: int, oy: int, *, zone: np.ndarray | None,
                 frame_hw: tuple[int, int], px: float, cfg: MeasureConfig,
                 tight: bool = False) -> tuple[dict[str, object], np.ndarray]:
    """Measure one crystal given as a 0/1 uint8 crop whose pixel (0, 0) is frame (ox, oy).

    ``tight``: ``sub`` is an object crop from :func:`iter_objects` (2 px of padding around
    the object's bounding box), so the bounding box is known. ``zone`` is the border zone
    of a ROI, or None for the frame edge only (decided from the bounding box).
    """
    if tight:
        x, y, w, h = PAD, PAD, sub.shape[1] - 2 * PAD, sub.shape[0] - 2 * PAD
        s = sub
    else:
        x, y, w, h = cv2.boundingRect(sub)
        s = np.ascontiguousarray(sub[y:y + h, x:x + w])
    gx, gy = ox + x, oy + y  # frame position of the bounding box
    sx, sy = gx - (x if tight else 0), gy - (y if tight else 0)  # of s's pixel (0, 0)
    area = int(cv2.countNonZero(s))
    contours = outer_contours(s)
    per = float(sum(contour_length(c) + math.pi for c in contours))
    main = max(contours, key=len)
    pts = main if len(contours) == 1 else np.concatenate([c.reshape(-1, 2) for c in contours])
    fmax, fmin = feret(pts)
    solidity, rel_depths = convexity(main, area)
    if len(contours) > 1:  # a split part in pieces: the hull spans them all
        solidity = min(1.0, area / max(hull_area(pts), 1.0))
    d_eq = 2.0 * math.sqrt(area / math.pi)
    deep = rel_depths * d_eq >= max(cfg.concavity_px, cfg.concavity_rel * d_eq)
    mom = cv2.moments(s, True)
    cx = mom["m10"] / mom["m00"] + sx
    cy = mom["m01"] / mom["m00"] + sy
    H, W = frame_hw
    if zone is None:  # the frame's outer pixel ring: touched iff the box reaches the edge
        touches = gx <= 0 or gy <= 0 or gx + w >= W or gy + h >= H
    else:  # crop bounds may reach into the padding outside the frame
        y0, y1, x0, x1 = max(gy, 0), min(gy + h, H), max(gx, 0), min(gx + w, W)
        zcrop = zone[y0:y1, x0:x1]
        scrop = s[y0 - sy:y1 - sy, x0 - sx:x1 - sx]
        touches = bool(np.any(zcrop & scrop))
    row: dict[str, object] = {
        "area_px": area,
        "perimeter_px": per,
        "circularity": 4.0 * math.pi * area / (per * per) if per > 0 else 0.0,
        "diameter_um": 2.0 * math.sqrt(area / math.pi) * px,
        "feret_max_um": fmax * px,
        "feret_min_um": fmin * px,
        "aspect_ratio": fmax / fmin if fmin > 0 else 1.0,
        "solidity": solidity,
        "concavity": float(rel_depths[0]) if rel_depths.size else 0.0,
        "n_concavities": int(np.count_nonzero(deep)),
        "bbox": (gx, gy, w, h),
        "centroid": (cx, cy),
        "touches_border": bool(touches),
    }
    return row, main.reshape(-1, 2).astype(np.int32) + np.array([sx, sy], np.int32)


def measure_crystals(mask: np.ndarray, *, px_size_um: float, crystal_class: int | None = None,
                     roi: np.ndarray | None = None, config: MeasureConfig | None = None,
                     morphology: Morphology | None = None,
                     contact: np.ndarray | None = None,
                     grey: np.ndarray | None = None) -> Crystals:
    """Separate and measure the crystals of one segmented frame.

    Parameters
    ----------
    mask : ndarray, shape (H, W), bool or integer
        Crystal mask (non-zero = crystal), or a class map when ``crystal_class`` is given.
    px_size_um : float
        Pixel size (um/px) of ``mask``.
    crystal_class : int, optional
        Id of the crystal class in a class map (2 in this project's models).
    roi : ndarray, shape (H, W), optional
        Valid (illuminated) field, non-zero inside. Mask pixels outside are ignored; a
        crystal touching its boundary is a border crystal, like one touching the frame edge.
    config : MeasureConfig, optional
        Cleaning, splitting and shape-filter settings (defaults: the study's).
    morphology : Morphology, optional
        Implementation of the threshold and closing steps
        (:func:`edge.measure.gpu.select_morphology`: CUDA where OpenCV has it); the
        default is the CPU. Results are identical either way.
    contact : ndarray of float, shape (H, W), optional
        Contact probability from a model's ``contact`` channel (:mod:`edge.vision.contact`).
        With it, touching crystals are split at the predicted contacts
        (:mod:`edge.measure.contact`, ``[measure] contact_threshold``) instead of at the
        distance map's maxima; a split is kept even where the whole outline is convex, and
        each part is judged by the agglomerate rule on its own; a part without a learned
        contact pixel is one crystal whatever its outline (``contact_clears_concave``).
    grey : ndarray of uint8, shape (H, W), optional
        The frame's grey values at the mask's scale. With it (and ``reject_bubbles``),
        round objects with a thick dark ring and a bright centre are rejected as
        ``bubble`` (:mod:`edge.measure.bubbles`); without it no object is.

    Returns
    -------
    Crystals
        One row per crystal after cleaning and splitting, kept or rejected with a reason.

    Raises
    ------
    ValueError
        Invalid mask, ROI or pixel size; the message quotes shapes and dtypes.
    """
    cfg = config or MeasureConfig()
    px = validate_px_size(px_size_um)
    if morphology is None:
        m = binarize(mask, crystal_class=crystal_class)
        clean_kw: dict[str, object] = {}
    else:
        m = morphology.binarize(mask, crystal_class=crystal_class)
        clean_kw = {"close": morphology.close_disc}
    r = validate_roi(roi, m.shape)
    frame_shape = (int(m.shape[0]), int(m.shape[1]))
    roi_area = int(np.count_nonzero(r)) if r is not None else m.size
    small: list[tuple[int, int, int, int, int]] = []
    clean, n_small = clean_binary(m, r, cfg, small=small, **clean_kw)
    dropped = {"too_small": n_small}
    zone = border_zone(frame_shape, r) if r is not None else None

    if contact is not None and np.shape(contact) != m.shape:
        raise ValueError(f"contact map of shape {np.shape(contact)} does not match the mask "
                         f"{m.shape}")
    rows, contours = _measure_objects(clean, zone=zone, frame_hw=frame_shape, px=px, cfg=cfg,
                                      contact=contact)
    small_rows = np.array([(0, *b) for b in small], dtype=np.int64).reshape(-1, 6)
    if not rows:
        return Crystals.empty(frame_shape=frame_shape, px_size_um=px, roi_area_px=roi_area,
                              dropped=dropped, small=small_rows)
    cols = _table(rows, cfg)
    if grey is not None and cfg.reject_bubbles:
        _reject_bubbles(cols, grey, m, r, cfg)
    return Crystals(**cols, contours=contours, frame_shape=frame_shape, px_size_um=px,
                    roi_area_px=roi_area, dropped=dropped, small=small_rows)


def _reject_bubbles(cols: dict[str, np.ndarray], grey: np.ndarray, mask: np.ndarray,
                    roi: np.ndarray | None, cfg: MeasureConfig) -> None:
    """Mark air bubbles ``bubble`` in ``cols`` (a crystal that is too small or on the border
    keeps that reason: it is not counted either way)."""
    if np.shape(grey) != mask.shape:
        raise ValueError(f"grey frame of shape {np.shape(grey)} does not match the mask "
                         f"{mask.shape}")
    todo = (cols["reason"] == "") | (cols["reason"] == AGGLOMERATE)
    if not (todo & (cols["circularity"] >= cfg.bubble_circularity_min)).any():
        return
    background = mask == 0 if roi is None else (mask == 0) & (roi != 0)
    found = air_bubbles(np.asarray(grey), background, cols["centroid"][todo],
                        cols["area_px"][todo], cols["circularity"][todo],
                        circularity_min=cfg.bubble_circularity_min,
                        core_min=cfg.bubble_core_min, ring_max=cfg.bubble_ring_max)
    idx = np.flatnonzero(todo)[found]
    cols["reason"][idx] = BUBBLE
    cols["kept"][idx] = False


def _split(crop: np.ndarray, ox: int, oy: int, cfg: MeasureConfig,
           contact: np.ndarray | None) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Labels and count of one object crop, and its learned contact band (None without a
    contact map): split at the band when there is a contact map, else at the distance
    map's maxima."""
    if contact is None:
        if not cfg.split_touching:
            return crop, 1, None
        return (*split_object(crop, h_px=cfg.h_px, h_rel=cfg.h_rel), None)
    band = contact_band(crop, contact_crop(contact, ox, oy, crop.shape),
                        threshold=cfg.contact_threshold, high=cfg.contact_high)
    if not cfg.split_touching:
        return crop, 1, band
    return (*split_at_band(crop, band), band)


def _measure_objects(clean: np.ndarray, *, zone: np.ndarray | None, frame_hw: tuple[int, int],
                     px: float, cfg: MeasureConfig, contact: np.ndarray | None = None
                     ) -> tuple[list[dict[str, object]], list[np.ndarray]]:
    """One measured row and outline per crystal of each object (split where touching)."""
    rows: list[dict[str, object]] = []
    contours: list[np.ndarray] = []
    for ox, oy, crop in iter_objects(clean, connectivity=cfg.connectivity):
        lab, n, band = _split(crop, ox, oy, cfg, contact)
        # a learned contact is evidence the outline lacks (two prisms side by side make
        # one convex outline), unless contact_splits_convex is off: then a convex outline
        # stays whole whatever split it
        if n > 1 and cfg.agglomerate_rule == "convexity" and (
                contact is None or not cfg.contact_splits_convex):
            whole = _measure_one(crop, ox, oy, zone=zone, frame_hw=frame_hw, px=px, cfg=cfg,
                                 tight=True)
            if _convex(whole[0], cfg):  # no contact to split at: a thin or ragged single
                n, lab = 1, crop
        if n == 1:
            row, cnt = _measure_one(crop, ox, oy, zone=zone, frame_hw=frame_hw, px=px,
                                    cfg=cfg, tight=True)
            row["contact_free"] = band is not None and not band.any()
            row["mostly_contact"] = _mostly_contact(band, crop != 0, cfg)
            rows.append(row)
            contours.append(cnt)
            continue
        parts: list[dict[str, object]] = []
        for j in range(1, n + 1):
            sub = (lab == j).view(np.uint8)
            if not sub.any():
                continue
            row, cnt = _measure_one(sub, ox, oy, zone=zone, frame_hw=frame_hw, px=px, cfg=cfg)
            row["contact_free"] = band is not None and not (band & (lab == j)).any()
            row["mostly_contact"] = _mostly_contact(band, lab == j, cfg)
            parts.append(row)
            contours.append(cnt)
        # a split that leaves a part that is itself an agglomerate (two needles crossing,
        # cut into two V's) did not find the crystals: every part of the object is one.
        # A split at learned contacts found them; each part is judged on its own (a
        # crystal half hidden by its neighbour is rejected, the neighbour kept)
        bad = contact is None and cfg.agglomerate_rule == "convexity" and bool(agglomerates({
            "solidity": np.array([p["solidity"] for p in parts], np.float64),
            "n_concavities": np.array([p["n_concavities"] for p in parts], np.int64),
            "bad_split": np.zeros(len(parts), bool)}, cfg).any())
        for p in parts:
            p["bad_split"] = bad
        rows.extend(parts)
    return rows, contours


def _mostly_contact(band: np.ndarray | None, part: np.ndarray, cfg: MeasureConfig) -> bool:
    """More than ``contact_share_max`` of the part's pixels in the learned contact band."""
    if band is None or cfg.contact_share_max >= 1.0:
        return False
    return float(band[part].mean()) > cfg.contact_share_max


def _convex(row: dict[str, object], cfg: MeasureConfig) -> bool:
    """No counted concavity and solidity at least ``solidity_min``: one convex outline."""
    return row["n_concavities"] == 0 and float(row["solidity"]) >= cfg.solidity_min  # type: ignore[arg-type]


def agglomerates(cols: dict[str, np.ndarray], cfg: MeasureConfig) -> np.ndarray:
    """Which measured objects are agglomerates under ``cfg.agglomerate_rule`` (bool (n,)).

    'convexity': ``solidity < solidity_min``, ``n_concavities > concavities_max`` (the
    concavities counted in :func:`_measure_one`: deeper than ``max(concavity_px,
    concavity_rel * D)``), one or more counted concavities with ``solidity <
    concave_solidity_min``, or a part of a split object one of whose parts is an
    agglomerate by these tests (``bad_split``); with ``contact_clears_concave``, never an
    object (or split part) that holds no pixel of a learned contact band
    (``contact_free``: the model saw one crystal, e.g. a twin, whatever its outline).
    'circularity': ``4 pi A / P^2`` outside ``[circularity_min, circularity_max]``.
    """
    if cfg.agglomerate_rule == "circularity":
        circ = cols["circularity"]
        return (circ < cfg.circularity_min) | (circ > cfg.circularity_max)
    solidity, n = cols["solidity"], cols["n_concavities"]
    bad = ((solidity < cfg.solidity_min) | (n > cfg.concavities_max)
           | ((n >= 1) & (solidity < cfg.concave_solidity_min)) | cols["bad_split"])
    free = cols.get("contact_free")
    if cfg.contact_clears_concave and free is not None:
        bad &= ~free
    mostly = cols.get("mostly_contact")
    return bad if mostly is None else bad | mostly


def _table(rows: list[dict[str, object]], cfg: MeasureConfig) -> dict[str, np.ndarray]:
    """Columns of :class:`Crystals` from the measured rows, with each row's reject reason."""
    n = len(rows)
    cols: dict[str, np.ndarray] = {}
    for name, (dtype, _tail) in COLUMNS.items():
        if name in rows[0]:
            cols[name] = np.array([rw[name] for rw in rows], dtype=dtype)
    cols["frame"] = np.zeros(n, np.int32)
    flags = {k: np.array([bool(rw.get(k, False)) for rw in rows])
             for k in ("bad_split", "contact_free", "mostly_contact")}
    reason = np.full(n, "", dtype=COLUMNS["reason"][0])
    reason[agglomerates({**cols, **flags}, cfg)] = AGGLOMERATE
    if cfg.clear_border:
        reason[cols["touches_border"]] = "border"
    reason[cols["area_px"] < cfg.min_area_px] = "too_small"
    cols["reason"] = reason
    cols["kept"] = reason == ""
    return cols
