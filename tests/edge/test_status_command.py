"""`crystal-edge status`: status.json + read-only SQLite outbox + engine cache + systemctl,
and the verdict (OK / DEGRADED / DOWN, one line per problem)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
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

COMMANDS = {"status": "edge.commands.status"}

# The keys edge.service.pipeline.runtime writes (a subset is enough: the reader tolerates gaps).
SNAPSHOT = {
    "state": "running",
    "device_id": "skid-07",
    "pid": os.getpid(),  # a live process: the service is running
    "time": "2026-11-30T01:00:00+00:00",
    "health_interval_s": 5.0,
    "uptime_s": 7200.0,
    "healthy": True,
    "frames_per_s": 9.5,
    "frames_total": 68000,
    "frames_rejected_total": {"blur": 12, "empty": 3},
    "queue_depths": {"inference": 1, "post": 0, "aggregate": 0, "sinks": 0},
    "current_batch_id": 18,
    "batches_total": 17,
    "last_batch_id": 17,
    "last_batch": {"batch_id": 17, "x50_3_um": 84.2, "s_lnd": 0.41, "crystals": 5321,
                   "batch_end": "2026-11-30T00:59:00+00:00", "close_reason": "frames"},
    "last_error": None,
    "backend": {"name": "tensorrt", "precision": "fp16", "device": "gpu",
                "engine": "/somewhere/else/engines/x.engine"},
    "model": {"name": "crystal-seg", "file": "crystal-seg.onnx", "sha256": "ab" * 32},
    "software_version": "0.1.0",
    "started": "2026-11-30T00:00:00+00:00",
    "sinks": {"mqtt": {"connection": "connected", "connected": True, "outbox_depth": 99,
                       "last_error": None}},
}


def _stub_systemctl(tmp_path: Path, answer: str, rc: int = 0) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    exe = bindir / "systemctl"
    exe.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/systemctl.calls\n"
                   f"echo {answer}\nexit {rc}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def _outbox(path: Path, n: int, *, created: float | None = None) -> None:
    # The schema of edge.mqtt.outbox (WAL, as the service runs it).
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "batch_id INTEGER NOT NULL, created REAL NOT NULL, payload TEXT NOT NULL)")
    con.executemany("INSERT INTO outbox (batch_id, created, payload) VALUES (?, ?, ?)",
                    [(i, created or time.time(), "{}") for i in range(n)])
    con.commit()
    con.close()


@pytest.fixture
def state_dir(tmp_path):
    sd = tmp_path / "state"
    (sd / "engines").mkdir(parents=True)
    snap = json.loads(json.dumps(SNAPSHOT))
    snap["backend"]["engine"] = str(sd / "engines" / "crystal-seg-abc123.engine")
    (sd / "status.json").write_text(json.dumps(snap))
    _outbox(sd / "outbox.sqlite3", 3)
    eng = sd / "engines" / "crystal-seg-abc123.engine"
    eng.write_bytes(b"\0" * 2_500_000)
    (sd / "engines" / "crystal-seg-abc123.engine.json").write_text(
        json.dumps({"trt_version": "10.3.0", "precision": "fp16"}))
    return sd


def test_collect_status_reads_everything(state_dir, tmp_path):
    exe = _stub_systemctl(tmp_path, "active")
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
    exe = _stub_systemctl(tmp_path, "failed", rc=3)
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
    _outbox(sd / "outbox.sqlite3", 5)
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
    assert service_state(systemctl=str(_stub_systemctl(tmp_path, "offline"))) == "unknown"
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
    _stub_systemctl(tmp_path, "active")
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


# ------------------------------------------------------------------ the verdict
def _write_snapshot(sd: Path, **changes) -> None:
    snap = json.loads(json.dumps(SNAPSHOT))
    snap["backend"]["engine"] = str(sd / "engines" / "crystal-seg-abc123.engine")
    snap.update(changes)
    (sd / "status.json").write_text(json.dumps(snap))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _texts(rep) -> list[str]:
    return [f"{p.level}: {p.text}" for p in rep.problems]


def test_broker_down_with_reports_waiting_is_degraded(state_dir, tmp_path, monkeypatch,
                                                      capsys):
    _write_snapshot(state_dir, sinks={"mqtt": {
        "connection": "disconnected", "connected": False, "outbox_depth": 2,
        "last_error": "connect to 127.0.0.1:1883 failed: [Errno 111] Connection refused"}})
    rep = collect_status(state_dir, systemctl="/nonexistent/systemctl")
    assert rep.overall == "DEGRADED" and not rep.ok
    # the outbox file (3 rows) is newer than the snapshot's number (2)
    assert _texts(rep) == ["DEGRADED: sink mqtt: cannot deliver (disconnected: connect to "
                           "127.0.0.1:1883 failed: [Errno 111] Connection refused), "
                           "3 report(s) waiting"]
    assert rep.to_text().splitlines()[-2:] == [
        "problem       " + _texts(rep)[0], "overall       DEGRADED"]
    # --check: one line naming the problem, exit 1
    _stub_systemctl(tmp_path, "active")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    rc = dispatch("crystal-edge", "t", COMMANDS,
                  ["status", "--state-dir", str(state_dir), "--check"])
    out = capsys.readouterr().out
    assert rc == 1 and out.count("\n") == 1
    assert out.startswith("DEGRADED: sink mqtt: cannot deliver (disconnected")


def test_reconnecting_without_backlog_or_error_is_ok(tmp_path):
    sd = tmp_path / "s"
    sd.mkdir()
    (sd / "status.json").write_text(json.dumps({
        "state": "running", "pid": os.getpid(), "healthy": True,
        "sinks": {"mqtt": {"connection": "connecting", "connected": False,
                           "outbox_depth": 0, "last_error": None}}}))
    assert collect_status(sd, systemctl="/nonexistent/systemctl").overall == "OK"


def test_outbox_growth_by_count_and_by_age(tmp_path):
    sd = tmp_path / "s"
    sd.mkdir()
    (sd / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid()}))
    _outbox(sd / "outbox.sqlite3", 5, created=time.time() - 1200)
    rep = collect_status(sd, systemctl="/nonexistent/systemctl",
                         limits=StatusLimits(outbox_max_reports=4))
    assert _texts(rep) == ["DEGRADED: outbox: 5 reports waiting (limit 4)",
                           "DEGRADED: outbox: oldest report waiting for 20 min (limit 10 min)"]
    assert rep.outbox_oldest_age_s == pytest.approx(1200, abs=5)
    assert "oldest 1200 s" in rep.to_text()
    rep = collect_status(sd, systemctl="/nonexistent/systemctl",
                         limits=StatusLimits(outbox_max_age_s=3600))
    assert rep.ok


def test_not_running_is_down(state_dir):
    _write_snapshot(state_dir, pid=_dead_pid())
    rep = collect_status(state_dir, systemctl="/nonexistent/systemctl")
    assert rep.overall == "DOWN" and rep.pid_alive is False
    pid = rep.snapshot.pid
    assert _texts(rep) == [f"DOWN: service not running: pid {pid} from status.json is gone"]
    assert f"pid {pid} (gone)" in rep.to_text()

    _write_snapshot(state_dir, state="stopped", stop_reason="SIGTERM")
    rep = collect_status(state_dir, systemctl="/nonexistent/systemctl")
    assert _texts(rep) == ["DOWN: service stopped (SIGTERM)"]


def test_stale_limit_follows_the_recorded_health_interval(state_dir):
    _write_snapshot(state_dir, health_interval_s=20.0)
    mtime = (state_dir / "status.json").stat().st_mtime
    assert collect_status(state_dir, systemctl="/nonexistent/systemctl",
                          now=mtime + 55).ok  # 3 x 20 s = 60 s
    rep = collect_status(state_dir, systemctl="/nonexistent/systemctl", now=mtime + 65)
    assert rep.overall == "DOWN" and rep.stale_after_s == 60
    _write_snapshot(state_dir, health_interval_s=0.1)  # never below 10 s
    mtime = (state_dir / "status.json").stat().st_mtime
    assert collect_status(state_dir, systemctl="/nonexistent/systemctl", now=mtime + 8).ok


def test_unhealthy_service_names_the_stage(state_dir):
    _write_snapshot(state_dir, healthy=False, stages={
        "capture": {"alive": True, "done": False, "since_progress_s": 0.1},
        "aggregate": {"alive": False, "done": False, "since_progress_s": 40.0}})
    rep = collect_status(state_dir, systemctl="/nonexistent/systemctl")
    assert _texts(rep) == ["DOWN: service unhealthy: stage(s) not running: aggregate"]
    assert "running (unhealthy)" in rep.to_text()
    _write_snapshot(state_dir, healthy=False, stages={
        "capture": {"alive": True, "since_progress_s": 0.1},
        "aggregate": {"alive": True, "since_progress_s": 130.0}})
    rep = collect_status(state_dir, systemctl="/nonexistent/systemctl")
    assert _texts(rep) == ["DOWN: service unhealthy: stage aggregate without progress for "
                           "130 s"]
    # the service's own problem lines (edge.service.pipeline.health), one each
    _write_snapshot(state_dir, healthy=False, problems=[
        "stage aggregate died: OSError: [Errno 28] No space left on device",
        "batch 18 cannot be closed since 2026-11-30T01:00:00+00:00: disk full"])
    rep = collect_status(state_dir, systemctl="/nonexistent/systemctl")
    assert _texts(rep) == [
        "DOWN: service unhealthy: stage aggregate died: OSError: [Errno 28] No space left "
        "on device",
        "DOWN: service unhealthy: batch 18 cannot be closed since 2026-11-30T01:00:00+00:00: "
        "disk full"]
    _write_snapshot(state_dir, healthy=True, problems=[])
    assert collect_status(state_dir, systemctl="/nonexistent/systemctl").ok


def test_state_file_incidents_are_shown(state_dir):
    _write_snapshot(state_dir, state_file_incidents=[
        {"file": "outbox.sqlite3", "reason": "file is not a database",
         "moved_to": "outbox.sqlite3.corrupt-20261130T010000", "time": "2026-11-30T01:00Z",
         "kept": "412 of 500 reports salvaged"},
        {"file": "folder_source.sqlite3", "reason": "empty file"}])
    rep = collect_status(state_dir, systemctl="/nonexistent/systemctl")
    assert rep.overall == "DEGRADED"
    assert _texts(rep) == [
        "DEGRADED: state file: outbox.sqlite3: file is not a database, moved to "
        "outbox.sqlite3.corrupt-20261130T010000, 412 of 500 reports salvaged "
        "(2026-11-30T01:00Z)",
        "DEGRADED: state file: folder_source.sqlite3: empty file"]


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
