"""analyze sets the whole class grid and the fines limit from the command line."""

from __future__ import annotations

import json

import cv2
import numpy as np

from edge.cli import main


def _mask(tmp_path):
    m = np.zeros((200, 200), np.uint8)
    for x, r in ((40, 8), (100, 14), (160, 24)):
        cv2.circle(m, (x, 100), r, 2, -1)
    cv2.imwrite(str(tmp_path / "m.png"), m)
    return tmp_path / "m.png"


def test_grid_and_fines_options(tmp_path):
    out = tmp_path / "r.json"
    assert main(["analyze", "--masks", str(_mask(tmp_path)), "--px-size-um", "2",
                 "--crystal-class", "2", "--class-min-um", "20", "--class-width-um", "5",
                 "--class-max-um", "120", "--fines-below-um", "40", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert (rep["class_min_um"], rep["class_width_um"], rep["class_max_um"]) == (20, 5, 120)
    assert rep["settings"]["psd"]["fines_below_um"] == 40
    # 20..120 um in 5 um classes and one overflow class
    assert len(rep["bins"]) == 20 + 1
    assert rep["bins"][0]["lower_um"] == 20 and rep["bins"][-1]["upper_um"] is None


def test_bad_grid_names_the_option_in_one_line(tmp_path, capsys):
    mask = _mask(tmp_path)
    assert main(["analyze", "--masks", str(mask), "--px-size-um", "2", "--crystal-class", "2",
                 "--class-min-um", "50", "--class-max-um", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crystal-edge: error: --class-max-um: class_max_um (10) must be above")
    assert err.count("\n") == 1 and "Value error" not in err
