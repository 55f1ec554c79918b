"""The model under evaluation, behind the appliance's own
:class:`edge.vision.analyzer.FrameAnalyzer`.

An ``.onnx`` runs on an :mod:`edge.backends` backend (ONNX Runtime on the CPU unless
``--backend`` says otherwise); a training checkpoint's forward is wrapped as a backend
(:class:`TorchBackend`), so both see the same pre- and post-processing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError

#: backend of ``crystal-train evaluate`` unless ``--backend`` says otherwise: ONNX Runtime
#: on the CPU runs the file as stored, so the model card's numbers are reproducible
#: anywhere; an INT8 file with the reference numerics of its quantization (no CPU's
#: integer kernels, which saturate on x86 without VNNI)
EVAL_BACKEND: dict[str, Any] = {"name": "onnxruntime", "onnxruntime_device": "cpu",
                                "warmup_runs": 0, "int8_kernels": "reference"}


class TorchBackend:
    """A training checkpoint's forward as an :class:`edge.backends.Backend` (CPU, any size)."""

    name = "pytorch"
    precision = "fp32"
    dynamic_shapes = True
    input_hw = (0, 0)

    def __init__(self, model: Any, model_path: Path, meta: Any) -> None:
        self.model = model
        self.model_path = model_path
        self.meta = meta

    def load(self) -> None:
        pass

    def infer(self, nchw: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(np.asarray(nchw, np.float32))).numpy()

    def close(self) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "precision": self.precision, "device": "cpu"}


def checkpoint_meta(path: Path, cfg: dict[str, Any]) -> Any:
    """The :class:`edge.modelmeta.ModelMeta` an export of this checkpoint would carry
    (classes, crystal class, pixel sizes, size multiple)."""
    from edge.modelmeta import ClassInfo, InputSpec, ModelMeta, OutputSpec

    return ModelMeta(
        name=path.stem, onnx_file=path.name, sha256="",
        classes=[ClassInfo(id=i, name=n) for i, n in enumerate(cfg["classes"])],
        crystal_class_id=int(cfg.get("crystal_class", 2)),
        input=InputSpec(size_multiple=int(cfg.get("size_multiple", 16))),
        # a contact channel after the class logits is used as the exported model uses it
        output=OutputSpec(aux_channels=list(cfg.get("aux_channels") or [])),
        px_size_um=float(cfg["px_size_um"]),
        frame_px_size_um=float(cfg["px_size_um_data"]) if cfg.get("px_size_um_data") else None)


class LoadedModel:
    """An ``.onnx`` (with its metadata) or a ``.pt``/``.pth`` checkpoint, ready to be put
    behind a :class:`edge.vision.analyzer.FrameAnalyzer`.

    Parameters
    ----------
    path : path
        The model file.
    backend : BackendConfig, optional
        Inference backend of an ``.onnx`` (default :data:`EVAL_BACKEND`).
    """

    def __init__(self, path: str | Path, backend: Any = None) -> None:
        from edge.backends import BackendConfig
        from edge.modelmeta import check_model_file, load_meta

        self.path = Path(path)
        self.backend_config = backend or BackendConfig(**EVAL_BACKEND)
        self.torch: TorchBackend | None = None
        suffix = self.path.suffix.lower()
        if suffix == ".onnx":
            try:
                check_model_file(self.path)
            except UserError as exc:
                raise UserError(f"--model {exc}") from None
            self.meta = load_meta(self.path)
            self.description = f"onnx:{self.path.name} ({self.meta.precision})"
        elif suffix in (".pt", ".pth"):
            from trainer.export import load_checkpoint

            model, ckpt = load_checkpoint(self.path)
            self.meta = checkpoint_meta(self.path, ckpt["config"])
            self.torch = TorchBackend(model, self.path, self.meta)
            self.description = f"checkpoint:{self.path.name}"
        else:
            raise UserError(f"--model {path}: expected a .onnx model or a .pt checkpoint")
        self.class_names = [c.name for c in self.meta.classes]

    def analyzer(self, settings: Any, px_size_um: float) -> Any:
        """A :class:`edge.vision.analyzer.FrameAnalyzer` for frames of ``px_size_um`` as the
        appliance builds it (frames as :mod:`edge.vision.decode` gives them: BGR order)."""
        from edge.vision.analyzer import FrameAnalyzer

        return FrameAnalyzer(
            self.path, backend_config=self.backend_config, measure_config=settings.measure,
            quality_config=settings.quality, roi_config=settings.roi,
            domain_config=settings.domain, px_size_um=px_size_um,
            inference_scale=settings.inference_scale, flip_average=settings.flip_average,
            thin_width_px=settings.thin_width_px, thin_scale_factor=settings.thin_scale_factor,
            meta=self.meta if self.torch is not None else None, backend=self.torch)
