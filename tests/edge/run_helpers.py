"""Shared pieces of the ``crystal-edge run`` tests (test_run.py, test_run_reload.py,
test_run_backend_load.py): the tiny model, a run directory, polling, a service process,
an sd_notify receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def workdir(tmp_path, tiny_model, monkeypatch):
    monkeypatch.delenv("CRYSTAL_EDGE_STATE_DIR", raising=False)
    (tmp_path / "in").mkdir()
    return tmp_path


def wait_for(cond, timeout: float, what: str) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def service_process(workdir: Path) -> subprocess.Popen:
    """``crystal-edge run --config workdir/config.toml`` as a real process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CRYSTAL_EDGE_STATE_DIR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(workdir / "config.toml")],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sigterm(proc: subprocess.Popen) -> str:
    """Stop it as systemd does; it must exit 0. Returns its stderr."""
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


class NotifyReceiver:
    """A real AF_UNIX datagram socket read as systemd reads it (the sender never blocks);
    NOTIFY_SOCKET points at it for the test."""

    def __init__(self, path: Path, monkeypatch) -> None:
        import socket

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.msgs: list[str] = []
        self._done = threading.Event()
        self._rx = threading.Thread(target=self._receive, daemon=True)
        self._rx.start()
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))

    def _receive(self) -> None:
        while not self._done.is_set():
            try:
                self.msgs.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self._done.set()
        self._rx.join(5)
        self.sock.close()

