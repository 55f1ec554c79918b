"""Evaluation: confusion matrix and metrics by hand, ONNX evaluation, truth comparison."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge.errors import UserError
from edge.modelmeta import load_meta
from tests.fixtures.tiny_model import build_tiny_model
from trainer.cli import main as cli
from trainer.data import write_classes
from trainer.engine import confusion_matrix, metrics_from_confusion
from trainer.evaluate import evaluate_model

NAMES = ["black_background", "light_background", "crystal"]


def test_confusion_matrix_and_metrics_by_hand():
    target = np.array([[0, 0, 1, 1, 2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1, 2, 1, 0, 2]])
    cm = confusion_matrix(pred, target, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 1], [0, 1, 1]])
    m = metrics_from_confusion(cm, NAMES)
    assert m["pixel_accuracy"] == pytest.approx(4 / 7)
    assert m["iou"]["black_background"] == pytest.approx(1 / 2)
    assert m["iou"]["light_background"] == pytest.approx(2 / 5)
    assert m["iou"]["crystal"] == pytest.approx(1 / 3)
    assert m["mean_iou"] == pytest.approx((1 / 2 + 2 / 5 + 1 / 3) / 3)
    assert m["class_accuracy"]["light_background"] == pytest.approx(2 / 3)
    assert m["pixels"] == 7
    # a class absent from truth and prediction has no IoU and is not averaged
    m2 = metrics_from_confusion(confusion_matrix(np.array([1, 2]), np.array([1, 2]), 3), NAMES)
    assert m2["iou"]["black_background"] is None and m2["mean_iou"] == 1.0
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        confusion_matrix(np.zeros(2), np.zeros(3), 3)


def _hand_dataset(root, n_good=2):
    """Frames the tiny threshold model segments by rows: 0-7 black, 8-23 light, 24-31 dark;
    the labels differ on purpose: rows 8-11 say crystal, rows 24-25 say light."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    img = np.zeros((32, 48, 3), np.uint8)
    img[8:24] = 200
    img[24:] = 70
    lab = np.zeros((32, 48), np.uint8)
    lab[8:24] = 1
    lab[24:] = 2
    lab[8:12] = 2
    lab[24:26] = 1
    for i in range(n_good):
        cv2.imwrite(str(root / "images" / f"f{i}.png"), img)
        cv2.imwrite(str(root / "labels" / f"f{i}.png"), lab)
    (root / "images" / "broken.png").write_bytes(b"not a png")
    cv2.imwrite(str(root / "labels" / "broken.png"), lab)
    write_classes(root / "classes.json", NAMES, crystal_class=2, px_size_um=1.45)
    return root


def test_evaluate_onnx_known_confusion_matrix(tmp_path, capsys):
    model = build_tiny_model(tmp_path / "m")
    data = _hand_dataset(tmp_path / "data")
    res = evaluate_model(model, data)
    one = np.array([[384, 0, 0], [0, 576, 96], [0, 192, 288]])
    np.testing.assert_array_equal(res.segmentation["confusion_matrix"], 2 * one)
    assert res.segmentation["pixel_accuracy"] == pytest.approx(1248 / 1536)
    assert res.segmentation["iou"]["light_background"] == pytest.approx(576 / 864)
    assert res.segmentation["iou"]["crystal"] == pytest.approx(288 / 576)
    assert res.n_frames == 2 and len(res.skipped) == 1 and "broken.png" in res.skipped[0]
    assert res.measurement is None  # no truth.json

    out = tmp_path / "eval.json"
    assert cli(["evaluate", "--model", str(model), "--data", str(data), "--json", str(out),
                "--update-meta"]) == 0
    assert "pixel accuracy 81.25 %" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["segmentation"]["pixel_accuracy"] == pytest.approx(0.8125)
    ev = load_meta(model).metrics["evaluation"]["data"]
    assert ev["pixel_accuracy"] == pytest.approx(0.8125) and ev["n_frames"] == 2


def test_evaluate_user_errors(tmp_path, capsys):
    model = build_tiny_model(tmp_path / "m")
    assert cli(["evaluate", "--model", str(tmp_path / "x.onnx"), "--data", str(tmp_path)]) == 2
    assert "x.onnx" in capsys.readouterr().err
    assert cli(["evaluate", "--model", str(tmp_path / "m.txt"), "--data", str(tmp_path)]) == 2
    assert "expected a .onnx" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labels").mkdir()
    write_classes(empty / "classes.json", NAMES)
    with pytest.raises(UserError, match="no frame could be evaluated"):
        evaluate_model(model, empty)
    assert cli(["evaluate", "--model", str(model), "--data", str(empty),
                "--px-size-um", "-1"]) == 2
    assert "--px-size-um" in capsys.readouterr().err
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    (other / "labels").mkdir()
    write_classes(other / "classes.json", ["bg", "crystal"], crystal_class=1)
    with pytest.raises(UserError, match="differ from the model"):
        evaluate_model(model, other)


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    from trainer.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("synth") / "set"
    generate_dataset(root, 3, SynthConfig(width=384, height=320, fraction_um=(90, 125)), seed=5)
    return root


def test_truth_comparison_through_the_edge_measurement(synth_set):
    from trainer.data import LabelledDataset
    from trainer.evaltruth import compare_with_truth, measure_label_maps
    from trainer.synth import weighted_quantile

    data = LabelledDataset(synth_set)
    labels = {it.stem: data.load_label(i) for i, it in enumerate(data.items)}
    truth = json.loads((synth_set / "truth.json").read_text())
    # the headline population: crystals whose centroid lies in the field and the frame
    d = np.array([c["diameter_um"] for f in truth["frames"] for c in f["crystals"]
                  if c["centred"]])
    d_all = np.array([c["diameter_um"] for f in truth["frames"] for c in f["crystals"]])
    assert 0 < d.size < d_all.size
    for f in truth["frames"]:
        fl = f["field"]
        for c in f["crystals"]:
            x, y = c["centroid_px"]
            inside = (x - fl["cx"]) ** 2 + (y - fl["cy"]) ** 2 <= fl["r"] ** 2
            assert c["centred"] == (inside and 0 <= x <= 383 and 0 <= y <= 319)
    kw = {"px_size_um": 1.45, "crystal_class": 2, "dark_class": data.dark_class}

    def compare(pred_maps):
        pred = measure_label_maps(pred_maps.values(), **kw)
        return compare_with_truth(pred, labels, synth_set / "truth.json", **kw)
    # perfect segmentation: prediction == label through the same pipeline
    r = compare(labels)
    assert r["n_truth_crystals"] == d.size and r["n_frames"] == 3
    assert r["x50_3_truth_um"] == pytest.approx(weighted_quantile(d, d ** 3, 0.5))
    assert r["x50_3_truth_all_um"] == pytest.approx(weighted_quantile(d_all, d_all ** 3, 0.5))
    assert r["x50_3_pred_vs_label"] == 0.0 and r["n_kept_pred"] == r["n_kept_label"] > 0
    assert abs(r["x50_3_label_rel_error"]) < 0.10
    # crystals eroded by 2 px: the measured x50,3 must shrink
    k = np.ones((5, 5), np.uint8)
    eroded = {s: np.where((m == 2) & (cv2.erode((m == 2).astype(np.uint8), k) == 0), 1, m
                          ).astype(np.uint8) for s, m in labels.items()}
    r2 = compare(eroded)
    assert r2["x50_3_pred_vs_label"] < -0.04
    assert r2["q3_max_abs_diff"] > r["q3_max_abs_diff"]
    # nothing segmented as crystal: no x50,3 and no Q3 difference, but no crash or NaN
    r3 = compare({s: np.where(m == 2, 1, m).astype(np.uint8) for s, m in labels.items()})
    assert r3["n_kept_pred"] == 0 and r3["x50_3_pred_um"] is None
    assert r3["x50_3_rel_error"] is None and r3["q3_max_abs_diff"] is None
    json.dumps(r3, allow_nan=False)
    # a frame the truth does not list is a user's mistake, named
    with pytest.raises(UserError, match="'nope' is not listed"):
        compare_with_truth(measure_label_maps([], **kw), {"nope": labels[data.items[0].stem]},
                           synth_set / "truth.json", **kw)


def test_evaluate_runs_the_measurement_when_truth_exists(synth_set, tmp_path):
    model = build_tiny_model(tmp_path / "m")
    res = evaluate_model(model, synth_set)
    m = res.measurement
    assert m is not None and m["n_frames"] == 3 and m["truth_population"] == "centred"
    assert m["x50_3_truth_um"] > 0 and m["n_kept_label"] > 0
    assert 0.5 < res.segmentation["pixel_accuracy"] <= 1.0
    assert "x50,3 predicted" in res.summary()


def test_update_meta_records_how_generated_data_was_made(synth_set, tmp_path):
    from trainer.evaluate import synth_recipe, update_model_metrics

    model = build_tiny_model(tmp_path / "m")
    update_model_metrics(model, evaluate_model(model, synth_set, measure=False))
    ev = load_meta(model).metrics["evaluation"][synth_set.name]
    truth = json.loads((synth_set / "truth.json").read_text())
    assert ev["synth"] == synth_recipe(synth_set)
    assert ev["synth"]["seed"] == truth["seed"] and ev["synth"]["n_frames"] == 3
    assert ev["synth"]["fraction_um"] == truth["config"]["fraction_um"]
    assert synth_recipe(tmp_path) is None  # not generated data


def test_evaluation_segments_and_measures_through_the_appliance_chain(synth_set, tmp_path):
    """The predicted side is FrameAnalyzer's quality gate, segmentation and post-processing
    (ROI detection, crowding, measurement) into one PsdAccumulator: the same numbers as
    analyze_many on the frames decoded by edge.vision.decode, in the same order."""
    from edge.backends import BackendConfig
    from edge.psd import PsdAccumulator
    from edge.vision.analyzer import FrameAnalyzer
    from edge.vision.decode import decode_file
    from trainer.evalmodel import EVAL_BACKEND

    model = build_tiny_model(tmp_path / "m")
    res = evaluate_model(model, synth_set)
    frames = sorted((synth_set / "images").iterdir())
    an = FrameAnalyzer(model, backend_config=BackendConfig(**EVAL_BACKEND), px_size_um=1.45)
    acc = PsdAccumulator()
    for r in an.analyze_many([(p.stem, decode_file(p).image) for p in frames]):
        if r.ok:
            acc.add(r.crystals, roi=r.roi.mask)
        else:
            acc.add_rejection(r.reject_reason)
    an.close()
    ref = acc.result()
    assert ref.n_crystals > 0
    assert res.psd["n_crystals"] == ref.n_crystals
    assert res.psd["x50_3_um"] == pytest.approx(ref.psd.x50_3_um, rel=1e-9)
    assert [b["Q3"] for b in res.psd["bins"]] == pytest.approx(ref.psd.Q3.tolist(), abs=0)
    assert res.measurement["x50_3_pred_um"] == res.psd["x50_3_um"]
    assert res.measurement["n_kept_pred"] == ref.n_crystals
    assert res.psd["frames_used"] + sum(res.psd["frames_rejected_by_reason"].values()) == 3


def test_evaluate_takes_the_domain_section_of_the_config(tmp_path):
    """`crystal-train evaluate --config` measures with the appliance's [domain] too."""
    from tests.fixtures.tiny_model import build_tiny_model
    from trainer.evalmodel import LoadedModel
    from trainer.evaluate import settings_from_config

    cfg = tmp_path / "site.toml"
    cfg.write_text("[domain]\nreject = false\nthreshold = 0.3\n")
    settings = settings_from_config(cfg)
    assert settings.domain.reject is False
    analyzer = LoadedModel(build_tiny_model(tmp_path)).analyzer(settings, 1.45)
    try:
        assert analyzer.domain.config.reject is False and analyzer.domain.config.threshold == 0.3
    finally:
        analyzer.close()


@pytest.fixture(scope="module")
def agglomerate_set(tmp_path_factory):
    from trainer.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("aggl") / "set"
    cfg = SynthConfig.from_presets("agglomerates", width=384, height=320, fraction_um=(90, 125))
    generate_dataset(root, 4, cfg, seed=7)
    return root


def test_the_label_side_splits_at_the_true_contacts_when_asked(agglomerate_set):
    from trainer.data import LabelledDataset
    from trainer.evaltruth import compare_with_truth, measure_label_maps

    data = LabelledDataset(agglomerate_set)
    labels = {it.stem: data.load_label(i) for i, it in enumerate(data.items)}
    contacts = {it.stem: data.load_contact(i).astype(np.float32)
                for i, it in enumerate(data.items)}
    assert sum(int(c.sum()) for c in contacts.values()) > 0  # touching crystals drawn
    kw = {"px_size_um": 1.45, "crystal_class": 2, "dark_class": data.dark_class}
    pred = measure_label_maps(labels.values(), **kw)
    truth = agglomerate_set / "truth.json"
    shape = compare_with_truth(pred, labels, truth, **kw)
    exact = compare_with_truth(pred, labels, truth, contact_maps=contacts, **kw)
    assert not shape["label_contacts"] and exact["label_contacts"]
    # split at the generator's contacts, the true masks yield more single crystals
    assert exact["n_kept_label"] > shape["n_kept_label"]
    via = measure_label_maps(labels.values(), contacts=contacts.values(), **kw)
    assert exact["n_kept_label"] == via.n_crystals
    # the floor needs every frame's contacts: with one missing, the shape rules decide
    first = next(iter(contacts))
    partial = compare_with_truth(pred, labels, truth, contact_maps={first: contacts[first]},
                                 **kw)
    assert not partial["label_contacts"]
    assert partial["n_kept_label"] == shape["n_kept_label"]


def test_evaluate_gives_a_contact_model_the_true_contact_floor(agglomerate_set, tmp_path):
    from tests.edge.measure.contact_model import build_contact_model

    with_channel = evaluate_model(build_contact_model(tmp_path / "c"), agglomerate_set)
    without = evaluate_model(build_tiny_model(tmp_path / "t"), agglomerate_set)
    assert with_channel.measurement["label_contacts"] is True
    assert without.measurement["label_contacts"] is False
    assert with_channel.measurement["n_kept_label"] != without.measurement["n_kept_label"]
