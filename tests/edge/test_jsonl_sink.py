"""JSON-lines sink: whole fsync'd lines, size rotation that never splits or loses a line."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from edge.errors import UserError
from edge.sinks.jsonl import JsonlSink, JsonlSinkConfig, read_jsonl
from edge.sinks.psd_payload import psd_payload
from tests.edge.mqtt.conftest import fake_report

SCHEMA = Path(__file__).resolve().parents[2] / "edge" / "schemas" / "psd.schema.json"


def _all_ids(path):
    files = sorted(path.parent.glob(path.name + "*"),
                   key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    return [rec["batch_id"] for f in files for rec in read_jsonl(f)]


def test_appends_and_rotates_by_size_keeping_every_line_whole(tmp_path):
    path = tmp_path / "out" / "batches.jsonl"
    sink = JsonlSink(JsonlSinkConfig(path=str(path), max_bytes=46000, keep=3))
    sink.open()
    for i in range(40):  # about 6560 bytes a line: 7 lines a file, 6 files' worth
        sink.publish(fake_report(i))
    sink.close()
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["batches.jsonl", "batches.jsonl.1", "batches.jsonl.2", "batches.jsonl.3"]
    for p in path.parent.iterdir():
        assert p.stat().st_size <= 46000
        for line in p.read_text().splitlines():
            json.loads(line)  # never a split line
    ids = _all_ids(path)
    # newest files hold the newest reports, in order, with no gap; older ones were dropped
    assert ids == list(range(ids[0], 40)) and ids[0] > 0
    assert sink.health()["rotations"] > 3


def test_reopening_appends_and_keeps_counting_the_existing_size(tmp_path):
    path = tmp_path / "b.jsonl"
    cfg = JsonlSinkConfig(path=str(path), max_bytes=33000, keep=2)
    for start in (0, 3, 6):  # three service restarts
        sink = JsonlSink(cfg)
        sink.open()
        for i in range(start, start + 3):
            sink.publish(fake_report(i))
        sink.close()
    assert _all_ids(path) == list(range(_all_ids(path)[0], 9))
    assert path.with_name("b.jsonl.1").is_file()
    assert path.stat().st_size <= 33000


def test_max_bytes_zero_never_rotates_and_health_lines_are_optional(tmp_path):
    path = tmp_path / "b.jsonl"
    sink = JsonlSink(JsonlSinkConfig(path=str(path), max_bytes=0, health=False))
    sink.open()
    for i in range(30):
        sink.publish(fake_report(i))
    sink.publish_health({"ok": True})
    sink.close()
    assert [p.name for p in tmp_path.iterdir()] == ["b.jsonl"]
    assert [r["batch_id"] for r in read_jsonl(path)] == list(range(30))
    assert read_jsonl(path, type_="health") == []


def test_unwritable_path_is_a_one_line_error_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    sink = JsonlSink(JsonlSinkConfig(path=str(blocker / "sub" / "b.jsonl")))
    with pytest.raises(UserError, match=r"sinks\.jsonl\.path .*b\.jsonl: cannot open"):
        sink.open()


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        JsonlSinkConfig(max_bytes=-1)
    with pytest.raises(ValueError):
        JsonlSinkConfig(keep=0)


def test_a_failed_write_leaves_no_half_line_and_the_retry_appends_it_whole(tmp_path):
    """The file may not grow past a limit (RLIMIT_FSIZE: EFBIG after a short write, as a
    full disk gives ENOSPC): the half line is cut off; once it may grow, the same report
    is written again whole."""
    import resource
    import signal

    path = tmp_path / "b.jsonl"
    sink = JsonlSink(JsonlSinkConfig(path=str(path)))
    sink.open()
    sink.publish(fake_report(1))
    size = path.stat().st_size
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 50, old_limit[1]))
        with pytest.raises(OSError):
            sink.publish(fake_report(2))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.stat().st_size == size and sink.health()["last_error"]
    sink.publish(fake_report(2))
    sink.close()
    assert [r["batch_id"] for r in read_jsonl(path)] == [1, 2]
    assert sink.health()["errors"] == 1 and sink.health()["last_error"] is None


def test_a_line_carries_the_psd_payload_the_mqtt_sink_publishes(tmp_path):
    path = tmp_path / "b.jsonl"
    sink = JsonlSink(JsonlSinkConfig(path=str(path)))
    sink.open()
    sink.publish(fake_report(5))
    sink.publish(fake_report(6, empty=True))
    sink.close()
    recs = read_jsonl(path)
    assert [r["batch_id"] for r in recs] == [5, 6]
    assert recs[0]["payload"] == psd_payload(fake_report(5))  # edge.sinks.psd_payload: one builder
    for r in recs:
        jsonschema.validate(r["payload"], json.loads(SCHEMA.read_text()))
