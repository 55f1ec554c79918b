"""Inference backends: ONNX Runtime (CPU/GPU) and TensorRT, chosen by :class:`BackendConfig`.

See :mod:`edge.backends.registry` for the explicit name -> class registry and the
``auto`` selection.
"""

from edge.backends.base import Backend, BackendUnavailable
from edge.backends.config import BackendConfig

__all__ = ["Backend", "BackendConfig", "BackendUnavailable"]
