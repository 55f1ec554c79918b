"""The CUDA threshold/closing path gives the CPU path's results, pixel for pixel.

This machine's OpenCV has no CUDA, so the CUDA code runs here against a stand-in for the
few ``cv2.cuda`` calls it makes. The stand-in deliberately uses a *different* border rule
than the CPU path (constant 0, which erodes edge objects): the 2r replicated padding must
make that irrelevant. Where OpenCV has a CUDA device (JetPack), the real ``cv2.cuda`` test
runs instead of being skipped.
"""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest

from edge.measure import (
    CpuMorphology,
    CudaMorphology,
    MeasureConfig,
    measure_crystals,
    select_morphology,
)
from edge.measure.clean import close_disc
from edge.measure.gpu import cuda_device_count


class _GpuMat:
    def __init__(self, arr: np.ndarray | None = None) -> None:
        self.arr = arr

    def upload(self, arr: np.ndarray) -> None:
        self.arr = np.array(arr, copy=True)

    def download(self) -> np.ndarray:
        assert self.arr is not None
        return np.array(self.arr, copy=True)


class _MorphFilter:
    def __init__(self, op: int, kernel: np.ndarray) -> None:
        self.op, self.kernel = op, kernel

    def apply(self, g: _GpuMat) -> _GpuMat:
        # Not the CPU path's border rule on purpose: the dilation sees crystal (1) and the
        # erosion background (0) beyond the edge, which both change pixels near the edge.
        assert self.op == cv2.MORPH_CLOSE
        dil = cv2.dilate(g.arr, self.kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1)
        out = cv2.erode(dil, self.kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        return _GpuMat(out)


def _fake_cv(n_devices: int = 1) -> types.SimpleNamespace:
    calls: list[str] = []

    def compare(g: _GpuMat, scalar: np.ndarray, op: int) -> _GpuMat:
        calls.append("compare")
        assert op == cv2.CMP_EQ
        return _GpuMat(np.where(g.arr == int(scalar[0]), 255, 0).astype(np.uint8))

    def create_filter(op: int, typ: int, kernel: np.ndarray) -> _MorphFilter:
        calls.append("createMorphologyFilter")
        assert typ == cv2.CV_8UC1
        return _MorphFilter(op, kernel)

    cuda = types.SimpleNamespace(
        getCudaEnabledDeviceCount=lambda: n_devices, GpuMat=_GpuMat, compare=compare,
        createMorphologyFilter=create_filter)
    return types.SimpleNamespace(cuda=cuda, CMP_EQ=cv2.CMP_EQ, MORPH_CLOSE=cv2.MORPH_CLOSE,
                                 CV_8UC1=cv2.CV_8UC1, calls=calls)


def _scene(seed: int, shape: tuple[int, int] = (240, 320)) -> np.ndarray:
    """A class map (0/1/2) with crystals everywhere, many cut by the frame edge."""
    rng = np.random.default_rng(seed)
    cm = np.ones(shape, np.uint8)
    cm[:, :12] = 0
    for _ in range(40):
        c = (int(rng.integers(-5, shape[1] + 5)), int(rng.integers(-5, shape[0] + 5)))
        axes = (int(rng.integers(3, 25)), int(rng.integers(3, 25)))
        cv2.ellipse(cm, c, axes, float(rng.uniform(0, 180)), 0, 360, 2, -1)
    # ragged edges, thin gaps and pinholes, so that the closing has work to do
    noise = rng.random(shape) < 0.04
    cm[noise & (cm == 2)] = 1
    return cm


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("radius", [1, 2, 4])
def test_cuda_closing_equals_cpu_with_a_hostile_border(seed: int, radius: int) -> None:
    fake = _fake_cv()
    mask01 = (_scene(seed) == 2).astype(np.uint8)
    gpu = CudaMorphology(fake).close_disc(mask01, radius)
    cpu = close_disc(mask01, radius)
    assert gpu.dtype == np.uint8 and gpu.shape == mask01.shape
    assert np.array_equal(gpu, cpu)


def test_the_stand_in_border_rule_is_hostile() -> None:
    """With only r of padding the stand-in's border rule would change edge pixels."""
    differ = 0
    for seed in (0, 1, 2):
        mask01 = (_scene(seed) == 2).astype(np.uint8)
        for radius in (1, 2, 4):
            p = radius
            padded = cv2.copyMakeBorder(mask01, p, p, p, p, cv2.BORDER_REPLICATE)
            short = _MorphFilter(cv2.MORPH_CLOSE, cv2.getStructuringElement(
                cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)).apply(_GpuMat(padded)).arr
            differ += not np.array_equal(short[p:-p, p:-p], close_disc(mask01, radius))
    assert differ >= 5


def test_cuda_threshold_equals_cpu_and_falls_back_for_other_dtypes() -> None:
    fake = _fake_cv()
    cm = _scene(3)
    m = CudaMorphology(fake)
    assert np.array_equal(m.binarize(cm, crystal_class=2), CpuMorphology().binarize(
        cm, crystal_class=2))
    assert fake.calls.count("compare") == 1
    # bool masks, 16-bit maps and bad input go the CPU way (same validation messages)
    assert np.array_equal(m.binarize(cm == 2), (cm == 2).astype(np.uint8))
    assert fake.calls.count("compare") == 1
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4\)"):
        m.binarize(np.zeros((2, 3, 4), np.uint8), crystal_class=2)


def test_measure_crystals_identical_on_both_paths() -> None:
    fake = _fake_cv()
    cm = _scene(4)
    roi = np.zeros(cm.shape, np.uint8)
    cv2.circle(roi, (160, 120), 115, 1, -1)
    cfg = MeasureConfig()
    a = measure_crystals(cm, px_size_um=1.45, crystal_class=2, roi=roi, config=cfg)
    b = measure_crystals(cm, px_size_um=1.45, crystal_class=2, roi=roi, config=cfg,
                         morphology=CudaMorphology(fake))
    assert len(a) == len(b) > 10
    assert np.array_equal(a.area_px, b.area_px)
    assert np.array_equal(a.reason, b.reason)
    assert np.allclose(a.diameter_um, b.diameter_um)
    assert "createMorphologyFilter" in fake.calls and "compare" in fake.calls


def test_selection() -> None:
    assert select_morphology("cpu").name == "cpu"
    # "auto" with CUDA present is decided by timing: tests/edge/measure/test_morphology_auto.py
    assert select_morphology("auto", cv=_fake_cv(1)).name in ("cpu", "cuda")
    assert select_morphology("auto", cv=_fake_cv(0)).name == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        select_morphology("cuda", cv=_fake_cv(0))
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        select_morphology("gpu")  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(cuda_device_count() == 0,
                    reason="this OpenCV build has no CUDA device (JetPack's OpenCV has one)")
def test_real_cv2_cuda_equals_cpu() -> None:
    cm = _scene(5)
    m = CudaMorphology()
    mask01 = m.binarize(cm, crystal_class=2)
    assert np.array_equal(mask01, (cm == 2).astype(np.uint8))
    for r in (1, 2, 4):
        assert np.array_equal(m.close_disc(mask01, r), close_disc(mask01, r))
