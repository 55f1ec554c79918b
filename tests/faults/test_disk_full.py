"""Disk full: the state directory on a small real tmpfs, filled to ENOSPC while the
service runs (``crystal-edge run`` as a subprocess, folder source, JSON lines outside).

The batch counter cannot be written, so no batch closes; the service keeps running,
says so in ``status.json`` (rewritten in place: a new file cannot be created) and keeps
the open batch. Once the filler is removed the batch closes with the next id within
the retry back-off (<= 8 s here) and every frame accepted is delivered once. SIGTERM
while the disk is full stops the process within the unit's TimeoutStopSec (30 s).
"""

from __future__ import annotations

import errno
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.conftest import jsonl_batches, wait_until, write_config, write_frames

FOLDER = ('type = "folder"\npath = "in"\npoll_s = 0.05\nstable_polls = 1\n'
          'after = "delete"\n')


@pytest.fixture
def tmpfs_state(workdir: Path):
    """``workdir/state`` as a 4 MB tmpfs (the tests run as root in CI)."""
    state = workdir / "state"
    state.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0750", "tmpfs",
                        str(state)], check=False, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the state directory ({r.stderr.strip()}); "
                    "disk-full needs root or CAP_SYS_ADMIN")
    yield state
    subprocess.run(["umount", "-l", str(state)], check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system says ENOSPC."""
    path = directory / "filler"
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    for size in (4096, 512, 1):  # the last partial blocks too
        try:
            with open(path, "ab", buffering=0) as f:
                while True:
                    f.write(b"\0" * size)
        except OSError:
            pass
    return path


def status(state: Path) -> dict:
    try:
        return json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def ledger_done(state: Path) -> set[str]:
    with sqlite3.connect(state / "folder_source.sqlite3") as db:
        return {p for p, s in db.execute("SELECT path, status FROM processed") if s == "done"}


def start_and_fill(workdir, state, tiny_model, service_factory):
    """Service running, batch 1 out, the disk full, 4 more frames waiting in batch 2."""
    write_config(workdir / "config.toml", model=tiny_model, batch_frames=2, source=FOLDER)
    svc = service_factory()
    write_frames(workdir / "in", ["a0.png", "a1.png"])
    wait_until(lambda: len(jsonl_batches(workdir / "out.jsonl")) == 1, 60, "batch 1")
    wait_until(lambda: ledger_done(state) == {"a0.png", "a1.png"}, 10, "batch 1 acked")
    wait_until(lambda: status(state).get("last_batch_id") == 1, 10, "status.json written")
    filler = fill(state)
    write_frames(workdir / "in", [f"b{i}.png" for i in range(4)], seed=5)
    wait_until(lambda: status(state).get("current_batch_frames") == 4
               and status(state).get("batch_close_error"), 30,
               "status.json showing the failed close of a batch of 4 frames")
    return svc, filler


def test_full_state_disk_keeps_the_batch_and_delivers_it_when_space_returns(
        workdir, tmpfs_state, tiny_model, service_factory):
    state = tmpfs_state
    svc, filler = start_and_fill(workdir, state, tiny_model, service_factory)
    st = status(state)
    assert st["healthy"] is False
    assert any("batch close failing" in p and "No space left" in p for p in st["problems"])
    time.sleep(1.5)
    assert svc.proc.poll() is None, "the service died on a full disk"
    assert len(jsonl_batches(workdir / "out.jsonl")) == 1, "a batch closed while full"
    assert all((workdir / "in" / f"b{i}.png").exists() for i in range(4))  # not acked

    filler.unlink()
    t0 = time.monotonic()
    wait_until(lambda: len(jsonl_batches(workdir / "out.jsonl")) >= 2, 15,
               "the kept batch delivered after the disk has space again")
    recovery_s = time.monotonic() - t0
    wait_until(lambda: len(ledger_done(state)) == 6, 10, "every frame acknowledged")
    wait_until(lambda: status(state).get("healthy") is True, 10, "healthy again")
    assert svc.stop() == 0
    recs = jsonl_batches(workdir / "out.jsonl")
    assert [r["batch_id"] for r in recs] == [1, 2]  # consecutive, none lost or repeated
    assert [r["payload"]["frames"]["used"] for r in recs] == [2, 4]
    assert not any((workdir / "in").iterdir())
    log = svc.log()
    assert log.count("closing the batch of") == 1  # one line, not one per retry
    assert "Traceback" not in log
    print(f"recovery after freeing the disk: {recovery_s:.1f} s")
    assert recovery_s < 15


def test_sigterm_on_a_full_disk_stops_within_the_unit_timeout(
        workdir, tmpfs_state, tiny_model, service_factory):
    state = tmpfs_state
    svc, filler = start_and_fill(workdir, state, tiny_model, service_factory)
    t0 = time.monotonic()
    svc.signal()
    rc = svc.wait(30)
    stop_s = time.monotonic() - t0
    print(f"SIGTERM on a full disk: exit {rc} after {stop_s:.1f} s")
    assert rc == 1  # the open batch had to be abandoned
    assert "could not be closed before the deadline" in svc.log()
    assert all((workdir / "in" / f"b{i}.png").exists() for i in range(4))
    # space again, next start: the abandoned frames are read again and delivered
    filler.unlink()
    svc2 = service_factory()
    wait_until(lambda: len(jsonl_batches(workdir / "out.jsonl")) == 3, 60,
               "the abandoned frames delivered after the restart")
    assert svc2.stop() == 0
    recs = jsonl_batches(workdir / "out.jsonl")
    assert [r["batch_id"] for r in recs] == [1, 2, 3]
    assert sum(r["payload"]["frames"]["used"] for r in recs) == 6
