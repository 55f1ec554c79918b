"""ONNX export of a trained checkpoint, with parity check and model metadata.

The exported graph is :class:`trainer.model.SegmentationNet`: input ``input`` NCHW float32
RGB in [0, 1] (ImageNet normalisation folded into the graph), output ``logits``
(N, n_classes, H, W); batch, height and width are dynamic (H, W multiples of 16).
Legacy TorchScript exporter (``dynamo=False``), opset 17. ``--fp16`` converts the
weights with onnxconverter-common (``keep_io_types=True``: float32 in and out).
The metadata JSON beside the ONNX is written with :func:`edge.modelmeta.write_meta`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from trainer.onnxrt import INPUT_NAME, OUTPUT_NAME, ort_session, parity  # noqa: F401 (re-export)

log = logging.getLogger(__name__)

OPSET = 17

#: ONNX operators the exported graph may use: all are supported by TensorRT 10's ONNX
#: parser (https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md). A new op
#: in the graph fails the export test, so nothing TensorRT lacks slips in unnoticed.
TRT10_OPS = frozenset({
    "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "Div", "Expand", "Gather", "GlobalAveragePool", "Identity",
    "MaxPool", "Mul", "Pad", "ReduceMean", "Relu", "Reshape", "Resize", "Shape", "Slice",
    "Sub", "Transpose", "Unsqueeze", "Squeeze", "Floor", "Range", "Equal", "Where",
})


@dataclass
class ExportResult:
    """What :func:`export_checkpoint` wrote and measured."""

    onnx_path: str
    meta_path: str
    precision: str
    size_bytes: int
    sha256: str
    ops: list[str]
    parity: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return {"onnx": self.onnx_path, "meta": self.meta_path, "precision": self.precision,
                "size_bytes": self.size_bytes, "sha256": self.sha256, "ops": self.ops,
                "parity": self.parity}


def load_checkpoint(path: str | Path, *, prior_correction: bool = True):
    """Read a training checkpoint; returns ``(model in eval mode, checkpoint dict)``.

    With ``prior_correction`` (default) and class weights in the checkpoint, the model's
    logits get ``-log(w_c)`` added (:func:`trainer.model.set_prior_correction`), so that
    evaluation of the ``.pt`` and the exported ONNX make the unweighted decision.
    """
    from trainer.model import build_model, load_torch_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    ckpt = load_torch_file(path, what="checkpoint")
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise UserError(f"{path}: not a crystal-train checkpoint (no 'model'/'config')")
    cfg = ckpt["config"]
    n_aux = len(cfg.get("aux_channels") or [])  # e.g. ['contact'], after the class logits
    model = build_model(cfg.get("backbone", "resnet50"), n_classes=int(cfg["n_classes"]),
                        weights="none", aspp_rates=tuple(cfg.get("aspp_rates", (12, 24, 36))),
                        n_aux=n_aux,
                        head_kernel=int((cfg.get("architecture") or {}).get("head_kernel", 1)),
                        refine=(cfg.get("architecture") or {}).get("refine"))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit: {str(exc).splitlines()[0]}") from None
    model.eval()
    if prior_correction and ckpt.get("class_weights") is not None:
        from trainer.model import set_prior_correction

        set_prior_correction(model, ckpt["class_weights"], n_aux=n_aux)
    return model, ckpt


def onnx_ops(path: str | Path) -> list[str]:
    """Sorted operator types used in an ONNX file (main graph)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return sorted({n.op_type for n in m.graph.node})


def export_model(model, out: str | Path, *, sample_hw: tuple[int, int] = (256, 256),
                 opset: int = OPSET, fp16: bool = False) -> Path:
    """Export a :class:`SegmentationNet` to ONNX (dynamic N, H, W); optionally FP16 weights."""
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    dummy = torch.rand(1, 3, *sample_hw)
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        # the legacy exporter is chosen on purpose (seen: 1e-5 parity, TensorRT-friendly ops)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        torch.onnx.export(model, (dummy,), str(out), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                          do_constant_folding=True)
    if fp16:
        import onnx
        from onnxconverter_common import float16

        m = onnx.load(str(out))
        with warnings.catch_warnings():  # "float32 number ... truncated to 1e-07": expected
            warnings.filterwarnings("ignore", category=UserWarning, module="onnxconverter_common")
            m16 = float16.convert_float_to_float16(m, keep_io_types=True)
        _float32_outputs(m16)
        onnx.checker.check_model(m16)
        onnx.save(m16, str(out))
    return out


def _float32_outputs(model) -> None:
    """Make every float16 graph output float32 again.

    onnxconverter-common 1.14-1.16 with ``keep_io_types=True`` leaves the output float16
    when it is produced by an op it keeps in float32 (here the final ``Resize``): it then
    casts back to float16. Rewrite that ``Cast`` (or append one) so the output is float32.
    """
    from onnx import TensorProto, helper

    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    for out in g.output:
        tt = out.type.tensor_type
        if tt.elem_type != TensorProto.FLOAT16:
            continue
        node = producers.get(out.name)
        if node is not None and node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to":
                    a.i = TensorProto.FLOAT
        else:
            inner = out.name + "_fp16"
            for n in g.node:
                n.output[:] = [inner if o == out.name else o for o in n.output]
            g.node.append(helper.make_node("Cast", [inner], [out.name], to=TensorProto.FLOAT,
                                           name=out.name + "_to_float32"))
        tt.elem_type = TensorProto.FLOAT


def frames_for_parity(data_dir: str | Path, *, input_scale: float, n: int = 2) -> np.ndarray:
    """The first ``n`` frames of a dataset at network scale as NCHW float32 [0, 1]
    (cropped to a common size that is a multiple of 16)."""
    from trainer.data import LabelledDataset
    from trainer.rescale import scale_image

    data = LabelledDataset(data_dir)
    imgs = [scale_image(data.load_image(i), input_scale) for i in range(min(n, len(data)))]
    if not imgs:
        raise UserError(f"--parity-data {data_dir}: no frames")
    h = min(i.shape[0] for i in imgs) // 16 * 16
    w = min(i.shape[1] for i in imgs) // 16 * 16
    if h == 0 or w == 0:
        raise UserError(f"--parity-data {data_dir}: frames smaller than 16 px at network scale")
    return np.stack([i[:h, :w] for i in imgs]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, fp16: bool = False,
                      name: str | None = None, parity_inputs: np.ndarray | None = None,
                      parity_data: str | Path | None = None,
                      extra_metrics: dict[str, Any] | None = None,
                      prior_correction: bool = True) -> ExportResult:
    """Export ``checkpoint`` to ``out`` (.onnx) and write the metadata JSON beside it.

    Parameters
    ----------
    checkpoint : path
        ``RUN/best.pt`` or ``RUN/checkpoint.pt`` written by ``crystal-train train``.
    out : path
        Target ``.onnx`` file.
    fp16 : bool
        Store the weights as float16 (inputs/outputs stay float32).
    name : str, optional
        Model name in the metadata (default: the file stem).
    parity_inputs : numpy.ndarray, optional
        NCHW float32 [0, 1] inputs for the parity check (default: seeded noise).
    parity_data : path, optional
        Also check parity on the first frames of this dataset (``metrics.parity_frames``).
    extra_metrics : dict, optional
        Merged into the metadata's ``metrics``.
    prior_correction : bool
        Fold ``-log(class weight)`` into the output logits (recorded as
        ``output.logit_adjustment`` in the metadata); see
        :func:`trainer.model.prior_correction`.
    """
    import torch

    import trainer
    from edge.modelmeta import (
        ClassInfo,
        InputSpec,
        ModelMeta,
        OutputSpec,
        sha256_file,
        write_meta,
    )
    from trainer.model import IMAGENET_MEAN, IMAGENET_STD, SIZE_MULTIPLE

    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"--out {out}: expected a .onnx file name")
    model, ckpt = load_checkpoint(checkpoint, prior_correction=prior_correction)
    cfg = ckpt["config"]
    export_model(model, out, fp16=fp16)
    ops = onnx_ops(out)
    par, par_frames = _parity_checks(model, out, fp16=fp16, inputs=parity_inputs,
                                     data=parity_data,
                                     input_scale=float(cfg.get("input_scale", 1.0)))
    metrics = _metrics(ckpt, par, par_frames, extra_metrics)
    training = _training(cfg, ckpt)
    if cfg.get("contact_only") or cfg.get("refine_only"):
        training["class_output" if cfg.get("contact_only") else "network"] = (
            _class_output_source(str(cfg.get("weights"))))
    meta = ModelMeta(
        name=name or out.stem, onnx_file=out.name, sha256=sha256_file(out), opset=OPSET,
        classes=[ClassInfo(id=i, name=n) for i, n in enumerate(cfg["classes"])],
        crystal_class_id=int(cfg.get("crystal_class", 2)),
        input=InputSpec(mean=IMAGENET_MEAN, std=IMAGENET_STD, size_multiple=SIZE_MULTIPLE),
        output=OutputSpec(logit_adjustment=None if model.logit_bias is None else tuple(
            round(float(v), 6) for v in model.logit_bias.flatten().tolist()[:len(cfg["classes"])]),
            aux_channels=list(cfg.get("aux_channels") or [])),
        px_size_um=float(cfg["px_size_um"]),
        frame_px_size_um=(float(cfg["px_size_um_data"]) if cfg.get("px_size_um_data")
                          else None),
        architecture=dict(cfg.get("architecture") or {}, params=sum(
            p.numel() for p in model.parameters()), torch=torch.__version__),
        training=training, metrics=metrics, precision="fp16" if fp16 else "fp32",
        trainer_version=trainer.__version__,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    mpath = write_meta(meta, out)
    return ExportResult(onnx_path=str(out), meta_path=str(mpath),
                        precision=meta.precision, size_bytes=out.stat().st_size,
                        sha256=meta.sha256, ops=ops,
                        parity=dict(par, frames=par_frames) if par_frames else par)


def _parity_checks(model: Any, out: Path, *, fp16: bool, inputs: np.ndarray | None,
                   data: str | Path | None, input_scale: float
                   ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """ONNX Runtime against PyTorch on ``inputs`` (default: seeded noise) and, with
    ``data``, on the dataset's first frames (None without)."""
    par = parity(model, out, inputs=inputs)
    log.info("parity ONNX Runtime vs PyTorch (%s): max |diff| %.2e, argmax agreement %.5f",
             "fp16" if fp16 else "fp32", par["max_abs_diff"], par["argmax_agreement"])
    if data is None:
        return par, None
    frames = frames_for_parity(data, input_scale=input_scale)
    par_frames = dict(parity(model, out, inputs=frames), data=str(data))
    log.info("parity on %d frames of %s: max |diff| %.2e, argmax agreement %.5f",
             frames.shape[0], data, par_frames["max_abs_diff"], par_frames["argmax_agreement"])
    return par, par_frames


def _metrics(ckpt: dict[str, Any], par: dict[str, Any], par_frames: dict[str, Any] | None,
             extra: dict[str, Any] | None) -> dict[str, Any]:
    """The metadata's ``metrics``: the checkpoint's validation, parity, and ``extra``."""
    val = (ckpt.get("metrics") or {}).get("val") or {}
    metrics: dict[str, Any] = {
        "checkpoint_epoch": int(ckpt.get("epoch", -1)), "checkpoint_step": int(ckpt.get("step", 0)),
        "val_pixel_accuracy": val.get("pixel_accuracy"), "val_iou": val.get("iou"),
        "val_mean_iou": val.get("mean_iou"),
        "parity": par,
    }
    if par_frames is not None:
        metrics["parity_frames"] = par_frames
    if extra:
        metrics.update(extra)
    return metrics


def _class_output_source(weights: str) -> dict[str, Any]:
    """Where a ``--contact-only`` model's class output comes from: the file, its sha256
    and its own ``training`` record (the file's name alone when it cannot be read now)."""
    from trainer.onnx_weights import read_onnx_meta

    try:
        meta = read_onnx_meta(weights)
    except UserError as exc:
        log.warning("%s; the class output's training record is not carried", exc)
        return {"file": weights}
    return {"file": weights, "sha256": meta.get("sha256"), "training": meta.get("training")}


def _training(cfg: dict[str, Any], ckpt: dict[str, Any]) -> dict[str, Any]:
    """The metadata's ``training``: data, schedule, loss and class weights of the run."""
    return {
        "train_data": cfg.get("train_data"), "val_data": cfg.get("val_data"),
        "epochs": cfg.get("epochs"), "steps": int(ckpt.get("step", 0)),
        "batch_size": cfg.get("batch_size"), "lr": cfg.get("lr"),
        "image_size": cfg.get("image_size"), "input_scale": cfg.get("input_scale"),
        "scale_range": cfg.get("scale_range"),  # multi-scale training around input_scale
        "augment": cfg.get("augment"), "weights_init": cfg.get("weights"),
        "loss": "weighted cross-entropy" + (
            f" + {cfg['lovasz_weight']:g} x Lovasz-softmax" if cfg.get("lovasz_weight") else "")
            + (f" + {cfg['contact_weight']:g} x contact BCE (pos_weight "
               f"{cfg.get('contact_pos_weight') or 1:.2f})" if cfg.get("contact_weight") else ""),
        "contact_only": bool(cfg.get("contact_only")),  # the class output is weights_init's
        "refine_only": bool(cfg.get("refine_only")),  # all but the refine head is
        "seed": cfg.get("seed"), "class_weights": ckpt.get("class_weights"),
        "px_size_um_data": cfg.get("px_size_um_data"),
    }
