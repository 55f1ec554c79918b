"""Files of a training run: per-epoch and per-step CSV rows, log formatting."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write dict rows as CSV, columns in first-seen order (nothing for no rows)."""
    if not rows:
        return
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def flat_metrics(prefix: str, m: dict[str, Any]) -> dict[str, Any]:
    """``{'loss', 'pixel_accuracy', 'mean_iou', 'iou': {...}}`` as ``prefix_*`` CSV columns."""
    out = {f"{prefix}_loss": m.get("loss"), f"{prefix}_accuracy": m.get("pixel_accuracy"),
           f"{prefix}_mean_iou": m.get("mean_iou")}
    for name, v in (m.get("iou") or {}).items():
        out[f"{prefix}_iou_{name}"] = v
    return out


def fmt(v: Any) -> str:
    """A metric for the log: 4 decimals, or n/a."""
    return "n/a" if v is None else f"{v:.4f}"
