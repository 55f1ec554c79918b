"""``crystal-train check-data DIR``: validate a labelled dataset, report every problem."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "check a labelled dataset: report every problem (one line each) and class statistics"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="DIR", help="dataset folder (images/, labels/, classes.json)")
    p.add_argument("--json", metavar="OUT", type=Path, default=None,
                   help="also write the report (issues, sizes, class pixels) as JSON")


def run(args: argparse.Namespace) -> int:
    from edge.errors import UserError
    from trainer.data import LabelledDataset

    ds = LabelledDataset(args.dataset)   # bad folder / classes.json: UserError, exit 2
    rep = ds.validate()
    for issue in rep.issues:
        print(f"error: {issue}", file=sys.stderr)
    sizes = ", ".join(f"{w}x{h} ({n})" for (h, w), n in sorted(rep.sizes.items())) or "-"
    print(f"{args.dataset}: {rep.n_pairs} pairs, {rep.n_valid} valid, "
          f"{len(rep.issues)} problem(s); sizes {sizes}")
    if ds.px_size_um is not None:
        print(f"pixel size {ds.px_size_um} um")
    fr = rep.class_fractions()
    for i, name in enumerate(rep.class_names):
        tag = "  (crystal)" if i == ds.crystal_class else ""
        print(f"  class {i} {name:<20} {fr[i] * 100:6.2f} % of pixels, "
              f"in {int(rep.images_with[i])} image(s){tag}")
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(rep.to_payload(), indent=2) + "\n")
        except OSError as exc:
            raise UserError(f"{args.json}: cannot write: {exc.strerror}") from None
    if rep.n_pairs == 0 and not rep.issues:
        print(f"error: {args.dataset}: no image/label pairs", file=sys.stderr)
        return 1
    return 1 if rep.issues else 0

