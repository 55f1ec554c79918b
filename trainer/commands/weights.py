"""``crystal-train weights DIR [--json OUT]``: median-frequency class weights of a dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "class weights by median-frequency balancing (the study's Table 2) for a labelled dataset"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="DIR", help="dataset folder (images/, labels/, classes.json)")
    p.add_argument("--json", metavar="OUT", type=Path, default=None,
                   help="also write the weights and pixel counts as JSON (read by the trainer)")


def run(args: argparse.Namespace) -> int:
    from edge.errors import UserError
    from trainer.data import LabelledDataset
    from trainer.weights import class_pixel_stats

    ds = LabelledDataset(args.dataset)
    cw = class_pixel_stats(ds)
    print(f"{args.dataset}: {cw.n_images} images")
    print(cw.table())
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(
                {"dataset": str(args.dataset), **cw.to_payload()}, indent=2) + "\n")
        except OSError as exc:
            raise UserError(f"{args.json}: cannot write: {exc.strerror}") from None
        print(f"wrote {args.json}")
    return 0
