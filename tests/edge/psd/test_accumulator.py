"""PsdAccumulator: which crystals count, edge weights, the ROI cache, the correction rule,
the counts; and the pipeline's per-frame weights come from the same code as the report's."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.measure import MeasureConfig, measure_crystals
from edge.psd import (
    PsdAccumulator,
    PsdConfig,
    RoiSurvival,
    compute_psd,
    edge_correction_weights,
    kept_edge_weights,
)
from edge.psd import accumulator as acc_mod

PX = 1.45
NO_BOOT = PsdConfig(bootstrap_n=0)


def _frame(seed: int = 0, shape=(300, 320), big_r=140, n=14):
    """A circular field with random discs, some cut by the field edge."""
    rng = np.random.default_rng(seed)
    roi = np.zeros(shape, np.uint8)
    cv2.circle(roi, (shape[1] // 2, shape[0] // 2), big_r, 1, -1)
    mask = np.zeros(shape, np.uint8)
    for _ in range(n):
        cx, cy = int(rng.uniform(10, shape[1] - 10)), int(rng.uniform(10, shape[0] - 10))
        cv2.circle(mask, (cx, cy), int(rng.uniform(5, 22)), 1, -1)
    return mask, roi


def _reference_weights(crystals, roi, max_weight=20.0):
    """The report's former per-frame weights: kept rows, bounding-box extents, the ROI."""
    kept = np.asarray(crystals.kept, dtype=bool)
    bbox = np.asarray(crystals.bbox, dtype=np.float64).reshape(-1, 4)[kept]
    return edge_correction_weights(bbox[:, 2], bbox[:, 3],
                                   field_shape=tuple(crystals.frame_shape[:2]),
                                   roi=roi, max_weight=max_weight)


def test_weights_identical_to_the_former_code_on_measured_crystals():
    acc = PsdAccumulator(NO_BOOT)
    for seed in range(4):
        mask, roi = _frame(seed)
        c = measure_crystals(mask, px_size_um=PX, roi=roi)
        assert c.n_kept > 2 and c.rejected_counts()["border"] > 0
        np.testing.assert_array_equal(acc.weights(c, roi=roi), _reference_weights(c, roi))
        np.testing.assert_array_equal(acc.weights(c), _reference_weights(c, None))
        np.testing.assert_array_equal(kept_edge_weights(c, roi=roi), _reference_weights(c, roi))
        assert np.all(acc.weights(c, roi=roi) >= 1.0)


def test_roi_cache_is_keyed_on_the_mask_content(monkeypatch):
    made = []

    class Counting(RoiSurvival):
        def __init__(self, roi):
            made.append(roi.shape)
            super().__init__(roi)

    monkeypatch.setattr(acc_mod, "RoiSurvival", Counting)
    acc = PsdAccumulator(NO_BOOT)
    mask, roi = _frame(0)
    c = measure_crystals(mask, px_size_um=PX, roi=roi)
    for _ in range(3):
        acc.add(c, roi=roi.copy())          # equal content, new array: one transform
    acc.add(c, roi=roi.astype(bool))        # same inside pixels as bool: still one
    assert len(made) == 1
    other = roi.copy()
    other[150:160, 5:40] = 0
    acc.add(c, roi=other)
    assert len(made) == 2
    assert acc.survival(roi) is acc.survival(roi.copy())
    given = Counting(roi)  # an RoiSurvival passed in is used as it is
    assert acc.survival(given) is given
    for k in range(acc_mod.ROI_CACHE_SIZE + 2):  # bounded: the oldest ROIs are dropped
        r = roi.copy()
        r[0, k] = 1
        acc.survival(r)
    assert len(acc._rois) == acc_mod.ROI_CACHE_SIZE


@pytest.mark.parametrize("clear_border, correction", [(False, True), (True, False)])
def test_no_correction_without_border_clearing_or_when_off(clear_border, correction):
    mask, roi = _frame(1)
    c = measure_crystals(mask, px_size_um=PX, roi=roi,
                         config=MeasureConfig(clear_border=clear_border))
    acc = PsdAccumulator(PsdConfig(bootstrap_n=0, edge_correction=correction),
                         clear_border=clear_border)
    assert acc.edge_correction is False
    contrib = acc.add(c, roi=roi)
    assert contrib.weights is None
    s = acc.result()
    assert s.edge_correction is False and s.psd.weighted is False
    np.testing.assert_array_equal(s.weights, np.ones(c.n_kept))
    assert s.psd.x50_3_um == compute_psd(c.diameters_um(), config=acc.config).x50_3_um


def test_counts_and_result_equal_one_compute_psd():
    frames = [_frame(s) for s in range(3)]
    crystals = [measure_crystals(m, px_size_um=PX, roi=r) for m, r in frames]
    acc = PsdAccumulator(NO_BOOT)
    for c, (_, roi) in zip(crystals, frames, strict=True):
        acc.add(c, roi=roi)
    acc.add_rejection("blurred")
    acc.add_rejection("crowded")
    acc.add_rejection("blurred")
    s = acc.result()
    assert s.frames_used == 3 and acc.n_frames == 6 and s.frames_rejected == 3
    assert s.frames_rejected_by_reason == {"blurred": 2, "crowded": 1}
    total = {}
    for c in crystals:
        for k, v in c.rejected_counts().items():
            total[k] = total.get(k, 0) + v
    assert s.crystals_rejected_by_reason == {k: v for k, v in sorted(total.items()) if v}
    d = np.concatenate([c.diameters_um() for c in crystals])
    w = np.concatenate([_reference_weights(c, r) for c, (_, r) in zip(crystals, frames,
                                                                          strict=True)])
    ref = compute_psd(d, weights=w, config=NO_BOOT)
    assert s.n_crystals == d.size == s.psd.n
    assert s.psd.x50_3_um == ref.x50_3_um
    np.testing.assert_array_equal(s.psd.Q3, ref.Q3)
    acc.reset()
    assert acc.n_frames == 0 and acc.result().psd.n == 0


def test_contribution_validates_shapes():
    mask, roi = _frame(2)
    c = measure_crystals(mask, px_size_um=PX, roi=roi)
    acc = PsdAccumulator(NO_BOOT)
    c.bbox = c.bbox[:-1]
    with pytest.raises(ValueError, match=r"bbox of shape \(\d+, 4\) does not match"):
        acc.contribution(c, roi=roi)
    good = acc_mod.FrameContribution(diameters_um=np.ones(3), weights=np.ones(2))
    with pytest.raises(ValueError, match=r"weights of shape \(2,\) do not match .*\(3,\)"):
        acc.add_contribution(good)


def test_pipeline_frame_weights_are_the_reports(tmp_path):
    """AnalyzerProcessor.measure (the service) and build_report (analyze) weigh a frame alike."""
    from edge.backends import BackendConfig
    from edge.report import build_report
    from edge.service.pipeline.analysis import AnalyzerProcessor
    from edge.sources.base import Frame
    from edge.vision.analyzer import FrameAnalyzer
    from tests.fixtures.tiny_model import build_tiny_model, synth_frame

    rng = np.random.default_rng(3)
    img = synth_frame(240, 320, crystals=[(rng.uniform(40, 280), rng.uniform(40, 200),
                                           rng.uniform(6, 14)) for _ in range(8)], seed=3)
    an = FrameAnalyzer(build_tiny_model(tmp_path), backend_config=BackendConfig(
        name="onnxruntime", onnxruntime_device="cpu", threads=1, warmup_runs=0))
    try:
        proc = AnalyzerProcessor(an, psd_config=NO_BOOT)
        r = an.analyze("f", img)
        served, contrib = proc.measure(Frame(name="f", seq=0, image=img, t_capture=0.0),
                                       an.segment([img])[0])
    finally:
        an.close()
    assert r.ok and r.crystals.n_kept > 0 and served.ok
    rep = build_report([r], mode="images", px_size_um=an.px_size_um, psd_config=NO_BOOT)
    np.testing.assert_array_equal(contrib.weights, rep.weights[0])
    np.testing.assert_array_equal(contrib.diameters_um, r.crystals.diameters_um())
    assert contrib.rejected_by_reason == {
        k: v for k, v in r.crystals.rejected_counts().items() if v}


class _Result:
    """A frame result as edge.psd sees it (the MeasuredFrame protocol), not edge.vision's."""

    def __init__(self, crystals=None, roi_mask=None, reject_reason=None):
        self.crystals, self.roi_mask, self.reject_reason = crystals, roi_mask, reject_reason


def test_add_frame_adds_measured_frames_and_counts_rejected_ones():
    mask, roi = _frame(4)
    c = measure_crystals(mask, px_size_um=PX, roi=roi)
    acc, ref = PsdAccumulator(NO_BOOT), PsdAccumulator(NO_BOOT)
    contrib = acc.add_frame(_Result(c, roi))
    assert acc.add_frame(_Result(reject_reason="crowded")) is None
    assert acc.add_frame(_Result(c, roi, reject_reason="blank")) is None  # rejected: not used
    assert acc.frame_contribution(_Result(reject_reason="blank")) is None
    expected = ref.add(c, roi=roi)
    np.testing.assert_array_equal(contrib.weights, expected.weights)
    s = acc.result()
    assert s.frames_used == 1 and s.frames_rejected_by_reason == {"blank": 1, "crowded": 1}
    assert s.psd.x50_3_um == ref.result().psd.x50_3_um


def test_edge_psd_does_not_import_edge_vision():
    """The accumulator reads frame results through its own protocol: edge.psd stays below
    edge.vision (the FrameResult type), so nothing in edge/psd names it."""
    import ast
    from pathlib import Path

    import edge.psd

    for path in Path(edge.psd.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith(("edge.vision", "edge.service")) for n in names), path
