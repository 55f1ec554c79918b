"""The evaluation's pass over the frames, as the appliance takes them.

Each frame is decoded unchanged (:func:`load_pair`), segmented by the appliance's
:class:`edge.vision.analyzer.FrameAnalyzer` and compared with its label at the network's
input scale; the frames the quality gate passes are post-processed and go into one
:class:`edge.psd.PsdAccumulator`. :func:`trainer.evaluate.evaluate_model` turns what
:func:`run_frames` collects into metrics; :func:`load_pair` also serves scripts and
:mod:`trainer.int8gate` that segment the frames themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.errors import UserError

#: the logger of ``crystal-train evaluate``: a skipped frame is reported under its name
log = logging.getLogger("trainer.evaluate")


@dataclass
class FrameRun:
    """What :func:`run_frames` collects: the confusion matrix (pooled and per frame),
    per-frame metrics, the accumulator of the measured frames, their contributions and
    label maps (network scale) with the pixel size each was measured at (a frame of thin
    crystals is measured finer), the true contact maps of those frames where the model
    has a contact channel, skips."""

    cm: np.ndarray
    acc: Any
    per_frame: list[dict[str, Any]] = field(default_factory=list)
    confusion: list[np.ndarray] = field(default_factory=list)
    contributions: dict[str, Any] = field(default_factory=dict)
    label_maps: dict[str, np.ndarray] = field(default_factory=dict)
    label_px_size_um: dict[str, float] = field(default_factory=dict)
    contact_maps: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def run_frames(analyzer: Any, data: Any, n: int, *, measure: bool, psd_config: Any) -> FrameRun:
    """Segment the first ``n`` frames (all of them, for the metrics) and post-process
    those the quality gate passes, in stem order as the appliance would."""
    from edge.psd import PsdAccumulator
    from edge.vision.contact import contact_of
    from edge.vision.preprocess import resize_label
    from trainer.engine import confusion_matrix, metrics_from_confusion
    from trainer.rescale import resize_contact

    names = data.class_names
    run = FrameRun(cm=np.zeros((len(names), len(names)), np.int64),
                    acc=PsdAccumulator(psd_config,
                                       clear_border=analyzer.measure_config.clear_border))
    use_contacts: bool | None = None  # the model has the channel and the data the labels
    for i in range(n):
        stem = data.items[i].stem
        try:
            image, label = load_pair(data, i)
        except UserError as exc:
            log.warning("skipping: %s", exc)
            run.skipped.append(str(exc))
            continue
        quality = analyzer.check_quality_full(image)
        pred = analyzer.segment([image])[0]
        if use_contacts is None:
            use_contacts = contact_of(pred) is not None and data.has_contacts
        label = resize_label(label, (pred.shape[1], pred.shape[0]))
        fcm = confusion_matrix(pred, label, len(names))
        run.cm += fcm
        run.confusion.append(fcm)
        fm = metrics_from_confusion(fcm, names)
        entry = {"stem": stem, "pixel_accuracy": fm["pixel_accuracy"],
                 "crystal_iou": fm["iou"][names[analyzer.crystal_class]]}
        if measure:
            entry["reject_reason"] = _measure_frame(analyzer, run, stem, image, class_map=pred,
                                                    quality=quality, label=label)
            if entry["reject_reason"] is None and use_contacts:
                con = data.load_contact(i)
                run.contact_maps[stem] = resize_contact(
                    con, (pred.shape[1], pred.shape[0])).astype(np.float32)
        run.per_frame.append(entry)
    return run


def _measure_frame(analyzer: Any, run: FrameRun, stem: str, image: np.ndarray, *,
                   class_map: np.ndarray, quality: Any, label: np.ndarray) -> str | None:
    """Post-process one segmented frame as the appliance does and add its
    :class:`~edge.vision.result.FrameResult` to ``run``; the reason it was rejected, or
    None."""
    from edge.vision.result import FrameResult

    if quality.ok:
        res = analyzer.postprocess(stem, image, class_map, quality=quality)
    else:
        res = FrameResult.from_error(stem, quality.reason, quality.detail)
    contrib = run.acc.add_frame(res)
    if res.ok:
        run.label_maps[stem] = label
        run.label_px_size_um[stem] = float(res.px_size_um)
        run.contributions[stem] = contrib
    return res.reject_reason


def load_pair(data: Any, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``i`` as :mod:`edge.vision.decode` gives it to the appliance (unchanged bit depth
    and channels) and its label (contiguous class ids); UserError naming the file."""
    from edge.vision.decode import DecodeError, decode_file
    from trainer.data.reader import check_same_size

    item = data.items[i]
    try:
        image = decode_file(item.image).image
    except DecodeError as exc:
        raise UserError(f"{item.image}: {exc.reason}") from None
    label = data.load_label(i)
    check_same_size(item, image, label)
    return image, label
