"""Median-frequency class weights: the study's Table 2, and the CLI on a real dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.clikit import dispatch
from tests.trainer.test_data import make_ds
from trainer.cli import COMMANDS
from trainer.data import LabelledDataset
from trainer.weights import class_pixel_stats, median_frequency_weights

MINE = {k: v for k, v in COMMANDS.items() if k in ("weights", "check-data", "synth")}


def main(argv):
    """``crystal-train`` limited to this part's commands (others may still be in progress)."""
    return dispatch("crystal-train", "test", MINE, argv)

TABLE2_COUNTS = [26_255_602, 96_827_755, 14_221_337]
TABLE2_IMAGE_PIXELS = [78_162_629, 137_304_694, 137_007_498]


def test_table2_weights():
    w = median_frequency_weights(TABLE2_COUNTS, TABLE2_IMAGE_PIXELS)
    assert w.round(4).tolist() == [1.0, 0.4763, 3.2361]


def test_absent_class_gets_zero_and_bad_input_raises():
    w = median_frequency_weights([10, 0, 30], [100, 0, 100])
    assert w.tolist() == [pytest.approx(2.0), 0.0, pytest.approx(2 / 3)]
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        median_frequency_weights([1, 2], [3])
    with pytest.raises(ValueError, match="counts <= image_pixels"):
        median_frequency_weights([5, 1], [4, 4])


def test_class_pixel_stats_counts_images_where_class_appears(tmp_path):
    root = make_ds(tmp_path / "d", n=3)
    ds = LabelledDataset(root)
    cw = class_pixel_stats(ds)
    labels = [ds.load(i)[1] for i in range(3)]
    counts = sum(np.bincount(lab.ravel(), minlength=3) for lab in labels)
    assert cw.pixel_count.tolist() == counts.tolist()
    assert cw.image_pixel_count.tolist() == [3 * 48 * 64] * 3
    np.testing.assert_allclose(cw.weights, median_frequency_weights(counts, [3 * 48 * 64] * 3))


def test_weights_cli_writes_json(tmp_path, capsys):
    root = make_ds(tmp_path / "d", n=2)
    out = tmp_path / "w" / "weights.json"
    assert main(["weights", str(root), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["method"] == "median_frequency" and doc["n_images"] == 2
    assert doc["class_names"] == ["black_background", "light_background", "crystal"]
    assert len(doc["weights"]) == 3 and max(doc["weights"]) == doc["weights"][2]
    assert "crystal" in capsys.readouterr().out


def test_weights_cli_bad_dataset_is_one_line_error(tmp_path, capsys):
    root = make_ds(tmp_path / "d", n=2)
    (root / "labels" / "f01.png").write_bytes(b"x")
    assert main(["weights", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "f01.png: unreadable label" in err[0]


def test_check_data_cli(tmp_path, capsys):
    root = make_ds(tmp_path / "d", n=3)
    assert main(["check-data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "3 pairs, 3 valid, 0 problem(s); sizes 64x48 (3)" in out
    assert "class 2 crystal" in out and "in 3 image(s)  (crystal)" in out
    (root / "labels" / "f00.png").unlink()
    (root / "images" / "f01.png").write_bytes(b"junk")
    assert main(["check-data", str(root), "--json", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert any("f00.png: no label" in e for e in err)
    assert any("f01.png: unreadable image" in e for e in err)
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["n_valid"] == 1 and len(rep["issues"]) == 2
    assert main(["check-data", str(tmp_path / "missing")]) == 2


def test_unpaired_files_do_not_block_weights(tmp_path):
    root = make_ds(tmp_path / "d", n=3)
    (root / "labels" / "f02.png").unlink()
    ds = LabelledDataset(root)
    assert [i.kind for i in ds.issues] == ["missing_label"]
    cw = class_pixel_stats(ds)
    assert cw.n_images == 2 and cw.image_pixel_count.tolist() == [2 * 48 * 64] * 3
