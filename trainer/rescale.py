"""Resizing a frame and its labels to the network's pixel size (torch-free).

The image shrinks by area averaging (INTER_AREA; linear when enlarging), the class label
by the value covering most of each target pixel (:func:`edge.vision.preprocess.resize_label`:
nearest neighbour would move every outline by a quarter pixel at a factor of 2), and a 0/1
contact label so that a thin contact line survives: a
target pixel is a contact when any source pixel under it is. Training
(:mod:`trainer.torchdata`), resampling a dataset (:mod:`trainer.resample`) and the
evaluation's true contacts (:mod:`trainer.evalframes`) all resize through here.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.vision.preprocess import resize_label


def scaled_size(hw: tuple[int, int], input_scale: float) -> tuple[int, int]:
    """(width, height) of an (h, w) frame resized by ``input_scale`` (OpenCV's order)."""
    h, w = hw
    return max(1, round(w * input_scale)), max(1, round(h * input_scale))


def scale_pair(image: np.ndarray, label: np.ndarray,
               input_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (area) and its label (majority share, :func:`resize_label`) by
    ``input_scale``."""
    if input_scale == 1.0:
        return image, label
    size = scaled_size(label.shape, input_scale)
    interp = cv2.INTER_AREA if input_scale < 1 else cv2.INTER_LINEAR
    return (cv2.resize(image, size, interpolation=interp),
            resize_label(label, size))


def scale_image(image: np.ndarray, input_scale: float) -> np.ndarray:
    """Resize an image by ``input_scale`` as :func:`scale_pair` does."""
    if input_scale == 1.0:
        return image
    size = scaled_size(image.shape[:2], input_scale)
    interp = cv2.INTER_AREA if input_scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp)


def scale_contact(contact: np.ndarray, input_scale: float) -> np.ndarray:
    """Resize a 0/1 contact label by ``input_scale``; a target pixel is a contact when any
    of the source pixels it covers is (area average > 0), so thin lines survive."""
    if input_scale == 1.0:
        return contact
    return resize_contact(contact, scaled_size(contact.shape, input_scale))


def resize_contact(contact: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 0/1 contact label resized to ``size`` (width, height) as :func:`scale_contact`
    does: a target pixel is a contact when any source pixel it covers is."""
    interp = cv2.INTER_AREA if size[0] < contact.shape[1] else cv2.INTER_LINEAR
    return (cv2.resize(contact.astype(np.float32), size, interpolation=interp) > 1e-3
            ).astype(np.uint8)
