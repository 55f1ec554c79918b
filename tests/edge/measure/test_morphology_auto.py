"""``morphology_device = "auto"`` chooses CPU or CUDA by a start-up measurement.

This machine's OpenCV has no CUDA: the CUDA side is a stand-in for the few ``cv2.cuda``
calls (mock hardware only) that is either slower than the real CPU path (it sleeps in
the filter) or faster (it does no filtering at all). The CPU side is the real OpenCV
path, timed for real.
"""

from __future__ import annotations

import logging
import re
import time
import types

import cv2
import numpy as np

from edge.measure import MeasureConfig
from edge.measure.gpu import choose_faster, probe_class_map, select_morphology


class _GpuMat:
    def __init__(self, arr: np.ndarray | None = None) -> None:
        self.arr = arr

    def upload(self, arr: np.ndarray) -> None:
        self.arr = arr

    def download(self) -> np.ndarray:
        return self.arr


def _stand_in_cv(delay_s: float) -> types.SimpleNamespace:
    """``cv2.cuda`` stand-in: ``delay_s`` > 0 sleeps that long per closing (a slow
    device); 0 returns the mask unfiltered (a device faster than any CPU)."""
    class Filter:
        def __init__(self, kernel: np.ndarray) -> None:
            self.kernel = kernel

        def apply(self, g: _GpuMat) -> _GpuMat:
            if delay_s <= 0:
                return g
            time.sleep(delay_s)
            return _GpuMat(cv2.morphologyEx(g.arr, cv2.MORPH_CLOSE, self.kernel))

    cuda = types.SimpleNamespace(
        getCudaEnabledDeviceCount=lambda: 1, GpuMat=_GpuMat,
        compare=lambda g, s, op: _GpuMat(g.arr),
        createMorphologyFilter=lambda op, typ, kernel: Filter(kernel))
    return types.SimpleNamespace(cuda=cuda, CMP_EQ=cv2.CMP_EQ, MORPH_CLOSE=cv2.MORPH_CLOSE,
                                 CV_8UC1=cv2.CV_8UC1)


LINE = re.compile(r"^morphology_device auto: cpu (\d+\.\d\d) ms, cuda (\d+\.\d\d) ms on a "
                  r"(\d+)x(\d+) class map -> (cpu|cuda)$")


def _choice_line(caplog) -> re.Match:
    lines = [r.getMessage() for r in caplog.records if "morphology_device auto" in r.getMessage()]
    assert len(lines) == 1, lines
    m = LINE.match(lines[0])
    assert m, lines[0]
    return m


def test_slower_cuda_loses_to_the_cpu(caplog):
    caplog.set_level(logging.INFO, logger="edge.measure.gpu")
    chosen = select_morphology("auto", cv=_stand_in_cv(0.02), radius=2)
    assert chosen.name == "cpu"
    m = _choice_line(caplog)
    cpu_ms, cuda_ms = float(m[1]), float(m[2])
    assert cuda_ms >= 20.0 > cpu_ms
    assert (int(m[3]), int(m[4]), m[5]) == (512, 384, "cpu")


def test_faster_cuda_wins(caplog):
    caplog.set_level(logging.INFO, logger="edge.measure.gpu")
    # a large map and a wide disc give the real CPU closing a clear amount of work
    big = probe_class_map((1536, 2048))
    chosen = select_morphology("auto", cv=_stand_in_cv(0.0), radius=9, class_map=big)
    assert chosen.name == "cuda"
    m = _choice_line(caplog)
    assert float(m[2]) < float(m[1]) and m[5] == "cuda"
    assert (int(m[3]), int(m[4])) == (2048, 1536)


def test_no_cuda_device_is_the_cpu_without_timing(caplog):
    caplog.set_level(logging.INFO, logger="edge.measure.gpu")
    no_cuda = types.SimpleNamespace(cuda=types.SimpleNamespace(
        getCudaEnabledDeviceCount=lambda: 0))
    assert select_morphology("auto", cv=no_cuda).name == "cpu"
    assert not [r for r in caplog.records if "morphology_device auto" in r.getMessage()]


def test_probe_map_is_representative():
    cm = probe_class_map()
    assert cm.shape == (384, 512) and cm.dtype == np.uint8
    assert set(np.unique(cm)) == {0, 1, 2}
    n, _ = cv2.connectedComponents((cm == 2).astype(np.uint8))
    assert 20 < n - 1 <= 60
    assert 0.05 < float(np.mean(cm == 2)) < 0.4


def test_choice_is_the_measured_one_for_any_order(caplog):
    caplog.set_level(logging.INFO, logger="edge.measure.gpu")
    from edge.measure import CpuMorphology, CudaMorphology

    slow = CudaMorphology(_stand_in_cv(0.01))
    assert choose_faster([slow, CpuMorphology()], radius=2).name == "cpu"


def test_config_default_is_auto():
    assert MeasureConfig().morphology_device == "auto"
