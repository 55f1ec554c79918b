"""The JSON ``psd`` payload: one closed batch as the plant sees it.

Both the JSON-lines sink (``{"type": "psd", "payload": ...}``) and the MQTT sink (the
``<prefix>/<device>/psd`` topic, and the outbox Sparkplug reads back) publish this one
payload, so it is built here, in one place, from the typed batch report
(:class:`edge.service.pipeline.batch.BatchReport`): :func:`build_psd_payload` ->
:class:`PsdPayload`, :func:`psd_payload` -> its plain-JSON dict.
``edge/schemas/psd.schema.json`` is generated from :class:`PsdPayload`
(``crystal-edge payload-schema``).

All lengths are micrometres (field names end in ``_um``); all times are UTC ISO 8601.
Names follow ISO 9276-1: ``Q0``/``Q3`` cumulative at each class's upper edge, ``q0``/``q3``
the fraction in each class. The classes are the device's fixed grid
(:func:`edge.psd.class_edges`), the frame rejection reasons the closed list
:data:`edge.psd.FRAME_REJECT_REASONS`, so every batch carries the same keys and array
lengths (a DCS maps each to a fixed tag). Schema changes that remove or retype a field
bump ``PSD_SCHEMA_VERSION`` (``docs/mqtt.md``, "Schema versions"); adding an optional
field does not.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, create_model, model_validator

from edge.psd.process import FRAME_REJECT_REASONS, ProcessValues

if TYPE_CHECKING:
    from edge.service.pipeline.batch import BatchReport

PSD_SCHEMA_ID = "crystal-psd/psd"
SCHEMA_VERSION = 1
"""Version of the status, health and command payload schemas."""
PSD_SCHEMA_VERSION = 2
"""Version of the ``psd`` payload schema (2: fixed class grid, ISO 9276-1 names, process
values; version 1 is described in ``docs/mqtt.md``)."""


class StrictPayload(BaseModel):
    """Base of every payload model."""

    # Outbound payloads always carry every field (null where unknown): the schema says so.
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    def to_payload(self) -> dict[str, Any]:
        """Plain-JSON dict (datetimes as ISO 8601 strings)."""
        return self.model_dump(mode="json")


FramesRejectedByReason = create_model(
    "FramesRejectedByReason", __base__=StrictPayload,
    **{reason: (int, Field(0, ge=0, description=meaning))
       for reason, meaning in FRAME_REJECT_REASONS.items()})
"""Rejected frames per reason: always every reason of the closed list, zeros included."""


class FrameCounts(StrictPayload):
    used: int = Field(ge=0, description="frames whose crystals entered the batch")
    rejected: int = Field(0, ge=0, description="frames rejected before measuring "
                          "(sum of rejected_by_reason)")
    rejected_by_reason: FramesRejectedByReason = Field(  # type: ignore[valid-type]
        default_factory=FramesRejectedByReason,
        description="rejected frames per reason; the closed list of reasons, every key "
                    "always present (0 when none)")


class CrystalCounts(StrictPayload):
    measured: int = Field(ge=0, description="crystals measured and counted in the PSD")
    rejected: int = Field(0, ge=0, description="objects rejected (sum of rejected_by_reason)")
    rejected_by_reason: dict[str, int] = Field(
        default_factory=dict,
        description="rejected objects per reason, e.g. "
        "{'agglomerate': 12, 'border': 40, 'bubble': 1, 'too_small': 7}")


class PsdClasses(StrictPayload):
    """The distribution on the fixed class grid: regular classes from ``class_min_um`` to
    ``class_max_um`` in steps of ``class_width_um``, then one overflow class."""

    lower_edges_um: list[float] = Field(
        description="lower edge of each size class (um), ascending; the last class "
                    "(overflow) starts at class_max_um")
    upper_edges_um: list[float | None] = Field(
        description="upper edge of each size class (um); null for the overflow class")
    counts: list[float] = Field(
        description="measured crystals per class, unweighted (q0, q3, Q0 and Q3 carry the "
                    "edge-correction weights, so q0 is not counts / sum(counts))")
    q0: list[float] = Field(description="number fraction in each class (ISO 9276-1 q0 as "
                            "Delta Q0), sums to 1; all 0 without crystals")
    q3: list[float] = Field(description="volume fraction in each class (ISO 9276-1 q3 as "
                            "Delta Q3), sums to 1; all 0 without crystals")
    Q0: list[float] = Field(description="cumulative number distribution Q0 at each upper "
                            "edge, 0..1, the last is 1 (0 without crystals)")
    Q3: list[float] = Field(description="cumulative volume distribution Q3 at each upper "
                            "edge, 0..1, the last is 1 (0 without crystals)")

    @model_validator(mode="after")
    def _same_length(self) -> PsdClasses:
        n = len(self.upper_edges_um)
        for name in ("lower_edges_um", "counts", "q0", "q3", "Q0", "Q3"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"classes.{name} has {len(getattr(self, name))} values, "
                    f"upper_edges_um has {n}")
        return self


class PsdStatistics(StrictPayload):
    """Characteristic sizes read from the measured distribution (null without crystals)."""

    x10_3_um: float | None = Field(None, description="10 % quantile of Q3 (um)")
    x50_3_um: float | None = Field(None, description="median of Q3, volume median diameter (um)")
    x90_3_um: float | None = Field(None, description="90 % quantile of Q3 (um)")
    x50_0_um: float | None = Field(None, description="median of Q0, number median diameter (um)")
    span: float | None = Field(None, description="(x90,3 - x10,3) / x50,3, dimensionless")
    d32_um: float | None = Field(None, description="Sauter mean diameter sum(d^3)/sum(d^2) (um)")
    x50_3_ci95_um: tuple[float, float] | None = Field(
        None, description="95 % confidence interval of x50,3 [low, high] (um)")


class ProcessPayload(StrictPayload):
    """Process values beside the distribution (null without data); see
    :mod:`edge.psd.process` for the definitions."""

    crystals_per_frame: float | None = Field(
        None, description="kept crystals per used frame (nucleation / concentration signal)")
    agglomerate_fraction_number: float | None = Field(
        None, description="objects rejected as agglomerates / (agglomerates + kept "
                          "crystals), by number, 0..1")
    agglomerate_fraction_volume: float | None = Field(
        None, description="the same by volume (area-equivalent diameter cubed), 0..1")
    x50_feret_max_um: float | None = Field(
        None, description="number-weighted median of the kept crystals' largest Feret "
                          "diameter (length) (um)")
    x50_feret_min_um: float | None = Field(
        None, description="number-weighted median of the kept crystals' smallest Feret "
                          "diameter (width) (um)")
    median_aspect_ratio: float | None = Field(
        None, description="number-weighted median of Feret max / Feret min (>= 1)")
    median_circularity: float | None = Field(
        None, description="number-weighted median of 4 pi A / P^2 (0..1)")
    fines_below_um: float = Field(description="fines limit (um), [psd] fines_below_um")
    fines_fraction_number: float | None = Field(
        None, description="number fraction of kept crystals below fines_below_um, 0..1")
    fines_fraction_volume: float | None = Field(
        None, description="volume fraction of kept crystals below fines_below_um, 0..1")


class LogNormalFit(StrictPayload):
    """Q3(x) = 1/2 (1 + erf(ln(x / x50_3) / (sqrt(2) s_lnd)))."""

    x50_3_um: float | None = Field(None, description="log-normal median x50,3 (um); "
                                   "null when not fitted")
    s_lnd: float | None = Field(None, description="log-normal spread s_LND (dimensionless)")
    rmse: float | None = Field(None, description="RMSE of the fit against the measured Q3 (0..1)")


class ModelInfo(StrictPayload):
    name: str = Field(description="segmentation model name (model metadata 'name')")
    sha256: str = Field(description="sha256 of the ONNX file")
    backend: str = Field(description="inference backend, e.g. 'tensorrt', 'onnxruntime-cpu'")
    precision: str = Field(description="inference precision, e.g. 'fp16', 'fp32'")


class PsdPayload(StrictPayload):
    """One closed batch: the ``<prefix>/<device>/psd`` message (QoS 1)."""

    schema_id: Literal["crystal-psd/psd"] = Field(PSD_SCHEMA_ID, description="schema id")
    schema_version: Literal[2] = Field(PSD_SCHEMA_VERSION, description="schema version")
    device_id: str = Field(min_length=1, description="appliance id (also in the topic)")
    batch_id: int = Field(ge=0, description="batch number, monotonic per device; "
                          "a duplicate delivery (QoS 1) carries the same batch_id")
    batch_start: AwareDatetime = Field(description="first frame of the batch, UTC ISO 8601")
    batch_end: AwareDatetime = Field(description="last frame of the batch, UTC ISO 8601")
    frames: FrameCounts = Field(description="frames used and rejected")
    crystals: CrystalCounts = Field(description="crystals measured and rejected")
    px_size_um: float = Field(gt=0, description="pixel size at the sensor plane (um/px)")
    class_min_um: float = Field(ge=0, description="lower edge of the first class (um)")
    class_width_um: float = Field(gt=0, description="width of the regular size classes (um)")
    class_max_um: float = Field(gt=0, description="upper edge of the last regular class; "
                                "the overflow class holds everything above (um)")
    classes: PsdClasses = Field(description="counts, q0, q3, Q0 and Q3 per size class")
    statistics: PsdStatistics = Field(default_factory=PsdStatistics,
                                      description="characteristic sizes of the distribution")
    lognormal: LogNormalFit = Field(default_factory=LogNormalFit,
                                    description="log-normal fit of Q3")
    process: ProcessPayload = Field(description="process values beside the distribution")
    confidence: float | None = Field(
        None, ge=0, le=1,
        description="mean domain score of the batch's analysed frames (1 = they look like "
                    "the model's training images, 0 = they do not); null when no frame "
                    "was scored")
    model: ModelInfo = Field(description="segmentation model and inference backend")
    software_version: str = Field("", description="crystal-psd version that produced the batch")

    @model_validator(mode="after")
    def _times(self) -> PsdPayload:
        if self.batch_end < self.batch_start:
            raise ValueError("batch_end is before batch_start")
        return self


def build_psd_payload(report: BatchReport) -> PsdPayload:
    """The ``psd`` payload of one closed batch.

    Non-finite statistics become null. Raises pydantic's ``ValidationError`` when the
    report does not fit the schema (class arrays of different lengths, say).
    """
    p = report.psd
    lg = p.lognormal
    ci = p.x50_3_ci95_um
    proc = report.process
    if proc is None:
        proc = ProcessValues(fines_below_um=p.config.fines_below_um)
    return PsdPayload(
        device_id=report.device_id,
        batch_id=report.batch_id,
        batch_start=report.batch_start,
        batch_end=report.batch_end,
        frames={"used": report.frames_used, "rejected": report.frames_rejected,
                "rejected_by_reason": dict(proc.frames_rejected_by_reason)},
        crystals={"measured": report.crystals_measured,
                  "rejected": int(sum(report.crystals_rejected_by_reason.values())),
                  "rejected_by_reason": dict(report.crystals_rejected_by_reason)},
        px_size_um=report.px_size_um,
        class_min_um=p.config.class_min_um,
        class_width_um=p.config.class_width_um,
        class_max_um=p.config.class_max_um,
        classes={"lower_edges_um": _floats(p.edges_um[:-1]),
                 "upper_edges_um": [_finite(v) for v in p.edges_um[1:]],
                 "counts": _floats(p.counts), "q0": _floats(p.q0), "q3": _floats(p.q3),
                 "Q0": _floats(p.Q0), "Q3": _floats(p.Q3)},
        statistics={"x10_3_um": _finite(p.x10_3_um), "x50_3_um": _finite(p.x50_3_um),
                    "x90_3_um": _finite(p.x90_3_um), "x50_0_um": _finite(p.x50_0_um),
                    "span": _finite(p.span), "d32_um": _finite(p.d32_um),
                    "x50_3_ci95_um": _interval(ci)},
        lognormal={} if lg is None else {"x50_3_um": _finite(lg.x50_3_um),
                                         "s_lnd": _finite(lg.s_lnd), "rmse": _finite(lg.rmse)},
        process={k: v for k, v in proc.to_payload().items() if k != "frames_rejected_by_reason"},
        confidence=_finite(proc.confidence),
        model=report.model,
        software_version=report.software_version,
    )


def psd_payload(report: BatchReport) -> dict[str, Any]:
    """Plain-JSON ``psd`` payload of one closed batch (:func:`build_psd_payload`)."""
    return build_psd_payload(report).to_payload()


def _finite(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _interval(ci: tuple[float, float] | None) -> tuple[float, float] | None:
    if ci is None:
        return None
    lo, hi = _finite(ci[0]), _finite(ci[1])
    return None if lo is None or hi is None else (lo, hi)


def _floats(a: np.ndarray) -> list[float]:
    return [float(x) for x in np.asarray(a, dtype=np.float64).ravel()]
