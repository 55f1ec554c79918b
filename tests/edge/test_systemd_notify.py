"""sd_notify over real AF_UNIX datagram sockets (path and abstract namespace)."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from edge.service import systemd


@pytest.fixture
def path_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def abstract_socket(monkeypatch):
    name = f"crystal-edge-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def _recv(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_with_status_on_path_socket(path_socket):
    assert systemd.notify_ready("running, backend=onnxruntime") is True
    assert _recv(path_socket) == {"READY": "1", "STATUS": "running, backend=onnxruntime"}


def test_all_messages_on_abstract_socket(abstract_socket):
    assert systemd.notify_watchdog()
    assert _recv(abstract_socket) == {"WATCHDOG": "1"}
    assert systemd.notify_status("batch 12 closed\nx50=85.1 um")
    # newline in the text would start a new assignment: it is folded into one line
    assert _recv(abstract_socket) == {"STATUS": "batch 12 closed x50=85.1 um"}
    assert systemd.notify_stopping("SIGTERM")
    assert _recv(abstract_socket) == {"STOPPING": "1", "STATUS": "SIGTERM"}
    assert systemd.notify_extend_timeout(90)
    assert _recv(abstract_socket) == {"EXTEND_TIMEOUT_USEC": "90000000"}
    assert systemd.notify_watchdog_trigger()
    assert _recv(abstract_socket) == {"WATCHDOG": "trigger"}


def test_status_is_truncated_to_one_short_line(path_socket):
    systemd.notify_status("x" * 1000)
    assert len(_recv(path_socket)["STATUS"]) == 200


def test_noop_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify_ready() is False
    assert systemd.notify_watchdog() is False
    assert systemd.notify_stopping() is False
    assert systemd.notify_status("x") is False


def test_unreachable_or_unsupported_socket_is_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert systemd.notify_ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert systemd.notify_ready() is False


def test_raw_message_and_explicit_environ(tmp_path):
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2.0)
        assert systemd.notify("READY=1\nMAINPID=42", environ={"NOTIFY_SOCKET": str(path)})
        assert sock.recv(100) == b"READY=1\nMAINPID=42"


def test_extend_timeout_rejects_non_positive():
    with pytest.raises(ValueError, match="seconds must be > 0"):
        systemd.notify_extend_timeout(0)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "abc"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(env, expected):
    assert systemd.watchdog_interval_s(env) == expected


def test_watchdog_interval_from_process_environment(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval_s() == 20.0
