"""``crystal-train resample``: a labelled dataset at another pixel size."""

from __future__ import annotations

import argparse
import json

HELP = ("resample a labelled dataset to another pixel size (images area/linear, labels "
        "nearest), so that frames of other optics can join a training set")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="labelled dataset (images/, labels/, classes.json with px_size_um)")
    parser.add_argument("--out", required=True, metavar="DIR", help="resampled dataset")
    parser.add_argument("--px-size-um", required=True, type=float,
                        help="pixel size to resample to (um), e.g. the training set's 1.45")


def run(args: argparse.Namespace) -> int:
    from trainer.resample import resample_dataset

    res = resample_dataset(args.data, args.out, px_size_um=args.px_size_um)
    print(json.dumps(res.to_json(), indent=2))
    return 0
