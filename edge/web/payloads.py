"""Reading ``psd`` payloads for the page and ``crystal-edge trend``: the one place that
knows the payload's keys, so a schema change is adapted here only.

Every accessor takes one payload (a dict from the history, a JSON-lines ``psd`` line
or ``/api/batches``) and returns a plain number, list or None when the payload lacks it.
Both schema versions are read: version 1 (``classes.q3`` cumulative) and version 2 (ISO
9276-1: ``classes.Q3`` cumulative, ``classes.q3`` the fraction in each class, the overflow
class without an upper edge; a ``process`` object with ``crystals_per_frame`` and
``agglomerate_fraction_number``).
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["TREND_COLUMNS", "agglomerate_fraction", "batch_end_s", "crystals_per_frame",
           "jsonl_payloads", "lognormal", "q3_curve", "size_um", "trend_row", "x50_ci95"]

TREND_COLUMNS = ("batch_id", "batch_end", "t_end_s", "x10_3_um", "x50_3_um", "x90_3_um",
                 "x50_3_ci95_low_um", "x50_3_ci95_high_um", "crystals_per_frame",
                 "agglomerate_fraction")
"""Columns of one trend row (:func:`trend_row`), in CSV order."""


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _get(p: dict[str, Any], *path: str) -> Any:
    obj: Any = p
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def size_um(p: dict[str, Any], name: str) -> float | None:
    """A characteristic size of ``statistics`` (``"x50_3"`` -> ``x50_3_um``), um."""
    return _num(_get(p, "statistics", f"{name}_um"))


def x50_ci95(p: dict[str, Any]) -> tuple[float, float] | None:
    """95 % confidence interval of x50,3 ``(low, high)`` (um), or None."""
    ci = _get(p, "statistics", "x50_3_ci95_um")
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return None
    lo, hi = _num(ci[0]), _num(ci[1])
    return None if lo is None or hi is None else (lo, hi)


def batch_end_s(p: dict[str, Any]) -> float | None:
    """End of the batch as UNIX seconds."""
    try:
        return datetime.fromisoformat(str(p["batch_end"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return None


def q3_curve(p: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(upper class edges um, Q3 at each edge 0..1); empty lists when absent."""
    classes = _get(p, "classes") or {}
    edges = classes.get("upper_edges_um") if isinstance(classes, dict) else None
    q3 = classes.get("Q3") if isinstance(classes, dict) else None
    if q3 is None and isinstance(classes, dict) and p.get("schema_version") == 1:
        q3 = classes.get("q3")  # version 1: q3 was the cumulative distribution
    if not isinstance(edges, list) or not isinstance(q3, list) or len(edges) != len(q3):
        return [], []
    # the overflow class has no upper edge (null); Q3 is 1 there
    pairs = [(float(x), float(y)) for x, y in zip(edges, q3, strict=True)
             if x is not None and y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def lognormal(p: dict[str, Any]) -> tuple[float, float] | None:
    """(x50,3 um, s_LND) of the log-normal fit of Q3, or None."""
    x50, s = _num(_get(p, "lognormal", "x50_3_um")), _num(_get(p, "lognormal", "s_lnd"))
    return None if x50 is None or s is None or x50 <= 0 or s <= 0 else (x50, s)


def crystals_per_frame(p: dict[str, Any]) -> float | None:
    """Crystals measured per used frame (``process``, else crystals / frames)."""
    v = _num(_get(p, "process", "crystals_per_frame"))
    if v is not None:
        return v
    n, frames = _num(_get(p, "crystals", "measured")), _num(_get(p, "frames", "used"))
    return None if n is None or not frames else n / frames


def agglomerate_fraction(p: dict[str, Any]) -> float | None:
    """Number fraction of objects rejected as agglomerates (``process``, else from the
    counts: agglomerates / (measured + agglomerates))."""
    for key in ("agglomerate_fraction_number", "agglomerate_fraction"):
        v = _num(_get(p, "process", key))
        if v is not None:
            return v
    by = _get(p, "crystals", "rejected_by_reason")
    n = _num(_get(p, "crystals", "measured"))
    if not isinstance(by, dict) or n is None:
        return None
    agg = _num(by.get("agglomerate", 0)) or 0.0
    total = n + agg
    return agg / total if total else None


def trend_row(p: dict[str, Any]) -> dict[str, Any]:
    """One batch as a trend row (:data:`TREND_COLUMNS`)."""
    ci = x50_ci95(p)
    return {"batch_id": p.get("batch_id"), "batch_end": p.get("batch_end"),
            "t_end_s": batch_end_s(p), "x10_3_um": size_um(p, "x10_3"),
            "x50_3_um": size_um(p, "x50_3"), "x90_3_um": size_um(p, "x90_3"),
            "x50_3_ci95_low_um": ci[0] if ci else None,
            "x50_3_ci95_high_um": ci[1] if ci else None,
            "crystals_per_frame": crystals_per_frame(p),
            "agglomerate_fraction": agglomerate_fraction(p)}


def jsonl_payloads(path: str | Path) -> list[dict[str, Any]]:
    """The ``psd`` payloads of a JSON-lines sink file, in file order.

    Raises ValueError naming the file and line of a complete line that is not JSON.
    """
    from edge.sinks.jsonl import read_jsonl

    return [rec["payload"] for rec in read_jsonl(path) if isinstance(rec.get("payload"), dict)]
