"""The out-of-domain score and the ``out_of_domain`` rejection (``[domain]``, edge/vision/ood).

Units: the ramp, the score and its detail, the config's validation, the uncertainty of
logits, the ledger between segmentation and post-processing. With the tiny model: the
switch (reject on / score only / off) and the service's one INFO line per rejected frame.
With the bundled model (slow): natural images, noise, blank, inverted and over-exposed
frames rejected, generated frames of every illumination variant not.
"""

from __future__ import annotations

import gc
import importlib.util
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from edge.cli import main as edge_main
from edge.errors import UserError
from edge.service.config import parse_config
from edge.vision.analyzer import FrameAnalyzer
from edge.vision.ood import (
    DomainConfig,
    UncertaintyLedger,
    ramp,
    score_values,
    uncertain_fraction,
)
from tests.faults.conftest import (  # noqa: F401 (fixtures)
    ROOT,
    jsonl_batches,
    service_factory,
    tiny_model,
    wait_until,
    workdir,
    write_config,
    write_frames,
)
from tests.fixtures.tiny_model import synth_frame

_spec = importlib.util.spec_from_file_location("calibrate_ood",
                                               ROOT / "scripts" / "calibrate_ood.py")
calibrate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calibrate)


def test_ramp_runs_both_ways() -> None:
    assert ramp(0.05, (0.1, 0.2)) == 1.0 and ramp(0.25, (0.1, 0.2)) == 0.0
    assert ramp(0.15, (0.1, 0.2)) == pytest.approx(0.5)
    assert ramp(0.95, (0.9, 0.7)) == 1.0 and ramp(0.8, (0.9, 0.7)) == pytest.approx(0.5)
    assert ramp(0.6, (0.9, 0.7)) == 0.0


def test_score_is_the_weakest_component_and_the_detail_names_it() -> None:
    cfg = DomainConfig()
    good = {"uncertain_fraction": 0.01, "field_iou": 0.98, "surround": 0.05, "chroma": 0.05,
            "crystal_fraction": 0.15}
    res = score_values(good, cfg)
    assert res.score == 1.0 and not res.reject and res.detail == ""
    bad = dict(good, chroma=0.6, field_iou=0.5)
    res = score_values(bad, cfg)
    assert res.score == 0.0 and res.reject
    assert res.detail.startswith("domain score 0.00 < 0.5: ")
    assert "chroma 0.6 (ok <= 0.2)" in res.detail and "field_iou 0.5 (ok >= 0.9)" in res.detail
    assert res.metrics()["domain_chroma"] == 0.6
    assert not score_values(bad, DomainConfig(reject=False)).reject
    assert score_values({}, cfg).score == 1.0  # nothing measured: nothing against the frame


def test_domain_section_in_the_config_file(tmp_path: Path) -> None:
    cfg = parse_config({"domain": {"reject": False, "threshold": 0.3,
                                   "chroma": [0.25, 0.4]}})
    assert cfg.domain.reject is False and cfg.domain.threshold == 0.3
    assert cfg.domain.chroma == (0.25, 0.4)
    assert parse_config({}).domain == DomainConfig()
    with pytest.raises(UserError, match=r"domain\.chroma"):
        parse_config({"domain": {"chroma": [0.3, 0.3]}})
    with pytest.raises(UserError, match=r"domain\.rejekt"):
        parse_config({"domain": {"rejekt": False}})
    for name, field in DomainConfig.model_fields.items():
        assert field.description, name


def test_uncertain_fraction_counts_hesitant_pixels_in_the_field() -> None:
    logits = np.zeros((3, 10, 10), np.float32)
    logits[0, :, :5] = 10.0  # left half: confidently black background (not the field)
    logits[1, :, 5:] = 5.0  # right half: light background, sure ...
    logits[2, :2, 5:] = 4.5  # ... except two rows where crystal is nearly as likely
    assert uncertain_fraction(logits, black_class=0, margin_logit=1.1) == pytest.approx(0.2)
    assert uncertain_fraction(logits, black_class=0, margin_logit=0.1) == 0.0
    assert uncertain_fraction(np.zeros((3, 4, 4), np.float32), black_class=0,
                              margin_logit=1.1) == 1.0
    black = np.zeros((3, 4, 4), np.float32)
    black[0] = 9.0
    assert uncertain_fraction(black, black_class=0, margin_logit=1.1) == 0.0
    # a blurred edge: hesitant pixels beside a class change count only without boundary_px
    edge = np.zeros((3, 10, 10), np.float32)
    edge[1, :, :5], edge[2, :, 5:] = 6.0, 6.0
    edge[2, :, 4], edge[1, :, 5] = 5.5, 5.5
    assert uncertain_fraction(edge, black_class=0, margin_logit=1.1) == pytest.approx(0.2)
    assert uncertain_fraction(edge, black_class=0, margin_logit=1.1, boundary_px=1) == 0.0


def test_field_iou_leaves_out_a_band_along_the_field_outline() -> None:
    from edge.vision.ood import _field_iou
    from edge.vision.roi import Roi

    roi = np.zeros((100, 100), bool)
    roi[10:90, 10:90] = True
    model_field = np.zeros_like(roi)
    model_field[13:87, 13:87] = True  # the model's field 3 px inside the ROI's outline
    image = np.zeros((100, 100), np.uint8)
    kw = {"detect": False}
    assert _field_iou(image, Roi(roi, "component"), model_field, **kw) == pytest.approx(
        74 ** 2 / 80 ** 2)
    assert _field_iou(image, Roi(roi, "component"), model_field, tolerance_px=3, **kw) == 1.0
    assert _field_iou(image, None, model_field, **kw) == 0.0


def test_ledger_gives_each_map_its_own_value_once() -> None:
    ledger = UncertaintyLedger()
    a, b = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    ledger.record(a, 0.1)
    ledger.record(b, 0.2)
    assert ledger.take(a.copy()) is None  # an equal map is not the segmented one
    assert ledger.take(b) == 0.2 and ledger.take(b) is None
    del a
    gc.collect()
    assert ledger._by_id == {}  # a dropped frame leaves nothing behind


def _coffee(h: int = 240, w: int = 320) -> np.ndarray:
    return calibrate.fit_frame(skimage.data.coffee(), w, h)


def test_switch_rejects_scores_only_or_stays_off(tiny_model: Path) -> None:  # noqa: F811
    rng = np.random.default_rng(3)
    crystals = [(rng.uniform(40, 280), rng.uniform(40, 200), rng.uniform(5, 15))
                for _ in range(8)]
    frames = [("cell.png", synth_frame(240, 320, crystals=crystals)),
              ("coffee.png", _coffee())]
    runs = {}
    for key, cfg in {"on": DomainConfig(), "score": DomainConfig(reject=False),
                     "off": DomainConfig(enabled=False)}.items():
        with FrameAnalyzer(tiny_model, px_size_um=1.45, domain_config=cfg) as an:
            runs[key] = an.analyze_many(frames)
    cell, coffee = runs["on"]
    assert cell.ok and cell.domain_score == 1.0
    assert coffee.reject_reason == "out_of_domain" and coffee.domain_score < 0.5
    assert coffee.reject_detail.startswith("domain score") and "chroma" in coffee.reject_detail
    assert coffee.quality["domain_score"] == coffee.domain_score
    assert "domain_uncertain_fraction" in coffee.quality  # from the logits, via the ledger
    scored = runs["score"][1]
    assert scored.reject_reason != "out_of_domain" and scored.domain_score == coffee.domain_score
    assert runs["off"][1].reject_reason != "out_of_domain"
    assert runs["off"][0].domain_score is None and "domain_score" not in runs["off"][0].quality


def test_service_rejects_an_out_of_domain_frame_with_one_info_line(
        workdir: Path, tiny_model: Path, service_factory) -> None:  # noqa: F811
    write_config(workdir / "config.toml", model=tiny_model, batch_frames=3,
                 extra='\n[logging]\nformat = "kv"\n')
    write_frames(workdir / "in", ["g0.png", "g1.png"])
    assert cv2.imwrite(str(workdir / "in" / "coffee.png"), _coffee())
    svc = service_factory(args=("--log-level", "INFO"))
    out = workdir / "out.jsonl"
    wait_until(lambda: jsonl_batches(out), 30, "the first batch")
    assert svc.stop() == 0
    payload = jsonl_batches(out)[0]["payload"]
    by_reason = {k: v for k, v in payload["frames"]["rejected_by_reason"].items() if v}
    assert by_reason == {"out_of_domain": 1}, payload["frames"]
    # the mean domain score of every scored frame, the rejected one included: the same
    # number analyze gives for the same three files
    report = workdir / "analyze.json"
    assert edge_main(["analyze", str(workdir / "in"), "--model", str(tiny_model),
                      "--px-size-um", "1.45", "--json", str(report), "--bootstrap", "0"]) == 0
    expected = json.loads(report.read_text())["confidence"]
    assert expected is not None and expected < 1.0
    assert payload["confidence"] == pytest.approx(expected, abs=1e-9)
    rejected = [ln for ln in svc.log().splitlines() if "frame rejected" in ln]
    assert len(rejected) == 1, rejected
    assert "coffee.png: out_of_domain (domain score" in rejected[0]
    assert "level=INFO" in rejected[0]


@pytest.mark.slow
def test_bundled_model_rejects_what_is_not_a_flow_cell_frame() -> None:
    """>= 95 % of natural images, noise, blank, inverted and over-exposed frames rejected
    (as out_of_domain or by the quality gate); <= 2 % of generated frames of every
    illumination variant, both fractions, rejected as out_of_domain (512x384 frames)."""
    with FrameAnalyzer(calibrate.MODEL, px_size_um=1.45) as an14, \
            FrameAnalyzer(calibrate.MODEL, px_size_um=2.9) as an29:
        by_px = {1.45: an14, 2.9: an29}
        ind = [by_px[px].analyze(name, frame)
               for name, frame, px in calibrate.in_domain(2, 512, 384, seed=7)]
        ood = {}
        for set_name, name, frame in calibrate.out_of_domain(4, 512, 384):
            ood.setdefault(set_name, []).append(an14.analyze(name, frame))
    false_alarms = [r.name for r in ind if r.reject_reason == "out_of_domain"]
    print(f"in-domain: {len(ind)} frames, out_of_domain {len(false_alarms)}, all reasons "
          f"{Counter(r.reject_reason for r in ind)}")
    assert len(ind) == 24 and all(r.domain_score is not None for r in ind if r.ok)
    assert len(false_alarms) <= 0.02 * len(ind), false_alarms
    n_ood = sum(len(rs) for rs in ood.values())
    missed = [(k, r.name, r.domain_score) for k, rs in ood.items() for r in rs if r.ok]
    for k, rs in ood.items():
        print(f"{k}: {len(rs)} frames, {Counter(r.reject_reason for r in rs)}")
    assert len(missed) <= 0.05 * n_ood, missed
    natural = Counter(r.reject_reason for r in ood["natural"])
    assert natural["out_of_domain"] >= 0.6 * len(ood["natural"]), natural
    for k, rs in ood.items():
        assert sum(not r.ok for r in rs) >= 0.9 * len(rs), (k, [r.name for r in rs if r.ok])


def test_the_score_reads_the_plain_output_when_frames_are_mirror_averaged(tmp_path):
    """``flip_average`` changes the class maps but not the logits the uncertainty is read
    from: the limits are calibrated on the plain output."""
    from tests.fixtures.tiny_model import build_tiny_model, synth_frame

    model = build_tiny_model(tmp_path, px_size_um=1.45, shift_px=1)
    frame = synth_frame(240, 320, crystals=[(100, 120, 15), (220, 100, 20)], seed=3)
    seen = {}
    for flip in (False, True):
        analyzer = FrameAnalyzer(model, px_size_um=1.45, inference_scale=1.0,
                                 flip_average=flip)
        recorded = []
        original = analyzer.domain.record
        analyzer.domain.record = lambda maps, logits, _o=original, _r=recorded: (
            _r.append(logits.copy()), _o(maps, logits))
        seen[flip] = (analyzer.segment([frame])[0], recorded[0])
        analyzer.close()
    assert (seen[True][0] != seen[False][0]).sum() > 50  # the maps differ
    np.testing.assert_array_equal(seen[True][1], seen[False][1])
