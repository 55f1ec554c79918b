"""``crystal-train export``: checkpoint -> ONNX (+ metadata JSON), with a parity check;
``--int8``: also the INT8 QDQ sibling ``<out stem>.int8.onnx`` (:mod:`trainer.quantize`),
written only when it passes the release gate (:mod:`trainer.int8gate`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.errors import UserError
from trainer.quantize import METHODS

HELP = "export a training checkpoint to ONNX (opset 17, dynamic axes, optional FP16) + metadata"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="RUN/best.pt (or RUN/checkpoint.pt); with --int8 also an exported "
                             ".onnx (only the INT8 file is written then)")
    parser.add_argument("--out", required=True,
                        help="target .onnx (metadata .json written beside it)")
    parser.add_argument("--fp16", action="store_true",
                        help="store weights as float16 (I/O stay float32)")
    parser.add_argument("--parity-data", default=None,
                        help="also compare ONNX Runtime with PyTorch on the first 2 frames of "
                             "this dataset (recorded in the metadata)")
    parser.add_argument("--name", default=None,
                        help="model name in the metadata (default: file stem)")
    parser.add_argument("--no-prior-correction", action="store_true",
                        help="do not fold -log(class weight) into the logits (by default the "
                             "exported argmax undoes the class-weighted loss's bias towards "
                             "up-weighted classes; see the model card)")
    q = parser.add_argument_group("INT8 (post-training quantization)")
    q.add_argument("--int8", action="store_true",
                   help="also write <out stem>.int8.onnx: static INT8 QDQ quantization "
                        "(per-channel weights, symmetric activations), refused unless "
                        "crystal IoU drops <= 0.005 and x50,3 moves <= 0.5 %% on every set")
    q.add_argument("--calibration-data", type=Path, default=None, metavar="DIR",
                   help="frames to calibrate on (image files at any depth, labels ignored); "
                        "required with --int8")
    q.add_argument("--calibration-generate", type=int, default=None, metavar="N",
                   help="first generate N frames of every domain (both sieve fractions, a "
                        "log-normal population, dim and bright light) into the (new) "
                        "--calibration-data folder")
    q.add_argument("--calibration-frames", type=int, default=None, metavar="N",
                   help="use at most N calibration frames (default: all)")
    q.add_argument("--calibration-method", choices=METHODS, default="minmax",
                   help="activation range estimation (default minmax)")
    q.add_argument("--weight-range", choices=("7bit", "full"), default="7bit",
                   help="7bit (default): weights in -64..63, run by ONNX Runtime on every "
                        "x86 CPU; full: -127..127, half the rounding error, for TensorRT "
                        "and CPUs with VNNI (elsewhere the edge runs the float model and "
                        "says so). The gate measures either with the reference INT8 "
                        "numerics, on any CPU")
    q.add_argument("--float-nodes", action="append", default=[], metavar="PREFIX",
                   help="keep the nodes whose name starts with PREFIX float (repeatable; "
                        "e.g. /net/encoder/conv1/ for the stem convolution): layers whose "
                        "rounding error the gate sees, at their share of the compute. The "
                        "output head is always float")
    q.add_argument("--agreement-data", type=Path, action="append", default=[], metavar="DIR",
                   help="labelled set to measure INT8 vs float on (repeatable; default: the "
                        "model card's generated sets, regenerated from the metadata)")


def run(args: argparse.Namespace) -> int:
    from trainer.export import export_checkpoint

    if args.int8 and args.calibration_data is None:
        raise UserError("--int8: --calibration-data DIR is required")
    source = Path(args.checkpoint)
    if not (args.int8 and source.suffix.lower() == ".onnx"):
        res = export_checkpoint(args.checkpoint, args.out, fp16=args.fp16, name=args.name,
                                parity_data=args.parity_data,
                                prior_correction=not args.no_prior_correction)
        print(json.dumps({k: v for k, v in res.to_payload().items() if k != "ops"}, indent=2))
        source = Path(args.out)
    if args.int8:
        from trainer.quantize import (
            CALIBRATION_DOMAINS,
            CALIBRATION_SEED,
            export_int8,
            generate_calibration_set,
        )

        recipe = None
        if args.calibration_generate:
            generate_calibration_set(args.calibration_data, n_per_domain=args.calibration_generate)
            recipe = {"n_per_domain": args.calibration_generate, "seed": CALIBRATION_SEED,
                      "domains": CALIBRATION_DOMAINS,
                      "command": f"--calibration-generate {args.calibration_generate}"}
        q = export_int8(source, args.out, args.calibration_data,
                        agreement_data=args.agreement_data, method=args.calibration_method,
                        max_calibration_frames=args.calibration_frames,
                        calibration_recipe=recipe, weight_range=args.weight_range,
                        float_nodes=args.float_nodes)
        print(json.dumps({k: q[k] for k in ("onnx", "meta", "size_bytes", "seconds")}
                         | {k: q["agreement"][k] for k in ("pixel_agreement",
                            "crystal_iou_delta", "x50_3_shift_pct")}, indent=2))
    return 0
