"""Guards on inbound MQTT messages and the reconnect back-off, without a broker."""

from __future__ import annotations

import json
import logging

import pytest

from edge.mqtt.connect import Backoff
from edge.mqtt.inbound import (
    MAX_JSON_DEPTH,
    InboundRejected,
    LogLimiter,
    RecentIds,
    decode_json,
    excerpt,
    json_depth,
)
from tests.edge.mqtt.conftest import mqtt_config


def test_json_depth_counts_brackets_outside_strings():
    assert json_depth('{"command": "close_batch"}') == 1
    assert json_depth('{"a": [[{"b": "[[[[{{{"}]]]}') == 4
    assert json_depth('"\\"[[["') == 0
    assert json_depth("[" * 100_000) == 100_000  # no recursion, no RecursionError


def test_decode_json_refuses_depth_encoding_and_syntax_in_one_line():
    assert decode_json(json.dumps({"a": [1, 2]}).encode()) == {"a": [1, 2]}
    deep = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(InboundRejected, match=r"nested 33 levels deep \(at most 32\)"):
        decode_json(deep)
    assert decode_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(InboundRejected, match=r"not UTF-8 \(byte 1\)"):
        decode_json(b'"\xff"')
    with pytest.raises(InboundRejected, match="not JSON"):
        decode_json(b"{nope")


def test_excerpt_is_short_and_printable():
    assert excerpt(b"abc") == "abc"
    text = excerpt(b"\x00\xff" + b"x" * 10_000)
    assert len(text) <= 83 and text.endswith("...") and text.isprintable()


def test_log_limiter_mutes_a_flood_and_counts_it(caplog):
    lim = LogLimiter(burst=3, window_s=10.0)
    with caplog.at_level(logging.WARNING):
        got = [lim.allow("t", now=float(i) * 0.1) for i in range(10)]
    assert [a for a, _ in got] == [True] * 3 + [False] * 7
    assert len(caplog.records) == 1 and "further ones are counted" in caplog.text
    assert lim.allow("t", now=20.0) == (True, 7)  # the next window names the muted ones
    assert lim.allow("other", now=0.5) == (True, 0)


def test_recent_ids_remembers_a_bounded_number():
    ids = RecentIds(size=2)
    assert not ids.seen("a") and ids.seen("a")
    assert not ids.seen(None) and not ids.seen(None)
    ids.seen("b")
    ids.seen("c")
    assert not ids.seen("a")  # forgotten, the oldest of three


def test_backoff_grows_across_quick_drops_and_resets_after_a_stable_connection(monkeypatch):
    monkeypatch.setattr("edge.mqtt.connect.random.uniform", lambda a, b: 1.0)
    b = Backoff(mqtt_config(1883, reconnect_min_s=1.0, reconnect_max_s=8.0,
                            reconnect_stable_s=10.0))
    assert [b.next_wait(None) for _ in range(2)] == [1.0, 2.0]  # refused
    assert [b.next_wait(0.3) for _ in range(3)] == [4.0, 8.0, 8.0]  # dropped at once
    assert b.next_wait(60.0) == 1.0  # a connection that held resets it
    assert [b.next_wait(None) for _ in range(2)] == [1.0, 2.0]  # then doubling again
