"""``crystal-train coco-to-labels``: corrected COCO annotations -> a dataset to train on."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

HELP = ("turn COCO instance annotations (CVAT 'COCO 1.0', Label Studio 'COCO') into a "
        "dataset folder: images/, labels/, classes.json")

log = logging.getLogger("trainer.coco")
_NAMES = ("black_background", "light_background", "crystal")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("coco", metavar="COCO.json", help="the exported annotations")
    parser.add_argument("--images", required=True, metavar="DIR",
                        help="folder holding the annotated frames (matched by file name)")
    parser.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write")
    parser.add_argument("--px-size-um", type=float, default=None,
                        help="pixel size of the frames, recorded in classes.json")
    parser.add_argument("--crystal-category", default="crystal", metavar="NAME",
                        help="category name of crystals in the COCO file (default crystal)")
    parser.add_argument("--black-category", default="black_background", metavar="NAME",
                        help="category of the dark region outside the illuminated field "
                             "(default black_background; absent = none annotated)")


def _load(path: str) -> dict:
    from edge.errors import UserError

    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read COCO JSON: {exc}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise UserError(f"{path}: '{key}' missing or not a list (not a COCO file?)")
    return doc


def _categories(doc: dict, args: argparse.Namespace) -> dict[int, str]:
    from edge.errors import UserError

    rename = {args.crystal_category: "crystal", args.black_category: "black_background"}
    cats = {}
    for c in doc["categories"]:
        name = str(c.get("name", ""))
        if name not in rename:
            raise UserError(f"{args.coco}: category '{name}' is neither --crystal-category "
                            f"'{args.crystal_category}' nor --black-category "
                            f"'{args.black_category}'")
        cats[int(c["id"])] = rename[name]
    return cats


def run(args: argparse.Namespace) -> int:
    import cv2

    from edge.errors import UserError
    from trainer.coco import coco_to_label
    from trainer.data import write_classes

    doc = _load(args.coco)
    cats = _categories(doc, args)
    src = Path(args.images)
    if not src.is_dir():
        raise UserError(f"--images {src}: not a folder")
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    by_image: dict[int, list] = {}
    for ann in doc["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    ids = {name: i for i, name in enumerate(_NAMES)}
    written, missing = 0, 0
    for image in doc["images"]:
        name = Path(str(image["file_name"])).name  # tools prefix folders of their own
        frame = src / name
        if not frame.is_file():
            log.error("%s: frame %s not found in --images %s: skipped", args.coco, name, src)
            missing += 1
            continue
        label = coco_to_label(image, by_image.get(int(image["id"]), []), cats, ids=ids,
                              where=f"{args.coco}: {name}: ")
        shutil.copy2(frame, out / "images" / name)
        cv2.imwrite(str(out / "labels" / f"{Path(name).stem}.png"), label)
        written += 1
    write_classes(out / "classes.json", _NAMES, crystal_class=2, px_size_um=args.px_size_um,
                  description=f"from {Path(args.coco).name}")
    print(f"{out}: {written} labelled frames" + (f", {missing} not found" if missing else ""))
    return 1 if missing else 0
