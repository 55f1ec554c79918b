"""The arguments of ``crystal-train train`` and their validation (no torch imported)."""

from __future__ import annotations

import argparse

from edge.errors import UserError

#: Share of ``--data`` held back for validation when no ``--val`` is given.
DEFAULT_VAL_FRACTION = 0.1


def add_train_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``crystal-train train`` (shared by the command and :func:`main`)."""
    p.add_argument("--data", required=True,
                   help="training dataset folder (images/, labels/, classes.json)")
    p.add_argument("--val", default=None,
                   help="validation dataset folder "
                        f"(default: a seeded {DEFAULT_VAL_FRACTION * 100:.0f} %% split of --data)")
    p.add_argument("--out", required=True, help="run directory (created)")
    p.add_argument("--backbone", default="resnet50", choices=["resnet18", "resnet34", "resnet50"],
                   help="encoder (default resnet50, the study's)")
    p.add_argument("--weights", default="imagenet",
                   help="init: imagenet (library encoder weights, from cache or download), "
                        "none, a checkpoint/state dict, or a model exported by crystal-train "
                        "export (e.g. models/crystal-seg.onnx, to fine-tune the shipped model)")
    p.add_argument("--aspp-rates", default="6,12,18",
                   help="ASPP dilation rates (default 6,12,18: DeepLabv3 at output stride 16, "
                        "as MATLAB's deeplabv3plusLayers)")
    p.add_argument("--epochs", type=int, default=50, help="number of epochs (default 50)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="mini-batch size per device (default 8, the study's)")
    p.add_argument("--lr", type=float, default=5e-4,
                   help="peak learning rate of AdamW (default 5e-4)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--warmup-steps", type=int, default=20, help="linear warm-up steps")
    p.add_argument("--image-size", type=int, default=512,
                   help="side of the square training crops at network scale (multiple of 16)")
    p.add_argument("--input-scale", type=float, default=1.0,
                   help="resize frames by this factor before cropping (0.5: half resolution)")
    p.add_argument("--scale-range", default=None, metavar="LO,HI",
                   help="multi-scale training: resize each crop's frame by --input-scale "
                        "times a factor drawn log-uniformly from [LO, HI] (e.g. 0.6,2: "
                        "network pixel sizes from half to 1.7 times the central one), so "
                        "one model serves frames that inference_scale = 'auto' brings to "
                        "other network scales (finer optics, enlarged coarse frames); "
                        "default: every crop at --input-scale")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="optimizer steps per epoch (default: one crop per training frame)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many steps in total")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop (after validating and saving) when this much wall time has passed")
    p.add_argument("--augment", default="study", choices=["study", "light", "none"],
                   help="augmentation preset (study: Table 3 of the study plus photometric jitter)")
    p.add_argument("--lovasz-weight", type=float, default=0.0,
                   help="add this multiple of the Lovasz-softmax IoU loss, on the "
                        "prior-corrected logits the exported model decides by (default 0: "
                        "the study's weighted cross-entropy alone; e.g. 1 for a final "
                        "fine-tuning stage that targets crystal IoU)")
    p.add_argument("--contact-weight", type=float, default=0.0,
                   help="add a 'contact' output channel (crystal pixel touching another "
                        "crystal) trained with this multiple of a binary cross-entropy on the "
                        "dataset's contacts/<stem>.png (crystal-train synth writes them); the "
                        "edge splits touching crystals at it (default 0: no channel)")
    p.add_argument("--head-kernel", type=int, default=None, choices=[1, 3, 5],
                   help="kernel of the head's final convolution (default 1, DeepLabV3+'s; "
                        "or --weights FILE.onnx's own). A model that grows the contact "
                        "channel (--contact-weight on a file without it) gets this kernel: 3 "
                        "lets the channel see the boundary between two crystals, while the "
                        "class logits keep their 1x1 weights at the centre")
    p.add_argument("--contact-only", action="store_true",
                   help="learn only the contact channel of the model in --weights (an ONNX "
                        "file): every other weight, the batch norms and the class output "
                        "stay exactly the file's; needs --contact-weight")
    p.add_argument("--refine", action="store_true",
                   help="add an outline refinement head at the network's input resolution "
                        "(trainer/refine.py: 4 convolutions of 16 channels reading the image "
                        "beside the logits), which places outlines finer than the decoder's "
                        "4-pixel grid; a --weights file with a head keeps its own")
    p.add_argument("--refine-only", action="store_true",
                   help="learn only the refine head of the model in --weights (an ONNX file; "
                        "the head is added when the file has none): every other weight, the "
                        "batch norms and the contact channel stay exactly the file's")
    p.add_argument("--no-class-weights", action="store_true",
                   help="plain cross-entropy instead of median-frequency class weights")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device")
    p.add_argument("--workers", type=int, default=2, help="data loader worker processes")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--resume", default=None, help="continue from RUN/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def check_args(args: argparse.Namespace) -> None:
    if args.image_size <= 0 or args.image_size % 16:
        raise UserError(f"--image-size {args.image_size}: must be a positive multiple of 16")
    if not 0 < args.input_scale <= 4:
        raise UserError(f"--input-scale {args.input_scale}: must be in (0, 4]")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if args.batch_size < 2:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 2 (the ASPP image-pooling "
                        "branch has BatchNorm over the batch)")
    if args.lr <= 0:
        raise UserError(f"--lr {args.lr}: must be > 0")
    if not 0 <= args.lovasz_weight < float("inf"):
        raise UserError(f"--lovasz-weight {args.lovasz_weight}: must be >= 0")
    if not 0 <= args.contact_weight < float("inf"):
        raise UserError(f"--contact-weight {args.contact_weight}: must be >= 0")
    if args.contact_only:
        if not args.contact_weight > 0:
            raise UserError("--contact-only: needs --contact-weight > 0 (the loss it trains)")
        if not str(args.weights).lower().endswith(".onnx"):
            raise UserError(f"--contact-only: --weights {args.weights}: needs a model "
                            "exported by crystal-train export (.onnx), whose class output "
                            "it keeps")
    if args.refine_only:
        if args.contact_only:
            raise UserError("--refine-only and --contact-only: one stage at a time")
        if not str(args.weights).lower().endswith(".onnx"):
            raise UserError(f"--refine-only: --weights {args.weights}: needs a model "
                            "exported by crystal-train export (.onnx), whose network it keeps")
        args.refine = True
    args.aspp_rates = parse_rates(args.aspp_rates)
    args.scale_range = parse_scale_range(args.scale_range, args.input_scale)


def parse_scale_range(text, input_scale: float) -> list[float] | None:
    """``'0.6,2'`` -> ``[0.6, 2.0]`` (None stays None); :class:`UserError` unless
    ``0 < LO <= HI`` and the finest scale, ``input_scale * HI``, is at most 4."""
    if text is None or isinstance(text, (list, tuple)):
        return None if text is None else [float(v) for v in text]
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise UserError(f"--scale-range {text}: expected two numbers LO,HI like 0.6,2") from None
    if not 0 < lo <= hi < float("inf"):
        raise UserError(f"--scale-range {text}: expected 0 < LO <= HI")
    if input_scale * hi > 4:
        raise UserError(f"--scale-range {text}: --input-scale {input_scale} x HI = "
                        f"{input_scale * hi:g} enlarges frames more than 4 times")
    return [lo, hi]


def parse_rates(text) -> list[int]:
    """``'6,12,18'`` -> ``[6, 12, 18]`` (:class:`UserError` unless three positive ints)."""
    if isinstance(text, (list, tuple)):
        return [int(v) for v in text]
    try:
        rates = [int(v) for v in str(text).split(",")]
    except ValueError:
        rates = []
    if len(rates) != 3 or min(rates) < 1:
        raise UserError(f"--aspp-rates {text}: expected three positive integers like 6,12,18")
    return rates
