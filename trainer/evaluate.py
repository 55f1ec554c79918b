"""Evaluate a model on a labelled dataset: ``crystal-train evaluate``.

Segmentation metrics (pixel accuracy — the study's 93.02 % metric —, per-class IoU,
confusion matrix) are computed at the network's input scale: frames are resized by
``data px_size_um / model px_size_um`` (labels nearest), padded to the size multiple,
segmented, cropped back. Where the dataset has ``truth.json`` (synthetic data), the
full measurement (``edge.measure.measure_crystals`` + ``edge.psd.compute_psd``, the code
the appliance runs) is applied to the predicted masks and x50,3 and Q3 are compared
with the truth (see :mod:`trainer.evaltruth`).

ONNX models run in ONNX Runtime on the CPU (:class:`OnnxPredictor`); ``.pt`` checkpoints
run in PyTorch (:class:`TorchPredictor`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- predictors
class OnnxPredictor:
    """Segment NCHW float32 [0, 1] batches with an exported ONNX model (ORT, CPU)."""

    def __init__(self, path: str | Path) -> None:
        from edge.modelmeta import load_meta
        from trainer.export import ort_session

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"--model {self.path}: file not found")
        self.meta = load_meta(self.path)
        self.session = ort_session(self.path)
        self.input_name = self.session.get_inputs()[0].name
        self.class_names = [c.name for c in self.meta.classes]
        self.crystal_class = self.meta.crystal_class_id
        self.px_size_um = self.meta.px_size_um
        self.size_multiple = self.meta.input.size_multiple
        self.description = f"onnx:{self.path.name} ({self.meta.precision})"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x.astype(np.float32)})[0]


class TorchPredictor:
    """Segment NCHW float32 [0, 1] batches with a training checkpoint (PyTorch, CPU)."""

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

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(x.astype(np.float32))).numpy()


def load_predictor(path: str | Path):
    """:class:`OnnxPredictor` for ``.onnx``, :class:`TorchPredictor` for ``.pt``/``.pth``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return OnnxPredictor(path)
    if suffix in (".pt", ".pth"):
        return TorchPredictor(path)
    raise UserError(f"--model {path}: expected a .onnx model or a .pt checkpoint")


def segment(predictor, image: np.ndarray, *, input_scale: float = 1.0) -> np.ndarray:
    """Class-id mask (uint8) of one RGB uint8 frame at network scale."""
    from trainer.torchdata import pad_to_multiple, scale_image

    img = scale_image(image, input_scale)
    h, w = img.shape[:2]
    padded, _ = pad_to_multiple(img, None, predictor.size_multiple)
    x = (padded.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    logits = predictor(x)
    return logits[0, :, :h, :w].argmax(0).astype(np.uint8)


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
                   measure: bool = True) -> EvaluationResult:
    """Evaluate ``model_path`` (.onnx or .pt) on the labelled dataset ``data_dir``.

    Unreadable frames are skipped with a warning (listed in ``skipped``); the run fails
    with :class:`UserError` only when no frame could be evaluated.
    """
    from trainer.data import LabelledDataset
    from trainer.engine import confusion_matrix, metrics_from_confusion
    from trainer.torchdata import scale_pair

    pred_fn = load_predictor(model_path)
    data = LabelledDataset(data_dir)
    if data.class_names != pred_fn.class_names:
        raise UserError(f"{data.root}: classes {data.class_names} differ from the model's "
                        f"{pred_fn.class_names}")
    px_data = data.px_size_um or pred_fn.px_size_um
    scale = px_data / pred_fn.px_size_um
    k = len(pred_fn.class_names)
    cm = np.zeros((k, k), np.int64)
    per_frame: list[dict[str, Any]] = []
    skipped: list[str] = []
    masks: dict[str, np.ndarray] = {}
    n = len(data) if max_frames is None else min(len(data), max_frames)
    for i in range(n):
        try:
            img, lab = data.load(i)
        except UserError as exc:
            log.warning("skipping: %s", exc)
            skipped.append(str(exc))
            continue
        pred = segment(pred_fn, img, input_scale=scale)
        _, lab_s = scale_pair(img, lab, scale)
        fcm = confusion_matrix(pred, lab_s, k)
        cm += fcm
        fm = metrics_from_confusion(fcm, pred_fn.class_names)
        per_frame.append({"stem": data.items[i].stem, "pixel_accuracy": fm["pixel_accuracy"],
                          "crystal_iou": fm["iou"][pred_fn.class_names[pred_fn.crystal_class]]})
        masks[data.items[i].stem] = pred
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
