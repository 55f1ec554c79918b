"""The analysis report of ``crystal-edge analyze``: per-file results -> one PSD -> JSON/CSV.

Both ways of getting crystal masks use it: ``--masks`` (mask files measured directly) and
the image mode (frames segmented by a model). A mode only produces one
:class:`FileResult` per input (its name, the measured ``Crystals`` or the error, optional
timings, the ROI it measured in and any extra per-file fields);
:func:`build_report` combines them through one :class:`edge.psd.PsdAccumulator` (which
crystals count, their edge-correction weights, :func:`edge.psd.compute_psd` once), the
same accumulator the service's batches and the model card use.
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
from edge.measure import MeasureConfig
from edge.psd import PsdAccumulator, PsdConfig, PSDResult, kept_mask

REPORT_SCHEMA_ID = "crystal-psd/analysis-report"
REPORT_SCHEMA_VERSION = 1
#: Rejection reasons always listed in ``n_rejected`` (zeros included).
REJECT_REASONS: tuple[str, ...] = ("too_small", "agglomerate", "border")
#: Below this many kept crystals the report notes that volume statistics are uncertain
#: (ISO 13322-1: volume-weighted results need thousands of particles).
FEW_CRYSTALS = 1000


@dataclass
class FileResult:
    """Outcome of one input file.

    Attributes
    ----------
    name : str
        The file as the user named it (or found it in a directory).
    crystals : edge.measure.Crystals or None
        Measured crystals; None when the file failed.
    error : str or None
        One-line reason the file was skipped (then ``crystals`` is None).
    timings_ms : dict
        Optional stage timings of this file, e.g. ``{"read": 1.2, "measure": 8.0}``.
    roi : ndarray (H, W) or RoiSurvival, optional
        The region the crystals were measured in (border = ROI boundary); None = the
        whole frame. Used for the edge correction; frames with equal ROI masks share one
        distance transform.
    info : dict
        Extra plain-JSON fields for this file's entry in ``images`` (e.g. backend,
        quality-gate verdict in image mode).
    """

    name: str
    crystals: Any = None
    error: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    roi: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.crystals is not None


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
    files: list[FileResult]
    psd: PSDResult
    weights: list[np.ndarray | None]
    px_size_um: float
    measure_config: MeasureConfig
    psd_config: PsdConfig
    edge_correction_applied: bool
    crystals_rejected_by_reason: dict[str, int] = field(default_factory=dict)
    settings_extra: dict[str, Any] = field(default_factory=dict)
    created: str = ""

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
        out = []
        for f, w in zip(self.files, self.weights, strict=True):
            entry: dict[str, Any] = {"file": f.name}
            if f.ok:
                c = f.crystals
                entry.update({
                    "status": "ok",
                    "frame_shape": [int(v) for v in c.frame_shape[:2]],
                    "n_kept": int(kept_mask(c).sum()),
                    "n_rejected": _rejected(c.rejected_counts()),
                    "edge_weight_sum": None if w is None else float(w.sum()),
                })
            else:
                entry.update({"status": "error", "error": f.error})
            if f.timings_ms:
                entry["timings_ms"] = {k: round(float(v), 3) for k, v in f.timings_ms.items()}
            entry.update(f.info)
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
            **psd,
            "notes": self.notes(),
            "images": self.image_entries(),
            "settings": self.settings(),
        }

    def csv_rows(self) -> Iterator[dict[str, Any]]:
        """One row per measured crystal (kept or rejected) of every measured file."""
        for f, w in zip(self.files, self.weights, strict=True):
            if not f.ok:
                continue
            kept = kept_mask(f.crystals)
            kept_idx = np.cumsum(kept) - 1
            for i, row in enumerate(f.crystals.to_rows()):
                weight = ""
                if kept[i]:
                    weight = 1.0 if w is None else float(w[kept_idx[i]])
                yield {"file": f.name, **row, "weight": weight}


def build_report(files: Sequence[FileResult], *, mode: str, px_size_um: float,
                 measure_config: MeasureConfig | None = None,
                 psd_config: PsdConfig | None = None,
                 settings: dict[str, Any] | None = None) -> AnalysisReport:
    """Combine per-file results into one report.

    Parameters
    ----------
    files : sequence of FileResult
        In input order; failed files are listed, not measured.
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
    The crystals, weights and counts come from :class:`edge.psd.PsdAccumulator` (edge
    correction only when ``psd_config.edge_correction`` and ``measure_config.clear_border``
    are both on).
    """
    mcfg = measure_config or MeasureConfig()
    pcfg = psd_config or PsdConfig()
    acc = PsdAccumulator(pcfg, clear_border=mcfg.clear_border)
    weights: list[np.ndarray | None] = []
    for f in files:
        weights.append(acc.add(f.crystals, roi=f.roi).weights if f.ok else None)
    summary = acc.result()
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    return AnalysisReport(mode=mode, files=list(files), psd=summary.psd, weights=weights,
                          px_size_um=float(px_size_um), measure_config=mcfg,
                          psd_config=pcfg, edge_correction_applied=summary.edge_correction,
                          crystals_rejected_by_reason=summary.crystals_rejected_by_reason,
                          settings_extra=dict(settings or {}), created=created)


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
CSV_LEADING = ("file", "id", "kept", "reason", "diameter_um")


def _crystal_columns() -> list[str]:
    """Column names of ``Crystals.to_rows()`` (from a one-row, all-zero result)."""
    from edge.measure.crystals import COLUMNS, Crystals

    cols = {name: np.zeros((1, *tail), dtype=dtype) for name, (dtype, tail) in COLUMNS.items()}
    one = Crystals(**cols, contours=[np.zeros((1, 2), np.int32)], frame_shape=(1, 1),
                   px_size_um=1.0, roi_area_px=1)
    return list(one.to_rows()[0].keys())


def write_csv(report: AnalysisReport, path: str | Path) -> Path:
    """Write one CSV row per measured crystal (``file`` first, ``weight`` last).

    Without any crystal the file holds just the header.
    """
    path = Path(path)
    rows = list(report.csv_rows())
    if rows:
        keys = list(rows[0].keys())
    else:
        keys = ["file", *_crystal_columns(), "weight"]
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
