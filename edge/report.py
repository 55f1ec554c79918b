"""The analysis report of ``crystal-edge analyze``: per-file results -> one PSD -> JSON/CSV.

Both ways of getting crystal masks use it: ``--masks`` (mask files measured directly) and
the image mode (frames segmented by a model). A mode only produces one
:class:`FileResult` per input (its name, the measured ``Crystals`` or the error, optional
timings, the ROI it measured in and any extra per-file fields);
:func:`build_report` combines them: the kept crystals of all files are concatenated with
their edge-correction weights and :func:`edge.psd.compute_psd` runs once.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge import __version__
from edge.errors import UserError
from edge.measure import MeasureConfig
from edge.psd import PsdConfig, PSDResult, RoiSurvival, compute_psd, edge_correction_weights

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
        whole frame. Used for the edge correction; pass the same object for every frame
        that shares an ROI (its distance transform is computed once).
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


def _kept(crystals: Any) -> np.ndarray:
    return np.asarray(crystals.kept, dtype=bool)


def _rejected(crystals: Any) -> dict[str, int]:
    counts = {r: 0 for r in REJECT_REASONS}
    for reason, n in crystals.rejected_counts().items():
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
        total: Counter[str] = Counter({r: 0 for r in REJECT_REASONS})
        for f in self.files:
            if f.ok:
                total.update(_rejected(f.crystals))
        return dict(total)

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
                kept = _kept(c)
                entry.update({
                    "status": "ok",
                    "frame_shape": [int(v) for v in c.frame_shape[:2]],
                    "n_kept": int(kept.sum()),
                    "n_rejected": _rejected(c),
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
            kept = _kept(f.crystals)
            kept_idx = np.cumsum(kept) - 1
            for i, row in enumerate(f.crystals.to_rows()):
                weight = ""
                if kept[i]:
                    weight = 1.0 if w is None else float(w[kept_idx[i]])
                yield {"file": f.name, **row, "weight": weight}


def kept_edge_weights(crystals: Any, *, roi: Any = None, max_weight: float = 20.0,
                      ) -> np.ndarray:
    """Miles-Lantuejoul weights of the kept crystals of one frame (bounding-box extents).

    Parameters
    ----------
    crystals : edge.measure.Crystals
        One frame's crystals (``bbox``, ``kept``, ``frame_shape``).
    roi : ndarray (H, W) or RoiSurvival, optional
        The ROI the crystals were measured in; None = the rectangular frame.
    max_weight : float
        Cap (``PsdConfig.edge_weight_max``).

    Returns
    -------
    ndarray, shape (n_kept,)
    """
    kept = _kept(crystals)
    bbox = np.asarray(crystals.bbox, dtype=np.float64).reshape(-1, 4)[kept]
    return edge_correction_weights(bbox[:, 2], bbox[:, 3],
                                   field_shape=tuple(crystals.frame_shape[:2]),
                                   roi=roi, max_weight=max_weight)


def _file_weights(f: FileResult, cfg: PsdConfig, apply: bool,
                  roi_cache: dict[int, RoiSurvival]) -> np.ndarray | None:
    if not apply:
        return None
    roi = f.roi
    if roi is not None and not isinstance(roi, RoiSurvival):
        key = id(roi)
        if key not in roi_cache:
            roi_cache[key] = RoiSurvival(roi)
        roi = roi_cache[key]
    return kept_edge_weights(f.crystals, roi=roi, max_weight=cfg.edge_weight_max)


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
    Edge correction is applied when ``psd_config.edge_correction`` and
    ``measure_config.clear_border`` are both on: without border clearing no crystal was
    dropped for touching the border, so there is nothing to correct.
    """
    mcfg = measure_config or MeasureConfig()
    pcfg = psd_config or PsdConfig()
    apply = bool(pcfg.edge_correction and mcfg.clear_border)
    roi_cache: dict[int, RoiSurvival] = {}
    weights: list[np.ndarray | None] = []
    diam: list[np.ndarray] = []
    wcat: list[np.ndarray] = []
    for f in files:
        if not f.ok:
            weights.append(None)
            continue
        kept = _kept(f.crystals)
        d = np.asarray(f.crystals.diameter_um, dtype=np.float64)[kept]
        w = _file_weights(f, pcfg, apply, roi_cache)
        weights.append(w)
        diam.append(d)
        wcat.append(np.ones_like(d) if w is None else w)
    d_all = np.concatenate(diam) if diam else np.zeros(0)
    w_all = np.concatenate(wcat) if wcat else np.zeros(0)
    psd = compute_psd(d_all, weights=w_all if apply else None, config=pcfg)
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    return AnalysisReport(mode=mode, files=list(files), psd=psd, weights=weights,
                          px_size_um=float(px_size_um), measure_config=mcfg,
                          psd_config=pcfg, edge_correction_applied=apply,
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
