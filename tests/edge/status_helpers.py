"""Shared pieces of the ``crystal-edge status`` tests (test_status_command.py,
test_status_verdict.py): a status.json snapshot, a stub systemctl, an outbox, a state
directory."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

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


def stub_systemctl(tmp_path: Path, answer: str, rc: int = 0) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    exe = bindir / "systemctl"
    exe.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/systemctl.calls\n"
                   f"echo {answer}\nexit {rc}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def write_outbox(path: Path, n: int, *, created: float | None = None) -> None:
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
    write_outbox(sd / "outbox.sqlite3", 3)
    eng = sd / "engines" / "crystal-seg-abc123.engine"
    eng.write_bytes(b"\0" * 2_500_000)
    (sd / "engines" / "crystal-seg-abc123.engine.json").write_text(
        json.dumps({"trt_version": "10.3.0", "precision": "fp16"}))
    return sd
