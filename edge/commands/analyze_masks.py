"""Masks mode of ``crystal-edge analyze`` (not a command by itself; see ``analyze.py``).

``crystal-edge analyze --masks PATH...`` measures crystal masks made by any segmenter
(non-zero = crystal, or a class map with ``--crystal-class``): one
:class:`edge.vision.result.FrameResult` per input, measured or skipped with its reason
(``unreadable``, ``bad_mask``), handed to the report shared with the image mode.

Mask files, decided explicitly:

* 8-bit single channel: binary (0 / any one non-zero value) or, with ``--crystal-class``,
  a class map;
* 16-bit single channel: accepted as binary, or as a class map when all values are <= 255;
* RGB/RGBA: accepted when the colour channels are identical (alpha ignored), otherwise
  skipped (a colour picture is not a mask);
* JPEG: binary masks thresholded at 128 (lossy compression leaves small non-zero values
  along edges); JPEG class maps are refused (values are not exact);
* float or other pixel types, images smaller than 8 px, undecodable, empty or truncated
  files, files over ``--max-file-mb`` or declaring more than ``--max-frame-pixels``:
  skipped with the reason.

Every file is read by :mod:`edge.vision.decode`, the decoder of the service, with the
same limits (defaults of ``[decode]``).

A binary mask with several different non-zero values (a class map given without
``--crystal-class``) is skipped with a hint, instead of silently merging classes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.commands.analyze_inputs import decode_image, error_text, expand_inputs, warn_skipped
from edge.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from edge.vision.result import FrameResult


def read_mask(path: str | Path, *, crystal_class: int | None = None,
              decode_config: Any = None) -> np.ndarray:
    """Crystal mask (bool, H x W) from a mask or class-map file; see the module doc.

    Raises
    ------
    UserError
        Naming the file and what is wrong with it.
    """
    return mask_from_image(path, decode_image(path, decode_config), crystal_class=crystal_class)


def mask_from_image(path: str | Path, img: np.ndarray, *,
                    crystal_class: int | None = None) -> np.ndarray:
    """Crystal mask (bool, H x W) from the decoded mask or class-map file ``path``."""
    import numpy as np

    from edge.vision.decode import MIN_SIDE_PX

    path = Path(path)
    if img.ndim == 3:
        colour = img[..., :3] if img.shape[2] >= 3 else img[..., :1]
        if colour.shape[2] > 1 and not (np.array_equal(colour[..., 0], colour[..., 1])
                                        and np.array_equal(colour[..., 0], colour[..., 2])):
            raise UserError(f"{path}: colour image with differing channels (shape "
                            f"{img.shape}); a mask must be single-channel or grey")
        img = colour[..., 0]
    if img.dtype not in (np.uint8, np.uint16):
        raise UserError(f"{path}: {img.dtype} pixels; expected an 8- or 16-bit integer mask")
    if img.ndim != 2 or min(img.shape) < MIN_SIDE_PX:
        raise UserError(f"{path}: image of {img.shape[1] if img.ndim > 1 else 1}x"
                        f"{img.shape[0]} px is smaller than {MIN_SIDE_PX} px")
    lossy = path.suffix.lower() in (".jpg", ".jpeg")
    if crystal_class is not None:
        if lossy:
            raise UserError(f"{path}: JPEG cannot hold a class map exactly (lossy); "
                            f"save class maps as PNG or TIFF")
        vmax = int(img.max())
        if vmax > 255:
            raise UserError(f"{path}: 16-bit values up to {vmax}; a class map holds small "
                            f"class ids (<= 255)")
        return img == crystal_class
    if lossy:
        return img >= (128 if img.dtype == np.uint8 else 32768)
    nonzero = img[img != 0]
    if nonzero.size and (nonzero != nonzero[0]).any():
        values = np.unique(img)
        shown = ", ".join(str(int(v)) for v in values[:5]) + (", ..." if values.size > 5 else "")
        raise UserError(f"{path}: {values.size} different values ({shown}), not a binary "
                        f"mask; for a class map give --crystal-class")
    return img != 0


def results_from_masks(paths: Sequence[str], *, px_size_um: float,
                       crystal_class: int | None, measure_config: Any,
                       decode_config: Any = None) -> list[FrameResult]:
    """Measure every mask file: one FrameResult per input (a skipped one warned once)."""
    return [_mask_result(name, error, px_size_um=px_size_um, crystal_class=crystal_class,
                         measure_config=measure_config, decode_config=decode_config)
            for name, error in expand_inputs(paths)]


def _mask_result(name: str, listed_error: str | None, *, px_size_um: float,
                 crystal_class: int | None, measure_config: Any,
                 decode_config: Any) -> FrameResult:
    """One mask file measured, or ``unreadable`` (cannot be read) or ``bad_mask`` (read,
    but not a mask these options accept)."""
    from edge.measure import measure_crystals
    from edge.vision.result import FrameResult

    if listed_error is not None:
        return _skipped(name, "unreadable", listed_error)
    t0 = time.perf_counter()
    try:
        image = decode_image(name, decode_config)
    except UserError as exc:
        return _skipped(name, "unreadable", error_text(name, exc))
    try:
        mask = mask_from_image(name, image, crystal_class=crystal_class)
        t1 = time.perf_counter()
        crystals = measure_crystals(mask.astype("uint8"), px_size_um=px_size_um,
                                    config=measure_config)
    except (UserError, ValueError) as exc:
        return _skipped(name, "bad_mask", error_text(name, exc))
    t2 = time.perf_counter()
    return FrameResult.from_mask(name, crystals, timings_ms={"read": (t1 - t0) * 1e3,
                                                             "measure": (t2 - t1) * 1e3})


def _skipped(name: str, reason: str, detail: str) -> FrameResult:
    """The result of an input that is skipped, warned on stderr."""
    from edge.vision.result import FrameResult

    result = FrameResult.from_error(name, reason, detail)
    warn_skipped(name, result.error or detail)
    return result
