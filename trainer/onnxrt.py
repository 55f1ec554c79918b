"""ONNX Runtime in the trainer: a CPU session for an exported file, and the check that it
computes what the PyTorch network computes.

Both the exporter (:mod:`trainer.export`) and the importer of exported weights
(:mod:`trainer.onnx_weights`) compare ONNX Runtime with PyTorch; the comparison lives
here, below both, so neither imports the other. Top-level imports stay light (numpy):
onnxruntime and torch load inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError

#: names of the exported graph's input and output tensors
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def ort_session(path: str | Path):
    """An ONNX Runtime CPU session for ``path`` (:class:`UserError` if it will not load)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: ONNX Runtime cannot load it: {first}") from None


def parity(model, onnx_path: str | Path, *, inputs: np.ndarray | None = None,
           seed: int = 0, hw: tuple[int, int] = (128, 160)) -> dict[str, Any]:
    """Compare ONNX Runtime with PyTorch on the same input.

    Returns max/mean absolute logit difference and the fraction of pixels with the same
    argmax. ``inputs`` (NCHW float32 in [0, 1]) default to seeded uniform noise.
    """
    import torch

    if inputs is None:
        inputs = np.random.default_rng(seed).random((2, 3, *hw), dtype=np.float32)
    sess = ort_session(onnx_path)
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: inputs.astype(np.float32)})[0]
    with torch.no_grad():
        ref = model.eval().cpu()(torch.from_numpy(inputs.astype(np.float32))).numpy()
    if got.shape != ref.shape:
        raise AssertionError(f"ONNX output {got.shape} != PyTorch {ref.shape}")
    d = np.abs(got.astype(np.float64) - ref)
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
            "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
            "input_shape": list(inputs.shape)}
