"""Building a paho client: protocol, TLS context, credentials, and readable errors."""

from __future__ import annotations

import random
import socket
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.errors import UserError
from edge.mqtt.config import MqttConfig


def build_tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """The TLS context for ``config`` (None without TLS); UserError naming the bad file."""
    if not config.use_tls:
        return None
    for field in ("ca_file", "cert_file", "key_file"):
        value = getattr(config, field)
        if value and not Path(value).is_file():
            raise UserError(f"sinks.mqtt.{field}: {value} does not exist")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=config.ca_file or None)
    except (ssl.SSLError, OSError) as exc:
        raise UserError(f"sinks.mqtt.ca_file: {config.ca_file}: not a PEM CA certificate "
                        f"({exc})") from None
    if config.cert_file:
        try:
            ctx.load_cert_chain(config.cert_file, config.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise UserError(f"sinks.mqtt.cert_file: {config.cert_file} / {config.key_file}: "
                            f"cannot load the client certificate and key ({exc})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.insecure:
        ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def new_client(config: MqttConfig, *, client_id: str, password: str | None,
               tls: ssl.SSLContext | None) -> mqtt.Client:
    """A fresh paho 2 client (callback API v2) for one connection attempt."""
    if config.protocol == "5":
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv311, clean_session=True)
    if config.username:
        client.username_pw_set(config.username, password)
    if tls is not None:
        client.tls_set_context(tls)
        client.tls_insecure_set(config.insecure)
    client.max_inflight_messages_set(config.max_inflight + 20)
    client.max_queued_messages_set(0)
    return client


class Backoff:
    """Reconnect delays: ``reconnect_min_s`` doubling to ``reconnect_max_s`` (with jitter).

    Only a connection that lasted ``reconnect_stable_s`` resets the delay: a broker that
    accepts the client and drops it at once (or a message that ends every connection) is
    then backed off like a broker that refuses it, instead of being hammered.
    """

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self.delay = config.reconnect_min_s

    def next_wait(self, lasted_s: float | None) -> float:
        """Seconds to wait before the next attempt; ``lasted_s`` is how long the connection
        that just ended lasted after CONNACK (None: no connection was made)."""
        cfg = self.config
        stable = lasted_s is not None and lasted_s >= cfg.reconnect_stable_s
        if stable:
            self.delay = cfg.reconnect_min_s
        wait = self.delay * random.uniform(0.75, 1.0)
        if not stable:
            self.delay = min(self.delay * 2.0, cfg.reconnect_max_s)
        return wait


def connect_properties(config: MqttConfig) -> Properties | None:
    """MQTT 5 CONNECT properties: a Maximum Packet Size, so that the broker drops a huge
    message on the command topic instead of sending it (None for MQTT 3.1.1)."""
    if config.protocol != "5":
        return None
    props = Properties(PacketTypes.CONNECT)
    props.MaximumPacketSize = config.max_inbound_bytes * 64
    return props


def subscribe_options(config: MqttConfig, qos: int) -> SubscribeOptions | int:
    """Subscription options for a command topic: with MQTT 5, Retain Handling 2 (the
    broker does not send retained messages at subscribe time); with 3.1.1 the QoS only
    (a retained message then arrives with its retain flag and is dropped on arrival)."""
    if config.protocol != "5":
        return qos
    return SubscribeOptions(qos=qos, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)


def describe_connect_error(exc: BaseException, host: str, port: int) -> str:
    """One line for the log and the health payload (never contains credentials)."""
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the certificate of {where} was not accepted: {exc.verify_message} "
                "(check sinks.mqtt.ca_file, the broker's certificate and host name)")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        return (f"TLS handshake with {where} failed: {reason} (check the broker's TLS "
                "listener and sinks.mqtt.cert_file / sinks.mqtt.key_file)")
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused (broker down or wrong port?)"
    if isinstance(exc, TimeoutError):
        return f"cannot connect to {where}: timed out"
    if isinstance(exc, OSError):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    return f"cannot connect to {where}: {type(exc).__name__}: {exc}"


def close_socket(client: mqtt.Client) -> None:
    """Close what paho left open after a failed or finished connection."""
    sock = client.socket()
    if sock is not None:
        try:
            sock.close()
        except OSError:  # pragma: no cover - already broken
            pass


def close_leaked_sockets(exc: BaseException) -> None:
    """paho 2.x leaves the TLS socket open when the handshake fails (it is only a local
    of the failing frame); close the sockets found in the traceback's frames."""
    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, socket.socket) and value.fileno() != -1:
                try:
                    value.close()
                except OSError:  # pragma: no cover
                    pass
        tb = tb.tb_next
