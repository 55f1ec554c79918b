"""Maps derived from a frame's instance ids: crystal outlines and contacts between crystals.

``SynthFrame.instances`` holds ``k + 1`` on the pixels of crystal ``k`` (the crystal on
top where two overlap) and ``SynthFrame.coverage`` the number of crystals on each pixel,
so where crystals touch or overlap is known exactly, not guessed from the picture.
"""

from __future__ import annotations

import cv2
import numpy as np

_K3 = np.ones((3, 3), np.uint8)


def _neighbour_ids(instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest id and smallest non-zero id (0 where none) in each 3x3 neighbourhood."""
    ids = np.asarray(instances)
    if ids.ndim != 2:
        raise ValueError(f"instances must be 2-D, got shape {ids.shape}")
    f = ids.astype(np.float32)  # exact for ids below 2**24
    hi = cv2.dilate(f, _K3, borderType=cv2.BORDER_REPLICATE)
    big = np.float32(2 ** 24)
    lo = cv2.erode(np.where(ids > 0, f, big), _K3, borderType=cv2.BORDER_REPLICATE)
    return hi, np.where(lo < big, lo, 0)


def boundary_map(instances: np.ndarray) -> np.ndarray:
    """Crystal pixels (uint8 0/1) with an 8-neighbour of another id or of background.

    The inner outline of every crystal, including the line where it meets another one.
    """
    ids = np.asarray(instances)
    hi, _lo = _neighbour_ids(ids)
    lo_any = cv2.erode(ids.astype(np.float32), _K3, borderType=cv2.BORDER_REPLICATE)
    return ((ids > 0) & ((hi != ids) | (lo_any != ids))).astype(np.uint8)


def contact_map(instances: np.ndarray, coverage: np.ndarray | None = None) -> np.ndarray:
    """Pixels (uint8 0/1) where two crystals meet: next to another id, or covered twice.

    Parameters
    ----------
    instances : ndarray (H, W) int
        Instance ids, 0 = no crystal (``SynthFrame.instances``).
    coverage : ndarray (H, W), optional
        Number of crystals per pixel (``SynthFrame.coverage``); pixels with 2 or more are
        contacts too (the overlap of two crystals, not only its outline).

    Returns
    -------
    ndarray (H, W) uint8
        1 on each side of every line where two different ids are 8-neighbours, and on
        every overlap; 0 elsewhere (also where a crystal meets background).
    """
    ids = np.asarray(instances)
    hi, lo = _neighbour_ids(ids)
    touch = (ids > 0) & ((hi > ids) | ((lo > 0) & (lo < ids)))
    if coverage is not None:
        touch |= np.asarray(coverage) >= 2
    return touch.astype(np.uint8)
