"""What a topic mode (JSON or Sparkplug B) hands the connection loop to send."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from edge.mqtt.outbox import OutboxItem
from edge.mqtt.payloads import CommandPayload, HealthPayload


@dataclass(frozen=True)
class Message:
    """One MQTT message to publish."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class Inbound:
    """The meaning of an inbound message.

    ``kind`` is ``"command"`` (``command`` set), ``"rebirth"`` (Sparkplug node control) or
    ``"rejected"`` (``reason`` says why; logged and otherwise ignored).
    """

    kind: Literal["command", "rebirth", "rejected"]
    command: CommandPayload | None = None
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class TopicMode(Protocol):
    """JSON topics or Sparkplug B: the messages of one connection's life."""

    name: str

    def will(self) -> Message:
        """Last will of the next connection (called once before each CONNECT)."""
        ...

    def subscriptions(self) -> list[tuple[str, int]]:
        """(topic filter, QoS) to subscribe after CONNACK."""
        ...

    def on_connected(self) -> list[Message]:
        """Sent first after each successful CONNACK (status online / NBIRTH)."""
        ...

    def batch(self, item: OutboxItem, payload: dict[str, Any], *, historical: bool) -> Message:
        """The message for one outbox entry (a validated ``PsdPayload`` dict)."""
        ...

    def health(self, health: HealthPayload) -> Message | None:
        """The periodic health message (None: not sent in this mode)."""
        ...

    def on_stop(self) -> list[Message]:
        """Sent on a clean stop before DISCONNECT (status offline / NDEATH)."""
        ...

    def inbound(self, topic: str, payload: bytes) -> Inbound:
        """Interpret a message received on a subscribed topic."""
        ...

    def rebirth(self) -> list[Message]:
        """Messages for a rebirth request (Sparkplug NBIRTH); empty in JSON mode."""
        ...

    def set_identity(self, ident: dict[str, str], *, connected: bool) -> list[Message]:
        """Take a changed model/backend identity; messages announcing it (may be empty)."""
        ...
