"""Separation of touching crystals: marker-controlled watershed on the distance map.

Per connected object (on a small bounding-box crop):

1. Euclidean distance map ``D`` (exact, ``cv2.DIST_MASK_PRECISE``; the crop edge counts
   as background, so a crystal cut by the frame edge is treated like a cut shape).
2. Candidate markers: the regional maxima (plateaus) of ``D``. One plateau -> one crystal
   (fast path, the common case). Also one crystal, exactly, when all maxima lie in one
   connected part of ``{D > max(D) - h}`` (``h`` below): digitisation noise on a single
   crystal's ridge.
3. Flooding from all candidate markers in order of *intensity* (descending ``D``), i.e.
   a watershed by immersion. ``cv2.watershed`` orders its flood by the colour
   *difference* between neighbouring pixels, not by intensity, so the raw (or inverted)
   distance map gives it the wrong order. We feed it a checkerboard image: the inverted,
   8-bit quantised distance ``q`` sits in channel 0 on even pixels and in channel 1 on odd
   pixels (zeros in the other channel). ``cv2.watershed`` uses 4-neighbours, which always
   have opposite parity, so the difference it computes between pixels ``p`` and ``q`` is
   ``max(q(p), q(q))``: exactly the priority of a flood by intensity. Background is 255,
   so it is entered last.
4. Marker suppression by dynamics (equivalent to extended h-maxima): basins are merged in
   order of decreasing saddle height; a maximum whose peak rises less than
   ``h = max(h_px, h_rel * max(D))`` above its saddle joins its higher neighbour. When
   maxima were suppressed, the flood is repeated from the surviving ones only (otherwise a
   suppressed maximum near a neck hands its whole basin to one side).
5. Watershed-line pixels go to a neighbouring crystal, alternating on a checkerboard so
   that a line is shared (no area is lost, no side is favoured).
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

#: Background margin (px) around each object crop (cv2.watershed needs >= 1).
PAD = 2
_K3 = np.ones((3, 3), np.uint8)
_NB8 = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _find(parent: list[int], a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def _checker(q: np.ndarray) -> np.ndarray:
    """3-channel image whose 4-neighbour channel difference is max(q(p), q(n))."""
    h, w = q.shape
    even = ((np.arange(h)[:, None] + np.arange(w)[None, :]) & 1) == 0
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.where(even, q, 0)
    img[..., 1] = np.where(even, 0, q)
    return img


def split_object(obj: np.ndarray, *, h_px: float = 1.0, h_rel: float = 0.08
                 ) -> tuple[np.ndarray, int]:
    """Split one object (a padded crop) into crystals.

    Parameters
    ----------
    obj : ndarray of uint8, shape (H, W)
        1 inside the object, 0 outside; the outermost 2 px must be 0 (padding).
    h_px, h_rel : float
        Marker suppression, see :class:`edge.measure.MeasureConfig`.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 outside the object, 1..n inside.
    n : int
        Number of crystals.
    """
    # the precise transform is sqrt(integer), but OpenCV's SIMD and scalar paths (chosen by
    # the buffer's alignment) differ by 1 ulp; squared and rounded, equal distances stay
    # equal, so the same crop always gives the same maxima and the same split
    raw = cv2.distanceTransform(obj, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float64)
    dist = np.sqrt(np.rint(raw * raw)).astype(np.float32)
    inside = obj.astype(bool)
    # regional maxima: pixels with no higher 8-neighbour; their plateaus are the maxima
    peak = (dist >= cv2.dilate(dist, _K3)) & inside
    if np.count_nonzero(peak) <= 1:
        return inside.astype(np.int32), 1
    dmax = float(dist.max())
    h = max(float(h_px), float(h_rel) * dmax)
    # shortcut (exact): if all maxima hang together above dmax - h, every one of them has
    # a saddle above its own peak - h, so all merge into one crystal
    _nt, top_lab = cv2.connectedComponents((dist > dmax - h).view(np.uint8), connectivity=8,
                                           ltype=cv2.CV_32S)
    at_peaks = top_lab[peak]
    if at_peaks.min() > 0 and at_peaks.min() == at_peaks.max():
        return inside.astype(np.int32), 1
    n_max, plateaus = cv2.connectedComponents(peak.view(np.uint8), connectivity=8,
                                              ltype=cv2.CV_32S)
    n_max -= 1
    peaks = np.zeros(n_max + 1, np.float64)
    peaks[plateaus[peak]] = dist[peak]  # a plateau has one value

    q = np.full(obj.shape, 255, np.uint8)
    q[inside] = np.clip(np.rint(254.0 * (1.0 - dist[inside] / dmax)), 0, 254).astype(np.uint8)
    markers = plateaus.copy()
    cv2.watershed(_checker(q), markers)

    lab = np.where(inside, markers, 0)
    roots = _merge_by_dynamics(*_saddles(lab, dist), peaks=peaks, h=h)
    uniq = np.unique(roots[1:])
    if uniq.size == 1:
        return inside.astype(np.int32), 1
    remap = np.zeros(n_max + 1, np.int32)
    remap[uniq] = np.arange(1, uniq.size + 1, dtype=np.int32)
    final = remap[roots]
    if uniq.size < n_max:
        # re-flood from the surviving maxima only: a suppressed maximum near a neck must
        # not carry its whole basin over to one side
        keep = np.zeros(n_max + 1, bool)
        keep[uniq] = True
        markers = np.where(keep[plateaus], final[plateaus], 0).astype(np.int32)
        cv2.watershed(_checker(q), markers)
        lab = np.where(inside, markers, 0)
        out = np.where(lab > 0, lab, 0).astype(np.int32)
    else:
        out = np.where(lab > 0, final[np.clip(lab, 0, None)], 0).astype(np.int32)
    _share_lines(out, inside)
    return out, int(uniq.size)


def _saddles(lab: np.ndarray, dist: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Basin pairs ``(a < b)`` in contact and the saddle height of each contact.

    Contacts are found across watershed-line pixels (``lab == -1``) and between direct
    8-neighbours (an 8-connected object may hang together by a diagonal step only).
    """
    ys, xs = np.nonzero(lab == -1)
    pairs_a: list[np.ndarray] = []
    pairs_b: list[np.ndarray] = []
    pairs_s: list[np.ndarray] = []
    if ys.size:
        # smallest and largest basin label around each line pixel (where three basins
        # meet, the third pair is found at a neighbouring line pixel)
        nb = np.stack([lab[ys + dy, xs + dx] for dy, dx in _NB8])
        hi = nb.max(axis=0)
        lo = np.where(nb > 0, nb, np.iinfo(np.int32).max).min(axis=0)
        ok = (hi > 0) & (lo < hi)
        pairs_a.append(lo[ok])
        pairs_b.append(hi[ok])
        pairs_s.append(dist[ys[ok], xs[ok]].astype(np.float64))
    for a, b, da, db in ((lab[:, :-1], lab[:, 1:], dist[:, :-1], dist[:, 1:]),
                         (lab[:-1, :], lab[1:, :], dist[:-1, :], dist[1:, :]),
                         (lab[:-1, :-1], lab[1:, 1:], dist[:-1, :-1], dist[1:, 1:]),
                         (lab[:-1, 1:], lab[1:, :-1], dist[:-1, 1:], dist[1:, :-1])):
        ok = (a > 0) & (b > 0) & (a != b)
        pairs_a.append(np.minimum(a[ok], b[ok]))
        pairs_b.append(np.maximum(a[ok], b[ok]))
        pairs_s.append(np.minimum(da[ok], db[ok]).astype(np.float64))
    return np.concatenate(pairs_a), np.concatenate(pairs_b), np.concatenate(pairs_s)


def _merge_by_dynamics(pa: np.ndarray, pb: np.ndarray, ps: np.ndarray, *,
                       peaks: np.ndarray, h: float) -> np.ndarray:
    """Root basin of every basin after suppressing maxima of dynamics below ``h``.

    Basin pairs are merged in order of decreasing (highest) saddle ``s``; the lower of two
    roots with ``min(peak_a, peak_b) - s < h`` joins the higher one.
    """
    n_max = peaks.size - 1
    parent = list(range(n_max + 1))
    top = peaks.tolist()
    if pa.size:
        key = pa.astype(np.int64) * (n_max + 1) + pb
        order = np.lexsort((-ps, key))
        key, ps_sorted = key[order], ps[order]
        first = np.ones(key.size, bool)
        first[1:] = key[1:] != key[:-1]
        ekey, esad = key[first], ps_sorted[first]  # highest saddle per basin pair
        for k in np.argsort(-esad, kind="stable"):
            ra = _find(parent, int(ekey[k] // (n_max + 1)))
            rb = _find(parent, int(ekey[k] % (n_max + 1)))
            if ra == rb:
                continue
            if min(top[ra], top[rb]) - float(esad[k]) < h:
                if top[ra] < top[rb]:
                    ra, rb = rb, ra
                parent[rb] = ra
    return np.array([_find(parent, i) for i in range(n_max + 1)], np.int64)


def _share_lines(out: np.ndarray, inside: np.ndarray) -> None:
    """Give watershed-line (and unflooded) object pixels of ``out`` to a neighbour, in place.

    Alternates between the larger and the smaller neighbouring label on a checkerboard, so
    that a line between two crystals is shared between them, not given to one.
    """
    todo = inside & (out == 0)
    even = ((np.arange(out.shape[0])[:, None] + np.arange(out.shape[1])[None, :]) & 1) == 0
    guard = 0
    while todo.any() and guard < 64:
        lab_f = out.astype(np.float32)
        hi = cv2.dilate(lab_f, _K3)
        lo = cv2.erode(np.where(out > 0, lab_f, np.float32(1e9)), _K3)
        grown = np.where(even, hi, np.where(lo < 1e9, lo, 0))
        fill = todo & (grown > 0)
        out[fill] = grown[fill].astype(np.int32)
        todo &= ~fill
        guard += 1


def iter_objects(mask: np.ndarray, *, connectivity: int = 8
                 ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(x0, y0, crop)`` per connected object of a 0/1 uint8 mask.

    ``crop`` is a uint8 0/1 crop of this object only, padded by 2 px of background; its
    pixel ``(r, c)`` is frame pixel ``(y0 + r, x0 + c)``.
    """
    boxes: dict[int, list[int]] = {}
    if connectivity == 8:
        # connectedComponentsWithStats is ~7x slower than labels + outer contours here;
        # every 8-connected object has exactly one outer outline (RETR_CCOMP: objects
        # inside another's hole are top-level outlines too)
        _n, lab = cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)
        found = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        contours, hierarchy = found[-2], found[-1]
        if hierarchy is None:
            return
        for k, c in enumerate(contours):
            if hierarchy[0, k, 3] != -1:  # a hole's boundary
                continue
            x, y, w, h = cv2.boundingRect(c)
            boxes[int(lab[c[0, 0, 1], c[0, 0, 0]])] = [x, y, x + w, y + h]
    else:  # one outline may hold several 4-connected objects
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=connectivity,
                                                            ltype=cv2.CV_32S)
        for i in range(1, n):
            x, y, w, h = (int(v) for v in stats[i, :4])
            boxes[i] = [x, y, x + w, y + h]
    for i in sorted(boxes):
        x, y, x1, y1 = boxes[i]
        w, h = x1 - x, y1 - y
        crop = np.zeros((h + 2 * PAD, w + 2 * PAD), np.uint8)
        crop[PAD:PAD + h, PAD:PAD + w] = lab[y:y + h, x:x + w] == i
        yield x - PAD, y - PAD, crop


def split_touching(mask: np.ndarray, *, h_px: float = 1.0, h_rel: float = 0.08,
                   connectivity: int = 8) -> np.ndarray:
    """Label image of crystals, touching crystals separated.

    Parameters
    ----------
    mask : ndarray, shape (H, W)
        Non-zero = crystal (a cleaned mask, see :func:`edge.measure.clean_mask`).
    h_px, h_rel : float
        Marker suppression: a distance-map maximum becomes its own crystal only if it
        rises at least ``max(h_px, h_rel * peak)`` px above the saddle to a higher one;
        ``peak`` is the object's largest inscribed radius.
    connectivity : int
        4 or 8: which pixels form one object.

    Returns
    -------
    ndarray of int32, shape (H, W)
        0 = background, 1..n = crystals.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    m = (m != 0).astype(np.uint8)
    H, W = m.shape
    out = np.zeros((H, W), np.int32)
    nxt = 0
    for x0, y0, crop in iter_objects(m, connectivity=connectivity):
        lab, n = split_object(crop, h_px=h_px, h_rel=h_rel)
        inner = lab[PAD:-PAD, PAD:-PAD]
        ys, xs = np.nonzero(inner)
        out[ys + y0 + PAD, xs + x0 + PAD] = inner[ys, xs] + nxt
        nxt += n
    return out
