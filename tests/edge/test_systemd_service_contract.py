"""The headless contract end to end: `crystal-edge run` as systemd would start it.

A real run (synthetic source, the tiny ONNX model, ONNX Runtime) with NOTIFY_SOCKET and
WATCHDOG_USEC set: READY, WATCHDOG pings and STOPPING arrive on the socket, every stderr
line is one JSON event, /metrics answers over HTTP while it runs, `crystal-edge status`
reads a fresh status.json, and SIGTERM ends it cleanly.
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
import uuid
from pathlib import Path

import pytest

from edge.service.status import collect_status

pytest.importorskip("onnxruntime")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_run_under_systemd_contract(tmp_path):
    from tests.fixtures.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path)
    port = _free_port()
    state = tmp_path / "state"
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[source]\ntype = "synthetic"\nwidth = 256\nheight = 192\nseed = 3\nrate_fps = 25\n'
        f'[model]\npath = "{model}"\n[backend]\nname = "onnxruntime"\n'
        "[batch]\nframes = 5\n"
        f'[state]\ndir = "{state}"\n[health]\ninterval_s = 0.5\n'
        '[logging]\nformat = "json"\nlevel = "INFO"\n'
        f"[metrics]\nenabled = true\nport = {port}\n")

    name = f"crystal-edge-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(0.5)
    env = {**os.environ, "NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    env.pop("CRYSTAL_EDGE_STATE_DIR", None)
    exe = Path(sys.executable).parent / "crystal-edge"
    proc = subprocess.Popen([str(exe), "run", "--config", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    messages: list[str] = []

    def drain(until: float, want: str | None = None) -> bool:
        while time.monotonic() < until:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                continue
            if want and any(want in m for m in messages):
                return True
        return False

    try:
        assert drain(time.monotonic() + 90, "READY=1"), (messages, proc.poll())
        # frames flow: /metrics over real HTTP
        deadline = time.monotonic() + 60
        samples: dict[str, float] = {}
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                samples = _samples(r.read().decode())
            if samples.get("crystal_edge_batches_total", 0) >= 1:
                break
            drain(time.monotonic() + 0.3)
        assert samples["crystal_edge_frames_total"] >= 5
        assert samples["crystal_edge_batches_total"] >= 1
        assert "crystal_edge_frames_per_s" in samples
        assert any(k.startswith('crystal_edge_info{backend="onnxruntime"') for k in samples)

        drain(time.monotonic() + 1.5)  # long enough for watchdog pings (interval 1 s)
        report = collect_status(state, systemctl="/nonexistent/systemctl")
        assert report.status_error is None and not report.stale
        assert report.snapshot.state == "running" and report.snapshot.frames_total >= 5
        assert report.backend.startswith("onnxruntime")

        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    drain(time.monotonic() + 1.0)
    sock.close()
    stderr = proc.stderr.read()
    assert rc == 0, stderr[-2000:]

    assert any("WATCHDOG=1" in m for m in messages), messages
    assert any(m.startswith("READY=1") for m in messages)
    ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
    stopping = next(i for i, m in enumerate(messages) if "STOPPING=1" in m)
    assert ready < stopping
    events = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert events and all({"ts", "level", "logger", "msg"} <= e.keys() for e in events)
    assert all(e["level"] != "DEBUG" for e in events)
