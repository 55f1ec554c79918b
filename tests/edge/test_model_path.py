"""The default model is found from any working directory, a checkout and a release."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from edge.modelpath import DEFAULT_MODEL, locate_model, shipped_roots
from edge.service.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_relative_to_base_first(tmp_path):
    (tmp_path / "cfg" / "models").mkdir(parents=True)
    own = tmp_path / "cfg" / DEFAULT_MODEL
    own.write_bytes(b"x")
    release = tmp_path / "release" / DEFAULT_MODEL
    release.parent.mkdir(parents=True)
    release.write_bytes(b"y")
    assert locate_model(DEFAULT_MODEL, base=tmp_path / "cfg",
                        roots=[tmp_path / "release"]) == own


def test_release_layout_found(tmp_path):
    # make deploy: <release>/venv is sys.prefix, the model lies in <release>/models
    release = tmp_path / "release"
    (release / "models").mkdir(parents=True)
    (release / DEFAULT_MODEL).write_bytes(b"x")
    found = locate_model(DEFAULT_MODEL, base=tmp_path / "etc", roots=[release])
    assert found == release / DEFAULT_MODEL


def test_missing_names_the_configured_place(tmp_path):
    assert locate_model("models/none.onnx", base=tmp_path, roots=[]) == \
        tmp_path / "models/none.onnx"
    assert locate_model(tmp_path / "abs.onnx", roots=[REPO]) == tmp_path / "abs.onnx"


def test_shipped_roots_include_the_source_tree():
    assert REPO in shipped_roots()


def test_config_elsewhere_uses_the_shipped_model(tmp_path):
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text('[source]\ntype = "synthetic"\n')
    cfg = load_config(cfg_file)
    assert Path(cfg.model.path).resolve() == (REPO / DEFAULT_MODEL).resolve()


def test_analyze_from_another_directory(tmp_path):
    frame = np.full((96, 128), 200, np.uint8)
    cv2.circle(frame, (64, 48), 12, 40, -1)
    cv2.imwrite(str(tmp_path / "f.png"), frame)
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "analyze", "f.png", "--px-size-um", "2.9",
         "--json", "out/r.json"],
        check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "model file not found" not in proc.stderr
    assert (tmp_path / "out" / "r.json").is_file()
