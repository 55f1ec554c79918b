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
from edge.backends.precision import Int8Unsupported, ModelChoice, choose_model, log_fallback
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


def _make(name: str, choice: ModelChoice, *, input_hw: tuple[int, int],
          state_dir: str | Path | None, **extra: Any) -> Backend:
    cls = BACKENDS[name]
    return cls(choice.path, choice.meta, choice.config, input_hw=input_hw,
               state_dir=state_dir, **extra)


def load_choice(name: str, choice: ModelChoice, *, input_hw: tuple[int, int],
          state_dir: str | Path | None, **extra: Any) -> Backend:
    """Construct and load ``name`` on ``choice``; where it cannot run INT8, on the float
    model (one warning line). Closes what it made when loading fails."""
    while True:
        backend = _make(name, choice, input_hw=input_hw, state_dir=state_dir, **extra)
        try:
            backend.load()
            return backend
        except Int8Unsupported as exc:
            backend.close()
            if choice.fallback is None:
                raise
            choice = log_fallback(choice, exc)
        except BaseException:
            backend.close()
            raise


def create_backend(model_path: str | Path, meta: ModelMeta, config: BackendConfig, *,
                   input_hw: tuple[int, int],
                   state_dir: str | Path | None = None) -> tuple[Backend, list[dict[str, str]]]:
    """Construct and ``load()`` the configured backend.

    Returns ``(backend, selection)`` where ``selection`` lists what ``auto`` tried
    (``{"backend": label, "result": "used" | "skipped", "reason": ...}``); for a named
    backend it holds the one entry. Raises :class:`TransientError` when a named backend
    cannot load or no ``auto`` candidate can, :class:`UserError` when the model is bad.
    """
    choice = choose_model(Path(model_path), meta, config)
    if config.name != "auto":
        try:
            backend = load_choice(config.name, choice, input_hw=input_hw, state_dir=state_dir)
        except BackendUnavailable as exc:
            # a GPU that is not ready yet at boot looks the same as a missing one: restart
            raise TransientError(f"backend.name = '{config.name}': cannot load: {exc}"
                                 ) from None
        log.info("inference backend %s (%s)", config.name, _summary(backend))
        return backend, [{"backend": config.name, "result": "used", "reason": "configured"}]

    selection: list[dict[str, str]] = []
    for label, name, extra in AUTO_ORDER:
        try:
            backend = load_choice(name, choice, input_hw=input_hw, state_dir=state_dir, **extra)
        except BackendUnavailable as exc:
            selection.append({"backend": label, "result": "skipped", "reason": str(exc)})
            continue
        except (RuntimeError, OSError) as exc:
            if label == AUTO_ORDER[-1][0]:
                raise
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
