"""Full-measurement evaluation against a synthetic set's ``truth.json``.

The predicted side is what the appliance chain measured (``crystal-train evaluate``:
quality gate, ROI detection, crowding check, :func:`edge.measure.measure_crystals`,
:class:`edge.psd.PsdAccumulator`). The true label maps of the same frames are measured
with the same settings and the same accumulator inside the labelled field (everything
not classed black background), so the report separates the segmentation's share of the
error (prediction vs labels) from the measurement's own bias (labels vs the true
diameters).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError

log = logging.getLogger(__name__)

#: truth population the headline x50,3 error refers to (see trainer.synth.dataset): the
#: crystals centred in the measured window, the population the edge-corrected
#: distribution estimates
TRUTH_POPULATION = "centred"


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


def measure_label_frames(maps: Iterable[np.ndarray], *, px_size_um: float | Sequence[float],
                         crystal_class: int, dark_class: int | None,
                         measure_config: Any = None, psd_config: Any = None,
                         contacts: Iterable[np.ndarray | None] | None = None
                         ) -> list[Any | None]:
    """The true label maps measured one by one: per map, the
    :class:`edge.psd.FrameContribution` that :func:`measure_label_maps` collects (None
    for a map without a labelled field).

    Each map is measured by :func:`edge.measure.measure_crystals` inside the labelled
    field (everything not ``dark_class``) with ``px_size_um``, one for all maps or one per
    map (each at the scale its frame was measured at). ``contacts``: per map, its true
    contact map
    (0/1, same shape) to split at, as a model's contact channel is used; None: split by
    the distance map."""
    from edge.measure import MeasureConfig, measure_crystals
    from edge.psd import PsdAccumulator

    mcfg = measure_config or MeasureConfig()
    acc = PsdAccumulator(psd_config, clear_border=mcfg.clear_border)
    maps = list(maps)
    cons = [None] * len(maps) if contacts is None else list(contacts)
    pxs = [px_size_um] * len(maps) if np.isscalar(px_size_um) else list(px_size_um)
    out = []
    for m, con, px in zip(maps, cons, pxs, strict=True):
        roi = (m != dark_class) if dark_class is not None else None
        if roi is not None and not roi.any():
            out.append(None)
            continue
        c = measure_crystals(m, px_size_um=float(px), crystal_class=crystal_class, roi=roi,
                             config=mcfg, contact=con)
        out.append(acc.contribution(c, roi=roi))
    return out


def measure_label_maps(maps: Iterable[np.ndarray], *, px_size_um: float, crystal_class: int,
                       dark_class: int | None, measure_config: Any = None,
                       psd_config: Any = None,
                       contacts: Iterable[np.ndarray | None] | None = None) -> Any:
    """The true label maps measured (:func:`measure_label_frames`, same parameters) and
    collected by :class:`edge.psd.PsdAccumulator`: an :class:`edge.psd.PsdSummary`."""
    return summarize(measure_label_frames(
        maps, px_size_um=px_size_um, crystal_class=crystal_class, dark_class=dark_class,
        measure_config=measure_config, psd_config=psd_config, contacts=contacts),
        psd_config=psd_config, measure_config=measure_config)


def summarize(frames: Iterable[Any | None], *, psd_config: Any = None,
              measure_config: Any = None) -> Any:
    """The :class:`edge.psd.PsdSummary` of per-frame contributions (None: a frame that
    adds nothing, not even a count)."""
    from edge.measure import MeasureConfig
    from edge.psd import PsdAccumulator

    acc = PsdAccumulator(psd_config,
                         clear_border=(measure_config or MeasureConfig()).clear_border)
    for c in frames:
        if c is not None:
            acc.add_contribution(c)
    return acc.result()


def _x50_3(res: Any) -> float | None:
    return res.psd.x50_3_um if res.n_crystals else None


def _s_lnd(res: Any) -> float | None:
    fit = res.psd.lognormal
    return fit.s_lnd if fit is not None else None


def _rel(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return float(a / b - 1.0)


def _truth_frames(truth_path: str | Path, stems: Iterable[str]
                  ) -> tuple[dict[str, Any], tuple[int, int]]:
    """The frames of ``truth.json`` by stem and the set's frame size (h, w); a UserError
    when unreadable or a stem is missing."""
    try:
        truth = json.loads(Path(truth_path).read_text())
        frames = {f["stem"]: f for f in truth["frames"]}
        hw = (int(truth["config"]["height"]), int(truth["config"]["width"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{truth_path}: not a readable truth file: {exc}") from None
    missing = [s for s in stems if s not in frames]
    if missing:
        raise UserError(f"{truth_path}: frame {missing[0]!r} is not listed")
    return frames, hw


def _truth_diameters(frames: list[dict[str, Any]], population: str,
                     frame_hw: tuple[int, int]) -> np.ndarray:
    """Area-equivalent diameters (um) of the true crystals of ``population`` in ``frames``."""
    parts = _truth_by_frame(frames, population, frame_hw)
    return np.concatenate(parts) if parts else np.zeros(0)


def _truth_by_frame(frames: list[dict[str, Any]], population: str,
                    frame_hw: tuple[int, int]) -> list[np.ndarray]:
    from trainer.synth import select_records

    return [np.array([c["diameter_um"] for c in select_records(f, population, frame_hw)],
                     np.float64) for f in frames]


def truth_by_frame(truth_path: str | Path, stems: Iterable[str], *,
                   population: str = TRUTH_POPULATION) -> list[np.ndarray]:
    """Per stem, the true diameters (um) of ``population`` in that frame."""
    stems = list(stems)
    frames, frame_hw = _truth_frames(truth_path, stems)
    return _truth_by_frame([frames[s] for s in stems], population, frame_hw)


def floor_contacts(label_maps: Mapping[str, np.ndarray],
                   contact_maps: Mapping[str, np.ndarray] | None
                   ) -> Mapping[str, np.ndarray] | None:
    """The true contact maps to split the labels at, or None (split by the distance map)
    when some frame of ``label_maps`` has none: the floor needs every frame's."""
    if contact_maps is None or set(contact_maps) != set(label_maps):
        return None
    return contact_maps


def compare_with_truth(pred: Any, label_maps: Mapping[str, np.ndarray],
                       truth_path: str | Path, *, px_size_um: float, crystal_class: int,
                       dark_class: int | None, measure_config: Any = None,
                       psd_config: Any = None,
                       population: str = TRUTH_POPULATION,
                       contact_maps: Mapping[str, np.ndarray] | None = None,
                       label_frames: list[Any | None] | None = None) -> dict[str, Any]:
    """Compare the appliance's distribution of some frames with their truth and labels.

    Parameters
    ----------
    pred : edge.psd.PsdSummary
        What the appliance chain measured on the frames (``crystal-train evaluate``).
    label_maps : dict stem -> (h, w) uint8
        The true label maps of the same frames, at the network scale the frames were
        measured at; measured by :func:`measure_label_maps`.
    truth_path : path
        ``truth.json`` of the dataset (``frames[*].crystals[*].diameter_um``); must list
        every frame of ``label_maps``.
    px_size_um : float
        Pixel size of the maps (the frames' pixel size over the inference scale).
    crystal_class, dark_class : int
        Class ids of crystals and of the black background outside the field.
    measure_config, psd_config : optional
        The settings ``pred`` was measured with (the label side uses them too).
    population : {'centred', 'all', 'whole', 'isolated_whole'}
        Truth population of the headline comparison (:func:`trainer.synth.select_records`;
        default the crystals centred in the field, which the edge-corrected distribution
        estimates).
    contact_maps : dict stem -> (h, w) float, optional
        The true contact maps of every frame of ``label_maps`` (the model has a contact
        channel): the label side is split at the true contacts, so it is the floor of
        the chain the prediction went through; ``label_contacts`` in the result says so.
    label_frames : list, optional
        :func:`measure_label_frames` of ``label_maps`` with these settings and contacts,
        when the caller has them already (they are measured here otherwise).
    """
    frames, frame_hw = _truth_frames(truth_path, label_maps)
    contact_maps = floor_contacts(label_maps, contact_maps)
    if label_frames is None:
        label_frames = measure_label_frames(
            label_maps.values(), px_size_um=px_size_um, crystal_class=crystal_class,
            dark_class=dark_class, measure_config=measure_config, psd_config=psd_config,
            contacts=None if contact_maps is None else [contact_maps[s] for s in label_maps])
    ref = summarize(label_frames, psd_config=psd_config, measure_config=measure_config)
    td = _truth_diameters([frames[s] for s in label_maps], population, frame_hw)
    from trainer.synth import weighted_quantile

    x50_truth = weighted_quantile(td, td ** 3, 0.5) if td.size else None
    td_all = _truth_diameters([frames[s] for s in label_maps], "all", frame_hw)
    top = max(float(td.max()) if td.size else 0.0,
              float(pred.diameters_um.max()) if pred.n_crystals else 0.0)
    grid = np.arange(0.0, top + 10, 10)
    q_t = volume_cdf(td, grid) if td.size else None

    def q3_diff(res: Any) -> float | None:
        if q_t is None or not res.n_crystals:
            return None  # nothing measured: no distribution to compare
        return float(np.max(np.abs(volume_cdf(res.diameters_um, grid, res.weights) - q_t)))
    x50_pred, x50_label = _x50_3(pred), _x50_3(ref)
    return {
        "truth_population": population,
        "label_contacts": contact_maps is not None,
        "n_frames": len(label_maps),
        "n_frames_rejected": pred.frames_rejected,
        "n_truth_crystals": int(td.size),
        "n_kept_pred": pred.n_crystals, "n_kept_label": ref.n_crystals,
        "x50_3_truth_um": x50_truth,
        # every crystal with a visible pixel, for comparison (leans towards large ones)
        "x50_3_truth_all_um": weighted_quantile(td_all, td_all ** 3, 0.5) if td_all.size else None,
        "x50_3_pred_um": x50_pred,
        "x50_3_label_um": x50_label,
        "x50_3_rel_error": _rel(x50_pred, x50_truth),
        "x50_3_label_rel_error": _rel(x50_label, x50_truth),
        "x50_3_pred_vs_label": _rel(x50_pred, x50_label),
        "s_lnd_pred": _s_lnd(pred), "s_lnd_label": _s_lnd(ref),
        "q3_grid_um": grid.tolist(),
        "q3_max_abs_diff": q3_diff(pred),
        "q3_label_max_abs_diff": q3_diff(ref),
    }
