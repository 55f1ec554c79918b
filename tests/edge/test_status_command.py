"""`crystal-edge status`: status.json + read-only SQLite outbox + engine cache + systemctl,
the report and its CLI (the verdict: test_status_verdict.py)."""

# ruff: noqa: F811 (the fixtures imported from tests.edge.status_helpers)
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from edge.clikit import dispatch
from edge.errors import UserError
from edge.service.state import resolve_state_dir
from edge.service.status import (
    StatusLimits,
    collect_status,
    outbox_depth,
    service_state,
)
from tests.edge.status_helpers import (  # noqa: F401 (fixtures)
    COMMANDS,
    state_dir,
    stub_systemctl,
    write_outbox,
)


def test_collect_status_reads_everything(state_dir, tmp_path):
    exe = stub_systemctl(tmp_path, "active")
    now = (state_dir / "status.json").stat().st_mtime + 4.0
    rep = collect_status(state_dir, systemctl=str(exe), now=now)
    assert rep.service == "active"
    assert (tmp_path / "systemctl.calls").read_text().split() == ["is-active", "crystal-edge"]
    assert rep.status_age_s == pytest.approx(4.0, abs=1e-3) and rep.stale is False
    snap = rep.snapshot  # status.json read into the service's own type
    assert snap.state == "running" and snap.healthy is True
    assert rep.backend == "tensorrt (gpu)" and snap.device_id == "skid-07"
    assert rep.model == "crystal-seg (sha256 abababababab)"
    assert rep.mqtt == "connected" and snap.started == "2026-11-30T00:00:00+00:00"
    assert snap.frames_per_s == 9.5 and snap.frames_total == 68000
    assert snap.frames_rejected_total == {"blur": 12, "empty": 3}
    assert snap.last_batch.batch_id == 17 and snap.last_batch.x50_3_um == 84.2
    assert snap.queue_depths["inference"] == 1
    # the SQLite outbox is authoritative over the number in status.json
    assert rep.outbox_depth == 3 and rep.outbox_source == "outbox.sqlite3"
    assert [(e.name, e.size_bytes) for e in rep.engines] == [
        ("crystal-seg-abc123.engine", 2_500_000)]
    assert rep.engines[0].meta["trt_version"] == "10.3.0"
    assert rep.ok is True and rep.problems == [] and rep.overall == "OK"
    assert rep.pid_alive is True and rep.stale_after_s == 15.0  # 3 x health_interval_s
    payload = rep.to_payload()
    assert json.loads(json.dumps(payload)) == payload
    assert payload["engines"][0]["size_bytes"] == 2_500_000

    text = rep.to_text()
    assert "x50,3 = 84.2 um" in text and "3 report(s) waiting (outbox.sqlite3)" in text
    assert "crystal-seg-abc123.engine (2.5 MB" in text and text.endswith("OK")


def test_stale_status_and_failed_service(state_dir, tmp_path):
    exe = stub_systemctl(tmp_path, "failed", rc=3)
    now = (state_dir / "status.json").stat().st_mtime + 120
    rep = collect_status(state_dir, systemctl=str(exe), now=now,
                         limits=StatusLimits(stale_after_s=30))
    assert rep.service == "failed" and rep.stale is True and rep.ok is False
    assert [p.text for p in rep.problems] == [
        "systemd: crystal-edge has failed (journalctl -u crystal-edge)",
        "status.json not rewritten for 120 s (limit 30 s): the service is hung or gone"]
    assert "(STALE)" in rep.to_text() and rep.to_text().endswith("overall       DOWN")


def test_outbox_read_is_read_only(state_dir):
    db = state_dir / "outbox.sqlite3"
    before = {p.name: p.stat().st_mtime_ns for p in state_dir.iterdir()}
    assert outbox_depth(db) == (3, None)
    assert {p.name: p.stat().st_mtime_ns for p in state_dir.iterdir()} == before
    assert outbox_depth(state_dir / "none.sqlite3") == (None, None)
    (state_dir / "junk.sqlite3").write_text("not a database")
    depth, err = outbox_depth(state_dir / "junk.sqlite3")
    assert depth is None and "junk.sqlite3" in err


def test_outbox_counts_uncheckpointed_rows_of_a_live_writer(state_dir):
    db = state_dir / "outbox.sqlite3"
    writer = sqlite3.connect(db)  # the service holds the outbox open (WAL)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("INSERT INTO outbox (batch_id, created, payload) VALUES (9, 0, '{}')")
        writer.commit()
        assert (state_dir / "outbox.sqlite3-wal").stat().st_size > 0
        before = {p.name: p.stat().st_mtime_ns for p in state_dir.iterdir()}
        assert outbox_depth(db) == (4, None)
        assert {p.name: p.stat().st_mtime_ns for p in state_dir.iterdir()} == before
    finally:
        writer.close()


def test_outbox_in_a_read_only_directory(tmp_path):
    # no -wal/-shm: opened immutable, nothing is created (root bypasses the mode anyway)
    sd = tmp_path / "ro"
    sd.mkdir()
    write_outbox(sd / "outbox.sqlite3", 5)
    sd.chmod(0o555)
    try:
        assert outbox_depth(sd / "outbox.sqlite3") == (5, None)
    finally:
        sd.chmod(0o755)


def test_missing_keys_missing_outbox_and_bad_json(tmp_path):
    sd = tmp_path / "s"
    sd.mkdir()
    (sd / "status.json").write_text(json.dumps({"state": "starting",
                                                "sinks": {"mqtt": {"outbox_depth": 7}}}))
    rep = collect_status(sd, systemctl="/nonexistent/systemctl")
    assert rep.service == "unknown" and rep.snapshot.state == "starting"
    assert rep.snapshot.frames_per_s is None and rep.snapshot.last_batch is None
    assert rep.engines == []
    assert rep.outbox_depth == 7 and rep.outbox_source == "status.json"
    assert rep.mqtt is None  # neither connection nor connected reported
    assert "- (no MQTT sink)" in rep.to_text()
    assert "frames/s" in rep.to_text()

    (sd / "status.json").write_text("{not json")
    rep = collect_status(sd, systemctl="/nonexistent/systemctl")
    assert rep.status_error.startswith("unreadable") and rep.ok is False

    (sd / "status.json").unlink()
    rep = collect_status(sd, systemctl="/nonexistent/systemctl")
    assert rep.status_error.startswith("missing") and rep.stale is True


def test_service_state_unknown_answers(tmp_path):
    assert service_state(systemctl=str(stub_systemctl(tmp_path, "offline"))) == "unknown"
    assert service_state(systemctl=str(tmp_path / "absent")) == "unknown"


def test_missing_state_dir_is_user_error(tmp_path):
    with pytest.raises(UserError, match=r"--state-dir .*nope: no such directory"):
        collect_status(tmp_path / "nope")


def test_state_dir_order(tmp_path, monkeypatch):
    from edge.service import state

    env = {"CRYSTAL_EDGE_STATE_DIR": "/x", "STATE_DIRECTORY": "/y"}
    assert resolve_state_dir("/cfg", environ=env) == Path("/x")
    assert resolve_state_dir("/cfg", environ={"STATE_DIRECTORY": "/y"}) == Path("/cfg")
    assert resolve_state_dir(environ={"STATE_DIRECTORY": "/y:/z"}) == Path("/y")
    monkeypatch.setattr(state, "SYSTEM_STATE_DIR", tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_state_dir(environ={}, find_service=True) == tmp_path
    assert resolve_state_dir(environ={}) == tmp_path / "home" / ".local/state/crystal-edge"


def test_cli_json_text_and_check(state_dir, tmp_path, monkeypatch, capsys):
    stub_systemctl(tmp_path, "active")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    argv = ["status", "--state-dir", str(state_dir)]
    assert dispatch("crystal-edge", "t", COMMANDS, [*argv, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["service"] == "active" and payload["outbox_depth"] == 3
    assert payload["snapshot"]["last_batch"]["batch_id"] == 17 and payload["ok"] is True
    assert payload["snapshot"]["frames_per_s"] == 9.5 and payload["backend"] == "tensorrt (gpu)"

    assert dispatch("crystal-edge", "t", COMMANDS, argv) == 0
    assert "backend       tensorrt (gpu)" in capsys.readouterr().out

    old = time.time() - 3600
    os.utime(state_dir / "status.json", (old, old))
    assert dispatch("crystal-edge", "t", COMMANDS, [*argv, "--check"]) == 1
    assert dispatch("crystal-edge", "t", COMMANDS, argv) == 0  # report made: exit 0


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    rc = dispatch("crystal-edge", "t", COMMANDS, ["status", "--state-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no such directory" in err
    rc = dispatch("crystal-edge", "t", COMMANDS,
                  ["status", "--state-dir", str(tmp_path), "--stale-after", "0"])
    assert rc == 2 and "--stale-after" in capsys.readouterr().err


def test_engine_cache_dir_follows_the_backend_engine_path(tmp_path):
    sd, cache = tmp_path / "s", tmp_path / "cache"
    sd.mkdir()
    cache.mkdir()
    (cache / "m-1.engine").write_bytes(b"x" * 1000)
    (sd / "status.json").write_text(json.dumps(
        {"backend": {"name": "tensorrt", "engine": str(cache / "m-1.engine")}}))
    rep = collect_status(sd, systemctl="/nonexistent/systemctl")
    assert rep.engine_cache_dir == str(cache)
    assert [(e.name, e.size_bytes, e.meta) for e in rep.engines] == [("m-1.engine", 1000, {})]


def test_cli_rejects_bad_thresholds(tmp_path, capsys):
    for opt, value in (("--outbox-max-reports", "-1"), ("--outbox-max-age", "0")):
        rc = dispatch("crystal-edge", "t", COMMANDS,
                      ["status", "--state-dir", str(tmp_path), opt, value])
        assert rc == 2 and opt in capsys.readouterr().err


def test_status_json_of_another_version_is_read_field_by_field(tmp_path):
    """A field missing, renamed (``fps``) or of the wrong type takes its default; the
    rest is read."""
    sd = tmp_path / "s"
    sd.mkdir()
    (sd / "status.json").write_text(json.dumps({
        "state": "running", "pid": os.getpid(), "fps": 3.5, "frames_total": "many",
        "queue_depths": {"inference": 2}, "batches_total": 9, "future_field": [1]}))
    snap = collect_status(sd, systemctl="/nonexistent/systemctl").snapshot
    assert snap.frames_per_s == 3.5 and snap.frames_total == 0
    assert snap.queue_depths == {"inference": 2} and snap.batches_total == 9
    assert snap.state == "running" and snap.last_batch is None


def test_status_reads_the_state_dir_of_a_config(tmp_path, capsys):
    from edge.cli import main as cli_main

    (tmp_path / "st").mkdir()
    cfg = tmp_path / "site.toml"
    cfg.write_text('[source]\ntype = "synthetic"\n[state]\ndir = "st"\n')
    assert cli_main(["status", "--config", str(cfg), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["engine_cache_dir"] == str(tmp_path / "st" / "engines")
    assert cli_main(["status", "--config", str(cfg), "--state-dir", str(tmp_path)]) == 2
    assert "give one of them" in capsys.readouterr().err
