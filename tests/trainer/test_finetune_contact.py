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


def _frames(var: str, div: int) -> int:
    """Frames the recipe's ``var`` sets hold at ``FRAMES_DIV=div`` (at least one each)."""
    text = (ROOT / "scripts" / "finetune_contact.sh").read_text()
    shared = (ROOT / "scripts" / "datasets.sh").read_text().split('CONTACT_SETS="', 1)[1]
    text = text.replace("$CONTACT_SETS", shared.split('"', 1)[0])
    specs = text.split(f'{var}="', 1)[1].split('"', 1)[0].split()
    assert len(specs) == {"SETS": 29, "VAL": 6}[var]
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
