"""Accuracy of an INT8 model against its float model, and the release gate.

On labelled sets (the model card's generated sets, regenerated from the recipes in the
float model's metadata, or any given ones) both models go through the appliance's chain
(:func:`trainer.evaluate.evaluate_model`) and are compared:

* pixel agreement: share of pixels whose class is the same in both class maps;
* crystal IoU delta: ``IoU_int8 - IoU_float`` of the crystal class against the labels;
* x50,3 shift: ``x50,3_int8 / x50,3_float - 1`` of the size distribution the appliance
  reports for the set (volume-weighted median, :mod:`edge.psd`).

The release gate (:func:`gate_problems`) refuses an INT8 file when on any set the crystal
IoU drops by more than :data:`MAX_CRYSTAL_IOU_DROP` or x50,3 moves by more than
:data:`MAX_X50_3_SHIFT` (relative).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError

log = logging.getLogger(__name__)

#: largest allowed crystal-IoU drop of the INT8 model on any set (absolute)
MAX_CRYSTAL_IOU_DROP = 0.005
#: largest allowed relative x50,3 change of the INT8 model on any set
MAX_X50_3_SHIFT = 0.005


def card_sets(meta: Any, out: str | Path) -> dict[str, Path]:
    """Regenerate the model card's generated sets (``metrics.evaluation.<name>.synth``
    recipes in ``meta``) under ``out/<name>``; ``{}`` when the metadata has none."""
    from trainer.synth import SynthConfig, generate_dataset

    sets: dict[str, Path] = {}
    for name, ev in sorted((meta.metrics.get("evaluation") or {}).items()):
        r = ev.get("synth") if isinstance(ev, dict) else None
        if not r:
            continue
        cfg = SynthConfig(size_mode=r["size_mode"], fraction_um=tuple(r["fraction_um"]),
                          width=r["width"], height=r["height"], px_size_um=r["px_size_um"])
        generate_dataset(Path(out) / name, int(r["n_frames"]), cfg, seed=int(r["seed"]))
        sets[name] = Path(out) / name
    return sets


def pixel_agreement(float_model: str | Path, int8_model: str | Path,
                    data_dir: str | Path) -> float:
    """Share of pixels (at network scale) classified alike by both models on the frames
    of ``data_dir``, segmented as the appliance does."""
    from trainer.data import LabelledDataset
    from trainer.evalframes import load_pair
    from trainer.evalmodel import LoadedModel
    from trainer.evaluate import ChainSettings

    data = LabelledDataset(data_dir)
    analyzers = []
    for path in (float_model, int8_model):
        m = LoadedModel(path)
        # the networks compared pixel for pixel: both maps at one scale, no second pass
        analyzers.append(m.analyzer(ChainSettings(thin_width_px=0),
                                    data.px_size_um or m.meta.px_size_um))
    same = total = 0
    try:
        for i in range(len(data)):
            image, _ = load_pair(data, i)
            a, b = (an.segment([image])[0] for an in analyzers)
            same += int(np.count_nonzero(a == b))
            total += a.size
    finally:
        for an in analyzers:
            an.close()
    return same / max(total, 1)


def _set_agreement(float_model: Path, int8_model: Path, data_dir: Path) -> dict[str, Any]:
    from trainer.evaluate import evaluate_model

    res = {k: evaluate_model(p, data_dir) for k, p in (("float", float_model),
                                                       ("int8", int8_model))}
    crystal = res["float"].segmentation["iou"]
    name = next(n for n in crystal if "crystal" in n)
    iou = {k: float(r.segmentation["iou"][name]) for k, r in res.items()}
    x50 = {k: (r.psd or {}).get("x50_3_um") for k, r in res.items()}
    shift = (x50["int8"] / x50["float"] - 1.0) if x50["float"] and x50["int8"] else None
    return {"data": str(data_dir), "n_frames": res["float"].n_frames,
            "pixel_agreement": pixel_agreement(float_model, int8_model, data_dir),
            "crystal_iou_float": iou["float"], "crystal_iou_int8": iou["int8"],
            "crystal_iou_delta": iou["int8"] - iou["float"],
            "x50_3_float_um": x50["float"], "x50_3_int8_um": x50["int8"],
            "x50_3_shift": shift}


def measure_agreement(float_model: str | Path, int8_model: str | Path,
                      sets: Mapping[str, str | Path]) -> dict[str, Any]:
    """Per-set agreement of ``int8_model`` with ``float_model`` and the worst case.

    Returns ``{"sets": {name: {...}}, "pixel_agreement": min, "crystal_iou_delta": min,
    "x50_3_shift": the largest in magnitude (signed), "x50_3_shift_pct": the same in %}``.
    """
    if not sets:
        raise UserError("INT8 agreement: no labelled sets to measure on")
    per = {name: _set_agreement(Path(float_model), Path(int8_model), Path(d))
           for name, d in sets.items()}
    for name, a in per.items():
        log.info("INT8 vs float on %s: pixel agreement %.5f, crystal IoU %+.4f, x50,3 %s",
                 name, a["pixel_agreement"], a["crystal_iou_delta"],
                 "n/a" if a["x50_3_shift"] is None else f"{100 * a['x50_3_shift']:+.2f} %")
    shifts = [a["x50_3_shift"] for a in per.values() if a["x50_3_shift"] is not None]
    worst = max(shifts, key=abs) if shifts else None
    return {"sets": per,
            "pixel_agreement": min(a["pixel_agreement"] for a in per.values()),
            "crystal_iou_delta": min(a["crystal_iou_delta"] for a in per.values()),
            "x50_3_shift": worst,
            "x50_3_shift_pct": None if worst is None else 100.0 * worst}


def gate_problems(agreement: Mapping[str, Any], *,
                  max_iou_drop: float = MAX_CRYSTAL_IOU_DROP,
                  max_x50_shift: float = MAX_X50_3_SHIFT) -> list[str]:
    """What keeps an INT8 file from release (empty: it passes), one phrase per set."""
    problems = []
    for name, a in agreement["sets"].items():
        if a["crystal_iou_delta"] < -max_iou_drop:
            problems.append(f"{name}: crystal IoU {a['crystal_iou_delta']:+.4f} "
                            f"(allowed -{max_iou_drop:g})")
        if a["x50_3_shift"] is None:
            problems.append(f"{name}: no x50,3 measured")
        elif abs(a["x50_3_shift"]) > max_x50_shift:
            problems.append(f"{name}: x50,3 {100 * a['x50_3_shift']:+.2f} % "
                            f"(allowed +-{100 * max_x50_shift:g} %)")
    return problems


def check_release(agreement: Mapping[str, Any], int8_path: str | Path) -> None:
    """Raise a one-line :class:`UserError` naming ``int8_path`` when the gate refuses."""
    problems = gate_problems(agreement)
    if problems:
        raise UserError(f"{int8_path}: INT8 release gate refused: {'; '.join(problems)}")


def card_rows(quantization: Mapping[str, Any]) -> list[str]:
    """The model card's INT8 table (Markdown rows) from an INT8 file's
    ``quantization`` metadata: per set, pixel agreement, crystal IoU and x50,3 of the
    FP32 and the INT8 model."""
    rows = ["| set | pixel agreement | crystal IoU FP32 -> INT8 | x50,3 FP32 -> INT8 |",
            "|---|---|---|---|"]
    for name, a in quantization["agreement"]["sets"].items():
        shift = a["x50_3_shift"]
        rows.append(
            f"| {name} | {100 * a['pixel_agreement']:.2f} % | {a['crystal_iou_float']:.4f} -> "
            f"{a['crystal_iou_int8']:.4f} ({a['crystal_iou_delta']:+.4f}) | "
            f"{a['x50_3_float_um']:.1f} -> {a['x50_3_int8_um']:.1f} um "
            f"({'n/a' if shift is None else f'{100 * shift:+.2f} %'}) |")
    return rows
