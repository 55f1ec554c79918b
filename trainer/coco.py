"""COCO instance annotations <-> the dataset's label images (the labelling round trip).

A plant corrects pre-labels in a common labelling tool (CVAT, Label Studio) and trains on
the result. Both tools read and write COCO: polygons (``segmentation: [[x0, y0, ...]]``)
and run-length encoded masks (``segmentation: {"size": [h, w], "counts": ...}``, counts
either a list or COCO's compressed string). This module converts:

* :func:`labels_to_coco`: label images (the dataset's ``labels/`` or ``crystal-edge
  analyze --masks-out`` pre-labels) -> one annotation per crystal (8-connected component of
  the crystal class) and one per black-background region (the field stop);
* :func:`coco_to_label`: the annotations of one image -> a label image: light background
  everywhere, then the black-background regions, then the crystals on top.

Category names are the dataset's class names (``crystal``, ``black_background``); the light
background is what is not annotated. Polygons lose holes and sub-pixel detail; RLE is
exact (``--rle``): a round trip through RLE gives back the same label image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import cv2
import numpy as np

from edge.errors import UserError

CRYSTAL, BLACK = "crystal", "black_background"
#: COCO categories written (ids start at 1 in COCO).
CATEGORIES = ({"id": 1, "name": CRYSTAL, "supercategory": "object"},
              {"id": 2, "name": BLACK, "supercategory": "background"})


# ----------------------------------------------------------------------------- RLE
def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a boolean mask (column-major runs, the first run zeros)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {m.shape}")
    flat = m.ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat.size and flat[0]:
        runs = np.concatenate([[0], runs])
    return {"size": [int(m.shape[0]), int(m.shape[1])],
            "counts": _counts_to_string([int(c) for c in runs])}


def _counts_to_string(counts: list[int]) -> str:
    # COCO's maskApi rleToString: LEB128-like, 5 bits per char, deltas from i >= 3
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def _string_to_counts(s: str) -> list[int]:
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_decode(rle: Mapping[str, Any]) -> np.ndarray:
    """Boolean mask of a COCO RLE (compressed string or uncompressed list counts)."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (bytes, str)):
        counts = _string_to_counts(counts.decode() if isinstance(counts, bytes) else counts)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != h * w or np.any(counts < 0):
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h}x{w} = {h * w}")
    values = np.arange(counts.size) % 2
    flat = np.repeat(values.astype(bool), counts)
    return flat.reshape((h, w), order="F")


# ----------------------------------------------------------------------------- masks
def polygons_of(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a mask as COCO polygons (pixel-centre coordinates + 0.5)."""
    contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        pts = c.reshape(-1, 2).astype(np.float64) + 0.5
        if len(pts) < 3:  # a one- or two-pixel object: its bounding square
            x0, y0 = pts.min(axis=0) - 0.5
            x1, y1 = pts.max(axis=0) + 0.5
            pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        polys.append([round(float(v), 2) for v in pts.ravel()])
    return polys


def fill_segmentation(segmentation: Any, hw: tuple[int, int]) -> np.ndarray:
    """Boolean mask of one annotation's ``segmentation`` (polygons or RLE)."""
    if isinstance(segmentation, Mapping):
        mask = rle_decode(segmentation)
        if mask.shape != tuple(hw):
            raise ValueError(f"RLE size {list(mask.shape)} differs from the image's {list(hw)}")
        return mask
    canvas = np.zeros(hw, np.uint8)
    polys = [np.round(np.asarray(p, np.float64).reshape(-1, 2) - 0.5).astype(np.int32)
             for p in segmentation if len(p) >= 6]
    if polys:
        cv2.fillPoly(canvas, polys, 1)
    return canvas.astype(bool)


def annotations_of_label(label: np.ndarray, *, crystal_id: int, black_id: int | None,
                         rle: bool = False) -> list[tuple[str, dict[str, Any], int, list[float]]]:
    """``(category, segmentation, area, bbox)`` per crystal and black-background region."""
    out = []
    for name, cid in ((BLACK, black_id), (CRYSTAL, crystal_id)):
        if cid is None:
            continue
        n, comp, stats, _ = cv2.connectedComponentsWithStats(
            (label == cid).astype(np.uint8), connectivity=8)
        for k in range(1, n):
            mask = comp == k
            x, y, w, h, area = (int(v) for v in stats[k])
            seg = rle_encode(mask) if rle else polygons_of(mask)
            out.append((name, seg, area, [x, y, w, h]))
    return out


def labels_to_coco(items: Iterable[tuple[str, np.ndarray]], *, crystal_id: int,
                   black_id: int | None, rle: bool = False) -> dict[str, Any]:
    """A COCO document of ``(image file name, label image)`` pairs."""
    cat = {c["name"]: c["id"] for c in CATEGORIES}
    images, anns = [], []
    for image_id, (file_name, label) in enumerate(items, start=1):
        h, w = label.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "width": int(w), "height": int(h)})
        for name, seg, area, bbox in annotations_of_label(label, crystal_id=crystal_id,
                                                          black_id=black_id, rle=rle):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat[name],
                         "segmentation": seg, "area": area, "bbox": bbox,
                         "iscrowd": 1 if rle else 0})
    return {"info": {"description": "crystal-psd labels"}, "images": images,
            "annotations": anns, "categories": list(CATEGORIES)}


def coco_to_label(image: Mapping[str, Any], annotations: Iterable[Mapping[str, Any]],
                  categories: Mapping[int, str], *, ids: Mapping[str, int],
                  where: str = "") -> np.ndarray:
    """The label image of one COCO image: light background, black regions, crystals.

    ``ids`` maps ``crystal``, ``black_background`` and ``light_background`` to the values
    stored in the dataset's label images.
    """
    hw = (int(image["height"]), int(image["width"]))
    label = np.full(hw, ids["light_background"], np.uint8)
    anns = list(annotations)
    for name in (BLACK, CRYSTAL):
        for ann in anns:
            cat = categories.get(int(ann["category_id"]))
            if cat != name:
                continue
            try:
                label[fill_segmentation(ann["segmentation"], hw)] = ids[name]
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(f"{where}annotation {ann.get('id')}: {exc}") from None
    return label
