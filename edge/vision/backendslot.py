"""One inference backend for one network input size, loaded on demand.

:class:`edge.vision.analyzer.FrameAnalyzer` holds one slot for the frames' scale and one
for the finer second pass (:mod:`edge.vision.finescale`): a TensorRT engine has a fixed
input size, so two sizes are two engines, each loaded once, not one reloaded back and
forth. A backend with dynamic shapes (ONNX Runtime's CPU path, a training checkpoint)
serves every size.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from edge.backends.base import Backend
from edge.backends.config import BackendConfig
from edge.backends.registry import create_backend
from edge.modelmeta import ModelMeta

log = logging.getLogger("edge.vision.analyzer")


class BackendSlot:
    """A backend of ``model_path`` for one input (H, W) at a time.

    Parameters
    ----------
    model_path, meta, config, state_dir
        What :func:`edge.backends.registry.create_backend` is called with.
    backend : Backend, optional
        An already loaded backend with dynamic shapes (``crystal-train evaluate``'s
        checkpoint), used for every size.

    Attributes
    ----------
    backend : Backend or None
        The loaded backend.
    selection : list of dict
        Which backends were tried and why (``create_backend``'s report).
    loading : (str, float) or None
        What is being loaded and since when (monotonic), while loading: an engine build
        takes minutes, and the service's hang detection reads it as busy, not hung.
    loaded_at : float or None
        Monotonic end of the last load.
    """

    def __init__(self, model_path: Path, meta: ModelMeta, config: BackendConfig, *,
                 state_dir: str | Path | None = None, backend: Backend | None = None) -> None:
        self.model_path, self.meta, self.config = model_path, meta, config
        self.state_dir = state_dir
        self.backend: Backend | None = backend
        self.selection: list[dict[str, str]] = []
        self.loading: tuple[str, float] | None = None
        self.loaded_at: float | None = None

    def get(self, input_hw: tuple[int, int]) -> Backend:
        """The backend for ``input_hw``: the loaded one when it fits, else a new load
        (the old one closed, with a warning that the size changed)."""
        b = self.backend
        if b is not None and (b.dynamic_shapes or tuple(b.input_hw) == tuple(input_hw)):
            return b
        if b is not None:
            log.warning("frame size changed: reloading %s for input %dx%d (was %dx%d)",
                        b.name, *input_hw, *b.input_hw)
            b.close()
            self.backend = None
        self.loading = (f"loading the backend for input {input_hw[1]}x{input_hw[0]}",
                        time.monotonic())
        try:
            self.backend, self.selection = create_backend(
                self.model_path, self.meta, self.config, input_hw=input_hw,
                state_dir=self.state_dir)
        finally:
            self.loading = None
            self.loaded_at = time.monotonic()
        return self.backend

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None
