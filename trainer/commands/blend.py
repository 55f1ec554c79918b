"""``crystal-train blend``: average the weights of a model and its fine-tune (WiSE-FT)."""

from __future__ import annotations

import argparse
import json

HELP = ("blend two exported models of the same network, (1 - alpha) * MODEL + alpha * WITH "
        "weight by weight: a fine-tune's new domain with most of the original's accuracy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="A.onnx",
                        help="the original model (e.g. the shipped one), with its metadata")
    parser.add_argument("--with", dest="with_model", required=True, metavar="B.onnx",
                        help="its fine-tune (crystal-train train --weights A.onnx, exported)")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="weight of --with, 0..1 (default 0.5; measure a few with "
                             "crystal-train evaluate)")
    parser.add_argument("--out", required=True, metavar="OUT.onnx",
                        help="blended model (metadata JSON written beside it)")
    parser.add_argument("--parity-data", default=None, metavar="DIR",
                        help="check the written file against the blend in float32 (PyTorch) "
                             "on two frames of this dataset (recorded in the metadata)")


def run(args: argparse.Namespace) -> int:
    from trainer.blend import blend_models

    res = blend_models(args.model, args.with_model, args.out, alpha=args.alpha,
                       parity_data=args.parity_data)
    print(json.dumps(res.to_json(), indent=2))
    return 0
