"""Damaged state files: the service starts anyway, says so once, and loses nothing it can keep.

Each test damages a real file in a real state directory and starts ``crystal-edge run``
as a subprocess (:class:`ServiceProcess`). Expected within 30 s: the service runs (no
exit 2, which systemd would never restart), the file is moved aside as
``NAME.corrupt-<UTC time>`` and kept for a person, one ERROR line names it, and
``status.json`` carries the incident (``state_file_incidents``).

What is recoverable from a truncated outbox: SQLite refuses a file shorter than its
header says; read anyway, the pages before the cut still hold the oldest waiting reports
(with 500 reports of ~1.5 KB, cut to half: 244 of them). Those are copied into the new
outbox and delivered; the others are lost, and the ERROR line says how many were kept and
the highest report id the file had used. A zero-byte file holds nothing to keep.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from tests.edge.mqtt.conftest import Recorder, psd_payload
from tests.faults.conftest import (
    ServiceProcess,
    jsonl_batches,
    wait_until,
    write_config,
    write_frames,
)

START_S = 30.0  # a damaged file must not delay the start beyond this
DEVICE = "test-01"


def _mqtt(port: int) -> str:
    return (f'\n[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n'
            f'topic_prefix = "plant/cryst"\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n')


def _fill_outbox(path: Path, batch_ids: range) -> None:
    from edge.mqtt.outbox import Outbox

    box = Outbox(path)
    for b in batch_ids:
        box.put(b, json.dumps(psd_payload(b, device_id=DEVICE)))
    box.close()


def _damage(path: Path, how: str) -> None:
    os.truncate(path, 0 if how == "zero" else path.stat().st_size // 2)


def _status(workdir: Path) -> dict:
    try:
        return json.loads((workdir / "state" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _incident_for(workdir: Path, name: str) -> dict | None:
    for inc in _status(workdir).get("state_file_incidents") or []:
        if Path(inc["file"]).name == name:
            return inc
    return None


def _error_lines(log: str, name: str) -> list[str]:
    return [ln for ln in log.splitlines() if "level=ERROR" in ln and name in ln]


def _check_recovered(sp: ServiceProcess, workdir: Path, name: str) -> tuple[dict, str]:
    """The service runs, the file was moved aside, one ERROR line, the incident in
    status.json; returns (incident, the ERROR line)."""
    inc = wait_until(lambda: _incident_for(workdir, name), START_S,
                     f"a {name} incident in status.json:\n{sp.log()[-3000:]}")
    assert sp.proc.poll() is None, f"the service exited {sp.proc.returncode}"
    moved = list((workdir / "state").glob(f"{name}.corrupt-*"))
    assert [str(m) for m in moved if not m.name.endswith(("-wal", "-shm"))] == \
        [inc["moved_to"]]
    log = sp.log()
    errors = _error_lines(log, name)
    assert len(errors) == 1, errors
    assert "Traceback" not in log
    return inc, errors[0]


@pytest.mark.parametrize("how", ["half", "zero"])
def test_a_damaged_outbox_is_moved_aside_and_its_readable_reports_delivered(
        workdir, tiny_model, broker, service_factory, how):
    state = workdir / "state"
    _fill_outbox(state / "outbox.sqlite3", range(1, 501))
    _damage(state / "outbox.sqlite3", how)
    rec = Recorder(broker.port, "plant/cryst/+/psd")
    write_config(workdir / "config.toml", model=tiny_model, extra=_mqtt(broker.port))
    sp = service_factory()
    inc, line = _check_recovered(sp, workdir, "outbox.sqlite3")
    if how == "zero":
        assert inc["reason"] == "empty file (0 bytes)"
        assert "nothing could be read from it" in line
        kept = 0
    else:
        m = re.search(r"(\d+) \(how many it held is unreadable; ids ran up to 500\) outbox "
                      r"row\(s\) recovered into the new file", line)
        assert m, line
        kept = int(m.group(1))
        assert 200 <= kept < 500  # measured: 244 of 500
        wait_until(lambda: len(rec.on("/psd")) >= kept, 20, f"{kept} salvaged reports")
        got = sorted({json.loads(msg.payload)["batch_id"] for msg in rec.on("/psd")})
        assert got == list(range(1, kept + 1))  # the oldest, in one piece
    assert inc["kept"] in line
    assert sp.stop() == 0
    rec.close()


@pytest.mark.parametrize("how", ["half", "zero"])
def test_a_damaged_folder_ledger_is_moved_aside_and_new_frames_are_analysed(
        workdir, tiny_model, service_factory, how):
    from edge.sources.ledger import Ledger

    state = workdir / "state"
    state.mkdir()
    ledger = Ledger(state / "folder_source.sqlite3")
    ledger.mark([(f"old/{i:05d}.png", 1000 + i, i, "done", None) for i in range(3000)])
    ledger.close()
    _damage(state / "folder_source.sqlite3", how)
    write_frames(workdir / "in", [f"f{i}.png" for i in range(3)])
    write_config(workdir / "config.toml", model=tiny_model)
    sp = service_factory()
    inc, line = _check_recovered(sp, workdir, "folder_source.sqlite3")
    assert ("folder-source ledger unusable" in line) and inc["kept"] in line
    batches = wait_until(lambda: jsonl_batches(workdir / "out.jsonl"), 30, "a batch")
    assert [b["batch_id"] for b in batches] == [1]
    assert sp.stop() == 0


def test_a_garbled_batch_counter_continues_above_the_waiting_batch_ids(
        workdir, tiny_model, broker, service_factory):
    """Power cut while the counter was at 57: the file is zeros; batches 55-57 still wait
    in the outbox. The next batch is 58 (not 1), and 55-57 are delivered."""
    state = workdir / "state"
    _fill_outbox(state / "outbox.sqlite3", range(55, 58))
    (state / "batch_counter.json").write_bytes(b"\x00" * 64)
    rec = Recorder(broker.port, "plant/cryst/+/psd")
    write_frames(workdir / "in", [f"f{i}.png" for i in range(3)])
    write_config(workdir / "config.toml", model=tiny_model, extra=_mqtt(broker.port))
    sp = service_factory()
    _check_recovered(sp, workdir, "batch_counter.json")
    wait_until(lambda: len(rec.on("/psd")) >= 4, 30, f"4 reports:\n{sp.log()[-2000:]}")
    got = [json.loads(m.payload)["batch_id"] for m in rec.on("/psd")]
    assert sorted(set(got)) == [55, 56, 57, 58]
    assert [b["batch_id"] for b in jsonl_batches(workdir / "out.jsonl")] == [58]
    assert "batch_counter.json: batch ids continue from 58" in sp.log()
    assert sp.stop() == 0
    rec.close()


def test_an_outbox_of_the_previous_version_is_adopted_and_delivered(
        workdir, tiny_model, broker, service_factory):
    """Upgrade: the outbox written before application_id existed keeps its reports."""
    state = workdir / "state"
    state.mkdir()
    db = sqlite3.connect(state / "outbox.sqlite3")
    db.executescript(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, batch_id INTEGER NOT "
        "NULL, created REAL NOT NULL, payload TEXT NOT NULL);"
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "PRAGMA journal_mode=WAL;")
    db.executemany("INSERT INTO outbox (batch_id, created, payload) VALUES (?, 0, ?)",
                   [(b, json.dumps(psd_payload(b, device_id=DEVICE))) for b in range(1, 21)])
    db.commit()
    db.close()
    rec = Recorder(broker.port, "plant/cryst/+/psd")
    write_config(workdir / "config.toml", model=tiny_model, extra=_mqtt(broker.port))
    sp = service_factory()
    wait_until(lambda: len(rec.on("/psd")) >= 20, START_S,
               f"20 waiting reports delivered:\n{sp.log()[-2000:]}")
    assert sorted({json.loads(m.payload)["batch_id"] for m in rec.on("/psd")}) == \
        list(range(1, 21))
    wait_until(lambda: _status(workdir).get("state") is not None, 10, "status.json")
    assert sp.stop() == 0
    log = sp.log()
    assert "MQTT outbox of an earlier version adopted" in log and "level=ERROR" not in log
    assert _status(workdir)["state_file_incidents"] == []
    assert not list(state.glob("*.corrupt-*"))
    with sqlite3.connect(state / "outbox.sqlite3") as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x4350_4F42
    rec.close()
