"""Sparkplug B encoding: the PSD report and health as metrics, and decoding for tests/tools.

Metric names (all in NBIRTH with their data types; NDATA carries the changed ones):

========================================  ==========  =====================================
name                                      type        value
========================================  ==========  =====================================
bdSeq                                     UInt64      birth/death sequence (NBIRTH, NDEATH)
Node Control/Rebirth                      Boolean     write true (NCMD) to request an NBIRTH
Node Control/Close Batch                  Boolean     NCMD, only with commands_enabled
Node Control/Reload Config                Boolean     NCMD, only with commands_enabled
Properties/Software Version               String
Properties/Device ID                      String
PSD/Batch ID                              UInt64
PSD/Batch Start, PSD/Batch End            DateTime    ms since the Unix epoch (UTC)
PSD/Frames Used, PSD/Frames Rejected      UInt32
PSD/Crystals Measured, .../Rejected       UInt32
PSD/Frames Rejected/<reason>              UInt32      one per reason of the closed list
                                                      (``edge.psd.FRAME_REJECT_REASONS``)
PSD/Pixel Size um                         Double
PSD/Class Min um, Class Width um,         Double      the fixed class grid ([psd])
Class Max um
PSD/x10_3 um, x50_3 um, x90_3 um,         Double      null (is_null) without crystals
x50_0 um, Span, d32 um,
x50_3 CI95 Low um, x50_3 CI95 High um
PSD/LogNormal x50_3 um, s_LND, RMSE       Double      null when not fitted
PSD/Classes                               DataSet     ``sparkplug_classes = "dataset"``:
                                                      columns lower_edges_um,
                                                      upper_edges_um (NaN: overflow),
                                                      counts, q0, q3, Q0, Q3 (ISO 9276-1)
PSD/Classes/<column>                      DoubleArray ``sparkplug_classes = "arrays"``: the
                                                      same columns, one array metric each
PSD/Process/<key>                         Double      the payload's ``process`` values, same
                                                      keys (crystals_per_frame, ...)
PSD/Confidence                            Double      mean domain score; null when unscored
PSD/Model, Model SHA256, Backend,         String
Precision
PSD/Report JSON                           String      the full JSON ``psd`` payload
Health/Frames per s                       Double
Health/Outbox Depth, Outbox Dropped,      UInt64
Published
Health/Last Error                         String
========================================  ==========  =====================================
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from edge.mqtt.payloads import HealthPayload
from edge.mqtt.sparkplug import sparkplug_b_pb2 as pb
from edge.psd.process import FRAME_REJECT_REASONS
from edge.sinks.psd_payload import PsdPayload

NAMESPACE = "spBv1.0"

Metric = pb.Payload.Metric


def topic(group_id: str, message_type: str, edge_node_id: str) -> str:
    """``spBv1.0/<group>/<type>/<edge node>``."""
    return f"{NAMESPACE}/{group_id}/{message_type}/{edge_node_id}"


def now_ms() -> int:
    return int(time.time() * 1000)


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def set_value(metric: Any, datatype: int, value: Any) -> None:
    """Set ``metric`` (Metric) to ``value`` of Sparkplug ``datatype``; None -> is_null."""
    metric.datatype = datatype
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        metric.is_null = True
        return
    if datatype in (pb.Int8, pb.Int16, pb.Int32, pb.UInt8, pb.UInt16, pb.UInt32):
        metric.int_value = int(value) & 0xFFFFFFFF
    elif datatype in (pb.Int64, pb.UInt64, pb.DateTime):
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif datatype == pb.Float:
        metric.float_value = float(value)
    elif datatype == pb.Double:
        metric.double_value = float(value)
    elif datatype == pb.Boolean:
        metric.boolean_value = bool(value)
    elif datatype in (pb.String, pb.Text, pb.UUID):
        metric.string_value = str(value)
    elif datatype == pb.DataSet:
        metric.dataset_value.CopyFrom(value)
    else:  # pragma: no cover - only the types above are produced
        raise ValueError(f"unsupported Sparkplug datatype {datatype}")


def add_metric(payload: Any, name: str, datatype: int, value: Any, *,
               timestamp: int | None = None, historical: bool = False) -> Any:
    m = payload.metrics.add()
    m.name = name
    if timestamp is not None:
        m.timestamp = timestamp
    if historical:
        m.is_historical = True
    set_value(m, datatype, value)
    return m


#: Class columns, named as the payload's ``classes`` keys (ISO 9276-1).
CLASS_COLUMNS: tuple[str, ...] = ("lower_edges_um", "upper_edges_um", "counts",
                                  "q0", "q3", "Q0", "Q3")
#: Process values, named as the payload's ``process`` keys.
PROCESS_KEYS: tuple[str, ...] = (
    "crystals_per_frame", "agglomerate_fraction_number", "agglomerate_fraction_volume",
    "x50_feret_max_um", "x50_feret_min_um", "median_aspect_ratio", "median_circularity",
    "fines_below_um", "fines_fraction_number", "fines_fraction_volume")


def class_column(psd: PsdPayload, name: str) -> list[float]:
    """One class column as doubles (the overflow class's null upper edge: NaN)."""
    return [math.nan if v is None else float(v) for v in getattr(psd.classes, name)]


def classes_dataset(psd: PsdPayload) -> Any:
    ds = pb.Payload.DataSet()
    ds.num_of_columns = len(CLASS_COLUMNS)
    ds.columns.extend(CLASS_COLUMNS)
    ds.types.extend([pb.Double] * len(CLASS_COLUMNS))
    columns = [class_column(psd, name) for name in CLASS_COLUMNS]
    for row_values in zip(*columns, strict=True):
        row = ds.rows.add()
        for v in row_values:
            row.elements.add().double_value = v
    return ds


def double_array(values: list[float]) -> bytes:
    """Sparkplug 3.0 DoubleArray: little-endian IEEE 754 doubles in ``bytes_value``."""
    return struct.pack(f"<{len(values)}d", *values)


_PsdGetter = Callable[[PsdPayload], Any]


def _process(key: str) -> _PsdGetter:
    return lambda p: getattr(p.process, key)


def _rejected(reason: str) -> _PsdGetter:
    return lambda p: getattr(p.frames.rejected_by_reason, reason)

PSD_METRICS: list[tuple[str, int, _PsdGetter]] = [
    ("PSD/Batch ID", pb.UInt64, lambda p: p.batch_id),
    ("PSD/Batch Start", pb.DateTime, lambda p: _ms(p.batch_start)),
    ("PSD/Batch End", pb.DateTime, lambda p: _ms(p.batch_end)),
    ("PSD/Frames Used", pb.UInt32, lambda p: p.frames.used),
    ("PSD/Frames Rejected", pb.UInt32, lambda p: p.frames.rejected),
    *[(f"PSD/Frames Rejected/{r}", pb.UInt32, _rejected(r)) for r in FRAME_REJECT_REASONS],
    ("PSD/Crystals Measured", pb.UInt32, lambda p: p.crystals.measured),
    ("PSD/Crystals Rejected", pb.UInt32, lambda p: p.crystals.rejected),
    ("PSD/Pixel Size um", pb.Double, lambda p: p.px_size_um),
    ("PSD/Class Min um", pb.Double, lambda p: p.class_min_um),
    ("PSD/Class Width um", pb.Double, lambda p: p.class_width_um),
    ("PSD/Class Max um", pb.Double, lambda p: p.class_max_um),
    ("PSD/x10_3 um", pb.Double, lambda p: p.statistics.x10_3_um),
    ("PSD/x50_3 um", pb.Double, lambda p: p.statistics.x50_3_um),
    ("PSD/x90_3 um", pb.Double, lambda p: p.statistics.x90_3_um),
    ("PSD/x50_0 um", pb.Double, lambda p: p.statistics.x50_0_um),
    ("PSD/Span", pb.Double, lambda p: p.statistics.span),
    ("PSD/d32 um", pb.Double, lambda p: p.statistics.d32_um),
    ("PSD/x50_3 CI95 Low um", pb.Double,
     lambda p: p.statistics.x50_3_ci95_um[0] if p.statistics.x50_3_ci95_um else None),
    ("PSD/x50_3 CI95 High um", pb.Double,
     lambda p: p.statistics.x50_3_ci95_um[1] if p.statistics.x50_3_ci95_um else None),
    ("PSD/LogNormal x50_3 um", pb.Double, lambda p: p.lognormal.x50_3_um),
    ("PSD/LogNormal s_LND", pb.Double, lambda p: p.lognormal.s_lnd),
    ("PSD/LogNormal RMSE", pb.Double, lambda p: p.lognormal.rmse),
    ("PSD/Classes", pb.DataSet, classes_dataset),
    *[(f"PSD/Process/{k}", pb.Double, _process(k)) for k in PROCESS_KEYS],
    ("PSD/Confidence", pb.Double, lambda p: p.confidence),
    ("PSD/Model", pb.String, lambda p: p.model.name),
    ("PSD/Model SHA256", pb.String, lambda p: p.model.sha256),
    ("PSD/Backend", pb.String, lambda p: p.model.backend),
    ("PSD/Precision", pb.String, lambda p: p.model.precision),
    ("PSD/Report JSON", pb.String,
     lambda p: json.dumps(p.to_payload(), separators=(",", ":"))),
]

HEALTH_METRICS: list[tuple[str, int, Callable[[HealthPayload], Any]]] = [
    ("Health/Frames per s", pb.Double, lambda h: h.frames_per_s),
    ("Health/Outbox Depth", pb.UInt64, lambda h: h.outbox_depth),
    ("Health/Outbox Dropped", pb.UInt64, lambda h: h.outbox_dropped),
    ("Health/Published", pb.UInt64, lambda h: h.published),
    ("Health/Last Error", pb.String, lambda h: h.last_error or ""),
]


def add_psd_metrics(payload: Any, psd: PsdPayload | None, *, historical: bool = False,
                    classes: str = "dataset") -> None:
    """All PSD metrics of ``psd`` (nulls with their types when ``psd`` is None).

    ``classes``: ``"dataset"`` sends the class columns as the one DataSet ``PSD/Classes``;
    ``"arrays"`` sends one DoubleArray ``PSD/Classes/<column>`` per column instead (for
    hosts without DataSet support).
    """
    ts = _ms(psd.batch_end) if psd is not None else None
    for name, dtype, getter in PSD_METRICS:
        if dtype == pb.DataSet:
            if classes == "arrays":
                _add_class_arrays(payload, psd, timestamp=ts, historical=historical)
                continue
            if psd is None:
                m = payload.metrics.add()
                m.name, m.datatype, m.is_null = name, dtype, True
                continue
        value = getter(psd) if psd is not None else None
        add_metric(payload, name, dtype, value, timestamp=ts, historical=historical)


def _add_class_arrays(payload: Any, psd: PsdPayload | None, *, timestamp: int | None,
                      historical: bool) -> None:
    for col in CLASS_COLUMNS:
        m = payload.metrics.add()
        m.name, m.datatype = f"PSD/Classes/{col}", pb.DoubleArray
        if timestamp is not None:
            m.timestamp = timestamp
        if historical:
            m.is_historical = True
        if psd is None:
            m.is_null = True
        else:
            m.bytes_value = double_array(class_column(psd, col))


def add_health_metrics(payload: Any, health: HealthPayload | None) -> None:
    for name, dtype, getter in HEALTH_METRICS:
        add_metric(payload, name, dtype, getter(health) if health is not None else None)


# ----------------------------------------------------------------------- decoding
def _dataset_to_list(ds: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {c: [] for c in ds.columns}
    for row in ds.rows:
        for col, el in zip(ds.columns, row.elements, strict=False):
            kind = el.WhichOneof("value")
            out[col].append(getattr(el, kind) if kind else None)
    return out


def metric_value(metric: Any) -> Any:
    """Python value of a decoded Metric (None when is_null)."""
    if metric.is_null:
        return None
    kind = metric.WhichOneof("value")
    if kind is None:
        return None
    if metric.datatype == pb.DoubleArray:
        raw = metric.bytes_value
        return list(struct.unpack(f"<{len(raw) // 8}d", raw))
    if kind == "dataset_value":
        return _dataset_to_list(metric.dataset_value)
    return getattr(metric, kind)


def decode(data: bytes) -> dict[str, Any]:
    """``{'seq': .., 'timestamp': .., 'metrics': {name: value}, 'historical': {name: bool}}``."""
    p = pb.Payload.FromString(data)
    return {
        "seq": p.seq if p.HasField("seq") else None,
        "timestamp": p.timestamp if p.HasField("timestamp") else None,
        "metrics": {m.name: metric_value(m) for m in p.metrics},
        "historical": {m.name: bool(m.is_historical) for m in p.metrics},
        "datatypes": {m.name: int(m.datatype) for m in p.metrics},
    }
