"""The command subscription: granted ones show in health; a refused one is one error line.

Mosquitto grants every subscription and filters delivery by its ACL, so the refusal
(SUBACK 0x80, what EMQX and HiveMQ send for a topic the ACL denies) comes from a minimal
MQTT 3.1.1 server on a real socket that answers CONNECT and SUBSCRIBE and nothing else.
"""

from __future__ import annotations

import logging
import socket
import threading

from edge.mqtt.sink import MqttSink
from tests.edge.mqtt.conftest import mqtt_config, wait_for

TOPIC = "plant/cryst/dev1/cmd"


def _read_packet(conn: socket.socket) -> tuple[int, bytes] | None:
    head = conn.recv(1)
    if not head:
        return None
    length, shift = 0, 0
    while True:  # MQTT variable-length "remaining length"
        byte = conn.recv(1)[0]
        length += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return head[0] >> 4, body


def _refusing_broker(server: socket.socket, stop: threading.Event) -> None:
    conn, _ = server.accept()
    conn.settimeout(0.2)
    with conn:
        while not stop.is_set():
            try:
                packet = _read_packet(conn)
            except TimeoutError:
                continue
            if packet is None:
                return
            kind, body = packet
            if kind == 1:  # CONNECT -> CONNACK accepted
                conn.sendall(bytes([0x20, 0x02, 0x00, 0x00]))
            elif kind == 8:  # SUBSCRIBE -> SUBACK "failure" for its one topic
                conn.sendall(bytes([0x90, 0x03]) + body[:2] + bytes([0x80]))


def test_refused_subscription_is_one_error_line_and_not_in_health(tmp_path, caplog):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()
    thread = threading.Thread(target=_refusing_broker, args=(server, stop), daemon=True)
    thread.start()
    sink = MqttSink(mqtt_config(server.getsockname()[1], protocol="3.1.1",
                                commands_enabled=True),
                    state_dir=tmp_path, close_timeout_s=0.5)  # it never sends a PUBACK
    try:
        with caplog.at_level(logging.ERROR, logger="edge.mqtt"):
            sink.open()
            assert wait_for(lambda: sink.health()["last_error"] is not None)
        health = sink.health()
        assert health["connected"] and health["subscribed"] == []
        lines = [r.getMessage() for r in caplog.records if "subscription" in r.getMessage()]
        assert lines == [f"mqtt: broker refused the subscription to {TOPIC}: Unspecified "
                         "error (check the broker ACL; nothing published there reaches the "
                         "appliance)"]
        assert health["last_error"] == lines[0].removeprefix("mqtt: ")
    finally:
        stop.set()
        sink.close()
        server.close()
        thread.join(5)


def test_granted_subscription_in_health_and_gone_with_the_connection(broker, tmp_path):
    sink = MqttSink(mqtt_config(broker.port, commands_enabled=True), state_dir=tmp_path)
    sink.open()
    try:
        assert wait_for(lambda: sink.health()["subscribed"] == [TOPIC])
        broker.stop()
        assert wait_for(lambda: not sink.health()["connected"])
        assert sink.health()["subscribed"] == []
        broker.start()
        assert wait_for(lambda: sink.health()["subscribed"] == [TOPIC], timeout=20)
    finally:
        sink.close()
