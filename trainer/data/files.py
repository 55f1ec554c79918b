"""Reading one file of a labelled dataset: a camera frame, a label, a contact label.

Every file is decoded unchanged by :mod:`edge.vision.decode`, the appliance's decoder,
and then converted: frames to RGB uint8, labels to contiguous class ids (see
:mod:`trainer.data` for how ``classes.json`` stores them), contact labels to 0/1.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.errors import UserError
from trainer.data.classes import CLASSES_FILE, ClassSpec

_UNKNOWN = 255


def read_image(path: str | Path) -> np.ndarray:
    """Read a camera frame as RGB uint8 ``(H, W, 3)``; :class:`UserError` if unreadable.

    Grey is replicated to RGB, alpha dropped; 16-bit frames are scaled by the bit depth
    their data shows (10/12/14/16 bits), exactly as the edge runtime does
    (:func:`edge.vision.preprocess.to_rgb_float`), so training sees what inference sees. The file
    is decoded by :mod:`edge.vision.decode`, the appliance's decoder, with its default limits.
    """
    from edge.vision.preprocess import to_rgb_float

    img = _decode(path, "image")

    if img.dtype == np.uint8:
        if img.ndim == 2 or img.shape[2] == 1:
            return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2RGB)
        if img.shape[2] == 4:
            return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        if img.shape[2] == 3:
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    try:
        unit = to_rgb_float(img)
    except ValueError as exc:
        raise UserError(f"{path}: unsupported image: {exc}") from None
    return np.round(unit * 255.0).astype(np.uint8)


def decode_label(raw: np.ndarray, classes: tuple[ClassSpec, ...], *,
                 path: str | Path = "label") -> np.ndarray:
    """Map an on-disk label array to contiguous class ids ``uint8 (H, W)``.

    ``raw`` is single channel (class values) or RGB ``(H, W, 3)`` (needs colours in
    ``classes``; an RGB image whose three channels are equal is read as values).

    Raises
    ------
    UserError
        When a pixel value (or colour) is not one of the classes; the message quotes
        the first few unknown values and how many pixels have them.
    """
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[:, :, 0]
    if raw.ndim == 3:
        if raw.shape[2] not in (3, 4):
            raise UserError(f"{path}: label has shape {raw.shape}; expected (H, W) or (H, W, 3)")
        rgb = raw[:, :, :3]
        has_colours = all(c.color is not None for c in classes)
        grey_like = (np.array_equal(rgb[:, :, 0], rgb[:, :, 1])
                     and np.array_equal(rgb[:, :, 0], rgb[:, :, 2]))
        if not has_colours and not grey_like:
            raise UserError(f"{path}: colour label image but {CLASSES_FILE} has no 'palette'")
        if not has_colours or (grey_like and not _palette_has_grey(classes)):
            raw = rgb[:, :, 0]
        else:
            code = (rgb[:, :, 0].astype(np.int32) << 16) | (rgb[:, :, 1].astype(np.int32) << 8) \
                | rgb[:, :, 2].astype(np.int32)
            out = np.full(code.shape, _UNKNOWN, np.uint8)
            for c in classes:
                r, g, b = c.color  # type: ignore[misc]
                out[code == ((r << 16) | (g << 8) | b)] = c.index
            bad = out == _UNKNOWN
            if bad.any():
                vals, counts = np.unique(code[bad], return_counts=True)
                shown = ", ".join(f"[{v >> 16}, {(v >> 8) & 255}, {v & 255}] ({n} px)"
                                  for v, n in zip(vals[:3], counts[:3], strict=False))
                raise UserError(f"{path}: label colours not in the palette: {shown}"
                                + (f" and {len(vals) - 3} more" if len(vals) > 3 else ""))
            return out
    if raw.ndim != 2:
        raise UserError(f"{path}: label has shape {raw.shape}; expected (H, W) or (H, W, 3)")
    if raw.dtype == np.uint8:
        lut = np.full(256, _UNKNOWN, np.uint8)
        for c in classes:
            if c.value < 256:
                lut[c.value] = c.index
        out = lut[raw]
    else:
        raw = raw.astype(np.int64)
        out = np.full(raw.shape, _UNKNOWN, np.uint8)
        for c in classes:
            out[raw == c.value] = c.index
    bad = out == _UNKNOWN
    if bad.any():
        vals, counts = np.unique(raw[bad], return_counts=True)
        shown = ", ".join(f"{int(v)} ({n} px)" for v, n in zip(vals[:5], counts[:5], strict=False))
        known = [c.value for c in classes]
        raise UserError(f"{path}: label values not in {CLASSES_FILE} ids {known}: {shown}"
                        + (f" and {len(vals) - 5} more" if len(vals) > 5 else ""))
    return out


def _palette_has_grey(classes: tuple[ClassSpec, ...]) -> bool:
    """True when the palette itself contains grey colours (then equal channels are colours)."""
    return any(c.color is not None and c.color[0] == c.color[1] == c.color[2] for c in classes)


def _decode(path: str | Path, what: str) -> np.ndarray:
    """The file decoded unchanged by :mod:`edge.vision.decode`; UserError naming it."""
    from edge.vision.decode import DecodeError, decode_file

    try:
        return decode_file(path).image
    except DecodeError as exc:
        raise UserError(f"{path}: unreadable {what}: {exc.reason}") from None


def read_label(path: str | Path, classes: tuple[ClassSpec, ...]) -> np.ndarray:
    """Read a label file and map it to contiguous class ids (uint8 ``(H, W)``)."""
    raw = _decode(path, "label")
    if raw.ndim == 3 and raw.shape[2] >= 3:
        raw = cv2.cvtColor(raw[:, :, :3], cv2.COLOR_BGR2RGB)
    return decode_label(raw, classes, path=path)


def read_contact(path: str | Path) -> np.ndarray:
    """Read a contact label as uint8 0/1 ``(H, W)`` (1 where a crystal touches another).

    Raises :class:`UserError` naming the file when it cannot be read or is not
    single-channel.
    """
    raw = _decode(path, "contact label")
    if raw.ndim != 2:
        raise UserError(f"{path}: a contact label must be single-channel 0/1")
    return (raw != 0).astype(np.uint8)
