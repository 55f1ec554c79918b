"""measure_crystals end to end: numbers, shape filter, class maps, validation, Crystals API."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from edge.measure import (
    DEFAULT_WINDOW,
    PAPER_WINDOW,
    REASONS,
    Crystals,
    MeasureConfig,
    measure_crystals,
)
from tests.edge.measure.shapes import (
    add_disc,
    add_ellipse,
    add_polygon,
    blank,
    regular_polygon,
    rhomb,
)

PX = 1.45


@pytest.mark.parametrize("r", [5, 8, 13, 20, 35, 60, 100])
def test_area_equivalent_diameter_of_disc_within_one_pixel(r: int) -> None:
    n = 2 * r + 12
    m = add_disc(blank(n, n), n / 2 + 0.37, n / 2 - 0.21, r)
    c = measure_crystals(m, px_size_um=PX)
    assert len(c) == 1 and c.n_kept == 1
    assert abs(c.diameter_um[0] - 2 * r * PX) <= PX
    assert c.feret_max_um[0] == pytest.approx(2 * r * PX, abs=1.5 * PX)
    assert c.aspect_ratio[0] < 1.15


def test_columns_of_an_axis_aligned_rectangle() -> None:
    m = blank(60, 80)
    m[10:30, 20:60] = 1  # 40 x 20 px
    c = measure_crystals(m, px_size_um=2.0, config=MeasureConfig(circularity_min=0.5))
    assert c.area_px.tolist() == [800]
    assert c.bbox.tolist() == [[20, 10, 40, 20]]
    assert c.centroid[0].tolist() == pytest.approx([39.5, 19.5])
    assert c.feret_max_um[0] == pytest.approx(2.0 * math.hypot(40, 20))
    assert c.feret_min_um[0] == pytest.approx(40.0)
    assert c.aspect_ratio[0] == pytest.approx(math.hypot(40, 20) / 20)
    assert c.perimeter_px[0] == pytest.approx(120, rel=0.03)
    assert c.diameter_um[0] == pytest.approx(2 * math.sqrt(800 / math.pi) * 2.0)
    # contour in frame coordinates, on the boundary pixels
    xs, ys = c.contours[0][:, 0], c.contours[0][:, 1]
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (20, 59, 10, 29)


def _single(mask: np.ndarray, config: MeasureConfig | None = None) -> Crystals:
    c = measure_crystals(mask, px_size_um=1.0, config=config)
    assert len(c) == 1
    return c


SINGLES = {
    "disc": lambda: add_disc(blank(80, 80), 40.3, 39.8, 30),
    "hexagon": lambda: add_polygon(blank(100, 100), regular_polygon(50, 50, 40, 6, 0.2)),
    "octagon": lambda: add_polygon(blank(100, 100), regular_polygon(50, 50, 40, 8, 0.1)),
    "hexagon_1.6": lambda: add_polygon(blank(200, 200),
                                       regular_polygon(100, 100, 40, 6, 0.3, stretch=1.6)),
    "rhomb_1.4": lambda: add_polygon(blank(200, 200), rhomb(100, 100, 40, 1.4, 0.3)),
    "ellipse_1.4": lambda: add_ellipse(blank(120, 120), 60, 60, 42, 30, angle=0.3),
}


@pytest.mark.parametrize("name", sorted(SINGLES))
def test_default_window_keeps_equant_single_crystals(name: str) -> None:
    c = _single(SINGLES[name]())
    assert c.kept.tolist() == [True], (name, c.circularity)


def test_measured_circularities_behind_the_default_window() -> None:
    got = {k: float(_single(f()).circularity[0]) for k, f in SINGLES.items()}
    assert got["hexagon_1.6"] == pytest.approx(0.84, abs=0.02)
    assert got["rhomb_1.4"] == pytest.approx(0.75, abs=0.02)
    assert got["rhomb_1.4"] - DEFAULT_WINDOW[0] > 0.02


def _hex_cluster(k: int) -> np.ndarray:
    """k = 3: three hexagons sharing edges pairwise (the watershed sees one maximum)."""
    r = 30
    inr = r * math.cos(math.pi / 6)
    c0 = np.array([80.3, 140.2])
    u = 2 * inr * np.array([math.cos(math.pi / 6), math.sin(math.pi / 6)])
    v = np.array([0.0, 2 * inr])
    centres = [c0, c0 + u, c0 + u - v][:k]
    m = blank(260, 260)
    for c in centres:
        add_polygon(m, regular_polygon(c[0], c[1], r, 6, 0.0))
    return m


def test_unsplit_three_crystal_cluster_is_rejected_as_agglomerate() -> None:
    c = measure_crystals(_hex_cluster(3), px_size_um=1.0)
    assert len(c) == 1
    assert c.reason.tolist() == ["agglomerate"]
    assert c.circularity[0] == pytest.approx(0.70, abs=0.015)
    assert c.rejected_counts() == {"too_small": 0, "border": 0, "bubble": 0, "agglomerate": 1}
    assert c.n_kept == 0 and c.diameters_um().size == 0
    assert c.diameters_um(kept_only=False).size == 1


def test_two_hexagons_sharing_an_edge_are_split_and_kept() -> None:
    c = measure_crystals(_hex_cluster(2), px_size_um=1.0)
    assert len(c) == 2 and c.n_kept == 2
    assert c.area_px.max() / c.area_px.min() < 1.05


def test_paper_window_option() -> None:
    assert MeasureConfig.paper().circularity_min == PAPER_WINDOW[0]
    assert MeasureConfig.paper().circularity_max == PAPER_WINDOW[1]
    cfg = MeasureConfig.paper()
    # with an unbiased perimeter the paper's window rejects discs (1.0 > 0.95) and
    # elongated crystals; it keeps regular hexagons
    assert _single(SINGLES["disc"](), cfg).reason.tolist() == ["agglomerate"]
    assert _single(SINGLES["hexagon_1.6"](), cfg).reason.tolist() == ["agglomerate"]
    assert _single(SINGLES["hexagon"](), cfg).kept.tolist() == [True]


def test_class_map_input_equals_binary_mask() -> None:
    rng = np.random.default_rng(2)
    cm = rng.integers(0, 2, (200, 200)).astype(np.uint8)  # background classes 0/1
    crystal = blank(200, 200)
    for x, y, r in ((50, 50, 20), (120, 60, 15), (80, 140, 25), (160, 150, 18)):
        cv2.circle(crystal, (x, y), r, 1, -1)
    cm[crystal > 0] = 2
    a = measure_crystals(cm, px_size_um=PX, crystal_class=2)
    b = measure_crystals(crystal.astype(bool), px_size_um=PX)
    assert len(a) == len(b) == 4
    assert np.array_equal(a.area_px, b.area_px)
    assert np.allclose(a.diameter_um, b.diameter_um)


def test_empty_frame() -> None:
    c = measure_crystals(np.zeros((50, 60), np.uint8), px_size_um=PX)
    assert len(c) == 0 and c.n_kept == 0
    assert c.frame_shape == (50, 60) and c.roi_area_px == 3000
    assert c.rejected_counts() == dict.fromkeys(REASONS, 0)
    assert json.loads(json.dumps(c.to_payload()))["n_crystals"] == 0


@pytest.mark.parametrize(("mask", "kw", "pattern"), [
    (np.zeros((10, 10, 3), np.uint8), {}, r"mask must be 2-D \(H, W\), got shape \(10, 10, 3\)"),
    (np.zeros((0, 10), np.uint8), {}, r"mask is empty, shape \(0, 10\)"),
    (np.zeros((10, 10), np.float32), {}, r"got dtype float32 with shape \(10, 10\)"),
    ([[0, 1], [1, 0]], {}, r"mask must be a numpy array, got list"),
    (np.zeros((10, 10), np.uint8), {"px_size_um": 0}, r"px_size_um must be finite and > 0"),
    (np.zeros((10, 10), np.uint8), {"px_size_um": float("nan")}, r"px_size_um must be finite"),
    (np.zeros((10, 10), np.uint8), {"roi": np.ones((10, 11), bool)},
     r"roi shape \(10, 11\) differs from mask shape \(10, 10\)"),
    (np.zeros((10, 10), np.uint8), {"roi": np.ones((10, 10), np.float64)},
     r"roi must be bool or integer"),
    (np.zeros((10, 10), np.uint8), {"crystal_class": 2.0}, r"crystal_class must be an int"),
])
def test_input_validation_messages(mask: object, kw: dict, pattern: str) -> None:
    kwargs = {"px_size_um": PX, **kw}
    with pytest.raises(ValueError, match=pattern):
        measure_crystals(mask, **kwargs)  # type: ignore[arg-type]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="circularity_min"):
        MeasureConfig(circularity_min=0.9, circularity_max=0.8)
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        MeasureConfig(connectivity=6)
    with pytest.raises(ValueError, match="extra"):
        MeasureConfig(min_area=3)  # type: ignore[call-arg]
    for name, f in MeasureConfig.model_fields.items():
        assert f.description, name


def _scene() -> np.ndarray:
    m = blank(200, 300)
    add_disc(m, 50.2, 60.1, 20)  # kept
    add_disc(m, 150.0, 60.0, 18)  # kept
    add_disc(m, 295.0, 100.0, 15)  # border
    m[180:184, 100:104] = 1  # 16 px: dropped as too small
    add_polygon(m, regular_polygon(150.0, 150.0, 25.0, 6, 0.0))  # kept
    return m


def test_crystals_api_rows_payload_filter_concatenate() -> None:
    c = measure_crystals(_scene(), px_size_um=PX)
    assert len(c) == 4 and c.n_kept == 3
    assert c.rejected_counts() == {"too_small": 1, "border": 1, "bubble": 0, "agglomerate": 0}
    rows = c.to_rows()
    assert len(rows) == 4
    assert set(rows[0]) >= {"frame", "kept", "reason", "area_px", "diameter_um", "bbox_w",
                            "bbox_h", "circularity", "touches_border", "feret_max_um"}
    payload = json.loads(json.dumps(c.to_payload(include_contours=True)))
    assert payload["n_kept"] == 3 and payload["frame_shape"] == [200, 300]
    assert payload["px_size_um"] == PX and len(payload["contours"]) == 4
    assert payload["rejected"]["too_small"] == 1
    kept = c.filter(c.kept)
    assert len(kept) == 3 and kept.n_kept == 3 and kept.dropped == {"too_small": 1}
    assert np.array_equal(kept.diameter_um, c.diameters_um())
    assert len(c.filter(np.array([0, 2]))) == 2
    both = Crystals.concatenate([c, kept])
    assert len(both) == 7 and both.n_frames == 2
    assert both.frame.tolist() == [0] * 4 + [1] * 3
    assert both.rejected_counts()["too_small"] == 2
    assert len(both.contours) == 7
    with pytest.raises(ValueError, match="cannot concatenate"):
        Crystals.concatenate([c, measure_crystals(_scene()[:100], px_size_um=PX)])
    with pytest.raises(ValueError, match="boolean selection"):
        c.filter(np.ones(3, bool))


def test_crystals_rejects_inconsistent_columns() -> None:
    c = measure_crystals(_scene(), px_size_um=PX)
    with pytest.raises(ValueError, match=r"Crystals.bbox has shape \(3, 4\), expected \(4, 4\)"):
        Crystals(**{**{k: getattr(c, k) for k in (
            "frame", "area_px", "perimeter_px", "circularity", "diameter_um", "feret_max_um",
            "feret_min_um", "aspect_ratio", "centroid", "touches_border", "kept", "reason")},
            "bbox": c.bbox[:3]}, contours=c.contours, frame_shape=c.frame_shape,
            px_size_um=c.px_size_um, roi_area_px=c.roi_area_px)
