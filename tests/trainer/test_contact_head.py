"""``scripts/contact_head.sh``: the default model's contact step, run small."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.modelmeta import load_meta
from tests.trainer.h5data import train_tiny_run
from trainer.export import export_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_contact_head_script_smoke(tmp_path):
    _, run = train_tiny_run(tmp_path / "base", steps=2)
    base = Path(export_checkpoint(run / "best.pt", tmp_path / "base.onnx", fp16=True,
                                  parity_inputs=None).onnx_path)
    out = tmp_path / "model" / "contact.onnx"
    work = tmp_path / "w"
    env = dict(os.environ, BIN=str(Path(sys.executable).parent), WORK=str(work), OUT=str(out),
               BASE=str(base), STEPS="3", FRAMES_DIV="15", SIZE="256x192", CROP="64",
               BACKBONE="resnet18", NICE="0", WORKERS="0", DOMAIN_FRAMES="1", JOBS="3")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "contact_head.sh")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads((work / "run" / "config.json").read_text())
    assert cfg["contact_only"] and cfg["weights"] == str(base) and cfg["total_steps"] == 3
    assert cfg["architecture"]["head_kernel"] == 3
    assert (work / "data" / "train" / "contacts").is_dir()
    meta = load_meta(out)
    assert meta.output.aux_channels == ["contact"] and meta.architecture["head_kernel"] == 3
    assert meta.training["class_output"]["sha256"] == load_meta(base).sha256
    assert {"val_a", "val_b", "test_a", "test_b"} <= set(meta.metrics["evaluation"])
    x = np.random.default_rng(0).random((1, 3, 96, 128), dtype=np.float32)
    np.testing.assert_allclose(_logits(out, x)[:, :3], _logits(base, x), atol=2e-2)
    card = json.loads((work / "domain_card.json").read_text())
    assert len(card["domains"]) == 17
