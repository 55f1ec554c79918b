"""`crystal-edge status`: the verdict (OK / DEGRADED / DOWN, one line per problem)."""

# ruff: noqa: F811 (the fixtures imported from tests.edge.status_helpers)
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.clikit import dispatch
from edge.service.status import StatusLimits, collect_status
from tests.edge.status_helpers import (  # noqa: F401 (fixtures)
    COMMANDS,
    SNAPSHOT,
    state_dir,
    stub_systemctl,
    write_outbox,
)


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
    stub_systemctl(tmp_path, "active")
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
    write_outbox(sd / "outbox.sqlite3", 5, created=time.time() - 1200)
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
