"""The status snapshot: one type, one vocabulary, rendered three ways.

The running pipeline builds a :class:`StatusSnapshot` every ``[health] interval_s``
(:mod:`edge.service.pipeline.health`). The same snapshot is

* ``status.json`` in the state directory (:meth:`StatusSnapshot.to_json`), read back into
  this type by ``crystal-edge status`` (:meth:`StatusSnapshot.from_mapping`);
* the MQTT health message (:meth:`edge.mqtt.payloads.HealthPayload.from_snapshot`);
* the Prometheus metrics (:func:`edge.service.metrics.render_metrics`), each metric named
  ``crystal_edge_<field>`` after the field it shows.

Every name is chosen once here and used unchanged by all three. The module needs only
pydantic (``crystal-edge status`` imports it without the pipeline's dependencies).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

__all__ = ["LastBatch", "StageSnapshot", "StatusSnapshot"]


class _Read(BaseModel):
    # Read tolerantly: a snapshot written by another version may have other keys.
    model_config = ConfigDict(extra="ignore", frozen=True)


class StageSnapshot(_Read):
    """One stage thread (see :class:`edge.service.pipeline.stages.Stage`)."""

    alive: bool | None = Field(None, description="the stage's thread runs")
    done: bool = Field(False, description="the stage finished its work (a clean end)")
    state: str = Field("", description="idle, source, working, blocked or retrying")
    state_s: float | None = Field(None, description="seconds in that state")
    items: int = Field(0, description="items the stage moved on")
    errors: int = Field(0, description="items that failed in the stage")
    last_error: str | None = Field(None, description="the stage's last error (one line)")
    died: str | None = Field(None, description="why the stage's thread died, if it did")
    busy_s: float = Field(0.0, description="seconds spent working on items")
    since_progress_s: float | None = Field(None, description="seconds since an item "
                                           "last left the stage")


class LastBatch(_Read):
    """Summary of the last batch handed to the sinks (the full report is on the psd topic)."""

    batch_id: int | None = Field(None, description="batch number")
    close_reason: str | None = Field(None, description="why it closed: frames, time, "
                                     "command, shutdown, end")
    frames_used: int | None = Field(None, description="frames whose crystals count")
    frames_rejected: int | None = Field(None, description="frames rejected")
    crystals: int | None = Field(None, description="crystals measured")
    x50_3_um: float | None = Field(None, description="x50,3 (micrometres)")
    s_lnd: float | None = Field(None, description="log-normal spread s_LND")
    batch_end: str | None = Field(None, description="last frame's time, UTC ISO 8601")


class StatusSnapshot(_Read):
    """What the running service says about itself, every ``[health] interval_s``."""

    state: str | None = Field(None, description="starting, running, stopping, stopped "
                              "or failed")
    device_id: str = Field("", description="appliance id")
    pid: int | None = Field(None, description="process id of the service")
    time: str | None = Field(None, description="when the snapshot was taken, UTC ISO 8601")
    health_interval_s: float | None = Field(
        None, description="seconds between snapshots (status.json is stale after a few)")
    started: str | None = Field(None, description="when the service started, UTC ISO 8601")
    uptime_s: float | None = Field(None, description="seconds since the service started")
    healthy: bool | None = Field(None, description="no problem keeps batches from getting "
                                 "out (the systemd watchdog is petted only while true)")
    problems: list[str] = Field(default_factory=list,
                                description="one line per problem (empty when healthy)")
    failed: str | None = Field(None, description="why the pipeline failed (a dead or "
                               "stuck stage), null while it works")
    batch_close_error: dict[str, Any] | None = Field(
        None, description="closing the open batch fails: since, error, attempts, frames")
    sink_faults: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="required sinks failing now, by sink name")
    abandoned: list[str] = Field(default_factory=list,
                                 description="work given up at a stop")
    busy: str | None = Field(None, description="what the inference stage is loading or "
                             "building (a TensorRT engine), null otherwise")
    frames_per_s: float | None = Field(
        None, validation_alias=AliasChoices("frames_per_s", "fps"),
        description="frames analysed per second (recent window)")
    frames_total: int = Field(0, description="frames analysed since start")
    frames_used_total: int = Field(0, description="frames whose crystals entered a batch")
    frames_rejected_total: dict[str, int] = Field(
        default_factory=dict, description="frames rejected since start, by reason")
    queue_depths: dict[str, int] = Field(
        default_factory=dict, description="items waiting in each queue, by the stage it "
        "feeds (inference, post, aggregate, sinks)")
    current_batch_id: int | None = Field(None, description="batch being collected")
    current_batch_frames: int = Field(0, description="frames in the open batch")
    batches_total: int = Field(0, description="batches closed since start")
    batches_published: int = Field(0, description="batches every required sink accepted")
    batches_failed: int = Field(0, description="batches given up at a stop")
    last_batch_id: int | None = Field(None, description="last batch handed to the sinks")
    last_batch: LastBatch | None = Field(None, description="summary of that batch")
    outbox_depth: int | None = Field(None, description="batch reports waiting in the "
                                     "MQTT outbox (null without an MQTT sink)")
    last_error: str | None = Field(None, description="last error (one line)")
    last_error_time: str | None = Field(None, description="when, UTC ISO 8601")
    stop_reason: str | None = Field(None, description="why the service stops or stopped")
    state_file_incidents: list[dict[str, Any]] = Field(
        default_factory=list, description="state files found damaged and replaced "
        "(file, reason, moved_to, time, kept)")
    software_version: str | None = Field(None, description="crystal-psd version")
    backend: dict[str, Any] = Field(default_factory=dict, description="inference backend "
                                    "(name, device, precision, engine, ...)")
    model: dict[str, Any] = Field(default_factory=dict, description="segmentation model "
                                  "(name, file, sha256, measure_px_size_um)")
    state_dir: str | None = Field(None, description="the service's state directory")
    info_error: str | None = Field(None, description="the identity could not be read")
    source: dict[str, Any] = Field(default_factory=dict, description="the source's own "
                                   "health (free-form per source type)")
    sinks: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="each sink's own health, by sink name")
    stages: dict[str, StageSnapshot] = Field(default_factory=dict,
                                             description="each stage thread, by name")

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON dict (``status.json``)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> StatusSnapshot:
        """A snapshot from ``status.json``'s object, written by this or another version.

        Missing fields take their defaults; a field of the wrong type is left out (it
        takes its default too), so one odd value does not hide the rest.
        """
        values = dict(data)
        for _ in range(len(values) + 1):
            try:
                return cls.model_validate(values)
            except ValidationError as exc:
                bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
                bad = {k for k in bad if k in values} or set(values)
                for key in bad:
                    values.pop(key, None)
        return cls()

    @property
    def mqtt(self) -> dict[str, Any] | None:
        """The MQTT sink's health, if there is an MQTT sink."""
        return self.sinks.get("mqtt")

    def outbox_from_sinks(self) -> int | None:
        """The outbox depth a sink reports (for :attr:`outbox_depth`)."""
        for s in self.sinks.values():
            depth = s.get("outbox_depth")
            if isinstance(depth, int) and not isinstance(depth, bool):
                return depth
        return None
