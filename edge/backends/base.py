"""The backend interface: a loaded model that turns NCHW float32 frames into logits.

A backend is constructed with the model path, its :class:`~edge.modelmeta.ModelMeta`,
the :class:`~edge.backends.config.BackendConfig` and the network input size; ``load()``
prepares it (session / engine, a warm-up inference), ``infer`` runs a batch, ``close``
releases it. Backends are listed explicitly in :mod:`edge.backends.registry`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edge.errors import UserError
from edge.modelmeta import ModelMeta


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (library missing, no GPU, ...); the message says why.

    ``auto`` selection catches it and tries the next backend; a backend named in the
    configuration turns it into a :class:`~edge.errors.UserError`.
    """


@runtime_checkable
class Backend(Protocol):
    """A segmentation model ready to run."""

    #: registry name, e.g. ``"onnxruntime"``
    name: str
    #: ``"fp32"`` or ``"fp16"``: the arithmetic the backend runs
    precision: str
    #: True when any H, W (multiple of the model's size_multiple) is accepted after load();
    #: False when the input size is fixed at load time (TensorRT engine profile)
    dynamic_shapes: bool
    #: (height, width) of the network input the backend was prepared for
    input_hw: tuple[int, int]
    #: the file the backend runs and its metadata: the configured model, or its INT8
    #: sibling (``[backend] precision = "int8"``); reports name this one
    model_path: Path
    meta: ModelMeta

    def load(self) -> None:
        """Create the session / engine and run the warm-up inference(s)."""
        ...

    def infer(self, nchw: np.ndarray) -> np.ndarray:
        """Run ``nchw`` (float32, (N, 3, H, W), values in [0, 1]); return logits
        (float32, (N, n_classes, H, W))."""
        ...

    def close(self) -> None:
        """Release the session / engine and device memory. Idempotent."""
        ...

    def info(self) -> dict[str, Any]:
        """Plain-JSON description for reports: name, precision, providers / device, ..."""
        ...


def check_nchw(nchw: np.ndarray, *, channels: int = 3) -> np.ndarray:
    """Validate an inference batch; return it as C-contiguous float32.

    Raises ``ValueError`` quoting the shape when it is not (N, channels, H, W).
    """
    arr = np.asarray(nchw)
    if arr.ndim != 4 or arr.shape[1] != channels or arr.shape[0] < 1:
        raise ValueError(f"expected an (N, {channels}, H, W) batch, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_logits(logits: np.ndarray, meta: ModelMeta, model_path: str | Path, *,
                 input_hw: tuple[int, int]) -> None:
    """Check a warm-up output against the model metadata.

    Raises :class:`UserError` naming the model file when the output is not
    (N, n_classes + len(aux_channels), H, W) with the input's H and W.
    """
    shape = tuple(np.shape(logits))
    if len(shape) != 4:
        raise UserError(f"{model_path}: output has shape {shape}, expected (N, classes, H, W)")
    aux = list(meta.output.aux_channels)
    if shape[1] != meta.n_classes + len(aux):
        listed = ", ".join([c.name for c in meta.classes] + aux)
        what = "channels" if aux else "classes"
        raise UserError(
            f"{model_path}: model outputs {shape[1]} {what} but its metadata lists "
            f"{meta.n_classes + len(aux)} ({listed})")
    if tuple(shape[2:]) != tuple(input_hw):
        raise UserError(
            f"{model_path}: output size {shape[2]}x{shape[3]} differs from input size "
            f"{input_hw[0]}x{input_hw[1]}; the model contract needs same-size logits")
