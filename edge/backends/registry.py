"""Explicit backend registry and the ``auto`` selection.

``auto`` tries, in order: ``tensorrt``, ``onnxruntime`` on the GPU (CUDA provider),
``onnxruntime`` on the CPU; it logs once which one runs and why each earlier one was
skipped. A backend named in the configuration that cannot load is a start-up error
(:class:`~edge.errors.TransientError`, exit 1, naming the backend and the reason: a GPU
that is not ready yet at boot looks the same as a missing one, so systemd tries again),
never a silent fallback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge.backends.base import Backend, BackendUnavailable
from edge.backends.config import BackendConfig
from edge.backends.onnxruntime import OnnxRuntimeBackend
from edge.backends.tensorrt import TensorRTBackend
from edge.errors import TransientError
from edge.modelmeta import ModelMeta

log = logging.getLogger(__name__)

#: name -> class. Every class takes (model_path, meta, config, *, input_hw, state_dir).
BACKENDS: dict[str, type] = {
    "onnxruntime": OnnxRuntimeBackend,
    "tensorrt": TensorRTBackend,
}

#: auto order: (label, backend name, extra constructor keywords)
AUTO_ORDER: list[tuple[str, str, dict[str, Any]]] = [
    ("tensorrt", "tensorrt", {}),
    ("onnxruntime-gpu", "onnxruntime", {"device": "cuda"}),
    ("onnxruntime-cpu", "onnxruntime", {"device": "cpu"}),
]


def _make(name: str, model_path: Path, meta: ModelMeta, config: BackendConfig, *,
          input_hw: tuple[int, int], state_dir: str | Path | None, **extra: Any) -> Backend:
    cls = BACKENDS[name]
    return cls(model_path, meta, config, input_hw=input_hw, state_dir=state_dir, **extra)


def create_backend(model_path: str | Path, meta: ModelMeta, config: BackendConfig, *,
                   input_hw: tuple[int, int],
                   state_dir: str | Path | None = None) -> tuple[Backend, list[dict[str, str]]]:
    """Construct and ``load()`` the configured backend.

    Returns ``(backend, selection)`` where ``selection`` lists what ``auto`` tried
    (``{"backend": label, "result": "used" | "skipped", "reason": ...}``); for a named
    backend it holds the one entry. Raises :class:`TransientError` when a named backend
    cannot load or no ``auto`` candidate can, :class:`UserError` when the model is bad.
    """
    model_path = Path(model_path)
    if config.name != "auto":
        backend = _make(config.name, model_path, meta, config, input_hw=input_hw,
                        state_dir=state_dir)
        try:
            backend.load()
        except BackendUnavailable as exc:
            backend.close()
            # a GPU that is not ready yet at boot looks the same as a missing one: restart
            raise TransientError(f"backend.name = '{config.name}': cannot load: {exc}"
                                 ) from None
        log.info("inference backend %s (%s)", config.name, _summary(backend))
        return backend, [{"backend": config.name, "result": "used", "reason": "configured"}]

    selection: list[dict[str, str]] = []
    for label, name, extra in AUTO_ORDER:
        backend = _make(name, model_path, meta, config, input_hw=input_hw,
                        state_dir=state_dir, **extra)
        try:
            backend.load()
        except BackendUnavailable as exc:
            backend.close()
            selection.append({"backend": label, "result": "skipped", "reason": str(exc)})
            continue
        except (RuntimeError, OSError) as exc:
            if label == AUTO_ORDER[-1][0]:
                raise
            backend.close()
            selection.append({"backend": label, "result": "skipped",
                              "reason": f"failed: {exc}"})
            continue
        selection.append({"backend": label, "result": "used", "reason": "first that loaded"})
        skipped = "; ".join(f"{s['backend']} skipped: {s['reason']}" for s in selection[:-1])
        log.info("inference backend auto -> %s (%s)%s", label, _summary(backend),
                 f"; {skipped}" if skipped else "")
        return backend, selection
    reasons = "; ".join(f"{s['backend']}: {s['reason']}" for s in selection)
    raise TransientError(f"backend.name = 'auto': no backend could load ({reasons})")


def _summary(backend: Backend) -> str:
    info = backend.info()
    extra = info.get("providers") or info.get("gpu") or ""
    return f"{info.get('precision')}, {info.get('device')}" + (f", {extra}" if extra else "")
