"""ONNX export: TensorRT-safe ops, dynamic axes, parity with PyTorch, FP16, metadata."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edge.errors import UserError
from edge.modelmeta import load_meta
from tests.trainer.h5data import frames_nchw, make_dataset, train_tiny_run
from trainer.cli import main as cli
from trainer.export import (
    INPUT_NAME,
    OPSET,
    TRT10_OPS,
    export_checkpoint,
    load_checkpoint,
    onnx_ops,
    ort_session,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("exp"), steps=4)[1]


@pytest.fixture(scope="module")
def frames():
    return frames_nchw(11, 96, 128, n_crystals=6)


@pytest.fixture(scope="module")
def fp32(run, tmp_path_factory, frames):
    out = tmp_path_factory.mktemp("m32") / "crystal-seg.onnx"
    return export_checkpoint(run / "best.pt", out, parity_inputs=frames)


def test_fp32_parity_ops_and_dynamic_axes(fp32, run):
    assert fp32.parity["max_abs_diff"] < 1e-4
    assert fp32.parity["argmax_agreement"] >= 0.999
    assert set(fp32.ops) <= TRT10_OPS, sorted(set(fp32.ops) - TRT10_OPS)
    m = onnx.load(fp32.onnx_path)
    assert m.opset_import[0].version == OPSET
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    sess = ort_session(fp32.onnx_path)
    for shape in ((1, 3, 48, 80), (3, 3, 64, 32)):
        out = sess.run(None, {INPUT_NAME: np.zeros(shape, np.float32)})[0]
        assert out.shape == (shape[0], 3, *shape[2:])
    # ImageNet normalisation is in the graph: a Sub and a Div on the input
    first = [n.op_type for n in m.graph.node[:4]]
    assert "Sub" in first and "Div" in first


def test_metadata_complete_and_loadable(fp32, run):
    meta = load_meta(fp32.onnx_path)  # validates schema and sha256
    assert meta.sha256 == fp32.sha256 and meta.onnx_file == "crystal-seg.onnx"
    assert [c.name for c in meta.classes] == ["black_background", "light_background", "crystal"]
    assert meta.crystal_class_id == 2
    assert meta.px_size_um == pytest.approx(1.45 / 0.5)  # trained at half resolution
    assert meta.input.normalization_in_graph and meta.input.size_multiple == 16
    assert meta.precision == "fp32" and meta.opset == OPSET
    assert meta.architecture["name"] == "DeepLabV3Plus"
    assert meta.architecture["encoder"] == "resnet18"
    assert meta.training["input_scale"] == 0.5 and meta.training["steps"] == 4
    assert meta.training["train_data"]["n_frames"] >= 3
    assert len(meta.training["class_weights"]) == 3
    assert 0 <= meta.metrics["val_pixel_accuracy"] <= 1
    assert meta.trainer_version and meta.created.endswith("Z")


def test_fp16_is_half_size_and_agrees_with_fp32(run, fp32, frames, tmp_path):
    res = export_checkpoint(run / "best.pt", tmp_path / "m16.onnx", fp16=True,
                            parity_inputs=frames)
    assert res.size_bytes < 0.55 * fp32.size_bytes
    assert load_meta(res.onnx_path).precision == "fp16"
    assert set(res.ops) <= TRT10_OPS | {"Cast"}
    s16, s32 = ort_session(res.onnx_path), ort_session(fp32.onnx_path)
    a = s16.run(None, {INPUT_NAME: frames})[0]
    b = s32.run(None, {INPUT_NAME: frames})[0]
    assert a.dtype == np.float32  # keep_io_types
    agree = float((a.argmax(1) == b.argmax(1)).mean())
    print(f"fp16 vs fp32 argmax agreement on generated frames: {agree:.5f}")
    assert agree >= 0.995
    assert res.parity["argmax_agreement"] >= 0.995


def test_export_cli_and_errors(run, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    frames = make_dataset(tmp_path / "pd", 2, h=64, w=96, seed=8)
    assert cli(["export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(out),
                "--parity-data", str(frames)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["precision"] == "fp32" and out.is_file() and out.with_suffix(".json").is_file()
    pf = load_meta(out).metrics["parity_frames"]
    assert pf["input_shape"] == [2, 3, 32, 48]  # 96x64 frames at the trained half scale
    assert pf["max_abs_diff"] < 1e-4 and pf["argmax_agreement"] >= 0.999
    assert cli(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"bad\.pt"):
        load_checkpoint(bad)
    with pytest.raises(UserError, match=r"\.onnx"):
        export_checkpoint(run / "best.pt", tmp_path / "x.bin")


def test_onnx_ops_lists_graph_ops(fp32):
    ops = onnx_ops(fp32.onnx_path)
    assert {"Conv", "Resize", "Concat"} <= set(ops)


def test_evaluate_checkpoint_and_its_onnx_agree(run, fp32, tmp_path):
    from trainer.evaluate import evaluate_model

    data = make_dataset(tmp_path / "val", 2, h=64, w=96, seed=9)
    a = evaluate_model(run / "best.pt", data)
    b = evaluate_model(fp32.onnx_path, data)
    assert a.input_scale == b.input_scale == pytest.approx(0.5)
    np.testing.assert_array_equal(a.segmentation["confusion_matrix"],
                                  b.segmentation["confusion_matrix"])


def test_prior_correction_is_folded_into_the_graph(run, fp32, frames, tmp_path):
    """The exported logits are the raw network's plus -log(class weight) per class."""
    import torch

    from trainer.model import prior_correction

    np.testing.assert_allclose(prior_correction([1.0, 0.4763, 3.2361]),
                               [0.0, 0.74172, -1.17436], atol=1e-4)
    # a class absent from the training data (weight 0) keeps its logit as it is
    np.testing.assert_allclose(prior_correction([1.0, 0.0, 2.0]), [0.0, 0.0, -np.log(2.0)],
                               atol=1e-6)
    for bad in ([1.0, -1.0, 2.0], [1.0, np.nan, 1.0], [0.0, 0.0, 0.0]):
        with pytest.raises(ValueError, match=">= 0 and finite"):
            prior_correction(bad)
    model, ckpt = load_checkpoint(run / "best.pt")
    raw_model, _ = load_checkpoint(run / "best.pt", prior_correction=False)
    w = np.asarray(ckpt["class_weights"], np.float64)
    assert raw_model.logit_bias is None and "logit_bias" not in model.state_dict()
    with torch.no_grad():
        adj = model(torch.from_numpy(frames)).numpy()
        raw = raw_model(torch.from_numpy(frames)).numpy()
    np.testing.assert_allclose(adj - raw, np.broadcast_to(
        -np.log(w)[None, :, None, None], raw.shape), atol=1e-5)
    # the ONNX carries it, the metadata says so; without it the raw logits come out
    meta = load_meta(fp32.onnx_path)
    np.testing.assert_allclose(meta.output.logit_adjustment, -np.log(w), atol=1e-5)
    out = ort_session(fp32.onnx_path).run(None, {INPUT_NAME: frames})[0]
    np.testing.assert_allclose(out, adj, atol=1e-4)
    plain = export_checkpoint(run / "best.pt", tmp_path / "plain.onnx", parity_inputs=frames,
                              prior_correction=False)
    assert load_meta(plain.onnx_path).output.logit_adjustment is None
    out_plain = ort_session(plain.onnx_path).run(None, {INPUT_NAME: frames})[0]
    np.testing.assert_allclose(out_plain, raw, atol=1e-4)
