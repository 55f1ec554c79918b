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

:func:`select_morphology` picks the implementation; ``measure_crystals(...,
morphology=...)`` uses it. ``"auto"`` chooses by measurement, not by availability: OpenCV's
CUDA morphology has been reported slower than the CPU on an Orin NX (opencv_contrib
#3798; upload, download and launch overheads outweigh a 5x5 closing of a small mask), so
with a CUDA device present :func:`choose_faster` times threshold + closing of the same
representative class map (:func:`probe_class_map`, the default network input 512x384)
on both and keeps the faster, in one logged line with both timings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
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


#: Size (H, W) of the class map timed by ``"auto"``: the network input of a 1024x768 frame
#: at the default inference scale 0.5.
PROBE_HW: tuple[int, int] = (384, 512)


def probe_class_map(hw: tuple[int, int] = PROBE_HW, *, crystal_class: int = 2,
                    seed: int = 0) -> np.ndarray:
    """A representative uint8 class map: light background (1), a dark frame margin (0),
    ~60 crystal discs and hexagons (``crystal_class``) of 5-25 px radius, some touching."""
    rng = np.random.default_rng(seed)
    h, w = hw
    cm = np.ones(hw, np.uint8)
    cm[:, : max(1, w // 40)] = 0
    for _ in range(60):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        r = int(rng.integers(5, 26))
        if rng.random() < 0.5:
            cv2.circle(cm, c, r, crystal_class, -1)
        else:
            a = rng.uniform(0, np.pi / 3) + np.arange(6) * np.pi / 3
            pts = np.stack([c[0] + r * np.cos(a), c[1] + r * np.sin(a)], 1).astype(np.int32)
            cv2.fillPoly(cm, [pts], crystal_class)
    return cm


def time_morphology(morphology: Morphology, class_map: np.ndarray, *, radius: int,
                    crystal_class: int = 2, repeats: int = 5,
                    clock: Callable[[], float] = time.perf_counter) -> float:
    """Best wall time (s) of ``binarize`` + ``close_disc`` on ``class_map`` over
    ``repeats`` runs, after one untimed run (CUDA filter creation, first upload)."""
    def once() -> None:
        morphology.close_disc(morphology.binarize(class_map, crystal_class=crystal_class),
                              radius)

    once()
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = clock()
        once()
        best = min(best, clock() - t0)
    return best


def choose_faster(candidates: Sequence[Morphology], *, radius: int = 2,
                  class_map: np.ndarray | None = None, repeats: int = 5) -> Morphology:
    """The candidate with the shortest :func:`time_morphology` on ``class_map`` (default
    :func:`probe_class_map`); the first one on a tie. Logs one INFO line with every
    candidate's time and the choice."""
    cm = probe_class_map() if class_map is None else class_map
    times = [time_morphology(m, cm, radius=max(1, radius), repeats=repeats)
             for m in candidates]
    best = min(range(len(candidates)), key=lambda i: times[i])
    log.info("morphology_device auto: %s on a %dx%d class map -> %s",
             ", ".join(f"{m.name} {t * 1e3:.2f} ms" for m, t in
                       zip(candidates, times, strict=True)),
             cm.shape[1], cm.shape[0], candidates[best].name)
    return candidates[best]


def select_morphology(device: MorphologyDevice = "auto", *, cv: Any = cv2, radius: int = 2,
                      class_map: np.ndarray | None = None) -> Morphology:
    """The morphology implementation for ``device``.

    ``"auto"``: the CPU where OpenCV has no CUDA device; else the faster of CPU and CUDA
    by :func:`choose_faster` (closing ``radius``, on ``class_map``). ``"cuda"`` without a
    CUDA device is an error (RuntimeError naming the reason), not a silent fallback.
    """
    if device == "cpu":
        return CpuMorphology()
    if device == "cuda":
        return CudaMorphology(cv)
    if device != "auto":
        raise ValueError(f"morphology device must be auto, cpu or cuda, got {device!r}")
    if cuda_device_count(cv) <= 0:
        return CpuMorphology()
    try:
        return choose_faster([CpuMorphology(), CudaMorphology(cv)], radius=radius,
                             class_map=class_map)
    except (RuntimeError, cv2.error, AttributeError) as exc:  # broken CUDA build
        log.warning("OpenCV CUDA present but unusable (%s); morphology on the CPU", exc)
    return CpuMorphology()
