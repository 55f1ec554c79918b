"""The SQLite outbox on its own: durability, order, bounds and policies, bad files."""

from __future__ import annotations

import sqlite3

import pytest

from edge.errors import UserError
from edge.mqtt.config import MqttConfig
from edge.mqtt.outbox import Outbox, OutboxFullError


def test_order_ack_and_reopen(tmp_path):
    path = tmp_path / "sub" / "outbox.sqlite3"
    box = Outbox(path)
    ids = [box.put(b, f'{{"batch_id": {b}}}') for b in (5, 6, 7, 8)]
    assert ids == sorted(ids) and box.depth == 4
    assert [i.batch_id for i in box.peek(0, 2)] == [5, 6]
    assert [i.batch_id for i in box.peek(ids[1], 10)] == [7, 8]
    assert box.ack([ids[0], ids[2], 999]) == 2
    assert box.depth == 2
    box.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    again = Outbox(path)
    assert again.depth == 2
    assert [(i.batch_id, i.payload) for i in again.peek()] == [(6, '{"batch_id": 6}'),
                                                              (8, '{"batch_id": 8}')]
    again.close()


def test_drop_oldest_policy_counts_and_persists(tmp_path, caplog):
    box = Outbox(tmp_path / "o.sqlite3", max_messages=3, policy="drop_oldest")
    for b in range(1, 6):
        box.put(b, "{}")
    assert [i.batch_id for i in box.peek()] == [3, 4, 5]
    assert box.depth == 3 and box.dropped == 2
    assert "dropped the oldest 1 report(s) for batch 5" in caplog.text
    box.close()
    assert Outbox(tmp_path / "o.sqlite3", max_messages=3).dropped == 2


def test_refuse_newest_policy_keeps_backlog(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", max_messages=2, policy="refuse_newest")
    box.put(1, "{}")
    box.put(2, "{}")
    with pytest.raises(OutboxFullError, match=r"outbox full \(2 reports\), batch 3 refused"):
        box.put(3, "{}")
    assert [i.batch_id for i in box.peek()] == [1, 2] and box.dropped == 1
    box.ack([box.peek()[0].id])
    box.put(4, "{}")
    assert [i.batch_id for i in box.peek()] == [2, 4]


def test_shrinking_the_limit_drops_down_to_it(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", max_messages=10)
    for b in range(6):
        box.put(b, "{}")
    box.close()
    small = Outbox(tmp_path / "o.sqlite3", max_messages=2)
    small.put(99, "{}")
    assert [i.batch_id for i in small.peek()] == [5, 99] and small.dropped == 5


def test_not_a_database_is_a_user_error(tmp_path):
    bad = tmp_path / "outbox.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match=r"outbox\.sqlite3: cannot open the MQTT outbox"):
        Outbox(bad)


def test_config_validation_messages():
    with pytest.raises(ValueError, match="device_id 'a/b' must not contain"):
        MqttConfig(device_id="a/b")
    with pytest.raises(ValueError, match="reconnect_max_s is smaller"):
        MqttConfig(reconnect_min_s=10, reconnect_max_s=1)
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        MqttConfig(cert_file="c.pem")
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        MqttConfig(pasword="x")
    assert MqttConfig().effective_port == 1883
    assert MqttConfig(ca_file="ca.pem").effective_port == 8883
    assert MqttConfig(tls=True, port=9999).effective_port == 9999
    for name, field in MqttConfig.model_fields.items():
        assert field.description, f"MqttConfig.{name} has no description"
