"""`make train-default` (scripts/train_default.sh) end to end, shrunk by its smoke knobs:
generated sets, staged training with a data switch, FP16 export, evaluation recorded in
the metadata with each set's generator recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_train_default_script_smoke(tmp_path):
    out = tmp_path / "model" / "smoke.onnx"
    env = dict(os.environ, BIN=str(Path(sys.executable).parent), WORK=str(tmp_path / "w"),
               OUT=str(out), FRAMES_DIV="80", SIZE="256x192", BACKBONE="resnet18", CROP="64",
               STAGES="1:1:2:1e-4:0 1:1:2:1e-4:0::broad:last 1:2:2:1e-4:0::train8:last:1",
               NICE="0", WORKERS="0", CONTACT_WEIGHT="1", DOMAIN_FRAMES="1", JOBS="3")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "train_default.sh")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads(out.with_suffix(".json").read_text())
    evals = meta["metrics"]["evaluation"]
    assert {"val_a", "val_b", "test_a", "test_b", "val"} <= set(evals)
    assert evals["test_a"]["synth"]["seed"] == 401
    assert evals["test_b"]["synth"]["fraction_um"] == [125.0, 180.0]
    s1, s2, s3 = (json.loads((tmp_path / "w" / f"stage{i}" / "config.json").read_text())
                  for i in (1, 2, 3))
    assert s2["weights"].endswith("stage1/best.pt")
    assert s3["weights"].endswith("stage2/checkpoint.pt") and s3["total_steps"] == 2
    # train8 = train2 + train_e + train_f + train_g; broad = train8 + 15 preset sets (one
    # frame each here); the last stage's final checkpoint is exported
    assert s1["train_data"]["n_frames"] == 2 and s3["train_data"]["n_frames"] == 7
    assert s2["train_data"]["n_frames"] == 7 + 15
    assert s3["lovasz_weight"] == 1.0 and "Lovasz-softmax" in meta["training"]["loss"]
    # a schedule with broad data writes the per-domain table of the exported model
    card = json.loads((tmp_path / "w" / "domain_card.json").read_text())
    assert card["model"] == str(out) and len(card["domains"]) == 17
    needles = next((tmp_path / "w" / "data").glob("p_needles/truth.json"))
    assert json.loads(needles.read_text())["config"]["habit"] == "needle"
    assert meta["precision"] == "fp16" and meta["architecture"]["encoder"] == "resnet18"
    # CONTACT_WEIGHT trains the contact channel on the merged sets' contact labels
    assert meta["output"]["aux_channels"] == ["contact"] and s2["contact_weight"] == 1.0


@pytest.mark.parametrize("stages, word", [("1:1:2:1e-4:0::train:newest", "best or last"),
                                          ("1:1:2:1e-4:0::train9", "train8 or broad")])
def test_train_default_rejects_a_bad_schedule_before_any_work(tmp_path, stages, word):
    env = dict(os.environ, BIN=str(Path(sys.executable).parent), WORK=str(tmp_path / "w"),
               STAGES=stages)
    res = subprocess.run(["bash", str(ROOT / "scripts" / "train_default.sh")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2 and word in res.stderr and "STAGES" in res.stderr
    assert not (tmp_path / "w").exists()


def test_a_data_set_that_fails_to_generate_stops_the_run_naming_it(tmp_path):
    env = dict(os.environ, BIN=str(Path(sys.executable).parent), WORK=str(tmp_path / "w"),
               SIZE="256xbig", FRAMES_DIV="80", JOBS="4", NICE="0")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "train_default.sh")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 1
    line = res.stderr.strip().splitlines()[-1]
    assert "generating" in line and "train_a failed" in line and "--size" in line
    assert not (tmp_path / "w" / "stage1").exists()  # nothing trained on missing data
