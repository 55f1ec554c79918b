"""JSON topics: ``<prefix>/<device>/{psd,status,health,cmd}`` (see :mod:`edge.mqtt.payloads`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from edge.mqtt.config import MqttConfig
from edge.mqtt.inbound import InboundRejected, decode_json
from edge.mqtt.message import Inbound, Message
from edge.mqtt.outbox import OutboxItem
from edge.mqtt.payloads import CommandPayload, HealthPayload, StatusPayload, utc_now


@dataclass(frozen=True)
class JsonTopics:
    """The four topics of one device."""

    psd: str
    status: str
    health: str
    cmd: str

    @classmethod
    def for_device(cls, topic_prefix: str, device_id: str) -> JsonTopics:
        base = f"{topic_prefix.rstrip('/')}/{device_id}" if topic_prefix else device_id
        return cls(psd=f"{base}/psd", status=f"{base}/status", health=f"{base}/health",
                   cmd=f"{base}/cmd")


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def first_validation_error(exc: ValidationError) -> str:
    """``'loc.path: message'`` of the first error, for one-line log messages."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(root)"
    return f"{loc}: {first['msg']}"


class JsonMode:
    """Plain JSON payloads; status retained with the last will set to ``offline``."""

    name = "json"

    def __init__(self, config: MqttConfig, *, device_id: str, software_version: str = "",
                 model_name: str = "", model_sha256: str = "", backend: str = "") -> None:
        self.config = config
        self.device_id = device_id
        self.topics = JsonTopics.for_device(config.topic_prefix, device_id)
        self._ident = {"software_version": software_version, "model_name": model_name,
                       "model_sha256": model_sha256, "backend": backend}
        self._online_since: datetime | None = None

    def _status(self, state: str, reason: str, *, since: datetime | None = None) -> Message:
        payload = StatusPayload(device_id=self.device_id, state=state,  # type: ignore[arg-type]
                                since=since, reason=reason, **self._ident)
        return Message(self.topics.status, _dumps(payload.to_payload()), self.config.qos, True)

    def will(self) -> Message:
        return self._status("offline", "connection lost (last will)")

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(self.topics.cmd, 1)] if self.config.commands_enabled else []

    def on_connected(self) -> list[Message]:
        self._online_since = utc_now()
        return [self._status("online", "connected", since=self._online_since)]

    def set_identity(self, ident: dict[str, str], *, connected: bool) -> list[Message]:
        """Take the new model/backend identity; while connected, the retained status
        again (same ``since``) so that late subscribers see the loaded backend."""
        changed = {k: v for k, v in ident.items() if k in self._ident and self._ident[k] != v}
        if not changed:
            return []
        reason = "identity changed: " + ", ".join(
            f"{k} {self._ident[k] or '-'} -> {v or '-'}" for k, v in changed.items())
        self._ident.update(changed)
        if not connected:
            return []
        return [self._status("online", reason, since=self._online_since)]

    def batch(self, item: OutboxItem, payload: dict[str, Any], *, historical: bool) -> Message:
        return Message(self.topics.psd, item.payload.encode(), self.config.qos, False)

    def health(self, health: HealthPayload) -> Message | None:
        return Message(self.topics.health, _dumps(health.to_payload()), 0, False)

    def on_stop(self) -> list[Message]:
        return [self._status("offline", "clean stop", since=utc_now())]

    def rebirth(self) -> list[Message]:
        return []

    def inbound(self, topic: str, payload: bytes) -> Inbound:
        if topic != self.topics.cmd:
            return Inbound("rejected", reason=f"unexpected topic {topic}")
        if not self.config.commands_enabled:
            return Inbound("rejected", reason="commands are disabled (sinks.mqtt.commands_enabled)")
        try:
            raw = decode_json(payload)
        except InboundRejected as exc:
            return Inbound("rejected", reason=str(exc))
        if isinstance(raw, dict):
            raw.setdefault("schema_id", "crystal-psd/command")
        try:
            cmd = CommandPayload.model_validate(raw)
        except ValidationError as exc:
            return Inbound("rejected", reason=first_validation_error(exc))
        return Inbound("command", command=cmd)
