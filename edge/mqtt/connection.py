"""One connection to the broker, from CONNECT to its end (:class:`Connection`).

Each connection gets a fresh paho client with the mode's last will. While it is up it
feeds the outbox oldest first with at most ``max_inflight`` unacknowledged reports and
deletes each one on its PUBACK; a QoS 0 report (Sparkplug NDATA) is deleted once written
to the socket. After a reconnect the feed starts again at the oldest waiting report, so
the order holds; a report whose PUBACK was lost is sent again (same ``batch_id``). A
clean stop sends what is waiting for a while, then the mode's goodbye (status offline /
NDEATH) and DISCONNECT. The sink (:mod:`edge.mqtt.sink`) runs connections one after
another with back-off, and owns health, identity and inbound commands.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from edge.mqtt.config import MqttConfig
from edge.mqtt.connect import (
    close_leaked_sockets,
    close_socket,
    connect_properties,
    describe_connect_error,
    new_client,
    subscribe_options,
)
from edge.mqtt.message import Message, TopicMode
from edge.mqtt.outbox import Outbox

log = logging.getLogger(__name__)

_OK = (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)


@dataclass
class LinkState:
    """What the network thread reports for the sink's health (written there only)."""

    state: str = "disconnected"
    last_error: str | None = None
    published: int = 0
    # Topic filters the broker granted on this connection (SUBACK); a message published
    # there before the grant is not delivered to this client.
    subscribed: frozenset[str] = frozenset()

    def error(self, message: str) -> None:
        """Record and log one problem (one line)."""
        self.last_error = message
        log.error("mqtt: %s", message)


@dataclass(frozen=True)
class ConnectionHooks:
    """What the sink does at a connection's moments (all on the network thread)."""

    on_connack: Callable[[Connection], None]
    """After CONNACK, before the mode's first messages (the sink refreshes the identity)."""
    on_tick: Callable[[Connection], None]
    """Every loop turn while connected (health, identity polling)."""
    on_message: Callable[[Connection, mqtt.MQTTMessage], None]
    """An inbound message on a subscribed topic."""


class Connection:
    """One connection's life; :meth:`run` returns when it ends (see the module docstring).

    Parameters
    ----------
    config
        The ``[sinks.mqtt]`` section.
    client_id, password, tls
        CONNECT parameters (``tls``: an ``ssl.SSLContext`` or None).
    mode
        JSON topics or Sparkplug B.
    outbox
        The store the reports are fed from and deleted from once acknowledged.
    link
        Shared connection state for the sink's health.
    hooks
        The sink's callbacks.
    close_timeout_s
        How long a clean stop keeps sending the backlog before it disconnects.
    """

    def __init__(self, config: MqttConfig, *, client_id: str, password: str | None,
                 tls: Any, mode: TopicMode, outbox: Outbox, link: LinkState,
                 hooks: ConnectionHooks, close_timeout_s: float) -> None:
        self.config = config
        self.client_id = client_id
        self.mode = mode
        self.outbox = outbox
        self.link = link
        self.hooks = hooks
        self.close_timeout_s = close_timeout_s
        self.where = f"{config.host}:{config.effective_port}"
        self.connected = False
        self.refused = False
        self.connected_wall = 0.0  # time.time() of CONNACK: older reports are historical
        self.connected_at = 0.0  # time.monotonic() of CONNACK
        self._inflight: dict[int, int] = {}  # paho mid -> outbox id
        self._acked: list[int] = []
        self._last_fed = 0
        self._sub_mids: dict[int, str] = {}  # paho mid of a SUBSCRIBE -> topic filter
        self.client = new_client(config, client_id=client_id, password=password, tls=tls)
        will = mode.will()
        self.client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, msg: hooks.on_message(self, msg)

    # ------------------------------------------------------------------ life
    def run(self, stop: threading.Event) -> bool:
        """CONNECT and serve until the connection ends or ``stop`` is set; True when
        CONNACK accepted it (a session was had)."""
        if not self._connect():
            return False
        try:
            return self._serve(stop)
        finally:
            close_socket(self.client)

    def _connect(self) -> bool:
        cfg = self.config
        try:
            if cfg.protocol == "5":
                self.client.connect(cfg.host, cfg.effective_port, cfg.keepalive,
                                    clean_start=True, properties=connect_properties(cfg))
            else:
                self.client.connect(cfg.host, cfg.effective_port, cfg.keepalive)
        except Exception as exc:  # socket, TLS and DNS errors of every kind
            self.link.error(describe_connect_error(exc, cfg.host, cfg.effective_port))
            close_socket(self.client)
            close_leaked_sockets(exc)
            return False
        return True

    def _serve(self, stop: threading.Event) -> bool:
        had_session = False
        connack_deadline = time.monotonic() + max(10.0, float(self.config.keepalive))
        while not stop.is_set():
            if not self._step(had_session):
                return had_session
            if self.connected:
                had_session = True
                self.feed()
                self.hooks.on_tick(self)
                self.flush_acks()
            elif time.monotonic() > connack_deadline:
                self.link.error(f"no CONNACK from {self.where}")
                self.client.disconnect()
                return False
        if self.connected:
            self._shutdown()
        else:
            self.client.disconnect()
        return had_session

    def _step(self, had_session: bool) -> bool:
        """One turn of paho's network loop; False when the connection ended (logged)."""
        try:
            rc = self.client.loop(timeout=0.1)
            problem = None if rc == mqtt.MQTT_ERR_SUCCESS else self._ended(rc, had_session)
        except Exception as exc:  # TLS alerts after the handshake, socket errors
            problem = (f"connection to {self.where} lost ({type(exc).__name__}: {exc})"
                       if had_session else
                       describe_connect_error(exc, self.config.host, self.config.effective_port))
        if self.refused:  # logged by _on_connect
            return False
        if problem is None:
            return True
        self.link.error(problem)
        self.connected = False
        self.flush_acks()
        return False

    def _ended(self, rc: int, had_session: bool) -> str:
        """Why a network loop turn that returned ``rc`` ended the connection."""
        if self.connected or had_session:
            return f"connection to {self.where} lost ({mqtt.error_string(rc)})"
        hint = (" (TLS: did the broker refuse the client certificate? check "
                "sinks.mqtt.cert_file / sinks.mqtt.key_file)" if self.config.use_tls else "")
        return (f"{self.where} closed the connection before CONNACK "
                f"({mqtt.error_string(rc)}){hint}")

    def _shutdown(self) -> None:
        """Clean stop: drain the outbox for a while, publish offline/NDEATH, DISCONNECT."""
        client = self.client
        deadline = time.monotonic() + self.close_timeout_s
        while (self.outbox.depth > 0 or self._inflight) and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS or not self.connected:
                self.flush_acks()
                return
            self.feed()
            self.flush_acks()
        infos = [self.send(msg) for msg in self.mode.on_stop()]
        deadline = time.monotonic() + 2.0
        while not all(i.is_published() for i in infos) and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        self.flush_acks()
        client.disconnect()
        client.loop(timeout=0.1)
        self.connected = False
        log.info("mqtt: disconnected cleanly")

    # ------------------------------------------------------------------ sending
    def send(self, msg: Message) -> mqtt.MQTTMessageInfo:
        """Publish one message on this connection."""
        return self.client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)

    def feed(self) -> None:
        """Send waiting reports, oldest first, up to ``max_inflight`` unacknowledged."""
        room = self.config.max_inflight - len(self._inflight)
        if room <= 0:
            return
        for item in self.outbox.peek(self._last_fed, room):
            try:
                payload = json.loads(item.payload)
                msg = self.mode.batch(item, payload,
                                      historical=item.created < self.connected_wall)
            except (ValueError, ValidationError) as exc:  # a poison entry must not block
                self.link.error(f"outbox entry {item.id} (batch {item.batch_id}) cannot be "
                                f"encoded, removed: {exc}".splitlines()[0])
                self._acked.append(item.id)
                self._last_fed = item.id
                continue
            info = self.send(msg)
            if info.rc not in _OK:
                log.warning("mqtt: publishing batch %d failed (%s); retrying",
                            item.batch_id, mqtt.error_string(info.rc))
                return
            self._last_fed = item.id
            if info.is_published():  # QoS 0 written at once (on_publish already ran)
                self._acked.append(item.id)
                self.link.published += 1
            else:
                self._inflight[info.mid] = item.id

    def flush_acks(self) -> None:
        """Delete the acknowledged reports from the outbox."""
        if self._acked:
            self.outbox.ack(self._acked)
            self._acked = []

    # ------------------------------------------------------------------ callbacks
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                    reason_code: Any, properties: Any) -> None:
        cfg = self.config
        if reason_code.is_failure:
            self.refused = True
            self.link.error(f"broker {self.where} refused the connection: {reason_code} "
                            "(check sinks.mqtt.username / password / client_id)")
            return
        self.connected = True
        self.connected_wall = time.time()
        self.connected_at = time.monotonic()
        self.link.state = "connected"
        self.link.last_error = None
        log.info("mqtt: connected to %s as %s (%d report(s) waiting)",
                 self.where, self.client_id, self.outbox.depth)
        self.link.subscribed = frozenset()
        self.hooks.on_connack(self)  # the status below carries the current identity
        for topic, qos in self.mode.subscriptions():
            if cfg.protocol == "5":
                _rc, mid = client.subscribe(topic, options=subscribe_options(cfg, qos))
            else:
                _rc, mid = client.subscribe(topic, qos)
            if mid is not None:
                self._sub_mids[mid] = topic
        for msg in self.mode.on_connected():
            self.send(msg)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason_code: Any, properties: Any) -> None:
        self.connected = False
        self.link.subscribed = frozenset()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[Any], properties: Any) -> None:
        topic = self._sub_mids.pop(mid, None)
        if topic is None:
            return
        refused = [rc for rc in reason_codes if getattr(rc, "is_failure", False)]
        if refused:  # e.g. an ACL without read access: commands would never arrive
            self.link.error(f"broker refused the subscription to {topic}: {refused[0]} "
                            "(check the broker ACL; nothing published there reaches "
                            "the appliance)")
            return
        self.link.subscribed = self.link.subscribed | {topic}

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason_code: Any, properties: Any) -> None:
        oid = self._inflight.pop(mid, None)
        if oid is None:  # status/health/birth, or a QoS 0 report written inside publish()
            return
        if getattr(reason_code, "is_failure", False):
            # Stays in the outbox; sent again after the next reconnect.
            self.link.error(f"broker refused a batch report: {reason_code} (check the "
                            "broker ACL for the psd topic)")
            return
        self._acked.append(oid)
        self.link.published += 1
