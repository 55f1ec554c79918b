"""A flood of idle connections on the metrics port cannot starve the service.

300 idle TCP connections to ``/metrics`` (the review exhausted the file handles with 249):
the folder source keeps measuring and batches keep arriving, a real scrape succeeds within
the request timeout, the service's open file handles and threads stay bounded by
``[metrics] max_connections``, and the server closes every idle connection within the
timeout. Then ``kill -9``: ``crystal-edge status --check`` says the process is gone.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge.service.metrics import MetricsConfig
from tests.faults.conftest import jsonl_batches, wait_until, write_config, write_frames
from tests.faults.test_status_truth import status_check

pytest.importorskip("onnxruntime")

FLOOD = 300
TIMEOUT_S = MetricsConfig().request_timeout_s  # the defaults are what is tested
MAX_CONN = MetricsConfig().max_connections
#: fds beyond the handler sockets (a scrape, a frame file being read, SQLite journals)
FD_SLACK = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line")


def _scrape(port: int) -> bytes | None:
    """The /metrics body, or None while the server answers 503 (all slots busy)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read()
    except urllib.error.HTTPError as exc:
        assert exc.code == 503, exc
        return None
    except (ConnectionResetError, urllib.error.URLError):
        return None


def _wait_all_closed(socks: list[socket.socket], timeout: float) -> float:
    """Seconds until the server closed every socket (EOF or reset; a 503 first is fine)."""
    t0 = time.monotonic()
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_ = len(socks)
    while open_:
        left = timeout - (time.monotonic() - t0)
        assert left > 0, f"{open_} of {len(socks)} idle connections still open after {timeout} s"
        for key, _ in sel.select(left):
            try:
                data = key.fileobj.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                open_ -= 1
            else:
                assert data.startswith(b"HTTP/1.1 503"), data[:80]
    sel.close()
    return time.monotonic() - t0


def test_idle_connection_flood_does_not_starve_the_service(workdir, tiny_model,
                                                           service_factory):
    port = _free_port()
    write_config(workdir / "config.toml", model=tiny_model,
                 extra=f"\n[metrics]\nenabled = true\nport = {port}\n")
    write_frames(workdir / "in", [f"a{i}.png" for i in range(3)])
    svc = service_factory()
    out = workdir / "out.jsonl"
    wait_until(lambda: len(jsonl_batches(out)) >= 1, 40, "the first batch")
    wait_until(lambda: _scrape(port), 10, "a first scrape")
    fds_before, threads_before = _fd_count(svc.pid), _threads(svc.pid)

    t_flood = time.monotonic()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(FLOOD)]
    t_opened = time.monotonic() - t_flood
    try:
        # the folder source keeps measuring while the flood holds the port
        write_frames(workdir / "in", [f"b{i}.png" for i in range(3)], seed=7, t0=time.time())
        t_written = time.monotonic()
        peak_fds = peak_threads = 0

        def progress() -> bool:
            nonlocal peak_fds, peak_threads
            peak_fds = max(peak_fds, _fd_count(svc.pid))
            peak_threads = max(peak_threads, _threads(svc.pid))
            return len(jsonl_batches(out)) >= 2

        wait_until(progress, 30, "a batch closed during the flood")
        t_batch = time.monotonic() - t_written
        body = wait_until(lambda: _scrape(port), TIMEOUT_S + 5, "a scrape during the flood")
        t_scrape = time.monotonic() - t_flood
        assert b"crystal_edge_batches_total" in body
        peak_fds = max(peak_fds, _fd_count(svc.pid))
        t_closed = _wait_all_closed(socks, TIMEOUT_S + 5) + (time.monotonic() - t_flood)
    finally:
        for s in socks:
            s.close()
    print(f"\nflood of {FLOOD}: opened in {t_opened:.2f} s; service fds {fds_before} -> peak "
          f"{peak_fds}, threads {threads_before} -> peak {peak_threads}; batch "
          f"{t_batch:.1f} s after its frames, scrape after {t_scrape:.1f} s, "
          f"all closed after {t_closed:.1f} s")
    assert peak_fds <= fds_before + MAX_CONN + FD_SLACK
    assert peak_threads <= threads_before + MAX_CONN + 2
    assert t_closed <= TIMEOUT_S + 5
    assert [b["batch_id"] for b in jsonl_batches(out)] == [1, 2]
    assert _fd_count(svc.pid) <= fds_before + FD_SLACK  # handler sockets released
    assert "Traceback" not in svc.log()

    # killed without a word: status must not call it running
    svc.signal(signal.SIGKILL)
    assert svc.wait(10) == -signal.SIGKILL
    rc, line = status_check(workdir / "state")
    assert rc == 1 and line == f"DOWN: service not running: pid {svc.pid} from status.json "\
        "is gone", line
    print(f"status --check after kill -9: {line!r}")


def test_a_metrics_port_another_process_holds_costs_the_endpoint_not_the_service(
        workdir, tiny_model, service_factory):
    """The metrics port is taken (an old process lingering): one ERROR line naming
    ``metrics.port``, no traceback, ``last_error`` in status.json, and the frames are
    measured and delivered all the same."""
    import json

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        write_config(workdir / "config.toml", model=tiny_model, batch_frames=2,
                     extra=f"\n[metrics]\nenabled = true\nport = {port}\n")
        write_frames(workdir / "in", ["a.png", "b.png"])
        svc = service_factory()
        wait_until(lambda: len(jsonl_batches(workdir / "out.jsonl")) == 1, 30,
                   "the batch delivered although the metrics port is taken")
        status_file = workdir / "state" / "status.json"
        status = wait_until(lambda: status_file.exists() and json.loads(
            status_file.read_text()), 10, "status.json")
        assert svc.stop() == 0
    log = svc.log()
    lines = [ln for ln in log.splitlines() if f"metrics.port {port}" in ln]
    assert len(lines) == 1 and "level=ERROR" in lines[0], log
    assert "Traceback" not in log
    assert f"metrics.port {port}" in (status.get("last_error") or "")
