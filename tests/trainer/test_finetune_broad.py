"""``scripts/finetune_broad.sh``: the default model's recipe, run small."""

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


def test_finetune_broad_script_smoke(tmp_path):
    _, run = train_tiny_run(tmp_path / "base", steps=2)
    base = Path(export_checkpoint(run / "best.pt", tmp_path / "base.onnx", fp16=True,
                                  parity_inputs=None).onnx_path)
    out = tmp_path / "model" / "blend.onnx"
    work = tmp_path / "w"
    env = dict(os.environ, BIN=str(Path(sys.executable).parent), WORK=str(work), OUT=str(out),
               BASE=str(base), STEPS1="1", STEPS2="2", ALPHA="0.4", FRAMES_DIV="80",
               SIZE="256x192", CROP="64", BACKBONE="resnet18", NICE="0", WORKERS="0",
               DOMAIN_FRAMES="1", JOBS="3")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "finetune_broad.sh")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    s1, s2 = (json.loads((work / f"stage{i}" / "config.json").read_text()) for i in (1, 2))
    assert s1["weights"] == str(base) and s2["weights"].endswith("stage1/checkpoint.pt")
    assert s1["total_steps"] == 1 and s2["total_steps"] == 2
    # stage 1: 17 preset sets; stage 2: + 6 more and the two resampled pixel-size sets
    assert s1["train_data"]["n_frames"] == 17 and s2["train_data"]["n_frames"] == 17 + 6 + 2
    coarse = json.loads((work / "data" / "coarse" / "classes.json").read_text())
    assert coarse["px_size_um"] == 1.45
    meta = load_meta(out)
    blend = meta.training["blend"]
    assert blend["alpha"] == 0.4 and blend["models"][0]["sha256"] == load_meta(base).sha256
    assert {"val_a", "val_b", "test_a", "test_b"} <= set(meta.metrics["evaluation"])
    assert meta.metrics["parity_frames"]["argmax_agreement"] >= 0.99
    for name in ("base", "fine-tune", "blend"):
        card = json.loads((work / f"domain_card_{name}.json").read_text())
        assert len(card["domains"]) == 17
