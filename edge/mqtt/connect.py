"""Building a paho client: protocol, TLS context, credentials, and readable errors."""

from __future__ import annotations

import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.errors import UserError
from edge.mqtt.config import MqttConfig


def build_tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """The TLS context for ``config`` (None without TLS); UserError naming the bad file."""
    if not config.use_tls:
        return None
    for field in ("ca_file", "cert_file", "key_file"):
        value = getattr(config, field)
        if value and not Path(value).is_file():
            raise UserError(f"mqtt.{field}: {value} does not exist")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=config.ca_file or None)
    except (ssl.SSLError, OSError) as exc:
        raise UserError(f"mqtt.ca_file: {config.ca_file}: not a PEM CA certificate ({exc})") \
            from None
    if config.cert_file:
        try:
            ctx.load_cert_chain(config.cert_file, config.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise UserError(f"mqtt.cert_file: {config.cert_file} / {config.key_file}: "
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


def describe_connect_error(exc: BaseException, host: str, port: int) -> str:
    """One line for the log and the health payload (never contains credentials)."""
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the certificate of {where} was not accepted: {exc.verify_message} "
                "(check mqtt.ca_file, the broker's certificate and host name)")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        return (f"TLS handshake with {where} failed: {reason} (check the broker's TLS "
                "listener and mqtt.cert_file / mqtt.key_file)")
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused (broker down or wrong port?)"
    if isinstance(exc, TimeoutError):
        return f"cannot connect to {where}: timed out"
    if isinstance(exc, OSError):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    return f"cannot connect to {where}: {type(exc).__name__}: {exc}"
