"""Supervision: a stage that dies stops the watchdog and the process exits non-zero;
a required sink that cannot write holds the batch back until it can, one that is not
required does not (``crystal-edge run`` as a subprocess, folder source, real
``NOTIFY_SOCKET`` datagram receiver, real ENOSPC from ``/dev/full``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from tests.edge.run_helpers import NotifyReceiver
from tests.faults.conftest import jsonl_batches, wait_until, write_config, write_frames

FOLDER = ('type = "folder"\npath = "in"\npoll_s = 0.05\nstable_polls = 1\n'
          'after = "delete"\n')

# Loaded by the service process at start-up (PYTHONPATH): post-processing of a frame
# named boom* raises a BaseException, which no per-item guard catches: the thread dies.
KILLER = '''
import edge.service.pipeline.analysis as analysis

class WorkerKilled(BaseException):
    pass

_real = analysis.AnalyzerProcessor.measure

def measure(self, frame, class_map):
    if frame.name.startswith("boom"):
        raise WorkerKilled("injected: the post-processing worker is killed")
    return _real(self, frame, class_map)

analysis.AnalyzerProcessor.measure = measure
'''


class TimedList(list):
    """The notify messages with their arrival times: ``(monotonic, text)``."""

    def append(self, msg: str) -> None:  # type: ignore[override]
        super().append((time.monotonic(), msg))


def ledger(state: Path) -> dict[str, str]:
    if not (state / "folder_source.sqlite3").exists():
        return {}
    try:
        with sqlite3.connect(state / "folder_source.sqlite3") as db:
            return dict(db.execute("SELECT path, status FROM processed").fetchall())
    except sqlite3.OperationalError:  # the service is still creating its tables
        return {}


def status(state: Path) -> dict:
    try:
        return json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def test_a_dead_stage_stops_the_watchdog_and_exits_non_zero(
        workdir, tiny_model, service_factory, monkeypatch):
    """Bound: exit within 10 s of the fatal frame (detection <= 0.25 s, stop <= 5 s)."""
    inject = workdir / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(KILLER)
    root = Path(__file__).resolve().parents[2]
    rx = NotifyReceiver(workdir / "notify.sock", monkeypatch)
    rx.msgs = times = TimedList()
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # pings every 0.5 s
    write_config(workdir / "config.toml", model=tiny_model, batch_frames=2, source=FOLDER)
    try:
        svc = service_factory(env={"PYTHONPATH": f"{inject}:{root}"})
        write_frames(workdir / "in", ["a0.png", "a1.png"])
        wait_until(lambda: len(jsonl_batches(workdir / "out.jsonl")) == 1, 60, "batch 1")
        wait_until(lambda: sum(m.startswith("WATCHDOG=1") for _, m in times) >= 2, 10,
                   "watchdog pings while healthy")
        write_frames(workdir / "in", ["boom0.png"], seed=9)
        t_fault = time.monotonic()
        rc = svc.wait(10)
        exit_s = time.monotonic() - t_fault
    finally:
        rx.close()
    log = svc.log()
    died = [ln for ln in log.splitlines() if "level=CRITICAL" in ln and "post0 died" in ln]
    assert rc == 1 and len(died) == 1 and "WorkerKilled" in died[0], log[-2000:]
    assert "unhealthy: stage post0 died" in log
    last_ping = max(t for t, m in times if m.startswith("WATCHDOG=1"))
    assert last_ping < t_fault + 1.0, "watchdog pinged after the stage died"
    assert (workdir / "in" / "boom0.png").exists()  # not acknowledged: read again
    assert ledger(workdir / "state") == {"a0.png": "done", "a1.png": "done"}
    print(f"dead stage: exit 1 after {exit_s:.1f} s")
    # restarted (by systemd) without the fault: the frame is delivered in batch 2
    svc2 = service_factory()
    write_frames(workdir / "in", ["a2.png"], seed=3)
    wait_until(lambda: len(jsonl_batches(workdir / "out.jsonl")) == 2, 60, "batch 2")
    assert svc2.stop() == 0
    assert [r["batch_id"] for r in jsonl_batches(workdir / "out.jsonl")] == [1, 2]


def _jsonl_to_dev_full(workdir: Path, model: Path, required: bool) -> None:
    write_config(workdir / "config.toml", model=model, batch_frames=2,
                 source=FOLDER)
    cfg = workdir / "config.toml"
    cfg.write_text(cfg.read_text().replace(
        'path = "out.jsonl"\n', f'path = "out.jsonl"\nrequired = {str(required).lower()}\n'))
    os.symlink("/dev/full", workdir / "out.jsonl")  # every write: ENOSPC


def test_required_sink_that_cannot_write_holds_the_batch_until_it_can(
        workdir, tiny_model, service_factory):
    _jsonl_to_dev_full(workdir, tiny_model, required=True)
    svc = service_factory()
    write_frames(workdir / "in", ["a0.png", "a1.png"])
    state = workdir / "state"
    wait_until(lambda: "jsonl" in (status(state).get("sink_faults") or {}), 60,
               "status.json naming the failing sink")
    time.sleep(1.0)
    st = status(state)
    assert st["healthy"] is False and "No space left" in st["sink_faults"]["jsonl"]["error"]
    assert (workdir / "in" / "a0.png").exists() and (workdir / "in" / "a1.png").exists()
    assert "done" not in ledger(state).values()
    assert svc.proc.poll() is None
    os.unlink(workdir / "out.jsonl")  # the fault is fixed
    t0 = time.monotonic()
    wait_until(lambda: ledger(state) == {"a0.png": "done", "a1.png": "done"}, 40,
               "the batch delivered and acknowledged after the fix")
    recovery_s = time.monotonic() - t0
    assert svc.stop() == 0
    recs = jsonl_batches(workdir / "out.jsonl")
    assert [r["batch_id"] for r in recs] == [1]  # whole, once
    log = svc.log()
    assert log.count("required sink jsonl failed on batch 1") == 1 and "Traceback" not in log
    print(f"required sink: delivered {recovery_s:.1f} s after the fix")
    assert recovery_s < 35  # the back-off is at most 30 s


def test_sink_not_required_does_not_hold_the_batch(workdir, tiny_model, service_factory):
    _jsonl_to_dev_full(workdir, tiny_model, required=False)
    svc = service_factory()
    write_frames(workdir / "in", ["a0.png", "a1.png"])
    state = workdir / "state"
    wait_until(lambda: ledger(state) == {"a0.png": "done", "a1.png": "done"}, 60,
               "the batch acknowledged without the sink")
    assert not (workdir / "in" / "a0.png").exists()
    assert svc.stop() == 0
    lines = [ln for ln in svc.log().splitlines() if "sink jsonl batch 1" in ln]
    assert len(lines) == 1 and "not required" in lines[0] and "No space left" in lines[0]
