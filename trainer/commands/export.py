"""``crystal-train export``: checkpoint -> ONNX (+ metadata JSON), with a parity check."""

from __future__ import annotations

import argparse
import json

HELP = "export a training checkpoint to ONNX (opset 17, dynamic axes, optional FP16) + metadata"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="RUN/best.pt (or RUN/checkpoint.pt)")
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


def run(args: argparse.Namespace) -> int:
    from trainer.export import export_checkpoint

    res = export_checkpoint(args.checkpoint, args.out, fp16=args.fp16, name=args.name,
                            parity_data=args.parity_data,
                            prior_correction=not args.no_prior_correction)
    print(json.dumps({k: v for k, v in res.to_payload().items() if k != "ops"}, indent=2))
    return 0
