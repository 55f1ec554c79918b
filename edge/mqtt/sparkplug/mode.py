"""Sparkplug B edge node life cycle: NBIRTH / NDATA / NDEATH / NCMD.

* Before each CONNECT the node takes the next ``bdSeq`` (0-255, persisted in
  ``<state dir>/sparkplug_bdseq.json`` so it keeps counting across restarts) and sets
  NDEATH with that ``bdSeq`` as the MQTT will (QoS 1, not retained).
* After CONNACK it subscribes to its NCMD topic and publishes NBIRTH (``seq`` 0, the
  same ``bdSeq``, every metric with its data type); each later NDATA increments ``seq``,
  wrapping 255 -> 0.
* NCMD ``Node Control/Rebirth`` = true -> a new NBIRTH (``seq`` 0 again).
* A clean stop publishes NDEATH before DISCONNECT.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from edge.mqtt.config import MqttConfig
from edge.mqtt.message import Inbound, Message
from edge.mqtt.outbox import OutboxItem
from edge.mqtt.payloads import CommandPayload, HealthPayload
from edge.mqtt.sparkplug import codec
from edge.mqtt.sparkplug import sparkplug_b_pb2 as pb
from edge.service.state import atomic_write_text
from edge.service.statefiles import read_json_state
from edge.sinks.psd_payload import PsdPayload
from edge.sinks.psd_v1 import upgrade_v1

log = logging.getLogger(__name__)

BDSEQ_FILE = "sparkplug_bdseq.json"
REBIRTH = "Node Control/Rebirth"
_COMMAND_METRICS = {"Node Control/Close Batch": "close_batch",
                    "Node Control/Reload Config": "reload_config"}


class BdSeqStore:
    """The birth/death sequence number, persisted: :meth:`take` returns the value for the
    next connection and stores its successor (mod 256)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def peek(self) -> int:
        value, _ = read_json_state(self.path, lambda d: int(d["next"]) % 256,
                                   what="Sparkplug bdSeq", then="bdSeq restarts at 0")
        return value or 0

    def take(self) -> int:
        value = self.peek()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"next": (value + 1) % 256}))
        return value


class SparkplugMode:
    """Sparkplug B topic namespace and payloads for one edge node."""

    name = "sparkplug"

    def __init__(self, config: MqttConfig, *, device_id: str, state_dir: str | Path,
                 software_version: str = "", **_ident: str) -> None:
        self.config = config
        self.device_id = device_id
        self.group = config.sparkplug_group_id
        self.node = config.sparkplug_edge_node_id or device_id
        self.software_version = software_version
        self.bdseq_store = BdSeqStore(Path(state_dir) / BDSEQ_FILE)
        self.bdseq: int | None = None
        self._seq = 0
        self._last_psd: PsdPayload | None = None
        self._last_health: HealthPayload | None = None
        self.topic_nbirth = codec.topic(self.group, "NBIRTH", self.node)
        self.topic_ndeath = codec.topic(self.group, "NDEATH", self.node)
        self.topic_ndata = codec.topic(self.group, "NDATA", self.node)
        self.topic_ncmd = codec.topic(self.group, "NCMD", self.node)

    # ---------------------------------------------------------------- payloads
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    def _death(self) -> Message:
        p = pb.Payload()
        p.timestamp = codec.now_ms()
        codec.add_metric(p, "bdSeq", pb.UInt64, self.bdseq)
        return Message(self.topic_ndeath, p.SerializeToString(), 1, False)

    def _birth(self) -> Message:
        p = pb.Payload()
        p.timestamp = codec.now_ms()
        self._seq = 0
        p.seq = 0
        codec.add_metric(p, "bdSeq", pb.UInt64, self.bdseq)
        codec.add_metric(p, REBIRTH, pb.Boolean, False)
        if self.config.commands_enabled:
            for name in _COMMAND_METRICS:
                codec.add_metric(p, name, pb.Boolean, False)
        codec.add_metric(p, "Properties/Software Version", pb.String, self.software_version)
        codec.add_metric(p, "Properties/Device ID", pb.String, self.device_id)
        codec.add_psd_metrics(p, self._last_psd, classes=self.config.sparkplug_classes)
        codec.add_health_metrics(p, self._last_health)
        return Message(self.topic_nbirth, p.SerializeToString(), 0, False)

    # ---------------------------------------------------------------- TopicMode
    def will(self) -> Message:
        self.bdseq = self.bdseq_store.take()
        return self._death()

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(self.topic_ncmd, 1)]

    def on_connected(self) -> list[Message]:
        return [self._birth()]

    def rebirth(self) -> list[Message]:
        return [self._birth()]

    def set_identity(self, ident: dict[str, str], *, connected: bool) -> list[Message]:
        # The backend travels in every NDATA (PSD/Backend); NBIRTH does not carry it.
        return []

    def batch(self, item: OutboxItem, payload: dict[str, Any], *, historical: bool) -> Message:
        # a report stored before an upgrade (schema version 1) goes out in today's metrics
        psd = PsdPayload.model_validate(upgrade_v1(payload))
        p = pb.Payload()
        p.timestamp = codec.now_ms()
        p.seq = self._next_seq()
        codec.add_psd_metrics(p, psd, historical=historical,
                              classes=self.config.sparkplug_classes)
        if not historical:
            self._last_psd = psd
        elif self._last_psd is None or psd.batch_id >= self._last_psd.batch_id:
            self._last_psd = psd
        return Message(self.topic_ndata, p.SerializeToString(),
                       self.config.sparkplug_ndata_qos, False)

    def health(self, health: HealthPayload) -> Message | None:
        self._last_health = health
        p = pb.Payload()
        p.timestamp = codec.now_ms()
        p.seq = self._next_seq()
        codec.add_health_metrics(p, health)
        return Message(self.topic_ndata, p.SerializeToString(), 0, False)

    def on_stop(self) -> list[Message]:
        return [self._death()]

    def inbound(self, topic: str, payload: bytes) -> Inbound:
        if topic != self.topic_ncmd:
            return Inbound("rejected", reason=f"unexpected topic {topic}")
        try:
            msg = pb.Payload.FromString(payload)
        except DecodeError as exc:
            return Inbound("rejected", reason=f"NCMD is not a Sparkplug B payload ({exc})")
        for m in msg.metrics:
            if m.name == REBIRTH:
                if m.WhichOneof("value") == "boolean_value" and m.boolean_value:
                    return Inbound("rebirth")
                return Inbound("rejected", reason=f"{REBIRTH} must be Boolean true")
            if m.name in _COMMAND_METRICS:
                if not self.config.commands_enabled:
                    return Inbound("rejected",
                                   reason="commands are disabled (sinks.mqtt.commands_enabled)")
                if m.WhichOneof("value") == "boolean_value" and m.boolean_value:
                    return Inbound("command", command=CommandPayload(
                        command=_COMMAND_METRICS[m.name]))  # type: ignore[arg-type]
                return Inbound("rejected", reason=f"{m.name} must be Boolean true")
        names = ", ".join(repr(m.name) for m in msg.metrics) or "no metrics"
        return Inbound("rejected", reason=f"NCMD with unknown metric(s): {names}")
