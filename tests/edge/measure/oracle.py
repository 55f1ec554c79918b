"""Slow reference of the measurement pipeline in scikit-image / SciPy (tests and bench).

Same steps and definitions as ``edge.measure`` but built from independent library code:
``skimage.measure.label``, ``skimage.morphology.disk``, ``scipy.ndimage`` closing,
``scipy.ndimage.binary_fill_holes`` / ``distance_transform_edt``,
``skimage.morphology.reconstruction`` (extended h-maxima),
``skimage.segmentation.watershed`` (a true flood by intensity) and
``skimage.measure.regionprops``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import measure, morphology, segmentation


@dataclass
class OracleCrystal:
    area_px: int
    diameter_um: float
    centroid: tuple[float, float]  # x, y
    bbox: tuple[int, int, int, int]  # x, y, w, h
    touches_border: bool


def oracle_measure(mask: np.ndarray, *, px_size_um: float, roi: np.ndarray | None = None,
                   min_area_px: int = 20, closing_radius_px: int = 2, h_px: float = 1.0,
                   h_rel: float = 0.08) -> tuple[list[OracleCrystal], int]:
    """Crystals of a mask (all of them, before the shape filter) and the small-object count."""
    m = np.asarray(mask) != 0
    valid = np.ones(m.shape, bool) if roi is None else np.asarray(roi) != 0
    m &= valid
    lab = measure.label(m, connectivity=2)
    sizes = np.bincount(lab.ravel())
    small = sizes < min_area_px
    small[0] = False
    n_small = int(small.sum())
    m = m & ~small[lab]
    r = closing_radius_px
    if r > 0:
        padded = np.pad(m, r, mode="edge")
        closed = ndi.binary_erosion(ndi.binary_dilation(padded, morphology.disk(r)),
                                    morphology.disk(r), border_value=1)
        m = closed[r:-r, r:-r]
    m &= valid
    m = ndi.binary_fill_holes(m)
    m &= valid
    zone = valid & ~ndi.binary_erosion(valid, np.ones((3, 3), bool), border_value=0)

    labels = np.zeros(m.shape, np.int32)
    nxt = 0
    objs = measure.label(m, connectivity=2)
    for i, sl in enumerate(ndi.find_objects(objs), start=1):
        if sl is None:
            continue
        obj = np.pad(objs[sl] == i, 1)
        dist = ndi.distance_transform_edt(obj)
        h = max(h_px, h_rel * float(dist.max()))
        # extended maxima: regional maxima of the h-maxima transform. (h_maxima() returns
        # only the peak pixels, so two equal peaks joined by a shallow saddle would give
        # two markers.)
        rec = morphology.reconstruction(dist - h, dist, method="dilation")
        peaks = morphology.local_maxima(rec, connectivity=2) & obj
        markers = measure.label(peaks, connectivity=2)
        ws = segmentation.watershed(-dist, markers, mask=obj)[1:-1, 1:-1]
        ys, xs = np.nonzero(ws)
        labels[ys + sl[0].start, xs + sl[1].start] = ws[ys, xs] + nxt
        nxt += int(ws.max())

    out = []
    for p in measure.regionprops(labels):
        y0, x0, y1, x1 = p.bbox
        region = labels[y0:y1, x0:x1] == p.label
        touches = bool(np.any(region & zone[y0:y1, x0:x1]))
        out.append(OracleCrystal(
            area_px=int(p.area),
            diameter_um=2.0 * math.sqrt(p.area / math.pi) * px_size_um,
            centroid=(float(p.centroid[1]), float(p.centroid[0])),
            bbox=(int(x0), int(y0), int(x1 - x0), int(y1 - y0)),
            touches_border=touches,
        ))
    return out, n_small
