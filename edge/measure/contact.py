"""Separation of touching crystals with a learned contact map (watershed markers).

A model with a ``contact`` channel (:mod:`edge.vision.contact`) predicts, per pixel, the
probability ``p`` that a crystal pixel touches another crystal. Per connected object (the
padded crop of :func:`edge.measure.split.iter_objects`):

1. Contact band, by hysteresis (as Canny's edges): the 8-connected components of
   ``object AND p >= threshold`` that reach ``p >= high`` somewhere. A weak band with no
   confident pixel (a shading edge or a facet inside one crystal) is not a contact.
2. Markers: the connected components (4-connected) of the object outside the band,
   eroded by one pixel (3x3) so that a contact line the model draws only one pixel wide,
   or a diagonal step through it, does not join two crystals. Components smaller than
   ``max(MIN_MARKER_PX, MIN_MARKER_REL * largest)`` are noise, not crystals.
3. One marker (or none): one crystal.
4. Otherwise the flood of :mod:`edge.measure.split` from these markers: the watershed by
   immersion on the inverted distance map inside the object (the checkerboard image fed
   to ``cv2.watershed``), then watershed-line pixels shared between neighbours. The
   contact decides *how many* crystals and *where* each starts; the distance map decides
   where the boundary runs, as it does without a contact map.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.measure.split import _checker, _share_lines

#: Smallest marker (px, after the erosion) that counts as a crystal.
MIN_MARKER_PX = 4
#: Smallest marker relative to the object's largest one.
MIN_MARKER_REL = 0.05
_K3 = np.ones((3, 3), np.uint8)


def contact_band(obj: np.ndarray, contact: np.ndarray, *, threshold: float,
                 high: float) -> np.ndarray:
    """Boolean contact band of one object crop: the 8-connected components of
    ``obj AND contact >= threshold`` that hold a pixel with ``contact >= high``."""
    weak = ((obj != 0) & (contact >= threshold)).view(np.uint8)
    if high <= threshold or not weak.any():
        return weak.astype(bool)
    n, lab = cv2.connectedComponents(weak, connectivity=8, ltype=cv2.CV_32S)
    strong = np.zeros(n, bool)
    strong[np.unique(lab[(weak != 0) & (contact >= high)])] = True
    strong[0] = False
    return strong[lab]


def contact_markers(obj: np.ndarray, contact: np.ndarray, *, threshold: float,
                    high: float | None = None) -> tuple[np.ndarray, int]:
    """Watershed markers of one object crop: int32 labels 1..n (0 elsewhere) and n.

    Parameters
    ----------
    obj : ndarray of uint8 (H, W)
        1 inside the object, 0 outside.
    contact : ndarray of float (H, W)
        Contact probability on the same pixels.
    threshold : float
        Pixels with ``contact >= threshold`` may separate markers ...
    high : float, optional
        ... when their band reaches ``contact >= high`` (:func:`contact_band`); None or
        ``<= threshold``: every such pixel separates.
    """
    band = contact_band(obj, contact, threshold=threshold,
                        high=threshold if high is None else high)
    return band_markers(obj, band)


def band_markers(obj: np.ndarray, band: np.ndarray) -> tuple[np.ndarray, int]:
    """Markers of one object crop outside its contact ``band`` (bool, same shape): the
    4-connected components of the rest, eroded by one pixel, the small ones dropped."""
    core = ((obj != 0) & ~band).view(np.uint8)
    core = cv2.erode(core, _K3, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=4,
                                                        ltype=cv2.CV_32S)
    if n <= 1:
        return np.zeros(obj.shape, np.int32), 0
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = areas >= max(MIN_MARKER_PX, MIN_MARKER_REL * float(areas.max()))
    remap = np.zeros(n, np.int32)
    remap[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return remap[lab], int(keep.sum())


def split_object_contact(obj: np.ndarray, contact: np.ndarray, *, threshold: float = 0.5,
                         high: float | None = None) -> tuple[np.ndarray, int]:
    """Split one padded object crop into crystals at the predicted contacts.

    Same input and output as :func:`edge.measure.split.split_object` (``obj``: uint8 0/1
    with 2 px of background padding; returns int32 labels 0 outside, 1..n inside, and n),
    plus ``contact``, the contact probability on the crop's pixels, and the two
    thresholds of :func:`contact_markers`.
    """
    if contact.shape != obj.shape:
        raise ValueError(f"contact crop {contact.shape} and object crop {obj.shape} differ")
    band = contact_band(obj, contact, threshold=threshold,
                        high=threshold if high is None else high)
    return split_at_band(obj, band)


def split_at_band(obj: np.ndarray, band: np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`split_object_contact` from the object's contact band (:func:`contact_band`)."""
    inside = obj.astype(bool)
    markers, n = band_markers(obj, band)
    if n <= 1:
        return inside.astype(np.int32), 1
    raw = cv2.distanceTransform(obj, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float64)
    dist = np.sqrt(np.rint(raw * raw)).astype(np.float32)
    dmax = max(float(dist.max()), 1.0)
    q = np.full(obj.shape, 255, np.uint8)
    q[inside] = np.clip(np.rint(254.0 * (1.0 - dist[inside] / dmax)), 0, 254).astype(np.uint8)
    cv2.watershed(_checker(q), markers)
    out = np.where(inside & (markers > 0), markers, 0).astype(np.int32)
    _share_lines(out, inside)
    return out, n


def contact_crop(contact: np.ndarray, x0: int, y0: int, shape: tuple[int, int]
                 ) -> np.ndarray:
    """The part of a frame's contact map under an object crop at frame ``(x0, y0)``.

    Crops of :func:`edge.measure.split.iter_objects` reach 2 px beyond the frame; those
    pixels are background in the object crop, and get probability 1 here.
    """
    h, w = shape
    out = np.ones((h, w), np.float32)
    H, W = contact.shape
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + h, H), min(x0 + w, W)
    if ye > ys and xe > xs:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = contact[ys:ye, xs:xe]
    return out
