"""Multiply-accumulates and FLOPs of an ONNX network at fixed input sizes; JSON on stdout.

    .venv/bin/python scripts/onnx_flops.py [MODEL.onnx] [--size 512x384 --size 1024x768]
        [--batch 1]

The graph's first input gets the shape ``(batch, C, H, W)`` of each ``--size WxH``; ONNX
shape inference with data propagation (``onnx.shape_inference.infer_shapes(...,
data_prop=True)``) gives every tensor's shape, and the script counts the MACs of the
layers that carry the arithmetic:

* ``Conv``: ``MACs = N * C_out * H_out * W_out * (C_in / group) * prod(kernel)``;
* ``ConvTranspose``: ``MACs = N * C_in * H_in * W_in * (C_out / group) * prod(kernel)``
  (each input pixel scatters one kernel);
* ``MatMul``: ``MACs = prod(batch dims of the output) * M * K * N``;
* ``Gemm``: ``MACs = M * K * N``.

FLOPs = 2 x MACs (one multiply and one add per MAC), the convention of NVIDIA's and
MLPerf's "operations" (TOPS). Biases, activations, pooling, resizing and additions are
left out: in a ResNet-50 DeepLabv3+ they are well under 1 % of the total.

Without ``--size`` the sizes are the model metadata's training frames at the default
inference scale (see :mod:`edge.vision.scale`) plus the full frame.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import onnx
from onnx import shape_inference

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "crystal-seg.onnx"
COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _dims(vi: onnx.ValueInfoProto) -> list[int] | None:
    """The static shape of a value, or None when a dimension is unknown."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    return None if any(d <= 0 for d in dims) else dims


def with_input_shape(model: onnx.ModelProto, shape: list[int]) -> onnx.ModelProto:
    """A copy of ``model`` whose first input has the fixed ``shape``, shapes inferred."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ValueError(f"input has {len(dims)} dimensions, shape {shape} has {len(shape)}")
    for d, v in zip(dims, shape, strict=True):
        d.Clear()
        d.dim_value = int(v)
    return shape_inference.infer_shapes(m, data_prop=True)


def count_macs(model: onnx.ModelProto, shape: list[int]) -> dict[str, int]:
    """MACs per counted operator type for the first input at ``shape``.

    Raises
    ------
    ValueError
        A counted layer whose shapes inference could not resolve (the count would be low).
    """
    m = with_input_shape(model, shape)
    shapes: dict[str, list[int] | None] = {}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        shapes[vi.name] = _dims(vi)
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = dict.fromkeys(COUNTED, 0)
    for node in m.graph.node:
        if node.op_type not in COUNTED:
            continue
        ins = [shapes.get(n) for n in node.input[:2]]
        out = shapes.get(node.output[0])
        if out is None or any(s is None for s in ins):
            raise ValueError(f"{node.op_type} {node.name or node.output[0]}: shape unknown "
                             f"after shape inference")
        macs[node.op_type] += _node_macs(node, ins[0], ins[1], out)  # type: ignore[arg-type]
    return macs


def _node_macs(node: onnx.NodeProto, x: list[int], w: list[int], y: list[int]) -> int:
    """MACs of one counted node from its input, weight (second input) and output shapes."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        # w: (C_out, C_in / group, k...), y: (N, C_out, spatial...)
        return y[0] * y[1] * math.prod(y[2:]) * w[1] * math.prod(w[2:])
    if node.op_type == "ConvTranspose":
        # w: (C_in, C_out / group, k...), x: (N, C_in, spatial...)
        return x[0] * x[1] * math.prod(x[2:]) * w[1] * math.prod(w[2:])
    if node.op_type == "MatMul":
        k = x[-1]
        return math.prod(y) * k
    # Gemm: A (M, K) or its transpose, output (M, N)
    k = x[0] if attrs.get("transA", 0) else x[1]
    return y[0] * y[1] * k


def parse_size(text: str) -> tuple[int, int]:
    """``(W, H)`` of ``WxH``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return w, h


def default_sizes(model_path: Path) -> list[tuple[int, int]]:
    """Network inputs of the metadata's frames (1024x768 when unknown) at the default
    inference scale (frame px / model px) and at full resolution, padded to the model's
    size multiple."""
    meta_path = model_path.with_suffix(".json")
    frame_wh, scale, mult = (1024, 768), 1.0, 16
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        mult = int(meta.get("input", {}).get("size_multiple", 16))
        frame_px, model_px = meta.get("frame_px_size_um"), meta.get("px_size_um")
        if frame_px and model_px:
            scale = float(frame_px) / float(model_px)

    def pad(v: float) -> int:
        return int(math.ceil(round(v) / mult) * mult)

    sizes = [(pad(frame_wh[0] * scale), pad(frame_wh[1] * scale)), (pad(frame_wh[0]),
                                                                    pad(frame_wh[1]))]
    return list(dict.fromkeys(sizes))


def report(model_path: Path, sizes: list[tuple[int, int]], batch: int = 1) -> dict:
    """``{"model", "sizes": [{"width", "height", "macs", "gmacs", "gflops", "by_op"}]}``."""
    model = onnx.load(str(model_path))
    channels = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value or 3
    rows = []
    for w, h in sizes:
        by_op = count_macs(model, [batch, channels, h, w])
        total = sum(by_op.values())
        rows.append({"width": w, "height": h, "batch": batch, "macs": total,
                     "gmacs": round(total / 1e9, 3), "gflops": round(2 * total / 1e9, 3),
                     "by_op": {k: v for k, v in by_op.items() if v}})
    params = sum(math.prod(t.dims) for t in model.graph.initializer)
    return {"model": str(model_path), "parameters": params, "sizes": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--size", type=parse_size, action="append", metavar="WxH",
                    help="network input size (repeatable; default: the metadata's frames at "
                         "the default inference scale and at full resolution)")
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args(argv)
    if not args.model.is_file():
        print(f"onnx_flops: {args.model}: no such file", file=sys.stderr)
        return 2
    sizes = args.size or default_sizes(args.model)
    try:
        doc = report(args.model, sizes, args.batch)
    except ValueError as exc:
        print(f"onnx_flops: {args.model}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
