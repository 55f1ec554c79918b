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


def test_a_reader_of_the_live_file_sees_whole_lines_only(tmp_path):
    """``read_jsonl`` polled while 6.5 kB lines are appended (each longer than a page, so
    the kernel can show a reader the first part of one) never fails and never goes back."""
    import threading

    path = tmp_path / "live.jsonl"
    sink = JsonlSink(JsonlSinkConfig(path=str(path), fsync=False, max_bytes=0))
    sink.open()
    done = threading.Event()

    def write():
        for i in range(300):
            sink.publish(fake_report(i))
        done.set()

    t = threading.Thread(target=write)
    t.start()
    seen, reads = [], 0
    while not done.is_set() or reads == 0:
        ids = [r["batch_id"] for r in read_jsonl(path)]
        assert ids == list(range(len(ids)))
        seen.append(len(ids))
        reads += 1
    t.join()
    sink.close()
    assert seen == sorted(seen) and len(read_jsonl(path)) == 300


def test_a_line_without_its_newline_is_not_read_and_is_cut_when_the_sink_opens(
        tmp_path, caplog):
    """A power cut during a write leaves part of a line that was never acknowledged: a
    reader skips it, and the sink cuts it off (one warning) so the next line stands
    alone instead of joining it."""
    path = tmp_path / "b.jsonl"
    sink = JsonlSink(JsonlSinkConfig(path=str(path)))
    sink.open()
    sink.publish(fake_report(1))
    sink.close()
    whole = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b'{"type":"psd","batch_id":2,"payload":{"sche')
    assert [r["batch_id"] for r in read_jsonl(path)] == [1]

    sink = JsonlSink(JsonlSinkConfig(path=str(path)))
    with caplog.at_level("WARNING", logger="edge.sinks.jsonl"):
        sink.open()
    assert path.read_bytes() == whole
    assert [r.getMessage() for r in caplog.records] == [
        f"sinks.jsonl.path {path}: cut off an unfinished line (43 bytes) that an "
        "interrupted write left at the end"]
    sink.publish(fake_report(2))
    sink.close()
    assert [r["batch_id"] for r in read_jsonl(path)] == [1, 2]


def test_a_file_of_one_unfinished_line_is_emptied_and_a_whole_file_is_left_alone(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_bytes(b"x" * 70000)  # longer than one backwards read
    JsonlSink(JsonlSinkConfig(path=str(path))).open()
    assert path.read_bytes() == b""
    path.write_bytes(b'{"a":1}\n' + b"y" * 70000)
    JsonlSink(JsonlSinkConfig(path=str(path))).open()
    assert path.read_bytes() == b'{"a":1}\n'
    JsonlSink(JsonlSinkConfig(path=str(path))).open()
    assert path.read_bytes() == b'{"a":1}\n'


def test_reading_names_the_file_and_line_that_is_not_a_json_object(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"type":"psd","batch_id":1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"b\.jsonl:2: not a JSON object"):
        read_jsonl(path)
    path.write_text('{"type":"psd","batch_id":1}\n{oops\n')
    with pytest.raises(ValueError, match=r"b\.jsonl:2: not JSON"):
        read_jsonl(path)
