"""``crystal-train adapt``: fit a model to a plant's unlabeled frames (input normalisation)."""

from __future__ import annotations

import argparse
import json

HELP = ("adapt a model to a plant's unlabeled frames: re-estimate its input normalisation "
        "(lamp level, black level, colour) and write the adapted ONNX + metadata")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M.onnx",
                        help="exported model with its metadata JSON (e.g. the shipped one)")
    parser.add_argument("--frames", required=True, metavar="DIR",
                        help="the plant's frames (no labels needed; a folder or a dataset "
                             "with images/)")
    parser.add_argument("--out", required=True, metavar="OUT.onnx",
                        help="adapted model (metadata JSON written beside it)")
    parser.add_argument("--reference", default=None, metavar="DIR",
                        help="frames of the model's training domain (default: frames "
                             "rendered by the generator the model was trained on)")
    parser.add_argument("--max-frames", type=int, default=32, metavar="N",
                        help="at most N frames, evenly spread, from each folder (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pixel sampling")


def run(args: argparse.Namespace) -> int:
    from edge.errors import UserError
    from trainer.adapt import adapt_model

    if args.max_frames < 1:
        raise UserError(f"--max-frames: must be >= 1, got {args.max_frames}")
    res = adapt_model(args.model, args.frames, args.out, reference=args.reference,
                      max_frames=args.max_frames, seed=args.seed)
    print(json.dumps(res.to_json(), indent=2))
    return 0
