"""Continue training from an exported model: read a crystal-train ONNX file's weights back.

A plant has the shipped ``models/crystal-seg.onnx`` (with its ``crystal-seg.json``), not
the PyTorch checkpoint it came from; ``crystal-train train --weights
models/crystal-seg.onnx`` fine-tunes that model on the plant's own images.

The exporter folds every batch normalisation into the convolution before it, so the
file holds one weight ``W'`` and bias ``b'`` per convolution. The import puts ``W'`` into
the convolution and makes the batch normalisation after it pass ``z + b'`` through
(running mean 0, running variance ``1 - eps``, scale 1, shift ``b'``): in evaluation
mode the network then computes exactly the exported function (checked against ONNX
Runtime on import). Training mode normalises with batch statistics instead, which such
a layer would turn into a different function; :func:`recalibrate_batchnorm` therefore
measures each normalisation's input statistics on training batches and re-expresses
the same function with them (exact in evaluation mode; batch statistics then match the
running ones up to sampling noise). The file's ``logit_adjustment`` (prior correction)
is not imported: training works on raw logits and the export adds it again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge.errors import UserError

log = logging.getLogger(__name__)

#: Minimum share of pixels whose class must agree between the imported network and the
#: ONNX file (FP16 files differ by rounding only).
MIN_AGREEMENT = 0.995


def read_onnx_meta(path: str | Path) -> dict:
    """The metadata JSON beside an exported ONNX file (``NAME.json``)."""
    path = Path(path)
    mpath = path.with_suffix(".json")
    if not mpath.is_file():
        raise UserError(f"--weights {path}: no metadata file {mpath.name} beside it "
                        "(only models written by crystal-train export can be read back)")
    try:
        meta = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{mpath}: cannot read model metadata: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("architecture"), dict):
        raise UserError(f"{mpath}: no 'architecture' in the model metadata")
    return meta


def class_weights_of(meta: dict, path: str | Path) -> np.ndarray:
    """The class weights ``w_c = exp(-a_c)`` whose prior correction is the file's
    ``logit_adjustment`` ``a_c`` (:func:`trainer.model.prior_correction` inverted), so a
    model trained on without touching its class output exports the same adjustment."""
    adj = (meta.get("output") or {}).get("logit_adjustment")
    if adj is None:
        raise UserError(f"{path}: the metadata has no output.logit_adjustment")
    return np.exp(-np.asarray(adj, dtype=np.float64))


def check_architecture(meta: dict, path: str | Path, *, backbone: str,
                       aspp_rates, n_classes: int, n_aux: int = 0,
                       head_kernel: int | None = None, refine: dict | None = None) -> None:
    """Raise a :class:`UserError` naming the option when the file's network differs
    (``n_aux``: auxiliary channels, 1 with ``--contact-weight``; ``head_kernel`` None:
    whatever the file has)."""
    arch = meta["architecture"]
    aux = len((meta.get("output") or {}).get("aux_channels") or [])
    file_kernel = int(arch.get("head_kernel", 1))
    want = {"--backbone": (arch.get("encoder"), backbone),
            "--aspp-rates": (list(arch.get("aspp_rates") or []), [int(r) for r in aspp_rates]),
            "classes": (len(meta.get("classes") or []), int(n_classes)),
            "auxiliary channels (--contact-weight)": (aux, int(n_aux)),
            "--head-kernel": (file_kernel, file_kernel if head_kernel is None
                              else int(head_kernel)),
            "--refine": (arch.get("refine"), arch.get("refine") if refine is None
                         else dict(refine))}
    for opt, (theirs, ours) in want.items():
        if theirs != ours:
            shown = ",".join(map(str, theirs)) if isinstance(theirs, list) else theirs
            raise UserError(f"--weights {path}: the model has {opt} {shown}, this run {ours}"
                            + ("" if not opt.startswith("--") or opt == "--refine"
                                 else f"; pass {opt} {shown}"))


def conv_bn_pairs(model: nn.Module, size: int = 64) -> list[tuple[str, str | None]]:
    """Convolutions in execution order, each with the batch norm that directly follows it.

    Found by running ``model`` once on a ``size`` x ``size`` input: a
    :class:`~torch.nn.BatchNorm2d` is a convolution's partner when its input is that
    convolution's output tensor.
    """
    names = {m: n for n, m in model.named_modules()}
    order: list[list] = []
    state: dict = {"out": None}
    orphans: list[str] = []

    def on_conv(mod, _inp, out):
        if any(o[0] == names[mod] for o in order):
            raise UserError(f"network runs convolution {names[mod]} twice; cannot map weights")
        order.append([names[mod], None])
        state["out"] = out

    def on_bn(mod, inp):
        if order and order[-1][1] is None and inp[0] is state["out"]:
            order[-1][1] = names[mod]
        else:
            orphans.append(names[mod])

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.BatchNorm2d):
            hooks.append(m.register_forward_pre_hook(on_bn))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if orphans:
        raise UserError(f"batch norms without a convolution before them ({orphans[0]}, ...); "
                        "cannot map exported weights")
    return [(c, b) for c, b in order]


def module_name(node_name: str) -> str:
    """The module a node of a torch-exported graph belongs to, from its scope name.

    >>> module_name("/net/decoder/block2/block2.0/block2.0.1/Conv")
    'net.decoder.block2.0.1'
    >>> module_name("/net/encoder/layer1/layer1.0/downsample/downsample.0/Conv")
    'net.encoder.layer1.0.downsample.0'
    """
    parts = [p for p in node_name.split("/") if p][:-1]
    out: list[str] = []
    prev = ""
    for p in parts:
        out.append(p[len(prev) + 1:] if prev and p.startswith(prev + ".") else p)
        prev = p
    return ".".join(out)


def _onnx_convs(path: Path) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:
        raise UserError(f"--weights {path}: not a readable ONNX file: {exc}") from None
    inits = {i.name: i for i in graph.initializer}
    if any(n.op_type == "BatchNormalization" for n in graph.node):
        raise UserError(f"--weights {path}: has unfolded BatchNormalization nodes; "
                        "export it with crystal-train export")
    convs = []
    for n in graph.node:
        if n.op_type != "Conv":
            continue
        if n.input[1] not in inits:
            raise UserError(f"--weights {path}: convolution {n.name} has no stored weight")
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        b = None
        if len(n.input) > 2 and n.input[2]:
            if n.input[2] not in inits:
                raise UserError(f"--weights {path}: convolution {n.name} has no stored bias")
            b = numpy_helper.to_array(inits[n.input[2]]).astype(np.float32)
        convs.append((n.name, w, b))
    return convs


def load_onnx_weights(model: nn.Module, path: str | Path, *, verify: bool = True) -> dict:
    """Load the convolution weights of an exported ONNX file into ``model``.

    ``model`` must be the network the file was exported from (same encoder, ASPP rates
    and classes; :func:`check_architecture`). With ``verify``, the imported network's
    output (plus the file's logit adjustment) is compared with ONNX Runtime's on a
    random 64 x 64 frame and a mismatch is an error. Returns the file's metadata.
    Leaves ``model.needs_bn_calibration = True`` (see :func:`recalibrate_batchnorm`).
    """
    path = Path(path)
    meta = read_onnx_meta(path)
    convs = _onnx_convs(path)
    pairs = dict(conv_bn_pairs(model))
    if len(convs) != len(pairs):
        raise UserError(f"--weights {path}: {len(convs)} convolutions in the file, "
                        f"{len(pairs)} in this network")
    mods = dict(model.named_modules())
    todo = []
    for node, w, b in convs:
        cname = module_name(node)
        if cname not in pairs:
            raise UserError(f"--weights {path}: convolution {node} has no layer "
                            f"{cname} in this network")
        todo.append((node, w, b, cname, pairs.pop(cname)))
    with torch.no_grad():
        for node, w, b, cname, bname in todo:
            conv = mods[cname]
            if tuple(conv.weight.shape) != w.shape:
                raise UserError(f"--weights {path}: {node} has weight shape {w.shape}, "
                                f"network layer {cname} {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(w))
            bias = np.zeros(w.shape[0], np.float32) if b is None else b
            if bname is None:
                if conv.bias is not None:
                    conv.bias.copy_(torch.from_numpy(bias))
                elif np.any(bias):
                    raise UserError(f"--weights {path}: {node} has a bias, layer {cname} none")
                continue
            if conv.bias is not None:
                conv.bias.zero_()
            bn = mods[bname]
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(bias))
    model.needs_bn_calibration = True
    if verify:
        _verify(model, path, meta)
    log.info("weights from %s: %d convolutions (batch norms unfolded)", path, len(convs))
    return meta


def _verify(model: nn.Module, path: Path, meta: dict, size: int = 64) -> None:
    """:func:`trainer.onnxrt.parity` of the imported network plus the file's adjustment."""
    from trainer.onnxrt import parity

    adj = (meta.get("output") or {}).get("logit_adjustment")
    n_aux = len((meta.get("output") or {}).get("aux_channels") or [])
    was_training, old_bias = model.training, model.logit_bias
    if adj is not None:  # class channels only; auxiliary channels are not adjusted
        model.logit_bias = torch.tensor(list(adj) + [0.0] * n_aux,
                                        dtype=torch.float32).view(1, -1, 1, 1)
    try:
        par = parity(model, path, hw=(size, size))
    finally:
        model.logit_bias = old_bias
        model.train(was_training)
    log.info("import check against ONNX Runtime: %.4f %% same class, max |logit diff| %.4f",
             100 * par["argmax_agreement"], par["max_abs_diff"])
    if par["argmax_agreement"] < MIN_AGREEMENT:
        raise UserError(f"--weights {path}: the imported network does not reproduce the file "
                        f"({100 * par['argmax_agreement']:.2f} % same class, max logit "
                        f"difference {par['max_abs_diff']:.3g})")


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches) -> int:
    """Give every batch norm the running statistics of its input, keeping the function.

    For each :class:`~torch.nn.BatchNorm2d` with running statistics ``(m0, v0)`` and
    affine ``(g0, b0)``, the per-channel mean ``m`` and variance ``v`` of its input over
    ``batches`` (NCHW tensors, evaluation mode) replace the running statistics, and the
    affine parameters become ``g = g0 * s / s0``, ``b = b0 + (m - m0) * g0 / s0`` with
    ``s = sqrt(v + eps)``: the layer computes the same function in evaluation mode,
    while in training mode batch statistics now agree with the running ones.
    Returns the number of layers changed.
    """
    stats: dict[nn.Module, list] = {}

    def hook(mod, inp):
        x = inp[0].detach().double()
        s = stats.setdefault(mod, [0.0, 0.0, 0])
        s[0] = s[0] + x.sum(dim=(0, 2, 3))
        s[1] = s[1] + (x * x).sum(dim=(0, 2, 3))
        s[2] += x.numel() // x.shape[1]

    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    hooks = [m.register_forward_pre_hook(hook) for m in bns]
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for bn, (s1, s2, n) in stats.items():
        m = s1 / n
        v = (s2 / n - m * m).clamp_min(0.0)
        s0 = torch.sqrt(bn.running_var.double() + bn.eps)
        s = torch.sqrt(v + bn.eps)
        g0, b0, m0 = bn.weight.double(), bn.bias.double(), bn.running_mean.double()
        bn.bias.copy_((b0 + (m - m0) * g0 / s0).to(bn.bias.dtype))
        bn.weight.copy_((g0 * s / s0).to(bn.weight.dtype))
        bn.running_mean.copy_(m.to(bn.running_mean.dtype))
        bn.running_var.copy_(v.to(bn.running_var.dtype))
    model.needs_bn_calibration = False
    return len(stats)


def calibrate_on_crops(model: nn.Module, dataset, n: int, batch_size: int,
                       device: torch.device | str) -> int:
    """:func:`recalibrate_batchnorm` on the images of the first ``n`` items of ``dataset``.

    Items are ``(image, label)`` tensors (a :class:`trainer.torchdata.TrainCrops`: seeded,
    so every DDP process sees the same crops). Returns the number of layers changed.
    """
    crops = [dataset[k][0] for k in range(min(len(dataset), n))]
    n_bn = recalibrate_batchnorm(model, [torch.stack(crops[i:i + batch_size]).to(device)
                                         for i in range(0, len(crops), batch_size)])
    log.info("batch norm statistics of %d layers measured on %d training crops",
             n_bn, len(crops))
    return n_bn
