"""``MqttSink``: the MQTT result sink (``edge.sinks.base.Sink``).

``publish()`` commits the report to the on-disk outbox and returns; it never waits for
the network. One background thread owns the paho client: it connects (fresh client per
connection, last will set), backs off exponentially (``reconnect_min_s`` doubling to
``reconnect_max_s``, with jitter) while the broker is unreachable or refuses us, feeds
the outbox oldest first with at most ``max_inflight`` unacknowledged reports, deletes each
one on its PUBACK, publishes health every ``health_interval_s`` and dispatches inbound
commands. After a reconnect or a restart the feed starts again at the oldest waiting
report, so the order holds; a report whose PUBACK was lost is sent again (same
``batch_id``).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from edge import __version__
from edge.errors import UserError
from edge.mqtt.config import MqttConfig
from edge.mqtt.connect import (
    Backoff,
    build_tls_context,
    close_leaked_sockets,
    close_socket,
    connect_properties,
    describe_connect_error,
    new_client,
    subscribe_options,
)
from edge.mqtt.inbound import InboundGate
from edge.mqtt.jsonmode import JsonMode, first_validation_error
from edge.mqtt.message import Message, TopicMode
from edge.mqtt.outbox import OUTBOX_FILE, Outbox
from edge.mqtt.payloads import CommandPayload, HealthPayload, PsdPayload
from edge.sinks.base import Publishable

log = logging.getLogger(__name__)

CommandHandler = Callable[[CommandPayload], None]
IdentitySource = Callable[[], dict[str, Any]]

IDENTITY_POLL_S = 1.0

_OK = (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)


class MqttSink:
    """Publishes batch reports, status and health to the plant's broker.

    Parameters
    ----------
    config
        The ``[mqtt]`` section.
    state_dir
        Where ``outbox.sqlite3`` (unless ``config.outbox_path``) and, in Sparkplug mode,
        the persisted ``bdSeq`` live.
    software_version, model_name, model_sha256, backend
        Identity published in the retained status (and Sparkplug NBIRTH).
    command_handler
        Called (on the MQTT thread; keep it short) with each valid inbound command when
        ``config.commands_enabled``; see :meth:`set_command_handler`.
    identity
        Returns the current model identity as in the psd payload's ``model`` (``name``,
        ``sha256``, ``backend``); polled while connected, and a change republishes the
        retained status (the backend is ``pending`` until the first frame loads it).
    close_timeout_s
        How long :meth:`close` keeps sending the backlog before it disconnects.
    """

    name = "mqtt"

    def __init__(self, config: MqttConfig, *, state_dir: str | Path | None = None,
                 software_version: str = __version__, model_name: str = "",
                 model_sha256: str = "", backend: str = "",
                 command_handler: CommandHandler | None = None,
                 identity: IdentitySource | None = None,
                 close_timeout_s: float = 5.0) -> None:
        self.config = config
        self.device_id = config.resolve_device_id()
        self.client_id = config.client_id or f"crystal-psd-{self.device_id}"
        if config.outbox_path:
            self.outbox_path = Path(config.outbox_path)
        elif state_dir is not None:
            self.outbox_path = Path(state_dir) / OUTBOX_FILE
        else:
            raise UserError("mqtt.outbox_path: not set and no state directory given")
        self.state_dir = Path(state_dir) if state_dir is not None else self.outbox_path.parent
        self._ident = {"software_version": software_version, "model_name": model_name,
                       "model_sha256": model_sha256, "backend": backend}
        self._command_handler = command_handler
        self._identity = identity
        self._identity_polled = -math.inf
        self.close_timeout_s = close_timeout_s
        self._gate = InboundGate(config)
        self._mode: TopicMode | None = None
        self._outbox: Outbox | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._password: str | None = None
        self._tls = None
        # connection state (written by the MQTT thread, read anywhere)
        self._state = "disconnected"
        self._last_error: str | None = None
        self._published = 0
        self._pending_health: dict[str, Any] | None = None
        self._last_pipeline_health: dict[str, Any] = {}
        # per-connection (MQTT thread only)
        self._connected = False
        self._refused = False
        self._connected_wall = 0.0
        self._connected_at = 0.0
        self._inflight: dict[int, int] = {}
        self._acked: list[int] = []
        self._last_fed = 0
        self._warned_device = False

    # ------------------------------------------------------------------ Sink API
    def open(self) -> None:
        """Check credentials and TLS files (UserError), open the outbox, start the thread."""
        if self._thread is not None:
            return
        cfg = self.config
        self._password = cfg.read_password()
        if self._password:
            try:
                from edge.logsetup import register_secret
                register_secret(self._password)
            except ImportError:  # pragma: no cover - logsetup is part of edge
                pass
        self._tls = build_tls_context(cfg)
        if cfg.insecure:
            log.warning("mqtt: [mqtt] insecure = true: %s", "the broker's host name is not "
                        "checked against its certificate (commissioning only)" if cfg.use_tls
                        else "has no effect without TLS")
        self._outbox = Outbox(self.outbox_path, max_messages=cfg.outbox_max_messages,
                              policy=cfg.outbox_policy)
        if cfg.mode == "sparkplug":
            from edge.mqtt.sparkplug.mode import SparkplugMode
            self._mode = SparkplugMode(cfg, device_id=self.device_id, state_dir=self.state_dir,
                                       **self._ident)
        else:
            self._mode = JsonMode(cfg, device_id=self.device_id, **self._ident)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mqtt-sink", daemon=True)
        self._thread.start()
        log.info("mqtt: %s mode, broker %s:%d (%s), device %s, outbox %s (%d waiting)",
                 cfg.mode, cfg.host, cfg.effective_port, "TLS" if cfg.use_tls else "plain TCP",
                 self.device_id, self.outbox_path, self._outbox.depth)

    def publish(self, report: Publishable) -> None:
        """Validate the report against the ``psd`` schema and commit it to the outbox."""
        if self._outbox is None:
            raise RuntimeError("MqttSink.publish() before open()")
        raw = report.to_payload()
        try:
            psd = PsdPayload.model_validate(raw)
        except ValidationError as exc:
            raise ValueError(f"batch {report.batch_id}: report does not match the psd "
                             f"schema: {first_validation_error(exc)}") from None
        if psd.batch_id != report.batch_id:
            raise ValueError(f"batch {report.batch_id}: payload carries batch_id "
                             f"{psd.batch_id}")
        if psd.device_id != self.device_id and not self._warned_device:
            self._warned_device = True
            log.warning("mqtt: report device_id %r differs from the topic's device id %r",
                        psd.device_id, self.device_id)
        text = json.dumps(psd.to_payload(), separators=(",", ":"), allow_nan=False)
        self._outbox.put(psd.batch_id, text)

    def publish_health(self, health: dict[str, Any]) -> None:
        """Hand over the pipeline's latest health snapshot (any cadence); the MQTT thread
        publishes the latest one every ``health_interval_s`` while connected."""
        with self._lock:
            self._pending_health = dict(health)

    def health(self) -> dict[str, Any]:
        return {
            "connection": self._state,
            "connected": self._state == "connected",
            "outbox_depth": self._outbox.depth if self._outbox else 0,
            "outbox_dropped": self._outbox.dropped if self._outbox else 0,
            "published": self._published,
            "last_error": self._last_error,
            "mode": self.config.mode,
            "tls_insecure": self.config.use_tls and self.config.insecure,
            "inbound_ignored": self._gate.ignored,
        }

    def set_command_handler(self, handler: CommandHandler | None) -> None:
        """Register the pipeline's handler of inbound commands (close_batch, reload_config)."""
        self._command_handler = handler

    def close(self) -> None:
        """Send what is waiting (up to ``close_timeout_s``), publish offline, disconnect."""
        thread = self._thread
        if thread is not None:
            self._stop.set()
            thread.join(self.close_timeout_s + 10.0)
            if thread.is_alive():  # pragma: no cover - paho stuck in a blocking call
                log.warning("mqtt: network thread did not stop in time")
            self._thread = None
        if self._outbox is not None:
            if self._outbox.depth:
                log.info("mqtt: %d report(s) stay in the outbox for the next start",
                         self._outbox.depth)
            self._outbox.close()
            self._outbox = None

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        backoff = Backoff(self.config)
        while not self._stop.is_set():
            self._state = "connecting"
            try:
                client = self._connect()
                had_session = self._serve(client) if client is not None else False
            except Exception as exc:  # never let the delivery thread die (e.g. disk full)
                log.exception("mqtt: unexpected error in the network thread")
                self._last_error = f"internal error: {type(exc).__name__}: {exc}"
                had_session = False
            self._state = "disconnected"
            if self._stop.is_set():
                break
            lasted = time.monotonic() - self._connected_at if had_session else None
            wait = backoff.next_wait(lasted)
            if lasted is not None and lasted < self.config.reconnect_stable_s:
                log.warning("mqtt: the connection ended %.1f s after it was made (less than "
                            "mqtt.reconnect_stable_s); reconnecting in %.1f s", lasted, wait)
            else:
                log.info("mqtt: reconnecting in %.1f s", wait)
            self._stop.wait(wait)

    def _error(self, message: str) -> None:
        self._last_error = message
        log.error("mqtt: %s", message)

    def _connect(self) -> mqtt.Client | None:
        cfg = self.config
        assert self._mode is not None
        will = self._mode.will()
        client = new_client(cfg, client_id=self.client_id, password=self._password,
                            tls=self._tls)
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._connected = False
        self._refused = False
        self._inflight.clear()
        self._last_fed = 0
        try:
            if cfg.protocol == "5":
                client.connect(cfg.host, cfg.effective_port, cfg.keepalive, clean_start=True,
                               properties=connect_properties(cfg))
            else:
                client.connect(cfg.host, cfg.effective_port, cfg.keepalive)
        except Exception as exc:  # socket, TLS and DNS errors of every kind
            self._error(describe_connect_error(exc, cfg.host, cfg.effective_port))
            close_socket(client)
            close_leaked_sockets(exc)
            return None
        return client

    def _serve(self, client: mqtt.Client) -> bool:
        """Run one connection until it ends; True when CONNACK accepted it."""
        try:
            return self._serve_loop(client)
        finally:
            close_socket(client)

    def _serve_loop(self, client: mqtt.Client) -> bool:
        cfg = self.config
        had_session = False
        connack_deadline = time.monotonic() + max(10.0, float(cfg.keepalive))
        last_health = -math.inf
        while True:
            if self._stop.is_set():
                if self._connected:
                    self._shutdown(client)
                else:
                    client.disconnect()
                return had_session
            failed = False
            try:
                rc = client.loop(timeout=0.1)
            except Exception as exc:  # TLS alerts after the handshake, socket errors
                rc, failed = mqtt.MQTT_ERR_CONN_LOST, True
                if had_session:
                    self._error(f"connection to {cfg.host}:{cfg.effective_port} lost "
                                f"({type(exc).__name__}: {exc})")
                else:
                    self._error(describe_connect_error(exc, cfg.host, cfg.effective_port))
            if self._refused:
                return had_session
            if rc != mqtt.MQTT_ERR_SUCCESS:
                where = f"{cfg.host}:{cfg.effective_port}"
                if failed:
                    pass  # logged above
                elif self._connected or had_session:
                    self._error(f"connection to {where} lost ({mqtt.error_string(rc)})")
                else:
                    hint = (" (TLS: did the broker refuse the client certificate? check "
                            "mqtt.cert_file / mqtt.key_file)" if cfg.use_tls else "")
                    self._error(f"{where} closed the connection before CONNACK "
                                f"({mqtt.error_string(rc)}){hint}")
                self._connected = False
                self._flush_acks()
                return had_session
            if self._connected:
                had_session = True
                self._pump(client)
                now = time.monotonic()
                with self._lock:
                    pending = self._pending_health
                    self._pending_health = None
                if pending is not None:
                    self._last_pipeline_health = pending
                if now - self._identity_polled >= IDENTITY_POLL_S:
                    self._identity_polled = now
                    self._refresh_identity(client)
                if now - last_health >= cfg.health_interval_s:  # first one right after CONNACK
                    self._send_health(client)
                    last_health = now
                self._flush_acks()
            elif time.monotonic() > connack_deadline:
                self._error(f"no CONNACK from {cfg.host}:{cfg.effective_port}")
                client.disconnect()
                return False

    def _send(self, client: mqtt.Client, msg: Message) -> mqtt.MQTTMessageInfo:
        return client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)

    def _pump(self, client: mqtt.Client) -> None:
        assert self._outbox is not None and self._mode is not None
        room = self.config.max_inflight - len(self._inflight)
        if room <= 0:
            return
        for item in self._outbox.peek(self._last_fed, room):
            try:
                payload = json.loads(item.payload)
                msg = self._mode.batch(item, payload,
                                       historical=item.created < self._connected_wall)
            except (ValueError, ValidationError) as exc:  # a poison entry must not block
                self._error(f"outbox entry {item.id} (batch {item.batch_id}) cannot be "
                            f"encoded, removed: {exc}".splitlines()[0])
                self._acked.append(item.id)
                self._last_fed = item.id
                continue
            info = self._send(client, msg)
            if info.rc not in _OK:
                log.warning("mqtt: publishing batch %d failed (%s); retrying",
                            item.batch_id, mqtt.error_string(info.rc))
                return
            self._last_fed = item.id
            if info.is_published():  # QoS 0 written at once (on_publish already ran)
                self._acked.append(item.id)
                self._published += 1
            else:
                self._inflight[info.mid] = item.id

    def _flush_acks(self) -> None:
        if self._acked and self._outbox is not None:
            self._outbox.ack(self._acked)
            self._acked = []

    def _refresh_identity(self, client: mqtt.Client | None) -> None:
        """Hand a changed model identity to the mode; send what it announces."""
        assert self._mode is not None
        if self._identity is None:
            return
        try:
            model = self._identity()
            ident = {"model_name": str(model.get("name") or ""),
                     "model_sha256": str(model.get("sha256") or ""),
                     "backend": str(model.get("backend") or "")}
        except Exception as exc:  # the pipeline's callable: never stop the network thread
            log.debug("mqtt: model identity unavailable: %s", exc)
            return
        for msg in self._mode.set_identity(ident, connected=client is not None):
            log.info("mqtt: model %s, backend %s: retained status republished",
                     ident["model_name"], ident["backend"])
            if client is not None:
                self._send(client, msg)

    def _send_health(self, client: mqtt.Client) -> None:
        assert self._mode is not None
        own = dict(self.health(), connection="connected")
        try:
            payload = HealthPayload.from_snapshot(
                self._last_pipeline_health, device_id=self.device_id, sink=own,
                uptime_s=time.monotonic() - self._started)
        except ValidationError as exc:
            log.warning("mqtt: health snapshot not sent: %s", first_validation_error(exc))
            return
        msg = self._mode.health(payload)
        if msg is not None:
            self._send(client, msg)

    def _shutdown(self, client: mqtt.Client) -> None:
        """Clean stop: drain the outbox for a while, publish offline/NDEATH, DISCONNECT."""
        assert self._outbox is not None and self._mode is not None
        deadline = time.monotonic() + self.close_timeout_s
        while (self._outbox.depth > 0 or self._inflight) and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS or not self._connected:
                self._flush_acks()
                return
            self._pump(client)
            self._flush_acks()
        infos = [self._send(client, msg) for msg in self._mode.on_stop()]
        deadline = time.monotonic() + 2.0
        while not all(i.is_published() for i in infos) and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        self._flush_acks()
        client.disconnect()
        client.loop(timeout=0.1)
        self._connected = False
        log.info("mqtt: disconnected cleanly")

    # ------------------------------------------------------------------ callbacks
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                    reason_code: Any, properties: Any) -> None:
        cfg = self.config
        if reason_code.is_failure:
            self._refused = True
            self._error(f"broker {cfg.host}:{cfg.effective_port} refused the connection: "
                        f"{reason_code} (check mqtt.username / password / client_id)")
            return
        assert self._mode is not None
        self._connected = True
        self._connected_wall = time.time()
        self._connected_at = time.monotonic()
        self._state = "connected"
        self._last_error = None
        depth = self._outbox.depth if self._outbox else 0
        log.info("mqtt: connected to %s:%d as %s (%d report(s) waiting)",
                 cfg.host, cfg.effective_port, self.client_id, depth)
        self._refresh_identity(None)  # the status below carries the current identity
        self._identity_polled = time.monotonic()
        for topic, qos in self._mode.subscriptions():
            client.subscribe(topic, options=subscribe_options(cfg, qos)) \
                if cfg.protocol == "5" else client.subscribe(topic, qos)
        for msg in self._mode.on_connected():
            self._send(client, msg)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason_code: Any, properties: Any) -> None:
        self._connected = False

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason_code: Any, properties: Any) -> None:
        oid = self._inflight.pop(mid, None)
        if oid is None:  # status/health/birth, or a QoS 0 report written inside publish()
            return
        if getattr(reason_code, "is_failure", False):
            # Stays in the outbox; sent again after the next reconnect.
            self._error(f"broker refused a batch report: {reason_code} (check the broker "
                        "ACL for the psd topic)")
            return
        self._acked.append(oid)
        self._published += 1

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # An exception here would end paho's loop and the connection; a retained message
        # would then come back after every reconnect.
        assert self._mode is not None
        try:
            result = self._gate.check(self._mode, msg.topic, msg.payload or b"",
                                      retain=bool(msg.retain))
            if result is None:
                return
            if result.kind == "rebirth":
                log.info("mqtt: rebirth requested on %s", msg.topic)
                for out in self._mode.rebirth():
                    self._send(client, out)
                return
            self._dispatch(result.command)
        except Exception as exc:
            self._gate.ignore(msg.topic, f"internal error: {type(exc).__name__}: {exc}", b"")

    def _dispatch(self, cmd: CommandPayload | None) -> None:
        assert cmd is not None
        handler = self._command_handler
        if handler is None:
            log.warning("mqtt: command %s (request %s) ignored: no handler registered",
                        cmd.command, cmd.request_id)
            return
        log.info("mqtt: command %s (request %s)", cmd.command, cmd.request_id)
        try:
            handler(cmd)
        except Exception as exc:
            log.exception("mqtt: command %s failed: %s", cmd.command, exc)
