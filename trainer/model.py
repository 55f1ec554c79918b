"""The segmentation network: smp DeepLabV3+ with a ResNet encoder, normalisation inside.

The network the trainer trains is exactly the network that is exported: a
:class:`SegmentationNet` takes NCHW float32 RGB in [0, 1], applies the ImageNet
mean/std inside the graph and returns per-pixel class logits (N, n_classes, H, W),
the convention of :mod:`edge.modelmeta`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge.errors import UserError

log = logging.getLogger(__name__)

BACKBONES = ("resnet18", "resnet34", "resnet50")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: H and W of the input must be multiples of this (encoder output stride 16).
SIZE_MULTIPLE = 16
#: ASPP dilation rates at output stride 16: the DeepLabv3 paper's and MATLAB's
#: ``deeplabv3plusLayers`` (the study's tool) values. smp's own default (12, 24, 36) is the
#: output-stride-8 setting; on 32x24 feature maps (a half-resolution frame) its 24/36
#: branches see almost nothing but padding, and on training crops never anything else.
ASPP_RATES = (6, 12, 18)


class SegmentationNet(nn.Module):
    """Wrap a segmentation network so that it takes [0, 1] RGB and normalises itself.

    Parameters
    ----------
    net : torch.nn.Module
        Network mapping normalised NCHW images to logits.
    mean, std : tuple of float
        Per-channel normalisation constants, applied as ``(x - mean) / std``.
    refine : torch.nn.Module, optional
        A :class:`trainer.refine.RefineHead` correcting the class logits at input
        resolution, before the prior correction.
    """

    def __init__(self, net: nn.Module, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD, refine: nn.Module | None = None
                 ) -> None:
        super().__init__()
        self.net = net
        # outline refinement at input resolution (trainer.refine.RefineHead), or None
        self.refine = refine
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        # Per-class constants added to the logits after training (see set_prior_correction);
        # None while training (the weighted loss sees the raw logits). Not in state dicts.
        self.register_buffer("logit_bias", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = (x - self.mean) / self.std
        out = self.net(image)
        if self.refine is not None:
            out = self.refine(image, out)
        if self.logit_bias is not None:
            out = out + self.logit_bias
        return out


def prior_correction(class_weights) -> np.ndarray:
    """Logit constants ``-log(w_c)`` that undo a class-weighted loss's prior shift.

    Cross-entropy weighted by ``w_c`` is minimised by ``p(c|x) * w_c`` (normalised), so
    the weighted model's argmax favours up-weighted classes: with the study's
    median-frequency weights (crystal 3.3, light background 0.47) crystals are drawn too
    large. Adding ``-log(w_c)`` to the logits restores the unweighted decision (logit
    adjustment, Menon et al., ICLR 2021) while training keeps the balanced gradients.
    """
    w = np.asarray(class_weights, dtype=np.float64).ravel()
    if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"class weights must be >= 0 and finite, got {w.tolist()}")
    # weight 0: the class was absent from the training data and never up- or down-weighted
    return np.where(w > 0, -np.log(np.where(w > 0, w, 1.0)), 0.0).astype(np.float32)


def set_prior_correction(model: SegmentationNet, class_weights, *, n_aux: int = 0
                         ) -> np.ndarray:
    """Add :func:`prior_correction` of ``class_weights`` to ``model``'s class logits; returns
    it. The ``n_aux`` auxiliary channels after the classes (``contact``) get 0."""
    bias = prior_correction(class_weights)
    ref = model.mean
    full = np.concatenate([bias, np.zeros(int(n_aux), np.float32)])
    model.logit_bias = torch.from_numpy(full).view(1, -1, 1, 1).to(ref.device)
    return bias


def _resolve_weights(weights: str | None) -> tuple[str | None, Path | None]:
    """Split ``--weights`` into an smp encoder-weights name and a file path."""
    if weights is None or weights in ("none", ""):
        return None, None
    if weights == "imagenet":
        return "imagenet", None
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"--weights {weights}: not 'imagenet', 'none' or an existing file")
    return None, path


def build_model(backbone: str = "resnet50", *, n_classes: int = 3,
                weights: str | None = "none",
                aspp_rates: tuple[int, int, int] = ASPP_RATES,
                n_aux: int = 0, head_kernel: int | None = None,
                refine: dict | None = None) -> SegmentationNet:
    """Build DeepLabV3+ with a ResNet encoder, wrapped in :class:`SegmentationNet`.

    Parameters
    ----------
    backbone : {'resnet18', 'resnet34', 'resnet50'}
        Encoder; the study uses ResNet-50.
    n_classes : int
        Number of output classes (logit channels).
    weights : str or None
        ``'none'``/``None``: random initialisation, nothing is downloaded.
        ``'imagenet'``: the library's ImageNet encoder weights (Hugging Face cache or
        download). A file path: a checkpoint written by ``crystal-train train``
        (``{'model': state_dict}``), a bare state dict of the whole network, or an ONNX
        file written by ``crystal-train export`` (with its ``NAME.json``; see
        :mod:`trainer.onnx_weights`: the model then carries
        ``needs_bn_calibration = True``).
    aspp_rates : (int, int, int)
        Dilation rates of the three atrous ASPP branches.
    n_aux : int
        Auxiliary output channels after the class logits (1: the ``contact`` logit,
        ``crystal-train train --contact-weight``); the head has ``n_classes + n_aux``.
    head_kernel : int, optional
        Kernel of the head's final convolution (``architecture.head_kernel``, 1 when
        absent). None: 1, or an ONNX file's own. A file without auxiliary channels that
        grows them (``n_aux > 0``) gets this kernel (:func:`add_aux_channels`).
    refine : dict, optional
        A :class:`trainer.refine.RefineHead` spec (``architecture.refine``). None: none, or
        an ONNX file's own. An ONNX file without a head that is given one gets a new head
        (the identity until trained: the file's function is kept).

    Raises
    ------
    edge.errors.UserError
        Unknown backbone, weights that cannot be obtained, or a file that does not fit.
    """
    if backbone not in BACKBONES:
        raise UserError(f"--backbone {backbone}: expected one of {', '.join(BACKBONES)}")
    if n_classes < 2:
        raise UserError(f"classes: need at least 2 classes, got {n_classes}")
    enc_weights, path = _resolve_weights(weights)
    onnx_file = path is not None and path.suffix.lower() == ".onnx"
    if onnx_file:
        from trainer.onnx_weights import check_architecture, read_onnx_meta

        meta = read_onnx_meta(path)
        file_aux = len((meta.get("output") or {}).get("aux_channels") or [])
        file_refine = meta["architecture"].get("refine")
        if (file_aux == 0 < n_aux or refine is not None) and file_refine is None:
            # a model without the channel or the head learns it: grow them
            base = build_model(backbone, n_classes=n_classes, weights=str(path),
                               aspp_rates=aspp_rates, n_aux=file_aux)
            if file_aux == 0 < n_aux:
                base = add_aux_channels(base, n_aux, kernel_size=head_kernel or 1)
            return _with_refine(base, n_classes, n_aux, refine)
        if file_aux == 0 < n_aux:
            raise UserError(f"--weights {path}: has a refine head, which reads the "
                            "auxiliary channels; it cannot grow a contact channel")
        check_architecture(meta, path, backbone=backbone, aspp_rates=aspp_rates,
                           n_classes=n_classes, n_aux=n_aux, head_kernel=head_kernel,
                           refine=refine)
        head_kernel = int(meta["architecture"].get("head_kernel", 1))
        refine = file_refine
    net = _deeplab(backbone, enc_weights, n_out=n_classes + int(n_aux),
                   aspp_rates=aspp_rates, head_kernel=head_kernel or 1)
    model = _with_refine(SegmentationNet(net), n_classes, n_aux, refine)
    if onnx_file:
        from trainer.onnx_weights import load_onnx_weights

        load_onnx_weights(model, path)
    elif path is not None:
        load_weights_file(model, path)
    return model


def _deeplab(backbone: str, enc_weights: str | None, *, n_out: int,
             aspp_rates: tuple[int, int, int], head_kernel: int) -> nn.Module:
    """The library's DeepLabV3+ with ``n_out`` output channels and a ``head_kernel`` final
    convolution; :class:`UserError` when the ImageNet encoder weights cannot be had."""
    import segmentation_models_pytorch as smp

    try:
        net = smp.DeepLabV3Plus(encoder_name=backbone, encoder_weights=enc_weights,
                                classes=n_out,
                                decoder_atrous_rates=tuple(int(r) for r in aspp_rates))
    except Exception as exc:  # network, cache or hub errors: the user's environment
        if enc_weights is None:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"--weights imagenet: cannot obtain the ImageNet weights for {backbone} "
            f"(no internet and not in the Hugging Face cache?): {first[:200]}; "
            "use --weights none or a file") from None
    if head_kernel != 1:
        conv = net.segmentation_head[0]
        net.segmentation_head[0] = nn.Conv2d(conv.in_channels, conv.out_channels, head_kernel,
                                             padding=head_kernel // 2)
    return net


def _with_refine(model: SegmentationNet, n_classes: int, n_aux: int,
                 refine: dict | None) -> SegmentationNet:
    """``model`` with a new :class:`trainer.refine.RefineHead` of spec ``refine`` (None:
    as it is)."""
    if refine is None:
        return model
    from trainer.refine import RefineHead, check_spec

    model.refine = RefineHead(n_classes, n_aux, **check_spec(refine))
    return model


def refine_spec_of(model: SegmentationNet) -> dict | None:
    """The spec of ``model``'s refine head (``architecture.refine``), None without one."""
    head = getattr(model, "refine", None)
    return None if head is None else dict(head.spec)


def head_kernel_of(model: SegmentationNet) -> int:
    """Kernel size of the head's final convolution (1 for smp's DeepLabV3+)."""
    return int(model.net.segmentation_head[0].kernel_size[0])


def add_aux_channels(model: SegmentationNet, n_aux: int, *, kernel_size: int = 1
                     ) -> SegmentationNet:
    """``model`` with ``n_aux`` new auxiliary output channels after its class logits.

    The class rows of the final convolution are kept, so the class output is unchanged;
    the new rows start at zero weight and a bias of -2 (probability 0.12 everywhere: few
    pixels are contacts), a neutral guess rather than noise. Everything else is shared.
    With a larger ``kernel_size`` (odd, padded to keep the size) the head becomes a
    ``k x k`` convolution: each class row keeps its weights at the kernel's centre and
    zero around it (the same function), while the new rows see a ``k x k`` neighbourhood
    of the decoder's features, enough to find the boundary between two crystals that a
    single feature vector does not show. For a model being trained (``logit_bias``
    None), as :func:`build_model` returns it.
    """
    conv = model.net.segmentation_head[0]
    k0 = int(conv.kernel_size[0])
    if kernel_size < k0 or (kernel_size - k0) % 2:
        raise UserError(f"--head-kernel {kernel_size}: the head's kernel is {k0}; it can "
                        f"only grow by an even number (1 -> 3, 5)")
    grown = nn.Conv2d(conv.in_channels, conv.out_channels + int(n_aux), kernel_size,
                      padding=kernel_size // 2, bias=True)
    o = (kernel_size - k0) // 2
    with torch.no_grad():
        grown.weight.zero_()
        grown.bias.fill_(-2.0)
        grown.weight[:conv.out_channels, :, o:o + k0, o:o + k0].copy_(conv.weight)
        if conv.bias is not None:
            grown.bias[:conv.out_channels].copy_(conv.bias)
    model.net.segmentation_head[0] = grown
    return model


def train_only_aux(model: SegmentationNet, n_classes: int) -> list[nn.Parameter]:
    """Freeze ``model`` except its auxiliary output channels; returns what still learns.

    Every parameter but the head's final convolution stops requiring gradients, and a hook
    zeroes the gradient of that convolution's first ``n_classes`` rows, so the class
    logits are exactly those of the loaded model (with the optimizer's weight decay off:
    AdamW's decay would shrink those rows too). The caller keeps the network in
    evaluation mode, so the batch norms use and keep their running statistics: the
    auxiliary channels learn to read the features inference computes. Only that
    convolution is differentiated, so a step costs about one forward pass.
    """
    conv = model.net.segmentation_head[0]
    if conv.out_channels <= n_classes:
        raise ValueError(f"the head has {conv.out_channels} channels: no auxiliary channel "
                         f"after {n_classes} classes")
    for p in model.parameters():
        p.requires_grad_(False)
    keep = [conv.weight] + ([conv.bias] if conv.bias is not None else [])

    def zero_class_rows(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:n_classes] = 0
        return grad

    for p in keep:
        p.requires_grad_(True)
        p.register_hook(zero_class_rows)
    model.needs_bn_calibration = False  # evaluation mode throughout: nothing to calibrate
    return keep


def load_torch_file(path: str | Path, *, label: str | None = None, what: str = "weights"):
    """``torch.load`` a user-given file with ``weights_only=True``: tensors and plain types.

    A pickle is a program: with ``weights_only=False`` a file from anywhere could run code
    while it loads. This trainer's checkpoints hold only tensors, numbers, strings, lists
    and dicts, so nothing of its own is refused.

    Parameters
    ----------
    path : str or Path
        The file.
    label : str, optional
        How the file is named in errors (e.g. ``"--resume run/checkpoint.pt"``); default
        the path.
    what : str
        What the file should be, for the error message.

    Raises
    ------
    UserError
        One line naming the file: unreadable, or holding other Python objects (refused
        without running them).
    """
    import pickle

    label = label or str(path)
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln.upper()]
        detail = lines[0] if lines else "not tensors and plain types"
        raise UserError(f"{label}: refused: the file holds Python objects that could run code "
                        f"when loaded ({detail[:200]}); only tensors and plain types are "
                        "loaded") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{label}: cannot read {what}: {first[:200]}") from None


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint (``{'model': ...}``) or a state dict into ``model``.

    Raises :class:`UserError` naming the file when it cannot be read or does not fit.
    """
    path = Path(path)
    obj = load_torch_file(path)
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a checkpoint or state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{path}: weights do not fit this network: {first[:200]}") from None


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
