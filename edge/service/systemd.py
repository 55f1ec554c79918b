"""systemd service notifications (``sd_notify``) without any dependency.

The service runs as ``Type=notify`` with ``WatchdogSec``: the runtime tells systemd when
it is ready, pings the watchdog from its main loop, reports a one-line status (shown by
``systemctl status``) and announces its shutdown. Every function here is a silent no-op
when ``NOTIFY_SOCKET`` is unset (a terminal, a test, a container without systemd), so the
runtime can call them unconditionally.

The protocol (``man sd_notify``): one datagram of newline-separated ``KEY=VALUE``
assignments on the ``AF_UNIX`` ``SOCK_DGRAM`` socket named by ``NOTIFY_SOCKET``; a name
starting with ``@`` is in the Linux abstract namespace (the ``@`` stands for a NUL byte).

Typical use in the runtime::

    from edge.service import systemd

    interval = systemd.watchdog_interval_s()       # None: no watchdog configured
    systemd.notify_ready("running, backend=tensorrt")
    while running:
        process_one_frame()
        if interval and time.monotonic() - last_ping > interval / 2:
            systemd.notify_watchdog()
    systemd.notify_stopping()

Ping from the loop that does the work (not from a helper thread): a hung pipeline must
stop the pings so that systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

__all__ = [
    "notify",
    "notify_extend_timeout",
    "notify_ready",
    "notify_status",
    "notify_stopping",
    "notify_watchdog",
    "notify_watchdog_trigger",
    "watchdog_interval_s",
]

# systemd truncates STATUS= text in `systemctl status`; keep it to one readable line.
_MAX_STATUS_CHARS = 200


def _socket_address(value: str) -> str | bytes | None:
    """Address to ``sendto`` for a ``NOTIFY_SOCKET`` value, or None if unusable."""
    if not value:
        return None
    if value.startswith("@"):
        # Abstract namespace: leading NUL, no file in the file system.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    # vsock:... and other exotic forms are for VMs/containers, not for the appliance.
    log.debug("NOTIFY_SOCKET %r not supported (only path and abstract sockets)", value)
    return None


def _clean(value: str) -> str:
    """One line: sd_notify assignments are newline separated."""
    return " ".join(str(value).split())


def notify(state: str | Mapping[str, object], *,
           environ: Mapping[str, str] | None = None) -> bool:
    """Send one notification datagram to systemd.

    Parameters
    ----------
    state : str or mapping
        Either the raw message (``"READY=1\\nSTATUS=running"``) or a mapping of
        assignments (``{"READY": 1, "STATUS": "running"}``); values are made one-line.
    environ : mapping, optional
        Environment to read ``NOTIFY_SOCKET`` from (default ``os.environ``).

    Returns
    -------
    bool
        True if the datagram was sent; False when ``NOTIFY_SOCKET`` is unset or
        unusable or sending failed (logged at DEBUG: never fatal for the service).
    """
    env = os.environ if environ is None else environ
    address = _socket_address(env.get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    if isinstance(state, Mapping):
        message = "\n".join(f"{k}={_clean(str(v))}" for k, v in state.items())
    else:
        message = state
    if not message:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never block the pipeline on a notify socket nobody reads (a full queue
            # raises BlockingIOError, an OSError: logged and reported as not sent).
            sock.setblocking(False)
            sock.sendto(message.encode("utf-8"), address)
    except OSError as exc:
        log.debug("sd_notify to %r failed: %s", env.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def notify_ready(status: str | None = None) -> bool:
    """Tell systemd the service finished starting (``READY=1``), with an optional status."""
    fields: dict[str, object] = {"READY": 1}
    if status:
        fields["STATUS"] = _clean(status)[:_MAX_STATUS_CHARS]
    return notify(fields)


def notify_reloading(status: str | None = None) -> bool:
    """Announce a configuration reload (``RELOADING=1`` with ``MONOTONIC_USEC``, as
    ``Type=notify-reload`` expects); ``READY=1`` follows when the reload is done."""
    fields: dict[str, object] = {"RELOADING": 1,
                                 "MONOTONIC_USEC": time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                                 // 1000}
    if status:
        fields["STATUS"] = _clean(status)[:_MAX_STATUS_CHARS]
    return notify(fields)


def notify_watchdog() -> bool:
    """Keep-alive ping (``WATCHDOG=1``); send at least every ``watchdog_interval_s() / 2``."""
    return notify({"WATCHDOG": 1})


def notify_watchdog_trigger() -> bool:
    """Ask systemd to act as if the watchdog expired (``WATCHDOG=trigger``): restart us."""
    return notify({"WATCHDOG": "trigger"})


def notify_stopping(status: str | None = None) -> bool:
    """Announce an orderly shutdown (``STOPPING=1``), with an optional status."""
    fields: dict[str, object] = {"STOPPING": 1}
    if status:
        fields["STATUS"] = _clean(status)[:_MAX_STATUS_CHARS]
    return notify(fields)


def notify_status(text: str) -> bool:
    """Free-form one-line status shown by ``systemctl status`` (``STATUS=...``)."""
    return notify({"STATUS": _clean(text)[:_MAX_STATUS_CHARS]})


def notify_extend_timeout(seconds: float) -> bool:
    """Extend the current start/stop timeout by ``seconds`` (``EXTEND_TIMEOUT_USEC``).

    Useful during a long start-up step (e.g. a first TensorRT engine build run by the
    main process): each call pushes the deadline ``seconds`` past *now*.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    return notify({"EXTEND_TIMEOUT_USEC": int(seconds * 1_000_000)})


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Watchdog timeout configured by systemd for this process, in seconds.

    Reads ``WATCHDOG_USEC`` (set when the unit has ``WatchdogSec``) and, if present,
    ``WATCHDOG_PID``, which must name this process (otherwise the watchdog is meant for
    another process, e.g. the parent of a forked child).

    Returns
    -------
    float or None
        The full timeout in seconds (ping at least twice per interval), or None when no
        watchdog applies to this process or the variables are malformed.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "").strip()
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID", "").strip()
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            log.debug("WATCHDOG_PID %r is not a number", pid)
            return None
    try:
        value = int(usec)
    except ValueError:
        log.debug("WATCHDOG_USEC %r is not a number", usec)
        return None
    if value <= 0:
        return None
    return value / 1_000_000
