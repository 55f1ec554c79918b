"""``crystal-edge status --check`` tells the truth about a real service and a real broker,
and status.json, the MQTT health message and ``/metrics`` show one snapshot.

The service runs with MQTT to a real Mosquitto (persistent, with a durable subscriber as a
plant's DCS is). The broker stops: once reports wait in the outbox, ``--check`` exits 1
and names the MQTT problem. The broker comes back: ``--check`` is OK again and every batch
accepted during the outage arrives (batch ids). SIGTERM: ``--check`` says the service
stopped within a few seconds. Every ``--check`` is a real subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from edge.service.status import read_outbox
from tests.edge.mqtt.conftest import Recorder
from tests.faults.conftest import (
    ROOT,
    jsonl_batches,
    make_broker,
    wait_until,
    write_config,
    write_frames,
)

pytest.importorskip("onnxruntime")

DEVICE = "test-01"
SOURCE = 'type = "synthetic"\nwidth = 256\nheight = 192\nseed = 3\nrate_fps = 6\n'
#: seconds within which --check must change its verdict after the fault / the fix
VERDICT_S = 10.0


def status_check(state_dir: Path) -> tuple[int, str]:
    """``crystal-edge status --state-dir STATE --check`` as a real subprocess:
    (exit status, its one line of output)."""
    r = subprocess.run(
        [sys.executable, "-m", "edge.cli", "status", "--state-dir", str(state_dir), "--check"],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode in (0, 1), r.stdout + r.stderr
    assert r.stdout.count("\n") == 1, r.stdout
    return r.returncode, r.stdout.strip()


def _verdict(state_dir: Path, want_rc: int, t0: float, what: str) -> tuple[str, float]:
    """Poll ``--check`` until it exits ``want_rc``: (its line, seconds since ``t0``)."""
    seen: list[str] = []
    deadline = time.monotonic() + VERDICT_S
    while time.monotonic() < deadline:
        rc, line = status_check(state_dir)
        if rc == want_rc:
            return line, time.monotonic() - t0
        seen.append(line)
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {VERDICT_S:g} s; --check said {seen[-3:]}")


def _delivered(rec: Recorder) -> set[int]:
    return {json.loads(m.payload)["batch_id"] for m in rec.on("/psd")}


def _waiting(state: Path) -> int:
    return read_outbox(state / "outbox.sqlite3").depth or 0


def test_status_follows_broker_outage_and_stop(workdir, tiny_model, service_factory):
    broker = make_broker(workdir, persistence=True)
    broker.start()
    rec = Recorder(broker.port, f"plant/{DEVICE}/psd", persistent_id="dcs-status-truth")
    write_config(workdir / "config.toml", model=tiny_model, source=SOURCE, extra=(
        f'\n[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n'
        f'device_id = "{DEVICE}"\ntopic_prefix = "plant"\nreconnect_min_s = 0.2\n'
        "reconnect_max_s = 1.0\nhealth_interval_s = 3600\n"))
    state, out = workdir / "state", workdir / "out.jsonl"
    try:
        svc = service_factory()
        wait_until(lambda: _delivered(rec), 40, "a first batch over MQTT")
        _verdict(state, 0, time.monotonic(), "OK while the broker is up")

        broker.stop()
        t_stop = time.monotonic()
        wait_until(lambda: _waiting(state) >= 3, 30, "3 reports waiting in the outbox")
        line, t_degraded = _verdict(state, 1, t_stop, "--check failing with the broker down")
        assert line.startswith("DEGRADED: sink mqtt: cannot deliver ("), line
        assert "report(s) waiting" in line, line
        accepted_in_outage = {b["batch_id"] for b in jsonl_batches(out)}
        waiting_at_fault = _waiting(state)

        broker.start()
        t_start = time.monotonic()
        line, t_ok = _verdict(state, 0, t_start, "--check OK after the broker came back")
        assert line == "OK"
        wait_until(lambda: accepted_in_outage <= _delivered(rec), 20,
                   "every batch accepted during the outage delivered")
        t_caught_up = time.monotonic() - t_start

        svc.signal(signal.SIGTERM)
        t_term = time.monotonic()
        line, t_down = _verdict(state, 1, t_term, "--check failing after SIGTERM")
        assert line.startswith("DOWN: service st"), line  # stopping / stopped (SIGTERM)
        assert svc.wait(30) == 0
        line_after, _ = _verdict(state, 1, t_term, "--check failing once it exited")
        assert line_after.startswith("DOWN: service stopped (SIGTERM)"), line_after
    finally:
        broker.stop()
        rec.close()

    accepted = {b["batch_id"] for b in jsonl_batches(out)}
    delivered = _delivered(rec)
    assert accepted == set(range(1, max(accepted) + 1))
    assert accepted - delivered <= _outbox_ids(state), "a batch accepted was lost"
    assert "Traceback" not in svc.log()
    print(f"\nbroker down: --check DEGRADED after {t_degraded:.1f} s ({waiting_at_fault} "
          f"waiting); broker back: OK after {t_ok:.1f} s, batches 1..{max(accepted_in_outage)} "
          f"delivered after {t_caught_up:.1f} s; SIGTERM: DOWN after {t_down:.1f} s; "
          f"{len(accepted)} batches accepted, {len(delivered & accepted)} delivered")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _outbox_ids(state: Path) -> set[int]:
    """Batch ids still waiting in the outbox after the service stopped."""
    import sqlite3

    path = state / "outbox.sqlite3"
    if not path.exists():
        return set()
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {int(r[0]) for r in con.execute("SELECT batch_id FROM outbox")}
    finally:
        con.close()


def _status(state: Path) -> dict:
    try:
        return json.loads((state / "status.json").read_text())
    except (OSError, ValueError):  # not written yet
        return {}


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {k: float(v) for k, v in (ln.rsplit(" ", 1) for ln in text.splitlines()
                                     if ln and not ln.startswith("#"))}


def _same_snapshot(state: Path, port: int, rec: Recorder
                   ) -> tuple[dict, dict, dict[str, float]] | None:
    """status.json, the MQTT health message and a /metrics scrape of one snapshot (the
    same ``uptime_s`` in all three), or None when they were not caught together."""
    metrics = _metrics(port)
    status = _status(state)
    if metrics.get("crystal_edge_uptime_s") != status.get("uptime_s"):
        return None
    for m in reversed(rec.all):
        health = json.loads(m.payload)
        if health["uptime_s"] == status["uptime_s"]:
            return status, health, metrics
    return None


def test_status_json_mqtt_health_and_metrics_show_one_snapshot(workdir, tiny_model, broker,
                                                               service_factory):
    """One running service: status.json, the MQTT health message from a real broker
    and a /metrics scrape of the same snapshot agree, under the same names."""
    rec = Recorder(broker.port, f"plant/{DEVICE}/health")
    port = _free_port()
    write_config(workdir / "config.toml", model=tiny_model, batch_frames=3, extra=(
        f'\n[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n'
        f'device_id = "{DEVICE}"\ntopic_prefix = "plant"\nhealth_interval_s = 0.2\n'
        f"\n[metrics]\nenabled = true\nport = {port}\n"))  # [health] interval_s = 0.1
    write_frames(workdir / "in", [f"f{i}.png" for i in range(6)])
    state = workdir / "state"
    try:
        svc = service_factory()
        wait_until(lambda: len(jsonl_batches(workdir / "out.jsonl")) == 2, 40, "2 batches")
        wait_until(lambda: _status(state).get("batches_published") == 2, 10,
                   "status.json with both batches")
        caught = wait_until(lambda: _same_snapshot(state, port, rec), 15,
                            "one snapshot in status.json, MQTT health and /metrics")
    finally:
        rec.close()
    status, health, metrics = caught
    assert status["frames_total"] == health["frames_total"] == 6
    assert metrics["crystal_edge_frames_total"] == 6
    assert status["frames_per_s"] == health["frames_per_s"] > 0
    assert metrics["crystal_edge_frames_per_s"] == status["frames_per_s"]
    assert status["queue_depths"] == health["queue_depths"] == {
        q: int(metrics[f'crystal_edge_queue_depths{{queue="{q}"}}'])
        for q in ("inference", "post", "aggregate", "sinks")}
    assert status["batches_total"] == health["batches_total"] == 2
    assert metrics["crystal_edge_batches_total"] == 2
    assert status["batches_published"] == health["batches_published"] == 2
    assert metrics["crystal_edge_batches_published"] == 2
    assert status["last_batch_id"] == health["last_batch_id"] == 2
    assert metrics["crystal_edge_last_batch_id"] == 2
    assert health["time"].replace("Z", "+00:00") == status["time"]
    assert svc.stop() == 0
    assert "Traceback" not in svc.log()
