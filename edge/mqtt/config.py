"""``[sinks.mqtt]`` configuration section: broker, topics, TLS, credentials, outbox, Sparkplug.

The old top-level ``[mqtt]`` section is still read (with a deprecation warning) by
:func:`edge.service.config.parse_config`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.errors import UserError


class MqttConfig(BaseModel):
    """How the appliance talks to the plant's MQTT broker."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="publish batch reports over MQTT")
    required: bool = Field(
        True, description="a batch's frames are acknowledged to the source only once it "
                          "is committed to the MQTT outbox (retried until it is); false = "
                          "a failure is logged and does not hold the batch back")
    host: str = Field("localhost", description="broker host name or address")
    port: int = Field(0, ge=0, le=65535,
                      description="broker port; 0 = 1883 without TLS, 8883 with TLS")
    topic_prefix: str = Field("crystal-psd", description="topics are <topic_prefix>/<device id>/"
                              "{psd,status,health,cmd}")
    device_id: str = Field("", description="device id in topics and payloads; empty = host name")
    client_id: str = Field("", description="MQTT client id; empty = 'crystal-psd-<device id>'")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version")
    keepalive: int = Field(30, ge=5, le=3600, description="keepalive interval (s)")
    qos: Literal[1, 2] = Field(1, description="QoS of batch reports and status")

    tls: bool = Field(False, description="use TLS; with no ca_file the system CAs are trusted")
    ca_file: str = Field("", description="CA certificate (PEM) that signed the broker's "
                         "certificate; setting it turns TLS on")
    cert_file: str = Field("", description="client certificate (PEM) for mutual TLS")
    key_file: str = Field("", description="private key (PEM) of cert_file")
    insecure: bool = Field(False, description="TLS without host name check (the certificate "
                           "chain is still verified); only for commissioning")

    username: str = Field("", description="user name; empty = no authentication")
    password_file: str = Field("", description="file whose first line is the password")
    password_credential: str = Field(
        "", description="name of a systemd credential (LoadCredential=) holding the password, "
        "read from $CREDENTIALS_DIRECTORY/<name>")
    allow_plain_password: bool = Field(
        False, description="allow sending a password over plain TCP (without TLS)")

    reconnect_min_s: float = Field(1.0, gt=0, description="first reconnect delay (s)")
    reconnect_max_s: float = Field(60.0, gt=0, description="reconnect delay cap (s); the "
                                   "delay doubles after each failed attempt")
    reconnect_stable_s: float = Field(
        10.0, ge=0, description="a connection that ends sooner than this after CONNACK does "
        "not reset the reconnect delay, so a broker that accepts and drops the client at "
        "once is backed off like one that refuses it")
    max_inflight: int = Field(10, ge=1, le=1000,
                              description="batch reports sent but not yet acknowledged; "
                              "delivery stays in order at any value")

    outbox_path: str = Field("", description="SQLite outbox file; empty = "
                             "<state dir>/outbox.sqlite3")
    outbox_max_messages: int = Field(100_000, ge=1,
                                     description="most batch reports kept in the outbox")
    outbox_policy: Literal["drop_oldest", "refuse_newest"] = Field(
        "drop_oldest", description="when the outbox is full: drop the oldest report "
        "(the plant keeps getting current data) or refuse the new one; either way "
        "outbox_dropped counts it and a warning is logged")

    mode: Literal["json", "sparkplug"] = Field("json", description="'json' topics and payloads "
                                               "or Sparkplug B (spBv1.0) protobuf")
    sparkplug_group_id: str = Field("crystal-psd", description="Sparkplug group id")
    sparkplug_edge_node_id: str = Field("", description="Sparkplug edge node id; empty = "
                                        "device id")

    sparkplug_classes: Literal["dataset", "arrays"] = Field(
        "dataset", description="how Sparkplug carries the size classes: 'dataset' = one "
        "DataSet metric PSD/Classes (columns lower_edges_um, upper_edges_um, counts, q0, q3, "
        "Q0, Q3); 'arrays' = one DoubleArray metric PSD/Classes/<column> per column, for "
        "hosts without DataSet support")
    sparkplug_ndata_qos: Literal[0, 1] = Field(
        0, description="QoS of Sparkplug NDATA; 0 as the Sparkplug 3.0 specification requires "
        "(an outbox entry is removed once written to the socket), 1 for acknowledged delivery "
        "(removed on PUBACK) with hosts that accept it")

    commands_enabled: bool = Field(False, description="accept commands on <prefix>/<device>/cmd "
                                   "(Sparkplug: NCMD)")
    max_inbound_bytes: int = Field(
        16384, ge=256, le=1_048_576, description="largest command payload (bytes) that is "
        "decoded; larger ones are ignored with a log line (MQTT 5: the broker is asked not "
        "to send packets over 64 times this)")
    reload_min_interval_s: float = Field(
        30.0, ge=0, description="least time (s) between two configuration reloads requested "
        "by the MQTT reload_config command; requests inside it are refused with a log line")
    health_interval_s: float = Field(30.0, gt=0, description="health message period (s)")

    @model_validator(mode="after")
    def _check(self) -> MqttConfig:
        for name in ("topic_prefix", "device_id", "sparkplug_group_id", "sparkplug_edge_node_id"):
            value = getattr(self, name)
            if any(c in value for c in "+#") or (name != "topic_prefix" and "/" in value):
                raise ValueError(f"{name} {value!r} must not contain '+', '#'"
                                 f"{'' if name == 'topic_prefix' else ' or /'}")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s is smaller than reconnect_min_s")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        if self.password_file and self.password_credential:
            raise ValueError("set password_file or password_credential, not both")
        return self

    # ------------------------------------------------------------------ helpers
    @property
    def use_tls(self) -> bool:
        return self.tls or bool(self.ca_file or self.cert_file)

    @property
    def effective_port(self) -> int:
        return self.port or (8883 if self.use_tls else 1883)

    def resolve_device_id(self) -> str:
        if self.device_id:
            return self.device_id
        import socket
        return socket.gethostname().split(".")[0] or "crystal-psd"

    def read_password(self) -> str | None:
        """The password from ``password_file`` or the systemd credential, or None.

        Raises :class:`UserError` naming the file when it cannot be read, and when a
        password would go over plain TCP without ``allow_plain_password``.
        """
        if self.password_credential:
            cred_dir = os.environ.get("CREDENTIALS_DIRECTORY", "")
            if not cred_dir:
                raise UserError(
                    f"sinks.mqtt.password_credential: {self.password_credential!r} set but "
                    "$CREDENTIALS_DIRECTORY is not (use LoadCredential= in the unit)")
            path = Path(cred_dir) / self.password_credential
            field = "sinks.mqtt.password_credential"
        elif self.password_file:
            path = Path(self.password_file)
            field = "sinks.mqtt.password_file"
        else:
            return None
        try:
            text = path.read_text()
        except OSError as exc:
            raise UserError(f"{field}: cannot read {path}: {exc.strerror or exc}") from None
        lines = text.splitlines()
        password = lines[0] if lines else ""
        if not password:
            raise UserError(f"{field}: {path} is empty")
        if not self.use_tls and not self.allow_plain_password:
            raise UserError(
                f"{field}: refusing to send a password over plain TCP to {self.host}; "
                "configure TLS (sinks.mqtt.ca_file / sinks.mqtt.tls) or set "
                "sinks.mqtt.allow_plain_password")
        return password
