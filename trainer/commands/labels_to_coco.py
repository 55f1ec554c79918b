"""``crystal-train labels-to-coco``: label images or pre-labels -> COCO (for CVAT, Label Studio)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = ("write label images (a dataset, or `crystal-edge analyze --masks-out` pre-labels) as "
        "COCO instance annotations to correct in a labelling tool")

_NAMES = ("black_background", "light_background", "crystal")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="a dataset folder (images/, labels/, classes.json)")
    parser.add_argument("--labels", default=None, metavar="DIR",
                        help="label images instead: <stem>.png or the pre-labels "
                             "<stem>.classes.png (class ids 0 black background, 1 light "
                             "background, 2 crystal, as the shipped model writes them)")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="the frames the --labels belong to (their file names go into "
                             "the COCO file)")
    parser.add_argument("--out", required=True, metavar="COCO.json", help="COCO file to write")
    parser.add_argument("--rle", action="store_true",
                        help="masks as COCO RLE (exact) instead of polygons (editable in every "
                             "tool; holes are lost)")


def _pairs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    from edge.errors import UserError
    from trainer.adapt import IMAGE_SUFFIXES

    if args.data:
        from trainer.data import LabelledDataset

        ds = LabelledDataset(args.data)
        return [(p.image.name, p.label) for p in ds.items]
    if not (args.labels and args.images):
        raise UserError("give --data DIR, or --labels DIR with --images DIR")
    images = {p.stem: p for p in Path(args.images).iterdir()
              if p.suffix.lower() in IMAGE_SUFFIXES} if Path(args.images).is_dir() else None
    if images is None:
        raise UserError(f"--images {args.images}: not a folder")
    labels_dir = Path(args.labels)
    if not labels_dir.is_dir():
        raise UserError(f"--labels {args.labels}: not a folder")
    pairs = []
    for lab in sorted(labels_dir.glob("*.png")):
        stem = lab.name[: -len(".classes.png")] if lab.name.endswith(".classes.png") else lab.stem
        if stem in images:
            pairs.append((images[stem].name, lab))
    if not pairs:
        raise UserError(f"--labels {args.labels}: no label PNG matches a frame in --images")
    return pairs


def run(args: argparse.Namespace) -> int:
    import cv2

    from edge.errors import UserError
    from trainer.coco import labels_to_coco
    from trainer.data import load_classes
    from trainer.data.files import read_label

    pairs = _pairs(args)
    if args.data:
        _, classes, _ = load_classes(Path(args.data) / "classes.json")
        names = [c.name for c in classes]

        def read(p: Path):
            return read_label(p, classes)
    else:
        names = list(_NAMES)

        def read(p: Path):
            lab = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if lab is None or lab.ndim != 2:
                raise UserError(f"{p}: not a single-channel label PNG")
            return lab
    if "crystal" not in names:
        raise UserError(f"classes {names}: no 'crystal' class")
    black = names.index("black_background") if "black_background" in names else None
    doc = labels_to_coco(((name, read(p)) for name, p in pairs),
                         crystal_id=names.index("crystal"), black_id=black, rle=args.rle)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc))
    print(f"{out}: {len(doc['images'])} images, {len(doc['annotations'])} annotations "
          f"({'RLE' if args.rle else 'polygons'})")
    return 0
