"""``scripts/finetune_contact.sh``: the default model's last step, run small."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edge.modelmeta import load_meta
from tests.trainer.h5data import train_tiny_run
from trainer.export import export_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"FRAMES_DIV": "15", "SIZE": "256x192", "CROP": "64", "BACKBONE": "resnet18",
         "NICE": "0", "WORKERS": "0", "JOBS": "3"}


def _script(name: str, **env: str) -> None:
    full = dict(os.environ, BIN=str(Path(sys.executable).parent), **SMALL, **env)
    res = subprocess.run(["bash", str(ROOT / "scripts" / name)], cwd=ROOT, env=full,
                         capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stderr[-3000:]


def _frames(var: str, div: int, block: int = 1) -> int:
    """Frames the recipe's ``block``-th ``var`` sets hold at ``FRAMES_DIV=div`` (at least
    one each); blocks 2 to 4 of SETS are the later rounds', block 5 what round 5 adds."""
    text = (ROOT / "scripts" / "finetune_contact.sh").read_text()
    shared = (ROOT / "scripts" / "datasets.sh").read_text().split('CONTACT_SETS="', 1)[1]
    text = text.replace("$CONTACT_SETS", shared.split('"', 1)[0])
    specs = [s for s in text.split(f'{var}="')[block].split('"', 1)[0].split()
             if not s.startswith("$")]  # round 5 adds to round 4's "$SETS"
    assert len(specs) == {("SETS", 1): 29, ("SETS", 2): 20, ("SETS", 3): 22, ("SETS", 4): 23,
                          ("SETS", 5): 6, ("VAL", 1): 6}[var, block]
    return sum(max(1, int(spec.split(":")[2]) // div) for spec in specs)


def test_finetune_contact_script_smoke(tmp_path):
    _, run = train_tiny_run(tmp_path / "tiny", steps=2)
    tiny = Path(export_checkpoint(run / "best.pt", tmp_path / "tiny.onnx", fp16=True,
                                  parity_inputs=None).onnx_path)
    base = tmp_path / "base" / "contact.onnx"  # a model with the contact channel
    _script("contact_head.sh", WORK=str(tmp_path / "c"), OUT=str(base), BASE=str(tiny),
            STEPS="1", DOMAIN_FRAMES="0")
    out = tmp_path / "model" / "blend.onnx"
    work = tmp_path / "w"
    _script("finetune_contact.sh", WORK=str(work), OUT=str(out), BASE=str(base), STEPS="2",
            MAX_MINUTES="30", ALPHA="0.75", DOMAIN_FRAMES="1")
    cfg = json.loads((work / "run" / "config.json").read_text())
    assert cfg["weights"] == str(base) and cfg["total_steps"] == 2 and cfg["max_minutes"] == 30
    assert not cfg["contact_only"] and cfg["contact_weight"] == 1
    assert cfg["train_data"]["n_frames"] == _frames("SETS", 15)  # every set of the recipe
    assert cfg["val_data"]["n_frames"] == _frames("VAL", 15)
    assert (work / "data" / "train" / "contacts").is_dir()
    meta = load_meta(out)
    assert meta.output.aux_channels == ["contact"] and meta.architecture["head_kernel"] == 3
    blend = meta.training["blend"]
    assert blend["alpha"] == 0.75 and blend["models"][0]["sha256"] == load_meta(base).sha256
    assert {"val_a", "val_b", "test_a", "test_b"} <= set(meta.metrics["evaluation"])
    for name in ("fine-tune", "blend"):
        card = json.loads((work / f"domain_card_{name}.json").read_text())
        assert len(card["domains"]) == 17
    # the second round from the first one's blend: its own sets, 0.5 and 5 um/px frames
    # resampled to the sets' pixel size beside them
    work2, out2 = tmp_path / "w2", tmp_path / "model2" / "blend.onnx"
    _script("finetune_contact.sh", WORK=str(work2), OUT=str(out2), BASE=str(out), STEPS="1",
            ALPHA="0.75", DOMAIN_FRAMES="0", ROUND="2")
    cfg2 = json.loads((work2 / "run" / "config.json").read_text())
    assert cfg2["weights"] == str(out) and cfg2["seed"] == 37
    resampled = 24 // 15 + 30 // 15  # fine_raw and coarse_raw at FRAMES_DIV=15
    assert cfg2["train_data"]["n_frames"] == _frames("SETS", 15, block=2) + resampled
    assert json.loads((work2 / "data" / "fine" / "classes.json").read_text())[
        "px_size_um"] == 1.45
    assert load_meta(out2).training["blend"]["models"][0]["sha256"] == load_meta(out).sha256
    # the third round from the second: its own sets and seed, 84 frames of other optics
    work3, out3 = tmp_path / "w3", tmp_path / "model3" / "blend.onnx"
    _script("finetune_contact.sh", WORK=str(work3), OUT=str(out3), BASE=str(out2), STEPS="1",
            ALPHA="0.75", DOMAIN_FRAMES="0", ROUND="3")
    cfg3 = json.loads((work3 / "run" / "config.json").read_text())
    assert cfg3["weights"] == str(out2) and cfg3["seed"] == 43
    resampled = 24 // 15 + 60 // 15
    assert cfg3["train_data"]["n_frames"] == _frames("SETS", 15, block=3) + resampled
    # the fourth from the third: 0.5 um/px frames also at their own pixel size, while the
    # merged set keeps the sets' 1.45 um/px (the model's pixel size comes from it)
    work4, out4 = tmp_path / "w4", tmp_path / "model4" / "blend.onnx"
    _script("finetune_contact.sh", WORK=str(work4), OUT=str(out4), BASE=str(out3), STEPS="1",
            ALPHA="0.75", DOMAIN_FRAMES="0", ROUND="4")
    cfg4 = json.loads((work4 / "run" / "config.json").read_text())
    assert cfg4["weights"] == str(out3) and cfg4["seed"] == 53
    other = 30 // 15 * 2 + 40 // 15  # fine_raw and fine, coarse
    assert cfg4["train_data"]["n_frames"] == _frames("SETS", 15, block=4) + other
    assert cfg4["train_data"]["px_size_um"] == 1.45
    names = os.listdir(work4 / "data" / "train" / "images")
    assert sum(n.startswith("fine_raw_") for n in names) == 30 // 15
    assert load_meta(out4).px_size_um == load_meta(out3).px_size_um
    # the fifth, as on a GPU machine: round 4's sets (rendered above, reused) and six more,
    # trained with TRAIN_ONLY=1 (no export), then exported and blended with TRAINED=1
    out5 = tmp_path / "model5" / "blend.onnx"
    _script("finetune_contact.sh", WORK=str(work4), OUT=str(out5), BASE=str(out4), STEPS="1",
            DOMAIN_FRAMES="0", ROUND="5", TRAIN_ONLY="1")
    cfg5 = json.loads((work4 / "run" / "config.json").read_text())
    assert cfg5["weights"] == str(out4) and cfg5["seed"] == 59
    assert cfg5["train_data"]["n_frames"] == (_frames("SETS", 15, block=4)
                                              + _frames("SETS", 15, block=5) + other)
    assert not out5.exists()
    (work4 / "run" / "config.json").unlink()  # TRAINED=1 trains nothing: it stays absent
    _script("finetune_contact.sh", WORK=str(work4), OUT=str(out5), BASE=str(out4),
            DOMAIN_FRAMES="0", ROUND="5", TRAINED="1")
    assert not (work4 / "run" / "config.json").exists()
    assert load_meta(out5).training["blend"]["models"][0]["sha256"] == load_meta(out4).sha256
    full = dict(os.environ, BIN=str(Path(sys.executable).parent), **SMALL,
                WORK=str(tmp_path / "w6"), TRAINED="1")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "finetune_contact.sh")], cwd=ROOT,
                         env=full, capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 2 and "no " in res.stderr and "checkpoint.pt" in res.stderr
