"""scripts/domain_card.py: one generated test set per domain, measured through the chain."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.fixtures.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("domain_card", ROOT / "scripts" / "domain_card.py")
domain_card = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(domain_card)


def test_domain_rows_and_the_before_after_table(tmp_path, capsys):
    model = build_tiny_model(tmp_path / "m")  # thresholds brightness: a real ONNX model
    out = tmp_path / "card.json"
    names = "needles (aspect 3-10),5 um/px"
    assert domain_card.main(["--model", str(model), "--frames", "2", "--only", names,
                             "--work", str(tmp_path / "sets"), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    rows = doc["domains"]
    assert list(rows) == names.split(",")
    for r in rows.values():
        assert r["frames"] == 2 and 0 <= r["iou_crystal"] <= 1 and r["n_truth"] > 0
        assert r["n_kept_label"] > 0  # the true masks measured by the same chain
    coarse = next((tmp_path / "sets").glob("*coarse_pixels"))  # the domain's own optics
    assert json.loads((coarse / "classes.json").read_text())["px_size_um"] == 5.0
    # the sets are rendered once and reused
    stamp = sorted(p.stat().st_mtime_ns for p in (tmp_path / "sets").rglob("*.png"))
    domain_card.main(["--model", str(model), "--frames", "2", "--only", names,
                      "--work", str(tmp_path / "sets"), "--out", str(out)])
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "sets").rglob("*.png")) == stamp
    capsys.readouterr()
    assert domain_card.main(["--compare", str(out), str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 4 and table[2].startswith("| needles (aspect 3-10) | ")
    assert " -> " in table[2]
    # two runs pooled: the domains both measured, twice the frames
    assert domain_card.main(["--pool", str(out), str(out)]) == 0
    pooled = capsys.readouterr().out.splitlines()
    assert len(pooled) == 4 and pooled[2].startswith("| needles (aspect 3-10) | 4 | ")
    # with known errors: x50,3 -1 % and +3 % at 1 % each pool to +1 %, heterogeneity p 0.005
    runs = []
    for i, (x50, floor) in enumerate(((-0.01, 0.0), (0.03, 0.01))):
        row = {**rows["5 um/px"], "x50_3_rel_error": x50, "x50_3_label_rel_error": floor,
               "intervals": {k: {"lo": 0, "hi": 0, "se": 0.01} for k in
                             ("iou_crystal", "x50_3_rel_error", "x50_3_label_rel_error")}}
        empty = {**row, "x50_3_rel_error": None, "q3_ks": None}  # nothing kept in run 1
        runs.append(tmp_path / f"run{i}.json")
        runs[-1].write_text(json.dumps({"domains": {"5 um/px": row,
                                                    "twins": empty if i else row}}))
    assert domain_card.main(["--pool", *map(str, runs)]) == 0
    line, twins = capsys.readouterr().out.splitlines()[2:4]
    assert "| +1.0 (-2.9 .. +4.9) % | -1.0 / +3.0 % | 0.00 | +0.5 % |" in line, line
    assert twins.startswith("| twins | ") and "| - % | -1.0 / - % | - |" in twins, twins
    bare = tmp_path / "bare.json"  # rows without the bootstrap's errors cannot be weighed
    bare.write_text(json.dumps({"domains": {k: {**r, "intervals": {}} for k, r in rows.items()}}))
    with pytest.raises(SystemExit) as exc:
        domain_card.main(["--pool", str(out), str(bare)])
    assert exc.value.code == 2 and "--pool" in capsys.readouterr().err
    # a configured scale that makes no sense for one domain: one line naming it, exit 1,
    # the other domains still measured
    cfg = tmp_path / "edge.toml"
    cfg.write_text("[model]\ninference_scale = 0.4\n")
    assert domain_card.main(["--model", str(model), "--frames", "2", "--only", names,
                             "--work", str(tmp_path / "sets"), "--out", str(out),
                             "--config", str(cfg)]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("5 um/px: ")]
    assert len(err) == 1 and "inference scale" in err[0]
    assert list(json.loads(out.read_text())["domains"]) == ["needles (aspect 3-10)"]


def test_a_whole_run_is_recorded_in_the_metadata_and_a_partial_one_is_not(tmp_path, capsys):
    import pytest

    from edge.modelmeta import load_meta

    model = build_tiny_model(tmp_path / "m")
    out = tmp_path / "card.json"
    with pytest.raises(SystemExit) as exc:  # --only: not the card
        domain_card.main(["--model", str(model), "--frames", "1", "--only", "5 um/px",
                          "--work", str(tmp_path / "sets"), "--out", str(out), "--update-meta"])
    assert exc.value.code == 2 and "every domain" in capsys.readouterr().err.splitlines()[-1]
    assert "domains" not in load_meta(model).metrics
    doc = json.loads(out.read_text())
    row = doc["domains"]["5 um/px"]
    doc["domains"] = {name: dict(row, iou_crystal=i / 100)
                      for i, name in enumerate(domain_card.DOMAINS)}
    whole = tmp_path / "whole.json"
    whole.write_text(json.dumps(doc))
    assert domain_card.main(["--model", str(model), "--record", str(whole)]) == 0
    card = load_meta(model).metrics["domains"]
    assert card["frames_per_domain"] == 1 and card["seed_base"] == domain_card.SEED0
    assert card["rows"]["twins"]["iou_crystal"] == list(domain_card.DOMAINS).index("twins") / 100
    assert "contact_share_max 0.35" in card["settings"] and "majority" in card["labels"]
    other = tmp_path / "other.json"  # a run of another file
    other.write_text(json.dumps(dict(doc, model="elsewhere/x.onnx")))
    with pytest.raises(SystemExit):
        domain_card.main(["--model", str(model), "--record", str(other)])
    assert "measured elsewhere/x.onnx, not " in capsys.readouterr().err.splitlines()[-1]
