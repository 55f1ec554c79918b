"""Result sinks: where closed batches go (a JSON-lines file, the plant's MQTT broker).

This package owns the sink interface (:mod:`edge.sinks.base`), the JSON ``psd`` payload
every JSON sink publishes (:mod:`edge.sinks.psd_payload`), the JSON-lines sink
(:mod:`edge.sinks.jsonl`), the ``[sinks]`` configuration section and the registry. The
MQTT sink's machinery (outbox, connection, Sparkplug B) lives in :mod:`edge.mqtt`.

The registry is explicit: :data:`SINKS` maps each ``[sinks.<name>]`` section to its
configuration model and its factory; :func:`build_sinks` constructs the enabled ones in
registry order, and :func:`required_sinks` names those a batch must reach before its
frames are acknowledged. Every sink configuration has ``enabled`` and ``required``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edge.errors import UserError
from edge.mqtt.config import MqttConfig
from edge.sinks.base import Sink
from edge.sinks.history import HistorySink, HistorySinkConfig
from edge.sinks.jsonl import JsonlSink, JsonlSinkConfig


@dataclass(frozen=True)
class SinkContext:
    """What the service hands every sink factory besides the sink's own section."""

    state_dir: Path
    ident: dict[str, str] = field(default_factory=dict)
    """The model identity at start-up (``name``, ``sha256``, ``backend``)."""
    on_command: Callable[[Any], None] | None = None
    """Handler of inbound commands (``close_batch``, ``reload_config``)."""
    identity: Callable[[], dict[str, str]] | None = None
    """Returns the current model identity (the backend may load with the first frame)."""


@dataclass(frozen=True)
class SinkEntry:
    """One registered sink: its ``[sinks.<name>]`` model and how to build it."""

    config: type[BaseModel]
    factory: Callable[[Any, SinkContext], Sink]
    description: str


def _jsonl_sink(config: JsonlSinkConfig, ctx: SinkContext) -> Sink:
    return JsonlSink(config)


def _history_sink(config: HistorySinkConfig, ctx: SinkContext) -> Sink:
    return HistorySink(config, state_dir=ctx.state_dir)


def _mqtt_sink(config: MqttConfig, ctx: SinkContext) -> Sink:
    from edge.mqtt.sink import MqttSink  # paho: only where MQTT is on
    from edge.service.pipeline.batch import software_version

    return MqttSink(config, state_dir=ctx.state_dir, software_version=software_version(),
                    model_name=ctx.ident.get("name", ""),
                    model_sha256=ctx.ident.get("sha256", ""),
                    backend=ctx.ident.get("backend", ""), command_handler=ctx.on_command,
                    identity=ctx.identity)


#: ``[sinks.<name>]`` -> configuration model and factory, in the order sinks are built
#: (and handed each batch).
SINKS: dict[str, SinkEntry] = {
    "jsonl": SinkEntry(JsonlSinkConfig, _jsonl_sink, "JSON lines file or stdout"),
    "mqtt": SinkEntry(MqttConfig, _mqtt_sink,
                      "the plant's MQTT broker (JSON topics or Sparkplug B), with an outbox"),
    "history": SinkEntry(HistorySinkConfig, _history_sink,
                         "bounded batch history in the state directory (the page's trends)"),
}


class SinksConfig(BaseModel):
    """``[sinks]``: where batch reports go; one ``[sinks.<name>]`` per sink of :data:`SINKS`."""

    model_config = ConfigDict(extra="forbid")

    jsonl: JsonlSinkConfig = Field(default_factory=JsonlSinkConfig,
                                   description=SINKS["jsonl"].description)
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description=SINKS["mqtt"].description)
    history: HistorySinkConfig = Field(default_factory=HistorySinkConfig,
                                       description=SINKS["history"].description)

    def enabled(self) -> list[tuple[str, Any]]:
        """``(name, section)`` of the enabled sinks, in registry order."""
        sections = [(name, getattr(self, name)) for name in SINKS]
        return [(name, sec) for name, sec in sections if sec.enabled]


def build_sinks(config: SinksConfig, *, state_dir: str | Path,
                ident: dict[str, str] | None = None,
                on_command: Callable[[Any], None] | None = None,
                identity: Callable[[], dict[str, str]] | None = None) -> list[Sink]:
    """The enabled sinks (not yet opened), in registry order.

    Raises :class:`~edge.errors.UserError` when no sink is enabled.
    """
    ctx = SinkContext(state_dir=Path(state_dir), ident=dict(ident or {}),
                      on_command=on_command, identity=identity)
    sinks = [SINKS[name].factory(section, ctx) for name, section in config.enabled()]
    if not sinks:
        raise UserError("sinks: no sink enabled (set enabled = true in [sinks.jsonl] or "
                        "[sinks.mqtt]); batch reports would go nowhere")
    return sinks


def required_sinks(config: SinksConfig) -> set[str]:
    """Names of the enabled sinks a batch must reach before its frames are acknowledged
    (``required`` in their ``[sinks.<name>]``)."""
    return {name for name, section in config.enabled() if section.required}


__all__ = ["SINKS", "SinkContext", "SinkEntry", "SinksConfig", "build_sinks",
           "required_sinks"]
