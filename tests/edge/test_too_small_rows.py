"""Objects dropped as too small have CSV rows (reason too_small), not only a count."""

from __future__ import annotations

import csv

import cv2
import numpy as np

from edge.cli import main
from edge.measure import MeasureConfig, measure_crystals


def _mask() -> np.ndarray:
    m = np.zeros((120, 160), np.uint8)
    cv2.circle(m, (50, 60), 15, 2, -1)   # a crystal
    m[10:13, 100:103] = 2                # 9 px: too small (min_area_px 20)
    m[90:92, 140:143] = 2                # 6 px: too small
    return m


def test_measure_records_the_dropped_objects():
    c = measure_crystals(_mask(), px_size_um=2.0, crystal_class=2,
                         config=MeasureConfig(clear_border=False))
    assert c.dropped == {"too_small": 2} and len(c) == 1
    assert sorted(c.small[:, 5].tolist()) == [6, 9]  # areas
    assert sorted(c.small[:, 1:3].tolist()) == [[100, 10], [140, 90]]  # x, y


def test_csv_has_a_row_per_too_small_object(tmp_path):
    cv2.imwrite(str(tmp_path / "m.png"), _mask())
    out = tmp_path / "c.csv"
    assert main(["analyze", "--masks", str(tmp_path / "m.png"), "--px-size-um", "2",
                 "--crystal-class", "2", "--no-clear-border", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    small = [r for r in rows if r["reason"] == "too_small"]
    assert len(rows) == 3 and len(small) == 2
    assert {r["area_px"] for r in small} == {"6", "9"}
    assert all(r["weight"] == "" and r["kept"] == "0" for r in small)
    box = next(r for r in small if r["area_px"] == "9")
    assert (box["bbox_x_frame_px"], box["bbox_y_frame_px"]) == ("100", "10")
    assert float(box["diameter_um"]) == round(float(np.sqrt(4 * 9 / np.pi)) * 2.0, 3)
