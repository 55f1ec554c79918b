"""The labelling round trip: label images <-> COCO (CVAT, Label Studio) <-> a dataset."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from edge.cli import main as edge_main
from tests.fixtures.tiny_model import build_tiny_model
from trainer.cli import main as train_main
from trainer.coco import rle_decode, rle_encode
from trainer.data import LabelledDataset
from trainer.synth import SynthConfig, generate_dataset


def _masks():
    a = np.zeros((6, 8), bool)
    a[1:4, 2:6] = True
    a[5, 7] = True
    b = np.zeros((300, 400), np.uint8)
    cv2.circle(b, (200, 150), 90, 1, -1)
    cv2.rectangle(b, (10, 10), (60, 40), 1, -1)
    return a, b.astype(bool)


def test_rle_matches_cocos_reference_strings():
    # the strings pycocotools' mask.encode gives for these masks
    a, b = _masks()
    assert rle_encode(a)["counts"] == "=3300000:N"
    assert rle_encode(b)["counts"].startswith("Rn2o0]8000")
    assert rle_encode(b)["counts"].endswith("J6J8F:Fb0VOcio0")
    assert (rle_decode({"size": [6, 8], "counts": "=3300000:N"}) == a).all()


def test_rle_round_trip_and_uncompressed_counts():
    rng = np.random.default_rng(0)
    for _ in range(100):
        h, w = rng.integers(1, 50, 2)
        m = rng.random((h, w)) < rng.random()
        assert (rle_decode(rle_encode(m)) == m).all()
    # CVAT writes masks with a counts list
    m = rle_decode({"size": [2, 3], "counts": [1, 2, 3]})
    assert m.tolist() == [[False, True, False], [True, False, False]]
    with pytest.raises(ValueError, match="sum"):
        rle_decode({"size": [2, 3], "counts": [1, 2]})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco") / "data"
    generate_dataset(root, 3, SynthConfig(width=320, height=240), seed=5)
    return root


def _labels(folder):
    return {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            for p in sorted((folder / "labels").glob("*.png"))}


def test_rle_round_trip_is_exact(tmp_path, dataset):
    coco = tmp_path / "coco.json"
    assert train_main(["labels-to-coco", "--data", str(dataset), "--out", str(coco),
                       "--rle"]) == 0
    doc = json.loads(coco.read_text())
    assert {c["name"] for c in doc["categories"]} == {"crystal", "black_background"}
    assert train_main(["coco-to-labels", str(coco), "--images", str(dataset / "images"),
                       "--out", str(tmp_path / "back")]) == 0
    before, after = _labels(dataset), _labels(tmp_path / "back")
    assert before.keys() == after.keys() and len(before) == 3
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    assert len(LabelledDataset(tmp_path / "back").items) == 3


def test_polygon_round_trip_keeps_the_crystals(tmp_path, dataset):
    coco = tmp_path / "poly.json"
    assert train_main(["labels-to-coco", "--data", str(dataset), "--out", str(coco)]) == 0
    assert train_main(["coco-to-labels", str(coco), "--images", str(dataset / "images"),
                       "--out", str(tmp_path / "back")]) == 0
    before, after = _labels(dataset), _labels(tmp_path / "back")
    for k in before:
        a, b = before[k] == 2, after[k] == 2
        assert (a & b).sum() / max((a | b).sum(), 1) > 0.9


def test_prelabel_correct_convert_flow(tmp_path, dataset, caplog):
    """analyze --masks-out -> COCO -> a correction as a tool makes it -> a dataset."""
    model = build_tiny_model(tmp_path / "m")
    pre = tmp_path / "pre"
    assert edge_main(["analyze", str(dataset / "images"), "--model", str(model),
                      "--px-size-um", "1.45", "--masks-out", str(pre)]) == 0
    coco = tmp_path / "pre.json"
    assert train_main(["labels-to-coco", "--labels", str(pre), "--images",
                       str(dataset / "images"), "--out", str(coco)]) == 0
    doc = json.loads(coco.read_text())
    first = doc["images"][0]
    crystal = next(c["id"] for c in doc["categories"] if c["name"] == "crystal")
    # the annotator deletes the pre-labels of the first frame and draws one crystal;
    # the tool exports with its own folder prefix in file_name
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != first["id"]]
    doc["annotations"].append({"id": 99999, "image_id": first["id"], "category_id": crystal,
                               "segmentation": [[20, 20, 60, 20, 60, 50, 20, 50]],
                               "iscrowd": 0, "area": 1200, "bbox": [20, 20, 40, 30]})
    first["file_name"] = "images/default/" + first["file_name"]
    doc["images"].append({"id": 77, "file_name": "gone.png", "width": 320, "height": 240})
    coco.write_text(json.dumps(doc))
    with caplog.at_level(logging.ERROR, logger="trainer.coco"):
        rc = train_main(["coco-to-labels", str(coco), "--images", str(dataset / "images"),
                         "--out", str(tmp_path / "fixed"), "--px-size-um", "1.45"])
    assert rc == 1  # one frame was not found: said once, the rest written
    assert [r.getMessage() for r in caplog.records if "gone.png" in r.getMessage()]
    labels = _labels(tmp_path / "fixed")
    assert len(labels) == 3
    lab = labels[first["file_name"].rsplit("/", 1)[-1].rsplit(".", 1)[0]]
    assert (lab == 2).sum() == pytest.approx(40 * 30, rel=0.1)
    assert (lab[25:45, 25:55] == 2).all()
    assert LabelledDataset(tmp_path / "fixed").items


def test_unknown_category_is_one_line(tmp_path, dataset, capsys):
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "bubble"}]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    assert train_main(["coco-to-labels", str(tmp_path / "c.json"), "--images",
                       str(dataset / "images"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'bubble'" in err and err.count("\n") == 1
