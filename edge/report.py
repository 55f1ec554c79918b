"""The analysis report of ``crystal-edge analyze``: per-input results -> one PSD -> JSON/CSV.

Both ways of getting crystal masks use it: ``--masks`` (mask files measured directly) and
the image mode (frames segmented by a model). A mode only produces one
:class:`edge.vision.result.FrameResult` per input (measured, or rejected with its reason);
:func:`build_report` adds them to one :class:`edge.psd.PsdAccumulator` (which crystals
count, their edge-correction weights, :func:`edge.psd.compute_psd` once), the same
accumulator the service's batches and the model card use.

Names follow ISO 9276-1 (as the ``psd`` payload): in ``bins`` and the classes CSV,
``q0``/``q3`` are the fractions in each class and ``Q0``/``Q3`` the cumulative fractions at
its upper edge, on the device's fixed class grid (:func:`edge.psd.class_edges`, the last
class the overflow above ``class_max_um``, its ``upper_um`` null / empty).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge import __version__
from edge.errors import UserError
from edge.measure import REASONS, MeasureConfig
from edge.psd import ProcessValues, PsdAccumulator, PsdConfig, PSDResult, kept_mask
from edge.vision.result import FrameResult

REPORT_SCHEMA_ID = "crystal-psd/analysis-report"
REPORT_SCHEMA_VERSION = 2
#: Rejection reasons always listed in ``n_rejected`` (zeros included).
REJECT_REASONS: tuple[str, ...] = REASONS
#: Below this many kept crystals the report notes that volume statistics are uncertain
#: (ISO 13322-1: volume-weighted results need thousands of particles).
FEW_CRYSTALS = 1000


def _rejected(by_reason: dict[str, int]) -> dict[str, int]:
    """``by_reason`` with every reason of :data:`REJECT_REASONS` listed (zeros included)."""
    counts = {r: 0 for r in REJECT_REASONS}
    for reason, n in by_reason.items():
        counts[str(reason)] = counts.get(str(reason), 0) + int(n)
    return counts


@dataclass
class AnalysisReport:
    """All files of one analysis and their combined size distribution."""

    mode: str
    files: list[FrameResult]
    psd: PSDResult
    weights: list[np.ndarray | None]
    px_size_um: float
    measure_config: MeasureConfig
    psd_config: PsdConfig
    edge_correction_applied: bool
    crystals_rejected_by_reason: dict[str, int] = field(default_factory=dict)
    settings_extra: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    process: ProcessValues = field(default_factory=ProcessValues)

    @property
    def n_images(self) -> int:
        return len(self.files)

    @property
    def n_images_ok(self) -> int:
        return sum(f.ok for f in self.files)

    @property
    def n_rejected(self) -> dict[str, int]:
        return _rejected(self.crystals_rejected_by_reason)

    def notes(self) -> list[str]:
        """Plain-language caveats about the numbers (also printed by the CLI)."""
        out = []
        n = self.psd.n
        if 0 < n < FEW_CRYSTALS:
            out.append(f"only {n} crystals: volume statistics (x50,3, Q3) are uncertain; "
                       f"ISO 13322-1 asks for thousands (see x50_3_ci95_um)")
        if self.n_images_ok and n == 0:
            out.append("no crystal was kept; check the masks, --crystal-class and the "
                       "measurement settings (n_rejected)")
        without_row = sum(f.crystals.dropped.get("too_small", 0) - len(f.crystals.small)
                          for f in self.files if f.ok and f.crystals is not None)
        if without_row:
            out.append(f"{without_row} speckle objects removed as too_small before measuring "
                       f"are counted in n_rejected but have no CSV row")
        return out

    def settings(self) -> dict[str, Any]:
        """Everything that affects the numbers."""
        return {
            "px_size_um": self.px_size_um,
            "measure": self.measure_config.model_dump(mode="json"),
            "psd": self.psd_config.model_dump(mode="json"),
            "edge_correction_applied": self.edge_correction_applied,
            **self.settings_extra,
        }

    def image_entries(self) -> list[dict[str, Any]]:
        """One plain-JSON entry per input (:meth:`FrameResult.to_payload`), measured ones
        with the sum of their edge-correction weights (None when uncorrected)."""
        out = []
        for index, (f, w) in enumerate(zip(self.files, self.weights, strict=True)):
            entry = {"frame": index, **f.to_payload()}
            if f.ok:
                entry["frame_px_size_um"] = round(f.frame_px_size_um, 6)
                # per frame: a frame with thin crystals is measured at a finer scale
                entry["inference_scale"] = round(f.inference_scale, 6)
                entry["measure_px_size_um"] = round(f.px_size_um, 6)
                entry["n_rejected"] = _rejected(entry["n_rejected"])
                entry["edge_weight_sum"] = None if w is None else float(w.sum())
            out.append(entry)
        return out

    def to_payload(self) -> dict[str, Any]:
        """The JSON report (plain JSON types; NaN -> None)."""
        psd = self.psd.to_payload()
        n_crystals = psd.pop("n_crystals")
        return {
            "schema_id": REPORT_SCHEMA_ID,
            "schema_version": REPORT_SCHEMA_VERSION,
            "software": {"name": "crystal-psd", "version": __version__},
            "created": self.created,
            "mode": self.mode,
            "n_images": self.n_images,
            "n_images_ok": self.n_images_ok,
            "n_images_failed": self.n_images - self.n_images_ok,
            "n_crystals": n_crystals,
            "n_rejected": self.n_rejected,
            "frames_rejected_by_reason": dict(self.process.frames_rejected_by_reason),
            "confidence": self.process.confidence,
            **psd,
            "process": {k: v for k, v in self.process.to_payload().items()
                        if k != "frames_rejected_by_reason"},
            "notes": self.notes(),
            "images": self.image_entries(),
            "settings": self.settings(),
        }

    def csv_rows(self) -> Iterator[dict[str, Any]]:
        """One row per measured crystal (kept or rejected) of every measured file.

        ``frame`` is the input's position in the run (as in ``images``); positions are in
        frame pixels of ``frame_px_size_um``, ``area_px`` / ``perimeter_px`` in pixels of
        ``measure_px_size_um`` (the inference resolution the crystals were measured at).
        Objects removed as too small before measuring follow each file's crystals with
        reason ``too_small`` and only area, diameter and box (speckle, more than 500 such
        objects in a frame, is only counted).
        """
        for index, (f, w) in enumerate(zip(self.files, self.weights, strict=True)):
            if not f.ok or f.crystals is None:
                continue
            yield from _file_rows(index, f, w)

def _file_rows(index: int, f: FrameResult, w: np.ndarray | None) -> Iterator[dict[str, Any]]:
    """CSV rows of the ``index``-th input ``f`` with its edge weights ``w``."""
    if f.crystals is None:
        return
    kept = kept_mask(f.crystals)
    kept_idx = np.cumsum(kept) - 1
    units = {"frame_px_size_um": round(f.frame_px_size_um, 6),
             "measure_px_size_um": round(f.px_size_um, 6)}
    for i, row in enumerate(f.crystal_rows()):
        weight: float | str = ""
        if i < len(kept) and kept[i]:  # rows past the crystals: objects dropped as too small
            weight = 1.0 if w is None else float(w[kept_idx[i]])
        yield {"file": f.name, **row, "frame": index, **units, "weight": weight}


def build_report(files: Sequence[FrameResult], *, mode: str, px_size_um: float,
                 measure_config: MeasureConfig | None = None,
                 psd_config: PsdConfig | None = None,
                 settings: dict[str, Any] | None = None) -> AnalysisReport:
    """Combine per-input results into one report.

    Parameters
    ----------
    files : sequence of FrameResult
        In input order; rejected inputs are listed, not measured.
    mode : str
        ``"masks"`` or ``"images"``.
    px_size_um : float
        Pixel size the crystals were measured with (recorded in the settings).
    measure_config, psd_config : optional
        Settings used; recorded, and ``psd_config`` drives the statistics.
    settings : dict, optional
        Further plain-JSON settings to record (e.g. crystal class, model, backend).

    Returns
    -------
    AnalysisReport

    Notes
    -----
    The crystals, weights and counts come from :meth:`edge.psd.PsdAccumulator.add_frame`
    (edge correction only when ``psd_config.edge_correction`` and
    ``measure_config.clear_border`` are both on).
    """
    mcfg = measure_config or MeasureConfig()
    pcfg = psd_config or PsdConfig()
    acc = PsdAccumulator(pcfg, clear_border=mcfg.clear_border)
    weights: list[np.ndarray | None] = []
    for f in files:
        contrib = acc.add_frame(f)
        weights.append(None if contrib is None else contrib.weights)
    summary = acc.result()
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    return AnalysisReport(mode=mode, files=list(files), psd=summary.psd, weights=weights,
                          px_size_um=float(px_size_um), measure_config=mcfg,
                          psd_config=pcfg, edge_correction_applied=summary.edge_correction,
                          crystals_rejected_by_reason=summary.crystals_rejected_by_reason,
                          settings_extra=dict(settings or {}), created=created,
                          process=summary.process)


def write_json(report: AnalysisReport, path: str | Path) -> Path:
    """Write the JSON report (strict JSON: no NaN)."""
    path = Path(path)
    text = json.dumps(report.to_payload(), indent=2, allow_nan=False) + "\n"
    try:
        path.write_text(text)
    except OSError as exc:
        raise UserError(f"{path}: cannot write JSON report: {exc.strerror or exc}") from None
    return path


#: CSV columns written first, in this order, when the crystals provide them.
CSV_LEADING = ("file", "frame", "id", "kept", "reason", "diameter_um")


def _crystal_columns() -> list[str]:
    """Column names of the CSV rows (from a one-row, all-zero result)."""
    from edge.measure.crystals import COLUMNS, Crystals

    cols = {name: np.zeros((1, *tail), dtype=dtype) for name, (dtype, tail) in COLUMNS.items()}
    one = Crystals(**cols, contours=[np.zeros((1, 2), np.int32)], frame_shape=(1, 1),
                   px_size_um=1.0, roi_area_px=1)
    return list(next(_file_rows(0, FrameResult.from_mask("", one), None)).keys())


def write_csv(report: AnalysisReport, path: str | Path) -> Path:
    """Write one CSV row per measured crystal (``file``, ``frame`` first, ``weight`` last).

    Positions (``*_frame_px``) are in frame pixels of ``frame_px_size_um``; see
    :meth:`AnalysisReport.csv_rows`. Without any crystal the file holds just the header.
    """
    path = Path(path)
    rows = list(report.csv_rows())
    if rows:
        keys = list(rows[0].keys())
    else:
        keys = _crystal_columns()
    lead = [k for k in CSV_LEADING if k in keys]
    header = lead + [k for k in keys if k not in lead]
    try:
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(v) for k, v in row.items()})
    except OSError as exc:
        raise UserError(f"{path}: cannot write CSV: {exc.strerror or exc}") from None
    return path


#: Columns of the classes CSV (ISO 9276-1 names, one row per class of the fixed grid).
CLASSES_CSV_COLUMNS = ("lower_um", "upper_um", "count", "q0", "q3", "Q0", "Q3",
                       "q3_density_per_um", "max_um")


def write_classes_csv(report: AnalysisReport, path: str | Path) -> Path:
    """Write the distribution, one row per size class (:data:`CLASSES_CSV_COLUMNS`).

    ``q0``/``q3`` are the fractions in the class, ``Q0``/``Q3`` cumulative at its upper
    edge; the overflow class has an empty ``upper_um``.
    """
    path = Path(path)
    try:
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(CLASSES_CSV_COLUMNS),
                                    extrasaction="ignore")
            writer.writeheader()
            for row in report.psd.bins_payload():
                writer.writerow({k: "" if v is None else _csv_value(v) for k, v in row.items()})
    except OSError as exc:
        raise UserError(f"{path}: cannot write CSV: {exc.strerror or exc}") from None
    return path


def _csv_value(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else float(v)
    if isinstance(v, (tuple, list)):
        return " ".join(str(_csv_value(x)) for x in v)
    return v
