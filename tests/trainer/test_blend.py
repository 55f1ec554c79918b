"""``crystal-train blend``: a model and its fine-tune averaged weight by weight (WiSE-FT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge.modelmeta import load_meta
from tests.fixtures.tiny_model import build_tiny_model
from tests.trainer.h5data import frames_nchw, make_dataset, train_tiny_run
from trainer.cli import main as train_main
from trainer.export import export_checkpoint


def _out(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_blend_is_the_weighted_mean_of_the_weights(tmp_path, capsys):
    # the fixture's logits are linear in its weights: the blend's logits are the mean
    a = build_tiny_model(tmp_path / "a", dark=0.10, bright=0.50)
    b = build_tiny_model(tmp_path / "b", dark=0.20, bright=0.70, gain=25.0)
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 32, 48)).astype(np.float32)
    ya, yb = _out(a, x), _out(b, x)
    for alpha in (0.0, 0.3, 1.0):
        out = tmp_path / f"blend{alpha}.onnx"
        assert train_main(["blend", "--model", str(a), "--with", str(b), "--alpha", str(alpha),
                           "--out", str(out)]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["alpha"] == alpha and printed["tensors"] == 3
        np.testing.assert_allclose(_out(out, x), (1 - alpha) * ya + alpha * yb,
                                   rtol=1e-5, atol=1e-4)
    meta = load_meta(tmp_path / "blend0.3.onnx")  # sha256 of the new file verified
    blend = meta.training["blend"]
    assert [m["sha256"] for m in blend["models"]] == [load_meta(a).sha256, load_meta(b).sha256]
    assert blend["alpha"] == 0.3 and meta.metrics == {}


@pytest.fixture(scope="module")
def model_and_fine_tune(tmp_path_factory):
    """A trained ResNet-18 exported, and its fine-tune from that file, exported."""
    root = tmp_path_factory.mktemp("blend")
    _, run = train_tiny_run(root / "a", steps=3)
    a = export_checkpoint(run / "best.pt", root / "a.onnx", parity_inputs=None).onnx_path
    data = make_dataset(root / "plant", 4, seed=9)
    assert train_main(["train", "--data", str(data), "--out", str(root / "ft"),
                       "--backbone", "resnet18", "--weights", str(a), "--epochs", "1",
                       "--steps-per-epoch", "3", "--batch-size", "2", "--image-size", "64",
                       "--input-scale", "0.5", "--workers", "0", "--no-progress",
                       "--augment", "none", "--lr", "1e-2"]) == 0
    b = export_checkpoint(root / "ft" / "checkpoint.pt", root / "b.onnx",
                          parity_inputs=None).onnx_path
    return Path(a), Path(b)


def test_a_fine_tune_of_an_exported_model_blends(model_and_fine_tune, tmp_path):
    a, b = model_and_fine_tune
    data = make_dataset(tmp_path / "frames", 2, h=128, w=192, seed=5)
    x = frames_nchw(3, 64, 96)
    ya, yb = _out(a, x), _out(b, x)
    assert np.abs(ya - yb).max() > 1e-2  # the fine-tune moved the weights
    for alpha, want in ((0.0, ya), (1.0, yb)):
        out = tmp_path / f"e{alpha}.onnx"
        assert train_main(["blend", "--model", str(a), "--with", str(b), "--alpha", str(alpha),
                           "--out", str(out)]) == 0
        np.testing.assert_allclose(_out(out, x), want, atol=1e-4)
    mid = tmp_path / "mid.onnx"
    assert train_main(["blend", "--model", str(a), "--with", str(b), "--out", str(mid),
                       "--parity-data", str(data)]) == 0
    # the file computes the blend of the two networks as PyTorch does in float32
    par = load_meta(mid).metrics["parity_frames"]
    assert par["max_abs_diff"] < 1e-4 and par["argmax_agreement"] == 1.0
    ym = _out(mid, x)
    assert np.abs(ym - ya).max() > 1e-3 and np.abs(ym - yb).max() > 1e-3
    adj = [load_meta(p).output.logit_adjustment for p in (a, b, mid)]
    np.testing.assert_allclose(adj[2], 0.5 * (np.array(adj[0]) + np.array(adj[1])), atol=1e-6)


def test_mistakes_are_one_line(model_and_fine_tune, tmp_path, capsys):
    a, b = model_and_fine_tune
    tiny = build_tiny_model(tmp_path / "t")
    cases = [
        (["--model", str(a), "--with", str(b), "--alpha", "1.5"], "--alpha"),
        (["--model", str(a), "--with", str(tiny)], "architecture"),
        (["--model", str(a), "--with", str(b), "--out", str(a)], "--out"),
        (["--model", str(a), "--with", str(tmp_path / "none.onnx")], "none.onnx"),
    ]
    for args, word in cases:
        out = [] if "--out" in args else ["--out", str(tmp_path / "x.onnx")]
        assert train_main(["blend", *args, *out]) == 2
        err = capsys.readouterr().err
        assert word in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "x.onnx").exists()


def test_int8_files_are_refused(model_and_fine_tune, tmp_path, capsys):
    a, b = model_and_fine_tune
    meta = json.loads(a.with_suffix(".json").read_text())
    q = tmp_path / "q.onnx"
    q.write_bytes(a.read_bytes())
    meta.update(onnx_file="q.onnx", precision="int8",
                quantization={"method": "static", "source": "a.onnx"})
    q.with_suffix(".json").write_text(json.dumps(meta))
    assert train_main(["blend", "--model", str(q), "--with", str(b),
                       "--out", str(tmp_path / "x.onnx")]) == 2
    assert "INT8" in capsys.readouterr().err


def test_parity_for_a_network_that_cannot_be_read_back_leaves_no_file(tmp_path, capsys):
    a = build_tiny_model(tmp_path / "a", dark=0.10)
    b = build_tiny_model(tmp_path / "b", dark=0.20)
    out = tmp_path / "blend.onnx"
    assert train_main(["blend", "--model", str(a), "--with", str(b), "--out", str(out),
                       "--parity-data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--parity-data" in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists() and not out.with_suffix(".json").exists()
