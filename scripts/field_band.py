"""Where a model's crystal errors lie against the field stop: crystal IoU in a band around
the edge of the illuminated field and inside it, on a generated set.

The field stop's soft, dark edge looks like a crystal's dark rim to the network: a needle
lying along it is read as reaching the stop, and the strip between the two is filled in.
The chain rejects crystals that reach the field's edge, so those errors move the crystal
IoU of a domain but hardly its size distribution. With the field circle of every frame
(``truth.json``, written by ``crystal-train synth``) this script splits the confusion at
the network's scale into

- ``band``: pixels whose distance to the field circle is below ``--band-um`` (either side);
- ``inside``: pixels farther inside the field than that;
- ``frame``: every pixel (the figure the model card reports).

Usage::

    .venv/bin/python scripts/field_band.py --model models/crystal-seg.onnx \\
        --data /tmp/domain_sets/03_needles --band-um 35
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ZONES = ("frame", "band", "inside")


def field_distance(hw: tuple[int, int], field: dict[str, float], scale: float) -> np.ndarray:
    """Signed distance (px of a map ``hw`` at ``scale`` times the frame's size) of every
    pixel centre to the field circle ``{"cx", "cy", "r"}`` (frame px): > 0 inside.

    The generator places the circle in pixel-index coordinates (frame pixel ``i`` centred
    at ``i``), so the centre moves to ``(c + 1/2) s - 1/2`` on the map."""
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float64)
    return field["r"] * scale - np.hypot(xx + 0.5 - (field["cx"] + 0.5) * scale,
                                         yy + 0.5 - (field["cy"] + 0.5) * scale)


def band_iou(model: Path, data: Path, *, band_um: float = 35.0,
             max_frames: int | None = None) -> dict[str, Any]:
    """Crystal IoU and its false positive / negative pixels per zone (see the module
    text) over the frames of ``data``, segmented as the appliance does."""
    from edge.vision.preprocess import resize_label
    from trainer.data import LabelledDataset
    from trainer.evalframes import load_pair
    from trainer.evalmodel import LoadedModel
    from trainer.evaluate import ChainSettings

    truth = json.loads((Path(data) / "truth.json").read_text())
    fields = {f["stem"]: f["field"] for f in truth["frames"]}
    dataset = LabelledDataset(data)
    n = len(dataset) if max_frames is None else min(len(dataset), max_frames)
    analyzer = LoadedModel(model, None).analyzer(ChainSettings(), truth["px_size_um"])
    counts = {z: np.zeros(3, np.int64) for z in ZONES}  # tp, fp, fn
    try:
        band_px = band_um / (truth["px_size_um"] / analyzer.inference_scale)
        for i in range(n):  # (a frame of thin crystals is segmented finer: its own band)
            image, label = load_pair(dataset, i)  # as the appliance decodes the frame
            pred = analyzer.segment([image])[0] == analyzer.crystal_class
            true = resize_label(label, (pred.shape[1], pred.shape[0])) == analyzer.crystal_class
            scale = pred.shape[1] / label.shape[1]
            dist = field_distance(pred.shape, fields[dataset.items[i].stem], scale)
            frame_band_px = band_um / (truth["px_size_um"] / scale)
            zones = {"frame": np.ones_like(pred), "band": np.abs(dist) < frame_band_px,
                     "inside": dist >= frame_band_px}
            for z, zone in zones.items():
                counts[z] += [(pred & true & zone).sum(), (pred & ~true & zone).sum(),
                              (~pred & true & zone).sum()]
    finally:
        analyzer.close()
    out: dict[str, Any] = {"model": str(model), "data": str(data), "frames": n,
                           "band_um": band_um, "band_px": band_px}
    for z, (tp, fp, fn) in counts.items():
        out[z] = {"iou_crystal": float(tp / max(tp + fp + fn, 1)), "tp": int(tp),
                  "fp": int(fp), "fn": int(fn)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="crystal IoU of a model at the field stop and "
                                            "inside it, on a generated set")
    p.add_argument("--model", type=Path, default=Path("models/crystal-seg.onnx"))
    p.add_argument("--data", type=Path, required=True,
                   help="a generated set (images/, labels/, truth.json)")
    p.add_argument("--band-um", type=float, default=35.0,
                   help="half-width of the band around the field circle (um)")
    p.add_argument("--frames", type=int, default=None, help="at most this many frames")
    args = p.parse_args(argv)
    if not (args.data / "truth.json").is_file():
        print(f"field_band: {args.data}: no truth.json (a set made by crystal-train synth)",
              file=sys.stderr)
        return 2
    from edge.errors import UserError

    try:
        res = band_iou(args.model, args.data, band_um=args.band_um, max_frames=args.frames)
    except UserError as exc:  # an unreadable frame or label, named
        print(f"field_band: {exc}", file=sys.stderr)
        return 1
    for z in ZONES:
        r = res[z]
        print(f"{z:7s} crystal IoU {r['iou_crystal']:.3f}  false {r['fp']} px, "
              f"missed {r['fn']} px")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
