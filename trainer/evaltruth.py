"""Full-measurement evaluation against a synthetic set's ``truth.json``.

The predicted class maps go through the appliance's own measurement
(:func:`edge.measure.measure_crystals`, then :class:`edge.psd.PsdAccumulator`: kept
crystals, Miles-Lantuejoul edge weights, :func:`edge.psd.compute_psd`) with the
illuminated field (everything not classed black background) as ROI. The same is done
with the true label maps, so the report separates the segmentation's share of the error
(prediction vs label through the same pipeline) from the pipeline's own bias (label vs
the true diameters).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError

log = logging.getLogger(__name__)

#: truth population the headline x50,3 error refers to (see trainer.synth.dataset)
TRUTH_POPULATION = "all"


def volume_cdf(d_um: np.ndarray, x_um: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Cumulative volume fraction Q3 at ``x_um`` (``d <= x``), number weights optional."""
    d = np.asarray(d_um, np.float64)
    w = np.ones_like(d) if weights is None else np.asarray(weights, np.float64)
    v = w * d ** 3
    if v.sum() <= 0:
        return np.full(len(x_um), np.nan)
    order = np.argsort(d)
    cum = np.concatenate([[0.0], np.cumsum(v[order])]) / v.sum()
    return cum[np.searchsorted(d[order], x_um, side="right")]


def _measure_maps(maps: list[np.ndarray], *, px_size_um: float, crystal_class: int,
                  dark_class: int | None) -> dict[str, Any]:
    from edge.measure import MeasureConfig, measure_crystals
    from edge.psd import PsdAccumulator, PsdConfig

    mcfg = MeasureConfig()
    acc = PsdAccumulator(PsdConfig(), clear_border=mcfg.clear_border)
    n_rows = 0
    for m in maps:
        roi = (m != dark_class) if dark_class is not None else None
        if roi is not None and not roi.any():
            continue
        c = measure_crystals(m, px_size_um=px_size_um, crystal_class=crystal_class, roi=roi,
                             config=mcfg)
        n_rows += len(c)
        acc.add(c, roi=roi)
    res = acc.result()
    psd = res.psd
    return {"diameters": res.diameters_um, "weights": res.weights, "n_objects": n_rows,
            "n_kept": res.n_crystals,
            "x50_3_um": psd.x50_3_um, "x10_3_um": psd.x10_3_um, "x90_3_um": psd.x90_3_um,
            "s_lnd": psd.lognormal.s_lnd if psd.lognormal is not None else None}


def _rel(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return float(a / b - 1.0)


def compare_with_truth(pred_maps: dict[str, np.ndarray], truth_path: str | Path, *,
                       px_size_um: float, crystal_class: int, data, input_scale: float = 1.0,
                       population: str = TRUTH_POPULATION) -> dict[str, Any]:
    """Measure predicted maps (and the true labels) and compare x50,3 / Q3 with the truth.

    Parameters
    ----------
    pred_maps : dict stem -> (h, w) uint8
        Predicted class maps at network scale.
    truth_path : path
        ``truth.json`` of the dataset (``frames[*].crystals[*].diameter_um``).
    px_size_um : float
        Pixel size of the maps (the model's input pixel size).
    crystal_class : int
        Crystal class id.
    data : trainer.data.LabelledDataset
        The dataset (true labels, resized by ``input_scale`` like the frames).
    population : {'all', 'whole', 'isolated_whole'}
        Truth population of the headline comparison.
    """
    from trainer.torchdata import scale_pair

    try:
        truth = json.loads(Path(truth_path).read_text())
        frames = {f["stem"]: f for f in truth["frames"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{truth_path}: not a readable truth file: {exc}") from None
    stems = [s for s in pred_maps if s in frames]
    if not stems:
        raise UserError(f"{truth_path}: none of the evaluated frames is listed")
    dark = getattr(data, "dark_class", None)
    by_stem = {it.stem: i for i, it in enumerate(data.items)}
    label_maps = []
    for s in stems:
        img, lab = data.load(by_stem[s])
        label_maps.append(scale_pair(img, lab, input_scale)[1])
    pred = _measure_maps([pred_maps[s] for s in stems], px_size_um=px_size_um,
                         crystal_class=crystal_class, dark_class=dark)
    ref = _measure_maps(label_maps, px_size_um=px_size_um, crystal_class=crystal_class,
                        dark_class=dark)
    crystals = [c for s in stems for c in frames[s]["crystals"]]
    if population == "whole":
        crystals = [c for c in crystals if not (c["touches_border"] or c["cut_by_field"])]
    elif population == "isolated_whole":
        crystals = [c for c in crystals if not (c["touches_border"] or c["cut_by_field"]
                                                 or c["touches_other"])]
    td = np.array([c["diameter_um"] for c in crystals], np.float64)
    from trainer.synth import weighted_quantile

    x50_truth = weighted_quantile(td, td ** 3, 0.5) if td.size else None
    grid = np.arange(0.0, max(float(td.max()) if td.size else 0.0,
                              float(pred["diameters"].max()) if pred["n_kept"] else 0.0) + 10, 10)
    q_t = volume_cdf(td, grid) if td.size else None

    def q3_diff(res: dict[str, Any]) -> float | None:
        if q_t is None or not res["n_kept"]:
            return None  # nothing measured: no distribution to compare
        return float(np.max(np.abs(volume_cdf(res["diameters"], grid, res["weights"]) - q_t)))
    return {
        "truth_population": population,
        "n_frames": len(stems),
        "n_truth_crystals": int(td.size),
        "n_kept_pred": pred["n_kept"], "n_kept_label": ref["n_kept"],
        "x50_3_truth_um": x50_truth,
        "x50_3_pred_um": pred["x50_3_um"],
        "x50_3_label_um": ref["x50_3_um"],
        "x50_3_rel_error": _rel(pred["x50_3_um"], x50_truth),
        "x50_3_label_rel_error": _rel(ref["x50_3_um"], x50_truth),
        "x50_3_pred_vs_label": _rel(pred["x50_3_um"], ref["x50_3_um"]),
        "s_lnd_pred": pred["s_lnd"], "s_lnd_label": ref["s_lnd"],
        "q3_grid_um": grid.tolist(),
        "q3_max_abs_diff": q3_diff(pred),
        "q3_label_max_abs_diff": q3_diff(ref),
    }
