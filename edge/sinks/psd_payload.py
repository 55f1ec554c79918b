"""The JSON ``psd`` payload: one closed batch as the plant sees it.

Both the JSON-lines sink (``{"type": "psd", "payload": ...}``) and the MQTT sink (the
``<prefix>/<device>/psd`` topic, and the outbox Sparkplug reads back) publish this one
payload, so it is built here, in one place, from the typed batch report
(:class:`edge.service.pipeline.batch.BatchReport`): :func:`build_psd_payload` ->
:class:`PsdPayload`, :func:`psd_payload` -> its plain-JSON dict.
``edge/schemas/psd.schema.json`` is generated from :class:`PsdPayload`
(``crystal-edge payload-schema``).

All lengths are micrometres (field names end in ``_um``); all times are UTC ISO 8601.
Schema changes that remove or retype a field bump ``schema_version``; adding an optional
field does not.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from edge.service.pipeline.batch import BatchReport

PSD_SCHEMA_ID = "crystal-psd/psd"
SCHEMA_VERSION = 1
"""Version of every payload schema (psd, status, health, command)."""


class StrictPayload(BaseModel):
    """Base of every payload model."""

    # Outbound payloads always carry every field (null where unknown): the schema says so.
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    def to_payload(self) -> dict[str, Any]:
        """Plain-JSON dict (datetimes as ISO 8601 strings)."""
        return self.model_dump(mode="json")


class FrameCounts(StrictPayload):
    used: int = Field(ge=0, description="frames whose crystals entered the batch")
    rejected: int = Field(0, ge=0, description="frames rejected by the quality gate "
                          "(sum of rejected_by_reason)")
    rejected_by_reason: dict[str, int] = Field(
        default_factory=dict,
        description="rejected frames per reason, e.g. {'blur': 3, 'overexposed': 1}")


class CrystalCounts(StrictPayload):
    measured: int = Field(ge=0, description="crystals measured and counted in the PSD")
    rejected: int = Field(0, ge=0, description="objects rejected (sum of rejected_by_reason)")
    rejected_by_reason: dict[str, int] = Field(
        default_factory=dict,
        description="rejected objects per reason, e.g. "
        "{'circularity': 12, 'border': 40, 'too_small': 7}")


class PsdClasses(StrictPayload):
    """The distribution in size classes of width ``class_width_um``."""

    upper_edges_um: list[float] = Field(description="upper edge of each size class (um), ascending")
    q3: list[float] = Field(description="cumulative volume distribution Q3 at each upper "
                            "edge, 0..1")
    q0: list[float] = Field(description="cumulative number distribution Q0 at each upper "
                            "edge, 0..1")
    counts: list[float] = Field(
        description="crystals per class (weighted counts when edge-correction weights are used)")

    @model_validator(mode="after")
    def _same_length(self) -> PsdClasses:
        n = len(self.upper_edges_um)
        for name in ("q3", "q0", "counts"):
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
    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="schema version")
    device_id: str = Field(min_length=1, description="appliance id (also in the topic)")
    batch_id: int = Field(ge=0, description="batch number, monotonic per device; "
                          "a duplicate delivery (QoS 1) carries the same batch_id")
    batch_start: AwareDatetime = Field(description="first frame of the batch, UTC ISO 8601")
    batch_end: AwareDatetime = Field(description="last frame of the batch, UTC ISO 8601")
    frames: FrameCounts = Field(description="frames used and rejected")
    crystals: CrystalCounts = Field(description="crystals measured and rejected")
    px_size_um: float = Field(gt=0, description="pixel size at the sensor plane (um/px)")
    class_width_um: float = Field(gt=0, description="width of the size classes (um)")
    classes: PsdClasses = Field(description="Q3, Q0 and counts per size class")
    statistics: PsdStatistics = Field(default_factory=PsdStatistics,
                                      description="characteristic sizes of the distribution")
    lognormal: LogNormalFit = Field(default_factory=LogNormalFit,
                                    description="log-normal fit of Q3")
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
    return PsdPayload(
        device_id=report.device_id,
        batch_id=report.batch_id,
        batch_start=report.batch_start,
        batch_end=report.batch_end,
        frames={"used": report.frames_used, "rejected": report.frames_rejected,
                "rejected_by_reason": dict(report.frames_rejected_by_reason)},
        crystals={"measured": report.crystals_measured,
                  "rejected": int(sum(report.crystals_rejected_by_reason.values())),
                  "rejected_by_reason": dict(report.crystals_rejected_by_reason)},
        px_size_um=report.px_size_um,
        class_width_um=p.config.class_width_um,
        classes={"upper_edges_um": _floats(p.edges_um[1:]), "q3": _floats(p.Q3),
                 "q0": _floats(p.Q0), "counts": _floats(p.counts)},
        statistics={"x10_3_um": _finite(p.x10_3_um), "x50_3_um": _finite(p.x50_3_um),
                    "x90_3_um": _finite(p.x90_3_um), "x50_0_um": _finite(p.x50_0_um),
                    "span": _finite(p.span), "d32_um": _finite(p.d32_um),
                    "x50_3_ci95_um": _interval(ci)},
        lognormal={} if lg is None else {"x50_3_um": _finite(lg.x50_3_um),
                                         "s_lnd": _finite(lg.s_lnd), "rmse": _finite(lg.rmse)},
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
