"""The study's crop types (Table 1) as functions returning ``(image, label)`` crops.

"whole image" is the central section cut out so that the illuminated circle determines
the image border; "central quarter" and "cornered quarter" are quarters of it (the
cornered one holds dark background and the field edge); "central only lens square" is a
square inside the illuminated circle without any dark background.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

CROP_KINDS = ("whole", "central_quarter", "cornered_quarter", "lens_square")


# ----------------------------------------------------------------------------- crops
def _check_pair(image: np.ndarray, label: np.ndarray) -> None:
    if image.ndim not in (2, 3) or label.ndim != 2 or image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape} and label {label.shape} must share (H, W)")


def field_box(label: np.ndarray, dark_class: int | None) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: bounding box of everything that is not ``dark_class``.

    This is the study's "whole image" ("central section cut out"): the crop in which the
    illuminated circle determines the image border. Whole frame when there is no dark class.
    """
    h, w = label.shape
    if dark_class is None:
        return 0, h, 0, w
    light = label != dark_class
    ys, xs = np.nonzero(light.any(axis=1))[0], np.nonzero(light.any(axis=0))[0]
    if ys.size == 0:
        return 0, h, 0, w
    return int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1


def crop_whole(image: np.ndarray, label: np.ndarray, *, dark_class: int | None = 0):
    """The illuminated field's bounding box (study: "whole image", central section cut out)."""
    _check_pair(image, label)
    y0, y1, x0, x1 = field_box(label, dark_class)
    return image[y0:y1, x0:x1], label[y0:y1, x0:x1]


def crop_central_quarter(image: np.ndarray, label: np.ndarray, *, dark_class: int | None = 0):
    """Central half-width x half-height of the field box (a quarter of its area)."""
    img, lab = crop_whole(image, label, dark_class=dark_class)
    h, w = lab.shape
    y0, x0 = h // 4, w // 4
    return img[y0:y0 + h // 2, x0:x0 + w // 2], lab[y0:y0 + h // 2, x0:x0 + w // 2]


def crop_cornered_quarter(image: np.ndarray, label: np.ndarray, *, corner: int = 0,
                          dark_class: int | None = 0):
    """One quadrant of the field box: ``corner`` 0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right (holds a corner of black background and the field edge)."""
    if corner not in (0, 1, 2, 3):
        raise ValueError(f"corner must be 0..3, got {corner}")
    img, lab = crop_whole(image, label, dark_class=dark_class)
    h, w = lab.shape
    hh, hw = h // 2, w // 2
    y0 = 0 if corner in (0, 1) else h - hh
    x0 = 0 if corner in (0, 2) else w - hw
    return img[y0:y0 + hh, x0:x0 + hw], lab[y0:y0 + hh, x0:x0 + hw]


def crop_lens_square(image: np.ndarray, label: np.ndarray, *, dark_class: int | None = 0):
    """The largest axis-aligned square inside the illuminated field, without any dark
    background (study: "central only lens square"). Found with a chessboard distance
    transform of the field (frame edges count as outside)."""
    _check_pair(image, label)
    if dark_class is None:
        light = np.ones(label.shape, np.uint8)
    else:
        light = (label != dark_class).astype(np.uint8)
    padded = cv2.copyMakeBorder(light, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_C, 3)[1:-1, 1:-1]
    d = float(dist.max())
    if d < 1:
        raise ValueError("no illuminated field in the label (all pixels are dark background)")
    # among the maxima take the one closest to the field's centroid (stable, central)
    ys, xs = np.nonzero(dist >= d)
    cy, cx = np.nonzero(light)
    my, mx = cy.mean(), cx.mean()
    j = int(np.argmin((ys - my) ** 2 + (xs - mx) ** 2))
    half = int(d) - 1  # the square [c-half, c+half] holds only light pixels
    y, x = int(ys[j]), int(xs[j])
    sl = (slice(y - half, y + half + 1), slice(x - half, x + half + 1))
    return image[sl], label[sl]


def make_crops(image: np.ndarray, label: np.ndarray, kinds: Iterable[str] = CROP_KINDS, *,
               dark_class: int | None = 0, corner: int | None = None,
               rng: np.random.Generator | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The study's crop types as ``(kind, image, label)``; ``cornered_quarter`` uses
    ``corner`` or, when None, a corner drawn from ``rng`` (default: all four)."""
    out: list[tuple[str, np.ndarray, np.ndarray]] = []
    for kind in kinds:
        if kind == "whole":
            out.append((kind, *crop_whole(image, label, dark_class=dark_class)))
        elif kind == "central_quarter":
            out.append((kind, *crop_central_quarter(image, label, dark_class=dark_class)))
        elif kind == "cornered_quarter":
            if corner is not None:
                corners = [corner]
            elif rng is not None:
                corners = [int(rng.integers(4))]
            else:
                corners = [0, 1, 2, 3]
            for c in corners:
                out.append((kind, *crop_cornered_quarter(image, label, corner=c,
                                                         dark_class=dark_class)))
        elif kind == "lens_square":
            out.append((kind, *crop_lens_square(image, label, dark_class=dark_class)))
        else:
            raise ValueError(f"unknown crop kind {kind!r}; choose from {CROP_KINDS}")
    return out


def lens_square_side(label: np.ndarray, dark_class: int | None = 0) -> int:
    """Side (px) of :func:`crop_lens_square` for this label (for planning crop sizes)."""
    dummy = np.zeros(label.shape, np.uint8)
    return crop_lens_square(dummy, label, dark_class=dark_class)[1].shape[0]
