"""`crystal-train evaluate --model models/crystal-seg.onnx --data <generated set>` reproduces
the numbers of the model card: each set recorded in the metadata is generated again from
its recipe and evaluated; metadata and models/README.md must agree with the result."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.modelmeta import load_meta
from trainer.cli import main as train_cli
from trainer.evaluate import evaluate_model

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "crystal-seg.onnx"
SETS = ["val_a", "val_b", "test_a", "test_b"]


def test_card_lists_generated_sets_of_both_fractions():
    evals = load_meta(MODEL).metrics["evaluation"]
    fractions = {tuple(evals[k]["synth"]["fraction_um"]) for k in SETS}
    assert fractions == {(90.0, 125.0), (125.0, 180.0)}


@pytest.mark.slow
@pytest.mark.parametrize("key", SETS)
def test_evaluate_reproduces_the_model_card(tmp_path, key):
    ev = load_meta(MODEL).metrics["evaluation"][key]
    r = ev["synth"]
    assert r["size_mode"] == "sieve"
    data = tmp_path / key
    frac = f"{r['fraction_um'][0]:g}-{r['fraction_um'][1]:g}"
    assert train_cli(["synth", "--out", str(data), "--fraction", frac, "--n", str(r["n_frames"]),
                      "--seed", str(r["seed"]), "--size", f"{r['width']}x{r['height']}",
                      "--px-size-um", str(r["px_size_um"])]) == 0
    res = evaluate_model(MODEL, data)
    seg, m = res.segmentation, res.measurement
    assert seg["pixel_accuracy"] == pytest.approx(ev["pixel_accuracy"], abs=2e-4)
    assert seg["iou"]["crystal"] == pytest.approx(ev["iou"]["crystal"], abs=1e-3)
    assert m["x50_3_rel_error"] == pytest.approx(ev["measurement"]["x50_3_rel_error"], abs=2e-3)
    # the card quotes these numbers as they are printed
    card = (ROOT / "models" / "README.md").read_text()
    for text in (f"{100 * ev['pixel_accuracy']:.2f} %", f"{ev['iou']['crystal']:.3f}",
                 f"{100 * ev['measurement']['x50_3_rel_error']:+.1f} %"):
        assert text in card, f"models/README.md does not quote {text} ({key})"


def _domain_card():
    import importlib.util

    spec = importlib.util.spec_from_file_location("domain_card",
                                                  ROOT / "scripts" / "domain_card.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.parametrize("name", ["needles (aspect 3-10)", "0.5 um/px"])
def test_the_per_domain_table_is_reproduced(tmp_path, name):
    card = load_meta(MODEL).metrics["domains"]
    dc = _domain_card()
    assert set(card["rows"]) == set(dc.DOMAINS)  # every domain of the script is on the card
    row = card["rows"][name]
    data = dc.make_set(tmp_path, list(dc.DOMAINS).index(name), name, row["frames"])
    got = dc.measure(MODEL, data)
    assert got["iou_crystal"] == pytest.approx(row["iou_crystal"], abs=1e-3)
    assert got["x50_3_rel_error"] == pytest.approx(row["x50_3_rel_error"], abs=2e-3)
    assert got["kept_over_label"] == pytest.approx(row["kept_over_label"], abs=0.01)
    # the intervals over frames: the same resamples of the same frames
    for key in ("iou_crystal", "x50_3_rel_error"):
        assert got["intervals"][key]["lo"] == pytest.approx(row["intervals"][key]["lo"], abs=2e-3)
        assert got["intervals"][key]["hi"] == pytest.approx(row["intervals"][key]["hi"], abs=2e-3)
    line = next(ln for ln in (ROOT / "models" / "README.md").read_text().splitlines()
                if ln.startswith(f"| {name} | {row['iou_crystal']:.3f} ("))
    assert line == dc.markdown({name: row}).splitlines()[-1]


@pytest.mark.parametrize("model", [MODEL, MODEL.with_name("crystal-seg.int8.onnx")])
def test_the_card_measured_each_pixel_size_at_the_scale_auto_picks(model):
    """Every row's network pixel size is the one ``inference_scale = "auto"`` gives today
    for the domain's frames, so a change of the rule cannot leave the card behind."""
    from edge.vision.scale import resolve_scale

    meta = load_meta(model)
    dc = _domain_card()
    for name, row in meta.metrics["domains"]["rows"].items():
        frame_px = _domain_frame_px(dc, name)
        got = resolve_scale(frame_px, "auto", meta, model_name=model.name).px_size_um
        assert row["px_size_um"] == pytest.approx(got, rel=1e-3), name


def _domain_frame_px(dc, name: str) -> float:
    from trainer.synth import SynthConfig

    presets, extra = dc.DOMAINS[name]
    return SynthConfig.from_presets(*presets, **{**dc.SIZE, **extra}).px_size_um
