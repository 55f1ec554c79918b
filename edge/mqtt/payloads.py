"""MQTT payload models: what the appliance puts on the plant's broker.

Every payload is a versioned pydantic model; the JSON Schema files shipped in
``edge/schemas/`` are generated from these models (``crystal-edge payload-schema``) and a
test keeps them in sync. Integrators wire the DCS from the schemas and the README, never
from this code.

Topics (JSON mode, ``<p>`` = ``topic_prefix``, ``<d>`` = device id):

* ``<p>/<d>/psd`` -- :class:`~edge.sinks.psd_payload.PsdPayload` (built in
  :mod:`edge.sinks.psd_payload`, shared with the JSON-lines sink), one per closed batch,
  QoS 1, not retained.
* ``<p>/<d>/status`` -- :class:`StatusPayload`, retained, QoS 1; ``offline`` comes from the
  broker (MQTT last will) when the appliance dies and from the appliance on a clean stop.
* ``<p>/<d>/health`` -- :class:`HealthPayload`, periodic, QoS 0, not retained.
* ``<p>/<d>/cmd`` -- :class:`CommandPayload`, inbound, only when ``commands_enabled``.

All lengths are micrometres (field names end in ``_um``); all times are UTC ISO 8601.
Schema changes that remove or retype a field bump ``schema_version``; adding an optional
field does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field

from edge.service.snapshot import StatusSnapshot
from edge.sinks.psd_payload import SCHEMA_VERSION, PsdPayload
from edge.sinks.psd_payload import StrictPayload as _Strict

STATUS_SCHEMA_ID = "crystal-psd/status"
HEALTH_SCHEMA_ID = "crystal-psd/health"
COMMAND_SCHEMA_ID = "crystal-psd/command"


def utc_now() -> datetime:
    """Current time, timezone-aware UTC (what every payload timestamp uses)."""
    return datetime.now(timezone.utc)


# ------------------------------------------------------------------------ status
class StatusPayload(_Strict):
    """``<prefix>/<device>/status`` (retained, QoS 1)."""

    schema_id: Literal["crystal-psd/status"] = Field(STATUS_SCHEMA_ID, description="schema id")
    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="schema version")
    device_id: str = Field(min_length=1, description="appliance id")
    state: Literal["online", "offline"] = Field(description="appliance state")
    since: AwareDatetime | None = Field(
        None, description="when the state began (UTC); null in the last will, which the "
        "broker publishes at a time the appliance cannot know")
    reason: str = Field("", description="why: 'started', 'clean stop', "
                        "'connection lost (last will)'")
    software_version: str = Field("", description="crystal-psd version")
    model_name: str = Field("", description="segmentation model name")
    model_sha256: str = Field("", description="sha256 of the ONNX file")
    backend: str = Field("", description="inference backend")


# ------------------------------------------------------------------------ health
class HealthPayload(_Strict):
    """``<prefix>/<device>/health`` (periodic, QoS 0): the service's status snapshot
    (:class:`edge.service.snapshot.StatusSnapshot`, the fields of the same names) and the MQTT
    sink's own state."""

    schema_id: Literal["crystal-psd/health"] = Field(HEALTH_SCHEMA_ID, description="schema id")
    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="schema version")
    device_id: str = Field(min_length=1, description="appliance id")
    time: AwareDatetime = Field(description="snapshot time (UTC)")
    state: str | None = Field(None, description="starting, running, stopping, stopped or "
                              "failed")
    healthy: bool | None = Field(None, description="no problem keeps batches from getting out")
    problems: list[str] = Field(default_factory=list,
                                description="one line per problem (empty when healthy)")
    uptime_s: float | None = Field(None, ge=0, description="seconds since the appliance started")
    frames_per_s: float | None = Field(None, ge=0,
                                       description="frames analysed per second (recent)")
    frames_total: int | None = Field(None, ge=0, description="frames analysed since start")
    queue_depths: dict[str, int] = Field(default_factory=dict,
                                         description="pipeline queue depths by queue name")
    current_batch_id: int | None = Field(None, description="batch being collected")
    batches_total: int | None = Field(None, ge=0, description="batches closed since start")
    batches_published: int | None = Field(None, ge=0, description="batches every required "
                                          "sink accepted (since start)")
    last_batch_id: int | None = Field(None, description="last closed batch")
    last_error: str | None = Field(None, description="last error message (one line), null if none")
    connection: Literal["connected", "connecting", "disconnected"] = Field(
        "connected", description="MQTT connection state")
    outbox_depth: int = Field(0, ge=0, description="batch reports waiting in the outbox")
    outbox_dropped: int = Field(0, ge=0, description="reports dropped/refused because the "
                                "outbox was full (since start)")
    published: int = Field(0, ge=0, description="batch reports acknowledged by the broker "
                           "(since start)")
    tls_insecure: bool = Field(False, description="TLS without the host name check "
                               "(mqtt.insecure = true); meant for commissioning only")
    details: dict[str, Any] = Field(default_factory=dict,
                                    description="the rest of the status snapshot "
                                    "(status.json's other fields)")

    @classmethod
    def from_snapshot(cls, snapshot: StatusSnapshot | Mapping[str, Any], *, device_id: str,
                      sink: Mapping[str, Any] | None = None,
                      uptime_s: float | None = None) -> HealthPayload:
        """The health message of a status snapshot.

        Parameters
        ----------
        snapshot : StatusSnapshot or mapping
            The pipeline's snapshot (a mapping is validated into one: pydantic's
            ``ValidationError`` for wrong types).
        device_id : str
            The topic's device id.
        sink : mapping, optional
            The MQTT sink's own state now (connection, outbox_depth, outbox_dropped,
            published, tls_insecure).
        uptime_s : float, optional
            Used while the snapshot has none (before the pipeline's first).
        """
        if not isinstance(snapshot, StatusSnapshot):
            snapshot = StatusSnapshot.model_validate(dict(snapshot))
        data = snapshot.to_json()
        own = {k: v for k, v in (sink or {}).items() if k in _SINK_FIELDS}
        if own.get("outbox_depth") is None and snapshot.outbox_depth is not None:
            own["outbox_depth"] = snapshot.outbox_depth
        known = {k: data[k] for k in cls.model_fields if k in data
                 and k not in _SINK_FIELDS and k not in _NOT_IN_DETAILS}
        if known.get("uptime_s") is None:
            known["uptime_s"] = uptime_s
        details = {k: v for k, v in data.items()
                   if k not in known and k not in _NOT_IN_DETAILS and k not in _SINK_FIELDS}
        return cls(device_id=device_id, time=snapshot.time or utc_now(), details=details,
                   **known, **own)


_SINK_FIELDS = ("connection", "outbox_depth", "outbox_dropped", "published", "tls_insecure")
"""HealthPayload fields the MQTT sink reports itself (its state when the message goes)."""

_NOT_IN_DETAILS = ("device_id", "time", "last_batch")
"""Snapshot fields not copied into ``details`` (``last_batch`` is on the psd topic)."""


# ----------------------------------------------------------------------- command
class CommandPayload(_Strict):
    """Inbound ``<prefix>/<device>/cmd`` (only with ``commands_enabled``)."""

    schema_id: Literal["crystal-psd/command"] = Field(COMMAND_SCHEMA_ID, description="schema id")
    command: Literal["close_batch", "reload_config"] = Field(description="what to do")
    request_id: str | None = Field(None, max_length=128,
                                   description="echoed in the log, for tracing")


PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    "psd": PsdPayload,
    "status": StatusPayload,
    "health": HealthPayload,
    "command": CommandPayload,
}
"""Schema file stem -> model; ``edge/schemas/<stem>.schema.json`` is generated from each."""


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a payload model, with ``$id`` and ``$schema``."""
    stem = next(k for k, v in PAYLOAD_MODELS.items() if v is model)
    # inbound commands: what a sender may omit; outbound payloads: what always arrives
    schema = model.model_json_schema(mode="validation" if stem == "command" else "serialization")
    # the psd payload has its own version; the others share SCHEMA_VERSION
    field = model.model_fields.get("schema_version")
    version = SCHEMA_VERSION if field is None else field.default
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://crystal-psd.local/schemas/{stem}.v{version}.schema.json",
        **schema,
    }
