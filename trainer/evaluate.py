"""Evaluate a model on a labelled dataset: ``crystal-train evaluate``.

Frames go through the appliance's own chain. An exported ``.onnx`` is segmented by
:meth:`edge.frames.FrameAnalyzer.segment` (:mod:`edge.preprocess` channels, resize by
``data px_size_um / model px_size_um``, REFLECT_101 padding to the size multiple, an
:mod:`edge.backends` backend, crop and arg-max); a ``.pt`` checkpoint goes through the
same :mod:`edge.preprocess` functions around its PyTorch forward. Segmentation metrics
(pixel accuracy — the study's 93.02 % metric —, per-class IoU, confusion matrix) are
computed at the network's input scale against the labels resized the same way
(nearest). Where the dataset has ``truth.json`` (synthetic data), the predicted masks
are measured with :func:`edge.measure.measure_crystals` and
:class:`edge.psd.PsdAccumulator` and x50,3 and Q3 are compared with the truth (see
:mod:`trainer.evaltruth`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError

log = logging.getLogger(__name__)

#: backend of ``crystal-train evaluate`` unless ``--backend`` says otherwise: ONNX Runtime
#: on the CPU runs the file as stored, so the model card's numbers are reproducible anywhere
EVAL_BACKEND: dict[str, Any] = {"name": "onnxruntime", "onnxruntime_device": "cpu",
                                "warmup_runs": 0}


def segment_with(infer: Callable[[np.ndarray], np.ndarray], image: np.ndarray, *,
                 input_scale: float, size_multiple: int) -> np.ndarray:
    """Class map (uint8, network scale) of one RGB frame through :mod:`edge.preprocess`.

    The steps of :meth:`edge.frames.FrameAnalyzer.segment` for one frame, around any
    ``infer(nchw) -> logits``: float RGB in [0, 1], resize by ``input_scale``, pad to
    ``size_multiple`` (REFLECT_101), infer, crop, arg-max.
    """
    from edge.preprocess import (
        logits_to_class_maps,
        padded_hw,
        resize_for_inference,
        to_nchw,
        to_rgb_float,
    )

    rgb = resize_for_inference(to_rgb_float(image, color_order="rgb"), input_scale)
    hw = rgb.shape[:2]
    logits = infer(to_nchw([rgb], padded_hw(hw, size_multiple)))
    return logits_to_class_maps(logits, [hw])[0]


# ----------------------------------------------------------------------------- predictors
class OnnxPredictor:
    """An exported model segmented by the appliance's :class:`edge.frames.FrameAnalyzer`.

    Parameters
    ----------
    path : path
        The ``.onnx`` with its metadata JSON beside it.
    backend : BackendConfig, optional
        Inference backend (default :data:`EVAL_BACKEND`).
    """

    def __init__(self, path: str | Path, backend: Any = None) -> None:
        from edge.backends import BackendConfig
        from edge.frames import check_model_file
        from edge.modelmeta import load_meta

        self.path = Path(path)
        try:
            check_model_file(self.path)
        except UserError as exc:
            raise UserError(f"--model {exc}") from None
        self.meta = load_meta(self.path)
        self.backend_config = backend or BackendConfig(**EVAL_BACKEND)
        self.class_names = [c.name for c in self.meta.classes]
        self.crystal_class = self.meta.crystal_class_id
        self.px_size_um = self.meta.px_size_um
        self.size_multiple = self.meta.input.size_multiple
        self.description = f"onnx:{self.path.name} ({self.meta.precision})"
        self._analyzer: Any = None

    def segment(self, image: np.ndarray, *, input_scale: float) -> np.ndarray:
        """Class map of one RGB uint8 frame at network scale."""
        from edge.frames import FrameAnalyzer

        an = self._analyzer
        if an is None or an.inference_scale != input_scale:
            self.close()
            an = self._analyzer = FrameAnalyzer(
                self.path, backend_config=self.backend_config,
                px_size_um=self.px_size_um * input_scale, inference_scale=input_scale,
                color_order="rgb")
        return an.segment([image])[0]

    def close(self) -> None:
        if self._analyzer is not None:
            self._analyzer.close()
            self._analyzer = None


class TorchPredictor:
    """A training checkpoint (PyTorch, CPU) behind the appliance's pre-processing."""

    def __init__(self, path: str | Path) -> None:
        from trainer.export import load_checkpoint

        self.path = Path(path)
        self.model, ckpt = load_checkpoint(self.path)
        cfg = ckpt["config"]
        self.class_names = list(cfg["classes"])
        self.crystal_class = int(cfg.get("crystal_class", 2))
        self.px_size_um = float(cfg["px_size_um"])
        self.size_multiple = int(cfg.get("size_multiple", 16))
        self.description = f"checkpoint:{self.path.name}"

    def infer(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(x.astype(np.float32))).numpy()

    def segment(self, image: np.ndarray, *, input_scale: float) -> np.ndarray:
        """Class map of one RGB uint8 frame at network scale."""
        return segment_with(self.infer, image, input_scale=input_scale,
                            size_multiple=self.size_multiple)

    def close(self) -> None:
        pass


def load_predictor(path: str | Path, *, backend: Any = None):
    """:class:`OnnxPredictor` for ``.onnx``, :class:`TorchPredictor` for ``.pt``/``.pth``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return OnnxPredictor(path, backend)
    if suffix in (".pt", ".pth"):
        return TorchPredictor(path)
    raise UserError(f"--model {path}: expected a .onnx model or a .pt checkpoint")


# ----------------------------------------------------------------------------- result
@dataclass
class EvaluationResult:
    """Metrics of one model on one dataset (``to_payload()``: plain JSON types)."""

    model: str
    data: str
    n_frames: int
    input_scale: float
    px_size_um: float
    segmentation: dict[str, Any]
    measurement: dict[str, Any] | None = None
    per_frame: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_payload(self) -> dict[str, Any]:
        return {"model": self.model, "data": self.data, "n_frames": self.n_frames,
                "input_scale": self.input_scale, "px_size_um": self.px_size_um,
                "segmentation": self.segmentation, "measurement": self.measurement,
                "per_frame": self.per_frame, "skipped": self.skipped}

    def summary(self) -> str:
        seg = self.segmentation
        names = list(seg["iou"])
        lines = [f"{self.model} on {self.data}: {self.n_frames} frames at "
                 f"{self.px_size_um:.3g} um/px (scale {self.input_scale:.3g})",
                 f"pixel accuracy {100 * seg['pixel_accuracy']:.2f} %, mean IoU "
                 f"{_pct(seg['mean_iou'])}",
                 "IoU " + ", ".join(f"{n} {_pct(seg['iou'][n])}" for n in names)]
        if self.measurement:
            m = self.measurement
            lines.append(
                f"x50,3 predicted {_um(m['x50_3_pred_um'])}, through the labels "
                f"{_um(m['x50_3_label_um'])}, truth ({m['truth_population']}) "
                f"{_um(m['x50_3_truth_um'])}: error {_pct(m['x50_3_rel_error'], signed=True)}; "
                f"Q3 max |diff| {_num(m['q3_max_abs_diff'])}")
        return "\n".join(lines)


def _pct(v: float | None, *, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:+.2f} %" if signed else f"{100 * v:.2f} %"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _um(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} um"


# ----------------------------------------------------------------------------- main
def evaluate_model(model_path: str | Path, data_dir: str | Path, *, max_frames: int | None = None,
                   measure: bool = True, backend: Any = None) -> EvaluationResult:
    """Evaluate ``model_path`` (.onnx or .pt) on the labelled dataset ``data_dir``.

    ``backend`` (an :class:`edge.backends.BackendConfig`) runs an ``.onnx``; default
    :data:`EVAL_BACKEND`. Unreadable frames are skipped with a warning (listed in
    ``skipped``); the run fails with :class:`UserError` only when no frame could be
    evaluated.
    """
    from trainer.data import LabelledDataset
    from trainer.engine import metrics_from_confusion

    pred_fn = load_predictor(model_path, backend=backend)
    try:
        data = LabelledDataset(data_dir)
        if data.class_names != pred_fn.class_names:
            raise UserError(f"{data.root}: classes {data.class_names} differ from the model's "
                            f"{pred_fn.class_names}")
        scale = (data.px_size_um or pred_fn.px_size_um) / pred_fn.px_size_um
        n = len(data) if max_frames is None else min(len(data), max_frames)
        cm, per_frame, masks, skipped = _segment_frames(pred_fn, data, n, scale)
    finally:
        pred_fn.close()
    if not per_frame:
        raise UserError(f"{data.root}: no frame could be evaluated")
    seg = metrics_from_confusion(cm, pred_fn.class_names)
    measurement = None
    truth = Path(data_dir) / "truth.json"
    if measure and truth.is_file():
        from trainer.evaltruth import compare_with_truth

        measurement = compare_with_truth(masks, truth, px_size_um=pred_fn.px_size_um,
                                         crystal_class=pred_fn.crystal_class, data=data,
                                         input_scale=scale)
    return EvaluationResult(model=str(model_path), data=str(data_dir), n_frames=len(per_frame),
                            input_scale=float(scale), px_size_um=float(pred_fn.px_size_um),
                            segmentation=seg, measurement=measurement, per_frame=per_frame,
                            skipped=skipped)


def _segment_frames(pred_fn: Any, data: Any, n: int, scale: float,
                    ) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, np.ndarray], list[str]]:
    """Segment the first ``n`` frames: (confusion matrix, per-frame metrics, class maps by
    stem, skipped frames' reasons)."""
    from trainer.engine import confusion_matrix, metrics_from_confusion
    from trainer.torchdata import scale_pair

    names = pred_fn.class_names
    cm = np.zeros((len(names), len(names)), np.int64)
    per_frame: list[dict[str, Any]] = []
    masks: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    for i in range(n):
        try:
            img, lab = data.load(i)
        except UserError as exc:
            log.warning("skipping: %s", exc)
            skipped.append(str(exc))
            continue
        pred = pred_fn.segment(img, input_scale=scale)
        _, lab_s = scale_pair(img, lab, scale)
        fcm = confusion_matrix(pred, lab_s, len(names))
        cm += fcm
        fm = metrics_from_confusion(fcm, names)
        per_frame.append({"stem": data.items[i].stem, "pixel_accuracy": fm["pixel_accuracy"],
                          "crystal_iou": fm["iou"][names[pred_fn.crystal_class]]})
        masks[data.items[i].stem] = pred
    return cm, per_frame, masks, skipped


def write_json(result: EvaluationResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_payload(), indent=2) + "\n")
    return path


def synth_recipe(data_dir: str | Path) -> dict[str, Any] | None:
    """How a generated dataset was made (from its ``truth.json``), so that the numbers in
    a model card can be reproduced: ``crystal-train synth --fraction A-B --n N --seed S
    --size WxH --px-size-um P`` with the generator's other settings at their defaults.
    None for data that was not generated (or whose truth file is unreadable)."""
    try:
        truth = json.loads((Path(data_dir) / "truth.json").read_text())
        cfg = truth["config"]
        return {"seed": int(truth["seed"]), "n_frames": int(truth["n_frames"]),
                "size_mode": str(cfg["size_mode"]),
                "fraction_um": [float(v) for v in cfg["fraction_um"]],
                "width": int(cfg["width"]), "height": int(cfg["height"]),
                "px_size_um": float(cfg["px_size_um"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def update_model_metrics(onnx_path: str | Path, result: EvaluationResult) -> Path:
    """Record ``result``'s headline numbers in the model's metadata.

    They go to ``metrics.evaluation.<dataset folder name>`` (several datasets side by side).
    """
    from edge.modelmeta import load_meta, write_meta

    meta = load_meta(onnx_path)
    seg = result.segmentation
    ev: dict[str, Any] = {"data": result.data, "n_frames": result.n_frames,
                          "pixel_accuracy": seg["pixel_accuracy"], "iou": seg["iou"],
                          "mean_iou": seg["mean_iou"]}
    if result.measurement:
        ev["measurement"] = {k: v for k, v in result.measurement.items() if k != "frames"}
    recipe = synth_recipe(result.data)
    if recipe is not None:
        ev["synth"] = recipe
    evals = dict(meta.metrics.get("evaluation") or {})
    evals[Path(result.data).name] = ev
    meta.metrics = dict(meta.metrics, evaluation=evals)
    return write_meta(meta, onnx_path)
