"""The SQLite outbox on its own: durability, order, bounds and policies, bad files."""

from __future__ import annotations

import os
import sqlite3

import pytest

from edge.errors import TransientError
from edge.mqtt.config import MqttConfig
from edge.mqtt.outbox import OUTBOX_DB, Outbox, OutboxFullError, highest_batch_id
from edge.service import statefiles
from edge.service.statefiles import open_db


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


def _fill(path, n, *, payload_size=1500):
    box = Outbox(path)
    for b in range(1, n + 1):
        box.put(b, '{"x": "%s"}' % ("a" * payload_size))
    box.close()


def test_a_foreign_file_is_moved_aside_and_a_new_outbox_starts(tmp_path, caplog):
    bad = tmp_path / "outbox.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    box = Outbox(bad)
    assert box.depth == 0 and box.put(1, "{}") == 1
    moved = list(tmp_path.glob("outbox.sqlite3.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes() == b"this is not sqlite" * 100
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "outbox.sqlite3: MQTT outbox unusable (not an SQLite " \
        "database); moved aside to outbox.sqlite3.corrupt-" in errors[0].getMessage()
    incident = statefiles.incidents()[-1]
    assert incident["file"] == str(bad) and incident["moved_to"] == str(moved[0])


def test_a_file_cut_in_half_keeps_its_readable_reports(tmp_path, caplog):
    """A cut file keeps its first pages: the reports on them are copied into the new
    outbox (oldest first, same ids); the rest are lost and the ERROR line says so."""
    path = tmp_path / "outbox.sqlite3"
    _fill(path, 500)
    os.truncate(path, path.stat().st_size // 2)
    box = Outbox(path)
    kept = [i.batch_id for i in box.peek(limit=1000)]
    assert 200 <= len(kept) < 500 and kept == list(range(1, len(kept) + 1))
    assert box.put(501, "{}") == len(kept) + 1
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert f"{len(kept)} (how many it held is unreadable; ids ran up to 500) outbox " \
        "row(s) recovered" in line


def test_an_empty_file_is_moved_aside(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    _fill(path, 3)
    os.truncate(path, 0)
    assert Outbox(path).depth == 0
    (moved,) = tmp_path.glob("outbox.sqlite3.corrupt-*")
    assert moved.stat().st_size == 0
    assert statefiles.incidents()[-1]["reason"] == "empty file (0 bytes)"


def test_an_outbox_of_the_previous_version_is_adopted(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_LEGACY_SCHEMA + "INSERT INTO outbox (batch_id, created, payload) "
                     "VALUES (41, 0, '{}'), (42, 0, '{}');")
    db.commit()
    db.close()
    n_before = len(statefiles.incidents())
    box = Outbox(path)
    assert [i.batch_id for i in box.peek()] == [41, 42]
    assert box._db.execute("PRAGMA application_id").fetchone()[0] == OUTBOX_DB.app_id
    assert len(statefiles.incidents()) == n_before and not list(tmp_path.glob("*.corrupt-*"))
    assert highest_batch_id(path) == 42


def test_a_locked_outbox_is_a_transient_error_not_a_corrupt_one(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    _fill(path, 1)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")  # another process holding the file
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TransientError, match=r"outbox\.sqlite3: cannot open the MQTT "
                                                 "outbox: database is locked"):
            open_db(path, OUTBOX_DB, timeout=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not list(tmp_path.glob("*.corrupt-*")) and Outbox(path).depth == 1


_LEGACY_SCHEMA = """
CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, batch_id INTEGER NOT NULL,
                     created REAL NOT NULL, payload TEXT NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


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
