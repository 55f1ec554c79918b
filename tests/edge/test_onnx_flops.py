"""scripts/onnx_flops.py on hand-made ONNX graphs whose MACs are counted by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("onnx_flops", ROOT / "scripts" / "onnx_flops.py")
onnx_flops = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(onnx_flops)


def _init(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def _conv_net(path: Path) -> Path:
    """Conv 3->8 (3x3, pad 1) -> grouped Conv 8->8 (3x3, group 2, stride 2) -> Relu ->
    ConvTranspose 8->4 (2x2, stride 2); input (N, 3, H, W) with symbolic N, H, W."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w2"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[2, 2], group=2),
        helper.make_node("Relu", ["b"], ["c"]),
        helper.make_node("ConvTranspose", ["c", "w3"], ["y"], kernel_shape=[2, 2],
                         strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes, "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_init("w1", (8, 3, 3, 3)), _init("w2", (8, 4, 3, 3)), _init("w3", (8, 4, 2, 2))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _expected_conv_macs(n: int, h: int, w: int) -> int:
    conv1 = n * 8 * h * w * 3 * 9
    conv2 = n * 8 * (h // 2) * (w // 2) * 4 * 9
    deconv = n * 8 * (h // 2) * (w // 2) * 4 * 4
    return conv1 + conv2 + deconv


def test_conv_and_conv_transpose_counts(tmp_path):
    model = onnx.load(_conv_net(tmp_path / "m.onnx"))
    macs = onnx_flops.count_macs(model, [2, 3, 16, 24])
    assert macs["Conv"] == 2 * 8 * 16 * 24 * 27 + 2 * 8 * 8 * 12 * 36
    assert macs["ConvTranspose"] == 2 * 8 * 8 * 12 * 16
    assert sum(macs.values()) == _expected_conv_macs(2, 16, 24)


def test_matmul_and_gemm_counts(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "b"], ["m"]),           # (2,4,5) @ (5,6)
             helper.make_node("Reshape", ["m", "s"], ["r"]),          # (8, 6)
             helper.make_node("Gemm", ["r", "c"], ["y"], transB=1)]   # (8,6) @ (7,6)^T
    graph = helper.make_graph(
        nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_init("b", (5, 6)), _init("c", (7, 6)),
         numpy_helper.from_array(np.array([8, 6], np.int64), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    macs = onnx_flops.count_macs(model, [2, 4, 5])
    assert macs["MatMul"] == 2 * 4 * 6 * 5
    assert macs["Gemm"] == 8 * 7 * 6


def test_cli_default_sizes_from_metadata(tmp_path, capsys):
    path = _conv_net(tmp_path / "m.onnx")
    (tmp_path / "m.json").write_text(json.dumps({
        "px_size_um": 2.9, "frame_px_size_um": 1.45, "input": {"size_multiple": 16}}))
    assert onnx_flops.default_sizes(path) == [(512, 384), (1024, 768)]
    assert onnx_flops.main([str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {(r["width"], r["height"]): r for r in doc["sizes"]}
    assert rows[(512, 384)]["macs"] == _expected_conv_macs(1, 384, 512)
    assert rows[(1024, 768)]["gflops"] == round(2 * _expected_conv_macs(1, 768, 1024) / 1e9, 3)
