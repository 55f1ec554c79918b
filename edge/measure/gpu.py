"""The threshold and morphology steps on the GPU where OpenCV has CUDA (JetPack's OpenCV).

JetPack ships OpenCV built with CUDA; there ``cv2.cuda.getCudaEnabledDeviceCount() > 0``
and the class-map threshold (``class_map == crystal_class``) and the closing with a disc
run on the GPU. Everything else of the measurement (connected components, hole filling,
distance transform, watershed, contours) has no ``cv2.cuda`` counterpart and stays on the
CPU. The results are identical to the CPU path, pixel for pixel:

* the threshold is an exact integer comparison;
* the closing pads the mask by ``2 r`` replicated pixels before it goes to the GPU, so the
  ``cv2.cuda`` filter's own border handling never reaches a pixel that is kept (the
  dilation of any pixel within ``r`` of the crop, and the erosion of any kept pixel, read
  only padded data). The CPU path (:func:`edge.measure.clean.close_disc`) pads by ``r``
  with the same replicated border, which gives the same values.

:func:`select_morphology` picks the implementation (``"auto"``: CUDA when present);
``measure_crystals(..., morphology=...)`` uses it.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from edge.measure.clean import binarize, close_disc, disc

log = logging.getLogger(__name__)

MorphologyDevice = Literal["auto", "cpu", "cuda"]


class Morphology(Protocol):
    """Threshold + closing, the two pixel-parallel steps of the cleaning."""

    name: str

    def binarize(self, mask: np.ndarray, *, crystal_class: int | None = None) -> np.ndarray:
        """0/1 uint8 crystal mask (see :func:`edge.measure.clean.binarize`)."""
        ...

    def close_disc(self, mask01: np.ndarray, radius: int) -> np.ndarray:
        """Closing with a flat disc; the frame edge neither adds nor erodes."""
        ...


class CpuMorphology:
    """The reference implementation (plain OpenCV on the CPU)."""

    name = "cpu"

    def binarize(self, mask: np.ndarray, *, crystal_class: int | None = None) -> np.ndarray:
        return binarize(mask, crystal_class=crystal_class)

    def close_disc(self, mask01: np.ndarray, radius: int) -> np.ndarray:
        return close_disc(mask01, radius)


def cuda_device_count(cv: Any = cv2) -> int:
    """Number of CUDA devices OpenCV can use (0 for a build without CUDA)."""
    try:
        return int(cv.cuda.getCudaEnabledDeviceCount())
    except (AttributeError, cv2.error):
        return 0


class CudaMorphology:
    """Threshold and closing with ``cv2.cuda``; identical results to :class:`CpuMorphology`.

    Parameters
    ----------
    cv : module, optional
        The OpenCV module (tests pass a stand-in with the ``cv2.cuda`` calls used here).

    Raises
    ------
    RuntimeError
        OpenCV has no CUDA device.
    """

    name = "cuda"

    def __init__(self, cv: Any = cv2) -> None:
        if cuda_device_count(cv) <= 0:
            raise RuntimeError("OpenCV has no CUDA device (cv2.cuda.getCudaEnabledDeviceCount() "
                               "== 0)")
        self._cv = cv
        self._filters: dict[int, Any] = {}
        self._cpu = CpuMorphology()

    def binarize(self, mask: np.ndarray, *, crystal_class: int | None = None) -> np.ndarray:
        # Validation (and any dtype the GPU compare does not take) goes the CPU way.
        if (crystal_class is None or not isinstance(mask, np.ndarray) or mask.ndim != 2
                or mask.dtype != np.uint8 or mask.size == 0 or not 0 <= crystal_class <= 255):
            return self._cpu.binarize(mask, crystal_class=crystal_class)
        cuda = self._cv.cuda
        g = cuda.GpuMat()
        g.upload(np.ascontiguousarray(mask))
        eq = cuda.compare(g, np.array([float(crystal_class)]), self._cv.CMP_EQ)  # 0 / 255
        out = eq.download()
        return np.ascontiguousarray(out >> 7, dtype=np.uint8)  # 255 -> 1

    def _filter(self, r: int) -> Any:
        f = self._filters.get(r)
        if f is None:
            f = self._cv.cuda.createMorphologyFilter(self._cv.MORPH_CLOSE, self._cv.CV_8UC1,
                                                     disc(r))
            self._filters[r] = f
        return f

    def close_disc(self, mask01: np.ndarray, radius: int) -> np.ndarray:
        if radius <= 0:
            return mask01
        r = int(radius)
        p = 2 * r
        padded = cv2.copyMakeBorder(mask01, p, p, p, p, cv2.BORDER_REPLICATE)
        g = self._cv.cuda.GpuMat()
        g.upload(padded)
        closed = self._filter(r).apply(g).download()
        return np.ascontiguousarray(closed[p:-p, p:-p])


def select_morphology(device: MorphologyDevice = "auto", *, cv: Any = cv2) -> Morphology:
    """The morphology implementation for ``device``.

    ``"auto"``: CUDA when OpenCV has a CUDA device, else the CPU (logged once by the
    caller through :attr:`Morphology.name`). ``"cuda"`` without a CUDA device is an error
    (RuntimeError naming the reason), not a silent fallback.
    """
    if device == "cpu":
        return CpuMorphology()
    if device == "cuda":
        return CudaMorphology(cv)
    if device != "auto":
        raise ValueError(f"morphology device must be auto, cpu or cuda, got {device!r}")
    if cuda_device_count(cv) > 0:
        try:
            return CudaMorphology(cv)
        except (RuntimeError, cv2.error, AttributeError) as exc:  # broken CUDA build
            log.warning("OpenCV CUDA present but unusable (%s); morphology on the CPU", exc)
    return CpuMorphology()
