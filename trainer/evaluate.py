"""Evaluate a model on a labelled dataset: ``crystal-train evaluate``.

Frames go through the appliance's own chain, the one ``crystal-edge analyze`` and
``crystal-edge run`` use: each frame is decoded unchanged by :mod:`edge.vision.decode` (bit
depth, channels), then one :class:`edge.vision.analyzer.FrameAnalyzer` runs the quality gate,
the segmentation (:mod:`edge.vision.preprocess` scaling and REFLECT_101 padding, an
:mod:`edge.backends` backend for an ``.onnx``, the checkpoint's PyTorch forward for a
``.pt``) and the post-processing (ROI detection, crowding check, measurement), and the
measured frames go into one :class:`edge.psd.PsdAccumulator`. The result's ``psd`` is
therefore the distribution the appliance reports for these frames with the same
settings (:class:`ChainSettings`, ``--config`` and ``--px-size-um``).

Segmentation metrics (pixel accuracy — the study's 93.02 % metric —, per-class IoU,
confusion matrix) are computed on every decodable frame at the network's input scale,
against the labels resized to the class map (nearest). Where the dataset has
``truth.json`` (synthetic data), x50,3 and Q3 of the frames the appliance measured are
compared with the truth and with the same measurement on the true labels (see
:mod:`trainer.evaltruth`); for a model with a contact channel and a dataset with
``contacts/``, the true labels are split at the true contacts, as the prediction is at
the predicted ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from edge.vision.finescale import THIN_SCALE_FACTOR, THIN_WIDTH_PX
from trainer.evalframes import FrameRun, run_frames
from trainer.evalmodel import LoadedModel


@dataclass(frozen=True)
class ChainSettings:
    """The appliance settings a model is evaluated with (None: the service's defaults).

    Attributes
    ----------
    px_size_um : float, optional
        Pixel size of the frames (um); None = the dataset's ``classes.json``, else the
        model's network pixel size (frames already at network scale).
    inference_scale : float or "auto"
        ``[model] inference_scale``.
    flip_average : bool
        ``[model] flip_average``.
    thin_width_px, thin_scale_factor : float
        ``[model] thin_width_px`` and ``thin_scale_factor``.
    measure, psd, quality, roi, domain : optional
        ``[measure]``, ``[psd]``, ``[quality]``, ``[roi]``, ``[domain]`` sections.
    """

    px_size_um: float | None = None
    inference_scale: float | str = "auto"
    flip_average: bool = False
    thin_width_px: float = THIN_WIDTH_PX
    thin_scale_factor: float = THIN_SCALE_FACTOR
    measure: Any = None
    psd: Any = None
    quality: Any = None
    roi: Any = None
    domain: Any = None


def settings_from_config(path: str | Path, *, px_size_um: float | None = None) -> ChainSettings:
    """:class:`ChainSettings` from a ``crystal-edge`` configuration file.

    The pixel size is ``px_size_um`` when given, else the file's ``[optics] px_size_um``.
    """
    from edge.service.config import load_config

    cfg = load_config(path)
    return ChainSettings(px_size_um=px_size_um or cfg.optics.px_size_um,
                         inference_scale=cfg.model.inference_scale,
                         flip_average=cfg.model.flip_average,
                         thin_width_px=cfg.model.thin_width_px,
                         thin_scale_factor=cfg.model.thin_scale_factor, measure=cfg.measure,
                         psd=cfg.psd, quality=cfg.quality, roi=cfg.roi, domain=cfg.domain)


# ----------------------------------------------------------------------------- result
@dataclass
class EvaluationResult:
    """Metrics of one model on one dataset (``to_payload()``: plain JSON types).

    ``psd`` is the size distribution the appliance chain measured on the frames
    (:func:`psd_payload`); ``measurement`` its comparison with ``truth.json``;
    ``intervals`` how far crystal IoU and those comparisons could move on another sample
    of frames of the kind (:func:`trainer.evalstats.frame_intervals`); ``sample`` the
    frame-by-frame figures they come from (not in the payload; for
    :func:`trainer.evalstats.paired_intervals`).
    """

    model: str
    data: str
    n_frames: int
    input_scale: float
    px_size_um: float
    segmentation: dict[str, Any]
    measurement: dict[str, Any] | None = None
    psd: dict[str, Any] | None = None
    per_frame: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    intervals: dict[str, Any] = field(default_factory=dict)
    sample: Any = None

    def to_payload(self) -> dict[str, Any]:
        return {"model": self.model, "data": self.data, "n_frames": self.n_frames,
                "input_scale": self.input_scale, "px_size_um": self.px_size_um,
                "segmentation": self.segmentation, "psd": self.psd,
                "measurement": self.measurement, "intervals": self.intervals,
                "per_frame": self.per_frame, "skipped": self.skipped}

    def summary(self) -> str:
        seg = self.segmentation
        names = list(seg["iou"])
        iv = self.intervals
        lines = [f"{self.model} on {self.data}: {self.n_frames} frames at "
                 f"{self.px_size_um:.3g} um/px (scale {self.input_scale:.3g})",
                 f"pixel accuracy {100 * seg['pixel_accuracy']:.2f} %, mean IoU "
                 f"{_pct(seg['mean_iou'])}",
                 "IoU " + ", ".join(f"{n} {_pct(seg['iou'][n])}" for n in names)
                 + _span(iv.get("iou_crystal"), _pct, "crystal ")]
        if self.psd:
            p = self.psd
            rej = sum(p["frames_rejected_by_reason"].values())
            lines.append(f"appliance chain: {p['n_crystals']} crystals in {p['frames_used']} "
                         f"frames ({rej} rejected), x50,3 {_um(p['x50_3_um'])}")
        if self.measurement:
            m = self.measurement
            lines.append(
                f"x50,3 predicted {_um(m['x50_3_pred_um'])}, through the labels"
                f"{' and true contacts' if m.get('label_contacts') else ''} "
                f"{_um(m['x50_3_label_um'])}, truth ({m['truth_population']}) "
                f"{_um(m['x50_3_truth_um'])}: error {_pct(m['x50_3_rel_error'], signed=True)}"
                f"{_span(iv.get('x50_3_rel_error'), _signed_pct)}; "
                f"Q3 max |diff| {_num(m['q3_max_abs_diff'])}"
                f"{_span(iv.get('q3_max_abs_diff'), _num)}")
        if iv:
            lines.append("(95 %: intervals from resampling the frames, trainer.evalstats: "
                         "IoU and x50,3 error where many more frames of this kind would put "
                         "them; for the Q3 distance, how much it moves between samples)")
        return "\n".join(lines)


def _span(iv: dict[str, float] | None, fmt: Any, label: str = "") -> str:
    """`` (95 %: lo .. hi)`` of one interval, each end written by ``fmt``."""
    return f" ({label}95 %: {fmt(iv['lo'])} .. {fmt(iv['hi'])})" if iv else ""


def _signed_pct(v: float | None) -> str:
    return _pct(v, signed=True)


def _pct(v: float | None, *, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:+.2f} %" if signed else f"{100 * v:.2f} %"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _um(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} um"


def psd_payload(summary: Any) -> dict[str, Any]:
    """Plain JSON of an :class:`edge.psd.PsdSummary`: frame and crystal counts, then
    :meth:`edge.psd.PSDResult.to_payload` (``n_crystals``, ``x50_3_um``, ``bins`` with
    each size class's cumulative ``Q3``)."""
    return {"frames_used": summary.frames_used,
            "frames_rejected_by_reason": dict(summary.frames_rejected_by_reason),
            "crystals_rejected_by_reason": dict(summary.crystals_rejected_by_reason),
            "edge_correction": summary.edge_correction, **summary.psd.to_payload(),
            "process": summary.process.to_payload(), "confidence": summary.process.confidence}


# ----------------------------------------------------------------------------- main
def evaluate_model(model_path: str | Path, data_dir: str | Path, *, max_frames: int | None = None,
                   measure: bool = True, backend: Any = None,
                   settings: ChainSettings | None = None) -> EvaluationResult:
    """Evaluate ``model_path`` (.onnx or .pt) on the labelled dataset ``data_dir``.

    ``backend`` (an :class:`edge.backends.BackendConfig`) runs an ``.onnx``; default
    :data:`trainer.evalmodel.EVAL_BACKEND`. ``settings`` are the appliance's (default: the service's
    defaults). Unreadable frames are skipped with a warning (listed in ``skipped``); the
    run fails with :class:`UserError` only when no frame could be evaluated.
    """
    from trainer.data import LabelledDataset
    from trainer.engine import metrics_from_confusion
    settings = settings or ChainSettings()
    model = LoadedModel(model_path, backend)
    data = LabelledDataset(data_dir)
    if data.class_names != model.class_names:
        raise UserError(f"{data.root}: classes {data.class_names} differ from the model's "
                        f"{model.class_names}")
    px = settings.px_size_um or data.px_size_um or model.meta.px_size_um
    analyzer = model.analyzer(settings, px)
    try:
        n = len(data) if max_frames is None else min(len(data), max_frames)
        run = run_frames(analyzer, data, n, measure=measure, psd_config=settings.psd)
    finally:
        analyzer.close()
    if not run.per_frame:
        raise UserError(f"{data.root}: no frame could be evaluated")
    seg = metrics_from_confusion(run.cm, model.class_names)
    psd = measurement = label_frames = None
    truth = Path(data_dir) / "truth.json"
    if measure:
        summary = run.acc.result()
        psd = psd_payload(summary)
        if truth.is_file():
            from trainer.evaltruth import compare_with_truth, floor_contacts, measure_label_frames

            contacts = floor_contacts(run.label_maps, run.contact_maps or None)
            label_frames = measure_label_frames(
                run.label_maps.values(), px_size_um=list(run.label_px_size_um.values()),
                crystal_class=analyzer.crystal_class, dark_class=data.dark_class,
                measure_config=analyzer.measure_config, psd_config=run.acc.config,
                contacts=None if contacts is None else list(contacts.values()))
            measurement = compare_with_truth(
                summary, run.label_maps, truth, px_size_um=analyzer.px_size_um,
                crystal_class=analyzer.crystal_class, dark_class=data.dark_class,
                measure_config=analyzer.measure_config, psd_config=run.acc.config,
                contact_maps=contacts, label_frames=label_frames)
    sample = _frame_sample(run, analyzer.crystal_class, truth if measurement else None,
                           label_frames, measurement)
    from trainer.evalstats import frame_intervals

    return EvaluationResult(model=str(model_path), data=str(data_dir),
                            n_frames=len(run.per_frame), input_scale=analyzer.inference_scale,
                            px_size_um=float(analyzer.px_size_um), segmentation=seg,
                            measurement=measurement, psd=psd, per_frame=run.per_frame,
                            skipped=run.skipped, intervals=frame_intervals(sample),
                            sample=sample)


def _frame_sample(run: FrameRun, crystal_class: int, truth: Path | None,
                  label_frames: list[Any] | None, measurement: dict[str, Any] | None) -> Any:
    """The evaluation frame by frame (:class:`trainer.evalstats.FrameSample`): each
    evaluated frame's confusion matrix and, with a truth, the crystals measured on its
    prediction and labels and its true crystals (none where the chain rejected it)."""
    from trainer.evalstats import FrameSample, Sizes
    from trainer.evaltruth import truth_by_frame

    stems = tuple(e["stem"] for e in run.per_frame)
    conf = np.stack(run.confusion)  # one per evaluated frame (there is at least one)
    if truth is None or label_frames is None or measurement is None:
        return FrameSample(stems, conf, crystal_class)
    labels = dict(zip(run.label_maps, label_frames, strict=True))
    true = dict(zip(run.label_maps, truth_by_frame(truth, run.label_maps), strict=True))
    empty = (np.zeros(0), None)

    def sizes(by_stem: dict[str, Any]) -> Sizes:
        return Sizes.from_frames([empty if by_stem.get(s) is None else
                                  (by_stem[s].diameters_um, by_stem[s].weights)
                                  for s in stems])
    return FrameSample(stems, conf, crystal_class, pred=sizes(run.contributions),
                       label=sizes(labels),
                       truth=Sizes.from_frames([(true.get(s, np.zeros(0)), None)
                                                for s in stems]),
                       grid_um=np.asarray(measurement["q3_grid_um"], np.float64))


def write_json(result: EvaluationResult, path: str | Path, *,
               comparison: dict[str, Any] | None = None) -> Path:
    """``result`` as JSON; with ``comparison`` (:func:`compare_results`) under that key."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = result.to_payload()
    if comparison is not None:
        payload["comparison"] = comparison
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def synth_recipe(data_dir: str | Path) -> dict[str, Any] | None:
    """How a generated dataset was made (from its ``truth.json``), so that the numbers in
    a model card can be reproduced: ``crystal-train synth --fraction A-B --n N --seed S
    --size WxH --px-size-um P`` with the generator's other settings at their defaults.
    None for data that was not generated (or whose truth file is unreadable)."""
    try:
        truth = json.loads((Path(data_dir) / "truth.json").read_text())
        cfg = truth["config"]
        return {"seed": int(truth["seed"]), "n_frames": int(truth["n_frames"]),
                "size_mode": str(cfg["size_mode"]),
                "fraction_um": [float(v) for v in cfg["fraction_um"]],
                "width": int(cfg["width"]), "height": int(cfg["height"]),
                "px_size_um": float(cfg["px_size_um"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def update_model_metrics(onnx_path: str | Path, result: EvaluationResult) -> Path:
    """Record ``result``'s headline numbers in the model's metadata.

    They go to ``metrics.evaluation.<dataset folder name>`` (several datasets side by side).
    """
    from edge.modelmeta import load_meta, write_meta

    meta = load_meta(onnx_path)
    seg = result.segmentation
    ev: dict[str, Any] = {"data": result.data, "n_frames": result.n_frames,
                          "pixel_accuracy": seg["pixel_accuracy"], "iou": seg["iou"],
                          "mean_iou": seg["mean_iou"]}
    if result.measurement:
        ev["measurement"] = {k: v for k, v in result.measurement.items() if k != "frames"}
    recipe = synth_recipe(result.data)
    if recipe is not None:
        ev["synth"] = recipe
    evals = dict(meta.metrics.get("evaluation") or {})
    evals[Path(result.data).name] = ev
    meta.metrics = dict(meta.metrics, evaluation=evals)
    return write_meta(meta, onnx_path)
