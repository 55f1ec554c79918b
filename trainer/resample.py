"""A labelled dataset at another pixel size: mix optics in one training set.

A dataset has one pixel size (``classes.json``), and the trainer brings every frame to
the network's scale with one factor (``--input-scale``). Frames of other optics (a 0.5 or
5 um/px camera) join a training set by being resampled to its pixel size first, with the
factor

.. math:: f = p_{\\text{from}} / p_{\\text{to}}

(``p`` in um per pixel; ``f > 1`` enlarges). Images are resized as the trainer and the
appliance resize (area when shrinking, linear when enlarging), class labels nearest,
contact labels so that a contact survives (:func:`trainer.rescale.scale_contact`). A
5 um/px frame enlarged to 1.45 um/px keeps its blur and blocky outlines: exactly what
the appliance's network sees when it enlarges such a frame itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from edge.errors import UserError


@dataclass
class ResampleResult:
    """What :func:`resample_dataset` wrote."""

    out: Path
    n_frames: int
    factor: float
    px_size_um: float

    def to_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "frames": self.n_frames, "factor": round(self.factor, 6),
                "px_size_um": self.px_size_um}


def _write(path: Path, image) -> None:
    if not cv2.imwrite(str(path), image):
        raise UserError(f"{path}: cannot write (disk full or not writable?)")


def resample_dataset(data: str | Path, out: str | Path, *, px_size_um: float) -> ResampleResult:
    """Write ``data`` resampled to ``px_size_um`` into ``out``.

    Labels are written as contiguous class ids with a ``classes.json`` of the same
    classes; ``truth.json`` (crystal sizes in um, which do not change) is copied with the
    resampling recorded in it.

    Raises
    ------
    edge.errors.UserError
        ``data`` without a pixel size, ``px_size_um`` not positive, ``out`` equal to
        ``data``, or an unreadable frame (named).
    """
    from trainer.data import LabelledDataset, write_classes
    from trainer.rescale import scale_contact, scale_pair

    data, out = Path(data), Path(out)
    if not (math.isfinite(px_size_um) and px_size_um > 0):
        raise UserError(f"--px-size-um: must be a positive number of um, got {px_size_um}")
    if out.resolve() == data.resolve():
        raise UserError(f"--out {out}: must differ from --data")
    ds = LabelledDataset(data)
    if not ds.px_size_um:
        raise UserError(f"{data / 'classes.json'}: no px_size_um: the pixel size to resample "
                        "from is unknown")
    factor = float(ds.px_size_um) / float(px_size_um)
    contacts = ds.has_contacts
    for sub in ("images", "labels") + (("contacts",) if contacts else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i, item in enumerate(ds.items):
        image, label = scale_pair(*ds.load(i), factor)
        _write(out / "images" / f"{item.stem}.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        _write(out / "labels" / f"{item.stem}.png", label)
        if contacts:
            _write(out / "contacts" / f"{item.stem}.png",
                   scale_contact(ds.load_contact(i), factor))
    write_classes(out / "classes.json", ds.class_names, crystal_class=ds.crystal_class,
                  px_size_um=px_size_um,
                  description=f"{data.name} resampled from {ds.px_size_um} um/px")
    truth = data / "truth.json"
    if truth.is_file():
        doc = json.loads(truth.read_text())
        doc["resampled"] = {"from_px_size_um": ds.px_size_um, "px_size_um": px_size_um,
                            "factor": factor, "note": "pixel coordinates are the source's"}
        (out / "truth.json").write_text(json.dumps(doc))
    else:
        (out / "truth.json").unlink(missing_ok=True)
    return ResampleResult(out=out, n_frames=len(ds), factor=factor, px_size_um=px_size_um)
