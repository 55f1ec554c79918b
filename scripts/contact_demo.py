"""Learned contact channel vs the distance-map split, on agglomerate-rich generated frames.

Generates a training set and a held-out set (presets ``crowded`` + ``agglomerates``,
384 x 288 px at 2.9 um/px, crystals of 90-125 um: ~27 crystals and ~13 of them touching
another per frame), trains two small models with the same schedule (ResNet-18, from
scratch, ``--contact-weight 0`` and ``--contact-weight W``), exports both and measures
the held-out frames through ``FrameAnalyzer`` (the same chain as ``crystal-edge
analyze``):

(a) recovery in 2-3-crystal agglomerates: crystals of the generator that are whole (inside
    the frame and the field) and belong to a group of 2 or 3 touching crystals (exact
    instance ids), matched one-to-one to *kept* measured crystals by IoU > 0.5 of the
    measured outline with the crystal's visible pixels;
(b) the Q3 Kolmogorov-Smirnov distance ``max_x |Q3_measured(x) - Q3_true(x)|`` between the
    volume-weighted distributions of the kept measured diameters and of the whole true
    crystals (all held-out frames pooled).

Usage::

    .venv/bin/python scripts/contact_demo.py --work /tmp/contact_demo \\
        --train-frames 300 --test-frames 30 --max-minutes 11 --out contact_demo.json

CPU only is fine (``--max-minutes`` bounds each training run); the numbers go to JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

PRESETS = ("crowded", "agglomerates")
GEOMETRY = {"width": 384, "height": 288, "px_size_um": 2.9, "fraction_um": (90.0, 125.0)}
TRAIN_SEED, TEST_SEED, VAL_SEED = 11, 12, 13


def synth_config():
    from trainer.synth import SynthConfig

    return SynthConfig.from_presets(*PRESETS, **GEOMETRY)


def generate(out: Path, n: int, seed: int) -> Path:
    """A dataset with contact labels (``contacts/<stem>.png``), unless already there."""
    from trainer.synth import generate_dataset

    if not (out / "truth.json").is_file():
        generate_dataset(out, n, synth_config(), seed=seed)
    return out


def train(data: Path, val: Path, run: Path, *, contact_weight: float,
          args: argparse.Namespace) -> Path:
    """One training run (the same schedule for both models); returns the exported ONNX."""
    from trainer.export import export_checkpoint
    from trainer.train import get_args_parser, main

    onnx = run / "model.onnx"
    if onnx.is_file():
        return onnx
    targs = get_args_parser().parse_args([
        "--data", str(data), "--val", str(val), "--out", str(run),
        "--backbone", "resnet18", "--weights", "none",
        "--epochs", "1000", "--batch-size", str(args.batch_size),
        "--image-size", str(args.image_size), "--augment", "light", "--lr", "1e-3",
        "--warmup-steps", "20", "--max-steps", str(args.max_steps),
        "--max-minutes", str(args.max_minutes), "--workers", "0", "--seed", "0",
        "--steps-per-epoch", "40", "--no-progress",
        "--contact-weight", str(contact_weight)])
    t0 = time.monotonic()
    summary = main(targs)
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    (run / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    export_checkpoint(run / "checkpoint.pt", onnx)
    return onnx


def agglomerate_members(instances: np.ndarray, whole: set[int]) -> set[int]:
    """Crystal indices (0-based) of whole crystals in a touching group of 2 or 3."""
    a, b = [], []
    ids = instances
    for da, db in ((ids[:, :-1], ids[:, 1:]), (ids[:-1, :], ids[1:, :]),
                   (ids[:-1, :-1], ids[1:, 1:]), (ids[:-1, 1:], ids[1:, :-1])):
        ok = (da > 0) & (db > 0) & (da != db)
        a.append(da[ok])
        b.append(db[ok])
    pairs = set(zip(np.concatenate(a).tolist(), np.concatenate(b).tolist(), strict=True))
    n = int(instances.max())
    parent = list(range(n + 1))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p, q in pairs:
        parent[find(p)] = find(q)
    groups: dict[int, list[int]] = {}
    for k in range(1, n + 1):
        groups.setdefault(find(k), []).append(k)
    return {k - 1 for g in groups.values() if 2 <= len(g) <= 3 for k in g if k - 1 in whole}


def match_kept(crystals, instances: np.ndarray, targets: set[int]) -> int:
    """How many ``targets`` a kept measured crystal covers with IoU > 0.5 (one-to-one)."""
    hw = instances.shape
    found = 0
    used: set[int] = set()
    kept = np.flatnonzero(crystals.kept)
    masks = []
    for j in kept:
        m = np.zeros(hw, np.uint8)
        cv2.drawContours(m, [crystals.contours[j].reshape(-1, 1, 2)], -1, 1, thickness=-1)
        masks.append((j, m.astype(bool)))
    for k in sorted(targets):
        truth = instances == k + 1
        for j, m in masks:
            if j in used:
                continue
            inter = np.count_nonzero(truth & m)
            if inter and inter / np.count_nonzero(truth | m) > 0.5:
                used.add(j)
                found += 1
                break
    return found


def q3_ks(measured_um: np.ndarray, true_um: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the volume-weighted (x^3) CDFs of two samples."""
    x = np.union1d(measured_um, true_um)

    def cdf(d: np.ndarray) -> np.ndarray:
        d = np.sort(d)
        w = np.cumsum(d ** 3)
        return np.concatenate([[0.0], w / w[-1]])[np.searchsorted(d, x, side="right")]

    return float(np.max(np.abs(cdf(measured_um) - cdf(true_um))))


def evaluate(onnx: Path | None, test: Path, *, contact_threshold: float,
             true_contacts: bool = False, use_contact: bool = True) -> dict[str, Any]:
    """Recovery in 2-3-crystal agglomerates, Q3 KS and x50,3 on the test set: of a model
    through ``FrameAnalyzer`` (``use_contact=False``: its class maps measured without the
    contact map, i.e. split by the distance map), or (``onnx`` None) of the true masks,
    measured with the true contact map (``true_contacts``) or without any."""
    from edge.measure import MeasureConfig, measure_crystals
    from edge.vision.analyzer import FrameAnalyzer
    from edge.vision.decode import decode_file
    from edge.vision.ood import DomainConfig
    from trainer.synth import CRYSTAL, contact_map, frame_seed, render_frame, weighted_quantile

    truth = json.loads((test / "truth.json").read_text())
    cfg = synth_config()
    mcfg = MeasureConfig(contact_threshold=contact_threshold)
    px = GEOMETRY["px_size_um"]
    measured: list[float] = []
    true_d: list[float] = []
    targets = found = rejected = 0
    # the out-of-domain limits are calibrated on the default model; these short runs are
    # less certain, and a frame rejected whole would hide what the split does
    fa = (FrameAnalyzer(onnx, px_size_um=px, inference_scale=1.0, measure_config=mcfg,
                        domain_config=DomainConfig(reject=False))
          if onnx is not None else None)
    for i, fr in enumerate(truth["frames"]):
        frame = render_frame(frame_seed(truth["seed"], i), cfg)  # the exact instance ids
        if fa is not None:
            image = decode_file(test / "images" / f"{fr['stem']}.png").image
            cmap = fa.segment([image])[0]
            crystals = fa.postprocess(fr["stem"], image, cmap if use_contact
                                      else np.asarray(cmap)).crystals
        else:
            con = contact_map(frame.instances, frame.coverage).astype(np.float32)
            crystals = measure_crystals(frame.label == CRYSTAL, px_size_um=px,
                                        roi=frame.label != 0, config=mcfg,
                                        contact=con if true_contacts else None)
        whole = {k for k, c in enumerate(frame.crystals) if c.whole}
        true_d.extend(frame.crystals[k].diameter_um for k in whole)
        members = agglomerate_members(frame.instances, whole)
        targets += len(members)
        if crystals is None:
            rejected += 1
            continue
        measured.extend(crystals.diameter_um[crystals.kept].tolist())
        found += match_kept(crystals, frame.instances, members)
    if fa is not None:
        fa.close()
    m, t = np.asarray(measured), np.asarray(true_d)
    if m.size == 0:  # nothing measured: no distribution to compare
        m = np.asarray([np.nan])
    x50_m = weighted_quantile(m, m ** 3, 0.5)
    x50_t = weighted_quantile(t, t ** 3, 0.5)
    return {"model": str(onnx) if onnx else ("true masks + true contacts" if true_contacts
                                             else "true masks"),
            "contact_used": bool((fa is not None and use_contact
                                  and "contact" in fa.meta.output.aux_channels) or true_contacts),
            "frames_rejected": rejected, "agglomerate_crystals": targets, "recovered": found,
            "recovery": round(found / targets, 4) if targets else None,
            "q3_ks": round(q3_ks(m, t), 4) if np.isfinite(m).all() else 1.0,
            "n_measured": int(np.isfinite(m).sum()), "n_true": int(t.size),
            "x50_3_um": _finite(x50_m), "x50_3_true_um": _finite(x50_t),
            "x50_3_error_pct": _finite(100 * (x50_m / x50_t - 1))}


def _finite(v: float) -> float | None:
    return round(float(v), 2) if np.isfinite(v) else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/contact_demo"))
    p.add_argument("--train-frames", type=int, default=300)
    p.add_argument("--test-frames", type=int, default=30)
    p.add_argument("--contact-weight", type=float, default=1.0)
    p.add_argument("--contact-threshold", type=float, default=0.5)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=280)
    p.add_argument("--max-minutes", type=float, default=40.0)
    p.add_argument("--run", choices=["without_contact", "with_contact"], default=None,
                   help="train only this model (two processes can train both at once)")
    p.add_argument("--only", choices=["data", "train", "truth"], default=None,
                   help="stop after this stage")
    p.add_argument("--out", type=Path, default=Path("contact_demo.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train_dir = generate(args.work / "train", args.train_frames, TRAIN_SEED)
    test_dir = generate(args.work / "test", args.test_frames, TEST_SEED)
    val_dir = generate(args.work / "val", 6, VAL_SEED)
    if args.only == "data":
        return {}
    runs = {"without_contact": 0.0, "with_contact": args.contact_weight}
    if args.only == "train":
        for k, w in runs.items():
            if args.run in (None, k):
                train(train_dir, val_dir, args.work / k, contact_weight=w, args=args)
        return {}
    doc: dict[str, Any] = {
        "generator": {"presets": list(PRESETS), **GEOMETRY, "train_frames": args.train_frames,
                      "test_frames": args.test_frames, "seeds": [TRAIN_SEED, TEST_SEED]},
        "schedule": {"backbone": "resnet18", "weights": "none", "image_size": args.image_size,
                     "batch_size": args.batch_size, "max_minutes": args.max_minutes,
                     "max_steps": args.max_steps, "contact_weight": args.contact_weight},
        "contact_threshold": args.contact_threshold,
    }
    for k, tc in (("true_masks", False), ("true_masks_true_contacts", True)):
        doc[k] = evaluate(None, test_dir, contact_threshold=args.contact_threshold,
                          true_contacts=tc)
    if args.only == "truth":
        print(json.dumps(doc, indent=2))
        return doc
    for k, w in runs.items():
        onnx = train(train_dir, val_dir, args.work / k, contact_weight=w, args=args)
        summ = json.loads((onnx.parent / "summary.json").read_text())
        doc[k] = dict(evaluate(onnx, test_dir, contact_threshold=args.contact_threshold),
                      steps=summ.get("steps"), train_wall_s=summ.get("wall_s"),
                      val_crystal_iou=((summ.get("best") or {}).get("val") or {}).get(
                          "iou", {}).get("crystal"))
        if w > 0:  # the same class maps split by the distance map, and other thresholds
            doc[k + "_distance_split"] = evaluate(onnx, test_dir, contact_threshold=0.5,
                                                  use_contact=False)
            for thr in (0.3, 0.7):
                doc[f"{k}_threshold_{thr}"] = evaluate(onnx, test_dir, contact_threshold=thr)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return doc


if __name__ == "__main__":
    main()
