"""Shared tools for the fault-injection suite (``tests/faults/``).

Every test here drives the real service: ``crystal-edge run`` as a subprocess
(:class:`ServiceProcess`) or :func:`tests.edge.sources.helpers.running_service` in a
thread, a real Mosquitto (:func:`broker`), real files in a real state directory and real
signals. Each test states the time within which the service must have recovered or
exited non-zero, and checks that every batch accepted before the fault arrives after it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.sinks.jsonl import read_jsonl
from tests.edge.mqtt.conftest import Broker, broker, make_broker  # noqa: F401 (fixtures)
from tests.edge.sources.helpers import write_config, write_frames  # noqa: F401
from tests.fixtures.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("fault-model"))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run directory with ``in/`` (watched folder); state goes to ``state/``."""
    monkeypatch.delenv("CRYSTAL_EDGE_STATE_DIR", raising=False)
    (tmp_path / "in").mkdir()
    return tmp_path


def wait_until(cond: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    """Poll ``cond`` until truthy (returned) or fail naming ``what`` after ``timeout`` s."""
    t_end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= t_end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def jsonl_batches(path: Path) -> list[dict[str, Any]]:
    """Records in a JSON-lines sink file (rotated files not included), read as any
    reader of a live file reads it: a line still being written is not one yet."""
    if not path.exists():
        return []
    return read_jsonl(path, type_=None)


class ServiceProcess:
    """``crystal-edge run --config CONFIG`` as a real process, log captured to a file.

    stderr/stdout go to ``<workdir>/service.log`` (read it with :meth:`log`), so a test can
    wait for a log line while the process runs. :meth:`peak_rss_mb` is the process's peak
    resident memory (``VmHWM``, polled while it runs; ``ru_maxrss`` would include the
    forking test process's memory, which it keeps across exec).
    """

    def __init__(self, workdir: Path, *, config: str = "config.toml",
                 env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.log_path = workdir / "service.log"
        self._log = open(self.log_path, "ab")
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        full_env.pop("CRYSTAL_EDGE_STATE_DIR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(workdir / config),
             *args], cwd=workdir, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        self.peak_kb = 0
        self._stop_watch = threading.Event()
        self._watch = threading.Thread(target=self._watch_memory, daemon=True)
        self._watch.start()

    def _watch_memory(self) -> None:
        status = Path(f"/proc/{self.proc.pid}/status")
        while not self._stop_watch.is_set() and self.proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except OSError:
                break
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float) -> str:
        """Wait until ``text`` appears in the log; returns the log."""
        return wait_until(lambda: text in self.log() and self.log(), timeout,
                          f"{text!r} in the service log:\n{self.log()[-3000:]}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Exit status within ``timeout`` s (fails the test if it is still running)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the service did not exit within {timeout:g} s:\n"
                                 f"{self.log()[-3000:]}") from None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM as systemd sends it; the exit status (killed after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"SIGTERM did not stop the service within "
                                     f"{timeout:g} s:\n{self.log()[-3000:]}") from None
        self._stop_watch.set()
        self._log.close()
        return self.proc.returncode

    def peak_rss_mb(self) -> float:
        return self.peak_kb / 1024.0


@pytest.fixture
def service_factory(workdir: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start ``crystal-edge run`` processes in ``workdir``; all are stopped at the end."""
    made: list[ServiceProcess] = []

    def start(**kw: Any) -> ServiceProcess:
        sp = ServiceProcess(workdir, **kw)
        made.append(sp)
        return sp

    yield start
    for sp in made:
        if sp.proc.poll() is None:
            sp.proc.kill()
            sp.proc.wait(10)
        sp._stop_watch.set()

