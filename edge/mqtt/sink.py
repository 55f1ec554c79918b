"""``MqttSink``: the MQTT result sink (``edge.sinks.base.Sink``, ``[sinks.mqtt]``).

``publish()`` builds the JSON ``psd`` payload (:mod:`edge.sinks.psd_payload`), commits it
to the on-disk outbox and returns; it never waits for the network. One background thread
runs connections to the broker one after another (:class:`edge.mqtt.connection.Connection`:
fresh client per connection, last will set, the outbox fed in order and deleted on
PUBACK), backing off exponentially (``reconnect_min_s`` doubling to ``reconnect_max_s``,
with jitter) while the broker is unreachable or refuses us. While connected the sink
publishes health every ``health_interval_s``, republishes the retained status when the
model identity changes, and dispatches inbound commands.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from edge import __version__
from edge.errors import UserError
from edge.mqtt.config import MqttConfig
from edge.mqtt.connect import Backoff, build_tls_context
from edge.mqtt.connection import Connection, ConnectionHooks, LinkState
from edge.mqtt.inbound import InboundGate
from edge.mqtt.jsonmode import JsonMode, first_validation_error
from edge.mqtt.message import TopicMode
from edge.mqtt.outbox import OUTBOX_FILE, Outbox
from edge.mqtt.payloads import CommandPayload, HealthPayload
from edge.sinks.psd_payload import build_psd_payload

if TYPE_CHECKING:
    from edge.service.pipeline.batch import BatchReport

log = logging.getLogger(__name__)

CommandHandler = Callable[[CommandPayload], None]
IdentitySource = Callable[[], dict[str, Any]]

IDENTITY_POLL_S = 1.0


class MqttSink:
    """Publishes batch reports, status and health to the plant's broker.

    Parameters
    ----------
    config
        The ``[sinks.mqtt]`` section.
    state_dir
        Where ``outbox.sqlite3`` (unless ``config.outbox_path``) and, in Sparkplug mode,
        the persisted ``bdSeq`` live.
    software_version, model_name, model_sha256, backend
        Identity published in the retained status (and Sparkplug NBIRTH).
    command_handler
        Called (on the MQTT thread; keep it short) with each valid inbound command when
        ``config.commands_enabled``.
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
            raise UserError("sinks.mqtt.outbox_path: not set and no state directory given")
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
        self._link = LinkState()  # written by the MQTT thread, read anywhere
        self._pending_health: dict[str, Any] | None = None
        self._last_pipeline_health: dict[str, Any] = {}
        self._last_health = -math.inf  # monotonic time of the last health message
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
                from edge.service.logsetup import register_secret
                register_secret(self._password)
            except ImportError:  # pragma: no cover - logsetup is part of edge
                pass
        self._tls = build_tls_context(cfg)
        if cfg.insecure:
            log.warning("mqtt: [sinks.mqtt] insecure = true: %s", "the broker's host name is not "
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

    def publish(self, report: BatchReport) -> None:
        """Build the report's ``psd`` payload and commit it to the outbox."""
        if self._outbox is None:
            raise RuntimeError("MqttSink.publish() before open()")
        try:
            psd = build_psd_payload(report)
        except ValidationError as exc:
            raise ValueError(f"batch {report.batch_id}: report does not match the psd "
                             f"schema: {first_validation_error(exc)}") from None
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
            "connection": self._link.state,
            "connected": self._link.state == "connected",
            "outbox_depth": self._outbox.depth if self._outbox else 0,
            "outbox_dropped": self._outbox.dropped if self._outbox else 0,
            "published": self._link.published,
            "last_error": self._link.last_error,
            "mode": self.config.mode,
            "tls_insecure": self.config.use_tls and self.config.insecure,
            "inbound_ignored": self._gate.ignored,
            "subscribed": sorted(self._link.subscribed),
        }

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
            self._link.state = "connecting"
            conn: Connection | None = None
            try:
                conn = self._new_connection()
                had_session = conn.run(self._stop)
            except Exception as exc:  # never let the delivery thread die (e.g. disk full)
                log.exception("mqtt: unexpected error in the network thread")
                self._link.last_error = f"internal error: {type(exc).__name__}: {exc}"
                had_session = False
            self._link.state = "disconnected"
            self._link.subscribed = frozenset()
            if self._stop.is_set():
                break
            lasted = (time.monotonic() - conn.connected_at
                      if had_session and conn is not None else None)
            wait = backoff.next_wait(lasted)
            if lasted is not None and lasted < self.config.reconnect_stable_s:
                log.warning("mqtt: the connection ended %.1f s after it was made (less than "
                            "sinks.mqtt.reconnect_stable_s); reconnecting in %.1f s",
                            lasted, wait)
            else:
                log.info("mqtt: reconnecting in %.1f s", wait)
            self._stop.wait(wait)

    def _new_connection(self) -> Connection:
        assert self._mode is not None and self._outbox is not None
        hooks = ConnectionHooks(on_connack=self._on_connack, on_tick=self._on_tick,
                                on_message=self._on_message)
        return Connection(self.config, client_id=self.client_id, password=self._password,
                          tls=self._tls, mode=self._mode, outbox=self._outbox,
                          link=self._link, hooks=hooks, close_timeout_s=self.close_timeout_s)

    def _on_connack(self, conn: Connection) -> None:
        self._refresh_identity(None)  # the status sent next carries the current identity
        self._identity_polled = time.monotonic()
        self._last_health = -math.inf  # health right after CONNACK (once there is a snapshot)

    def _on_tick(self, conn: Connection) -> None:
        """While connected: take the latest pipeline health, poll the model identity,
        send health every ``health_interval_s``."""
        now = time.monotonic()
        with self._lock:
            pending, self._pending_health = self._pending_health, None
        if pending is not None:
            self._last_pipeline_health = pending
        if now - self._identity_polled >= IDENTITY_POLL_S:
            self._identity_polled = now
            self._refresh_identity(conn)
        # the first health message waits for the pipeline's first snapshot: a message
        # without the service's state would only tell the plant "unknown"
        if (self._last_pipeline_health
                and now - self._last_health >= self.config.health_interval_s):
            self._send_health(conn)
            self._last_health = now

    def _refresh_identity(self, conn: Connection | None) -> None:
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
        for msg in self._mode.set_identity(ident, connected=conn is not None):
            log.info("mqtt: model %s, backend %s: retained status republished",
                     ident["model_name"], ident["backend"])
            if conn is not None:
                conn.send(msg)

    def _send_health(self, conn: Connection) -> None:
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
            conn.send(msg)

    # ------------------------------------------------------------------ inbound
    def _on_message(self, conn: Connection, msg: mqtt.MQTTMessage) -> None:
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
                    conn.send(out)
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
