"""Weight-space blending of two exported models: keep what a fine-tune learned and what it forgot.

A model fine-tuned on new frames (a plant's own, or a broader generator) learns the new
domain and loses some accuracy on the old one. Averaging the weights of the model before
and after the fine-tune often keeps both (WiSE-FT: Wortsman et al., "Robust fine-tuning
of zero-shot models", CVPR 2022): both networks lie in one basin of the loss, and the
points between them are good on both domains and often better than either end. For two
exported files ``A`` (e.g. the shipped model) and ``B`` (its fine-tune) every
floating-point tensor ``theta`` of the graph becomes

.. math:: \\theta_\\alpha = (1 - \\alpha)\\, \\theta_A + \\alpha\\, \\theta_B ,
          \\qquad 0 \\le \\alpha \\le 1,

computed in float32 and stored in the files' precision. The exporter folds every batch
normalisation into its convolution, so the blended tensors are those of the exported
function (``W'``, ``b'``), and the prior correction (the logit adjustment) is blended
the same way. Only two files with the same graph can be blended: the same network,
classes and precision, exported by ``crystal-train export`` from a common ancestor
(``crystal-train train --weights A.onnx`` wrote ``B``'s checkpoint); two unrelated
trainings average into noise (measure with ``crystal-train evaluate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError

#: Metadata fields that must agree for two files to be blended.
SAME_FIELDS = ("architecture", "classes", "crystal_class_id", "input", "px_size_um",
               "frame_px_size_um", "precision", "opset")


@dataclass
class BlendResult:
    """What :func:`blend_models` wrote."""

    model: Path
    alpha: float
    n_tensors: int
    """Floating-point tensors blended (initializers and constants)."""
    max_change: float
    """Largest ``|theta_alpha - theta_A|`` over all tensors."""
    parity: dict[str, Any] | None = None
    """The file against the float32 blend (``parity_data`` given), else None."""

    def to_json(self) -> dict[str, Any]:
        out = {"model": str(self.model), "alpha": self.alpha, "tensors": self.n_tensors,
               "max_abs_change": round(self.max_change, 6)}
        if self.parity is not None:
            out["parity_argmax_agreement"] = round(self.parity["argmax_agreement"], 6)
            out["parity_max_abs_diff"] = round(self.parity["max_abs_diff"], 6)
        return out


def _mix(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    return ((1.0 - alpha) * x.astype(np.float32) + alpha * y.astype(np.float32)).astype(x.dtype)


def _check_same_graph(ga, gb, a: Path, b: Path) -> None:
    """One line naming the first difference between the two graphs."""
    if len(ga.node) != len(gb.node):
        raise UserError(f"--with {b}: its graph has {len(gb.node)} nodes, {a} has "
                        f"{len(ga.node)}: not the same exported network")
    for na, nb in zip(ga.node, gb.node, strict=True):
        if (na.op_type, list(na.input), list(na.output)) != \
                (nb.op_type, list(nb.input), list(nb.output)):
            raise UserError(f"--with {b}: node {nb.name or nb.op_type} differs from {a}'s "
                            f"{na.name or na.op_type}: not the same exported network")


def _check_same_network(meta_a, meta_b, a: Path, b: Path) -> None:
    """One line naming the first metadata difference that makes two files unblendable."""
    if meta_a.precision == "int8" or meta_b.precision == "int8":
        raise UserError("INT8 files cannot be blended: blend the float models, then quantize "
                        "the blend (crystal-train export --int8)")
    for name in SAME_FIELDS:
        if getattr(meta_a, name) != getattr(meta_b, name):
            raise UserError(f"--with {b}: metadata '{name}' differs from {a}'s: "
                            "not the same network")
    out_a, out_b = meta_a.output, meta_b.output
    if (out_a.logit_adjustment is None) != (out_b.logit_adjustment is None) or \
            out_a.aux_channels != out_b.aux_channels:
        raise UserError(f"--with {b}: its output (logit adjustment, auxiliary channels) "
                        f"differs from {a}'s")


def _tensor_pairs(ga, gb, b: Path):
    """``(tensor proto of A, array of A, array of B)`` for every float tensor."""
    from onnx import numpy_helper

    init_b = {t.name: t for t in gb.initializer}
    for ta in ga.initializer:
        if ta.name not in init_b:
            raise UserError(f"--with {b}: has no weight {ta.name!r}: not the same network")
        xa, xb = numpy_helper.to_array(ta), numpy_helper.to_array(init_b[ta.name])
        if xa.shape != xb.shape or xa.dtype != xb.dtype:
            raise UserError(f"--with {b}: weight {ta.name!r} is {xb.dtype}{list(xb.shape)}, "
                            f"expected {xa.dtype}{list(xa.shape)}")
        if xa.dtype.kind == "f":
            yield ta, xa, xb
    for na, nb in zip(ga.node, gb.node, strict=True):
        if na.op_type == "Constant" and na.attribute and na.attribute[0].name == "value":
            xa = numpy_helper.to_array(na.attribute[0].t)
            xb = numpy_helper.to_array(nb.attribute[0].t)
            if xa.dtype.kind == "f" and xa.shape == xb.shape:
                yield na.attribute[0].t, xa, xb


def blend_models(model_a: str | Path, model_b: str | Path, out: str | Path, *,
                 alpha: float, parity_data: str | Path | None = None) -> BlendResult:
    """Write ``(1 - alpha) * A + alpha * B`` as an ONNX model with its metadata.

    Parameters
    ----------
    model_a, model_b : path
        Exported ONNX models (with their metadata JSON) of the same network.
    out : path
        The blended ``.onnx``; its metadata is ``A``'s with the blended logit adjustment,
        the new sha256, ``training.blend`` (both sources and ``alpha``) and none of the
        sources' metrics (their numbers do not describe the blend; measure it with
        ``crystal-train evaluate --update-meta``).
    alpha : float
        Weight of ``B``, in [0, 1].
    parity_data : path, optional
        A dataset whose first two frames check the stored file against the blend computed
        in float32 by PyTorch (:func:`float_blend`): ``metrics.parity_frames``, as
        ``crystal-train export --parity-data`` records it (for FP16 files: the rounding).

    Raises
    ------
    edge.errors.UserError
        ``alpha`` outside [0, 1], an INT8 file, ``out`` equal to a source, or files whose
        metadata or graphs differ (the line names the field, node or weight).
    """
    import onnx

    from edge.modelmeta import check_model_file, load_meta, sha256_file, write_meta

    a, b, out = Path(model_a), Path(model_b), Path(out)
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"--alpha: must be in [0, 1], got {alpha}")
    if out.resolve() in (a.resolve(), b.resolve()):
        raise UserError(f"--out {out}: must differ from --model and --with")
    for p in (a, b):
        check_model_file(p)
    meta_a, meta_b = load_meta(a), load_meta(b)
    _check_same_network(meta_a, meta_b, a, b)
    adj_a, adj_b = meta_a.output.logit_adjustment, meta_b.output.logit_adjustment
    ma, mb = onnx.load(str(a)), onnx.load(str(b))
    _check_same_graph(ma.graph, mb.graph, a, b)
    from onnx import numpy_helper

    n, change = 0, 0.0
    for proto, xa, xb in list(_tensor_pairs(ma.graph, mb.graph, b)):
        mixed = _mix(xa, xb, alpha)
        if xa.size:
            change = max(change, float(np.abs(mixed.astype(np.float32) - xa).max()))
        proto.CopyFrom(numpy_helper.from_array(mixed, proto.name))
        n += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(ma, str(out))
    output = meta_a.output
    if adj_a is not None:
        adj = tuple((1 - alpha) * float(x) + alpha * float(y)
                    for x, y in zip(adj_a, adj_b, strict=True))
        output = output.model_copy(update={"logit_adjustment": adj})
    training = {**meta_a.training, "blend": {
        "alpha": alpha,
        "models": [{"file": a.name, "sha256": meta_a.sha256, "weight": 1 - alpha},
                   {"file": b.name, "sha256": meta_b.sha256, "weight": alpha}]}}
    metrics: dict[str, Any] = {}
    if parity_data is not None:
        try:
            metrics["parity_frames"] = blend_parity(a, b, out, alpha=alpha, data=parity_data)
        except UserError:
            out.unlink(missing_ok=True)  # no model file without its metadata
            raise
    write_meta(meta_a.model_copy(update={"onnx_file": out.name, "sha256": sha256_file(out),
                                         "output": output, "training": training,
                                         "metrics": metrics}), out)
    return BlendResult(model=out, alpha=alpha, n_tensors=n, max_change=change,
                       parity=metrics.get("parity_frames"))


def float_blend(model_a: Path, model_b: Path, alpha: float):
    """The blend as a PyTorch network in float32: both files read back
    (:mod:`trainer.onnx_weights`), their parameters mixed, the mixed logit adjustment
    added; evaluation mode."""
    import torch

    from edge.modelmeta import load_meta
    from trainer.model import build_model

    meta_a, meta_b = load_meta(model_a), load_meta(model_b)
    arch = meta_a.architecture
    kw = {"n_classes": meta_a.n_classes, "n_aux": len(meta_a.output.aux_channels),
          "aspp_rates": tuple(arch.get("aspp_rates") or (6, 12, 18))}
    try:
        net_a = build_model(str(arch.get("encoder")), weights=str(model_a), **kw).eval()
        net_b = build_model(str(arch.get("encoder")), weights=str(model_b), **kw).eval()
    except (UserError, KeyError, ValueError) as exc:
        raise UserError(f"--parity-data: {model_a} cannot be read back as a crystal-train "
                        f"network ({str(exc)[:200]})") from None
    sb = net_b.state_dict()
    mixed = {k: (1 - alpha) * v + alpha * sb[k] if v.is_floating_point() else v
             for k, v in net_a.state_dict().items()}
    net_a.load_state_dict(mixed)
    adj = [(1 - alpha) * x + alpha * y for x, y in zip(
        meta_a.output.logit_adjustment or [0.0] * meta_a.n_classes,
        meta_b.output.logit_adjustment or [0.0] * meta_b.n_classes, strict=True)]
    bias = torch.zeros(1, meta_a.n_classes + kw["n_aux"], 1, 1)
    bias[0, :meta_a.n_classes, 0, 0] = torch.tensor(adj, dtype=torch.float32)
    net_a.logit_bias = bias
    return net_a.eval(), meta_a


def blend_parity(model_a: Path, model_b: Path, out: Path, *, alpha: float,
                 data: str | Path) -> dict[str, Any]:
    """:func:`trainer.onnxrt.parity` of the written blend against :func:`float_blend` on
    two frames of ``data`` at the network's pixel size."""
    from trainer.export import frames_for_parity
    from trainer.onnxrt import parity

    net, meta = float_blend(model_a, model_b, alpha)
    scale = (meta.frame_px_size_um or meta.px_size_um) / meta.px_size_um
    frames = frames_for_parity(data, input_scale=scale)
    return dict(parity(net, out, inputs=frames), data=str(data))
