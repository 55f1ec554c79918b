"""Optional Prometheus text endpoint (``/metrics``) on a loopback port. Off by default.

A small stdlib ``http.server`` in a daemon thread; every scrape calls a *collect*
callback that returns the service's :class:`~edge.service.snapshot.StatusSnapshot` (the one the
pipeline published last, the same ``status.json`` and the MQTT health show), which
:func:`render_metrics` turns into the Prometheus text exposition format (version 0.0.4).

Every metric is named after the snapshot field it shows, ``crystal_edge_<field>``
(a field of ``last_batch``: ``crystal_edge_last_batch_<field>``); a field that is a
mapping becomes one sample per key, with the label in :data:`METRICS`. Fields that are
null (``last_batch_x50_3_um`` before the first batch) are absent rather than 0.
``crystal_edge_info{backend,software_version,device_id} 1`` carries the identity.

Bound to loopback only (``127.0.0.0/8``, ``::1``, ``localhost``): scrape it on the device
(node exporter textfile, a local Prometheus agent) or through an SSH tunnel; exposing it
to the plant network is a firewall decision this module does not make.

The endpoint cannot starve the service: every connection has a socket timeout
(``request_timeout_s``, so an idle or stalled client is closed), and at most
``max_connections`` are served at once, each by its own thread. A connection beyond that
is answered ``503`` and closed by the accepting thread itself, without a thread, so a
flood of connections costs at most ``max_connections`` threads and file handles.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.service.snapshot import StatusSnapshot

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE", "METRICS", "MetricsConfig", "MetricsServer", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "crystal_edge_"


class MetricsConfig(BaseModel):
    """The ``[metrics]`` section: the optional Prometheus endpoint."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="serve /metrics (off by default)")
    host: str = Field("127.0.0.1", description="loopback address to bind (127.0.0.0/8, ::1 "
                                               "or localhost); never a plant-network address")
    port: int = Field(9464, ge=0, le=65535, description="TCP port (0: any free port)")
    request_timeout_s: float = Field(
        5.0, gt=0, le=60,
        description="seconds a client may take to send its request (and between keep-alive "
                    "requests) before the connection is closed")
    max_connections: int = Field(
        8, ge=1, le=64,
        description="connections served at once (one thread each); further connections "
                    "get 503 and are closed at once")

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        if value == "localhost":
            return value
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or 'localhost'") from None
        if not addr.is_loopback:
            raise ValueError(f"{value!r} is not a loopback address: the endpoint has no "
                             "authentication; use 127.0.0.1 and an SSH tunnel or local agent")
        return value


METRICS: tuple[tuple[str, str, str | None], ...] = (
    # snapshot field (``a.b``: field b of a), Prometheus type, label of a mapping's keys
    ("frames_total", "counter", None),
    ("frames_used_total", "counter", None),
    ("frames_rejected_total", "counter", "reason"),
    ("frames_per_s", "gauge", None),
    ("queue_depths", "gauge", "queue"),
    ("current_batch_id", "gauge", None),
    ("current_batch_frames", "gauge", None),
    ("batches_total", "counter", None),
    ("batches_published", "counter", None),
    ("batches_failed", "counter", None),
    ("last_batch_id", "gauge", None),
    ("last_batch.x50_3_um", "gauge", None),
    ("last_batch.s_lnd", "gauge", None),
    ("last_batch.crystals", "gauge", None),
    ("outbox_depth", "gauge", None),
    ("uptime_s", "gauge", None),
    ("healthy", "gauge", None),
)
"""What ``/metrics`` shows; the help text is the field's description."""


def _field(snapshot: StatusSnapshot, path: str) -> tuple[Any, str]:
    """(value, description) of a snapshot field ``path`` (None when absent)."""
    obj: Any = snapshot
    for part in path.split("."):
        if obj is None:
            return None, ""
        desc = type(obj).model_fields[part].description or ""
        obj = getattr(obj, part)
    return obj, desc


def _number(value: Any) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return None


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(snapshot: StatusSnapshot | Mapping[str, Any]) -> str:
    """Prometheus text format of a status snapshot (see the module docstring); a mapping
    is read as ``status.json`` is (:meth:`StatusSnapshot.from_mapping`)."""
    if not isinstance(snapshot, StatusSnapshot):
        snapshot = StatusSnapshot.from_mapping(snapshot)
    lines: list[str] = []
    for path, kind, label in METRICS:
        value, help_text = _field(snapshot, path)
        samples: list[tuple[str, str]] = []
        if isinstance(value, Mapping):
            for lab in sorted(value, key=str):
                num = _number(value[lab])
                if num is not None:
                    samples.append((f'{{{label}="{_label(lab)}"}}', num))
        elif (num := _number(value)) is not None:
            samples.append(("", num))
        if not samples and not (isinstance(value, Mapping) and kind == "counter"):
            continue
        full = PREFIX + path.replace(".", "_")
        lines.append(f"# HELP {full} {' '.join(help_text.split())}")
        lines.append(f"# TYPE {full} {kind}")
        lines.extend(f"{full}{labels} {num}" for labels, num in samples)
    info = {"backend": snapshot.backend.get("name"),
            "software_version": snapshot.software_version, "device_id": snapshot.device_id}
    info = {k: v for k, v in info.items() if v}
    if info:
        labels = ",".join(f'{k}="{_label(v)}"' for k, v in info.items())
        lines += [f"# HELP {PREFIX}info Static facts about the running service.",
                  f"# TYPE {PREFIX}info gauge", f"{PREFIX}info{{{labels}}} 1"]
    return "\n".join(lines) + "\n" if lines else ""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        # StreamRequestHandler applies ``timeout`` to the socket: an idle or stalled
        # client raises TimeoutError in the read, which ends this connection.
        self.timeout = self.server.request_timeout_s
        super().setup()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body = render_metrics(self.server.collect()).encode()
            except Exception as exc:  # the runtime's callback failed: say so, keep serving
                log.warning("metrics collection failed: %s", exc)
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"collect failed: {exc}\n".encode(),
                           "text/plain; charset=utf-8")
                return
            self._send(HTTPStatus.OK, body, CONTENT_TYPE)
        elif path == "/":
            self._send(HTTPStatus.OK, b"crystal-edge metrics: /metrics\n",
                       "text/plain; charset=utf-8")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        self._send(HTTPStatus.OK if self.path.split("?", 1)[0] in ("/", "/metrics")
                   else HTTPStatus.NOT_FOUND, b"", CONTENT_TYPE, head=True)

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, *, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s: " + format, self.address_string(), *args)


_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy\n")


class _Server(ThreadingHTTPServer):
    """Threading server with a cap on concurrent connections (see the module docstring)."""

    daemon_threads = True
    allow_reuse_address = True
    # A burst of connections waits in the kernel's queue, not in a SYN retry.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], collect: Callable[[], StatusSnapshot],
                 family: int, *, max_connections: int, timeout_s: float) -> None:
        self.address_family = family
        self.collect = collect
        self.request_timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            _refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: the slot and the socket are ours to free
            self._slots.release()
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _refuse(sock: socket.socket) -> None:
    """Answer 503 without blocking and close: the accepting thread must not wait."""
    try:
        sock.setblocking(False)
        sock.send(_BUSY_RESPONSE)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


class MetricsServer:
    """Serve ``/metrics`` from ``collect()`` in a background thread.

    Parameters
    ----------
    collect : callable
        Returns the :class:`~edge.service.snapshot.StatusSnapshot` to show; called on every
        scrape from the server's thread, so it must be thread-safe and must not block
        (the pipeline's ``latest_snapshot``).
    config : MetricsConfig, optional
        Host, port, request timeout and connection cap (``enabled`` is the caller's
        decision; :meth:`start` always starts).

    Examples
    --------
    >>> srv = MetricsServer(lambda: StatusSnapshot(frames_total=3),
    ...                     config=MetricsConfig(port=0))
    >>> port = srv.start()  # doctest: +SKIP
    >>> srv.stop()          # doctest: +SKIP
    """

    def __init__(self, collect: Callable[[], StatusSnapshot], *,
                 config: MetricsConfig | None = None) -> None:
        self.config = config or MetricsConfig()
        self._collect = collect
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The bound port (after :meth:`start`), else None."""
        return None if self._server is None else int(self._server.server_address[1])

    @property
    def url(self) -> str | None:
        if self._server is None:
            return None
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> int:
        """Bind and serve; returns the port. OSError (e.g. port in use) propagates."""
        if self._server is not None:
            return int(self.port or 0)
        host = "127.0.0.1" if self.config.host == "localhost" else self.config.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = _Server((host, self.config.port), self._collect, family,
                               max_connections=self.config.max_connections,
                               timeout_s=self.config.request_timeout_s)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics endpoint listening", extra={"url": self.url})
        return int(self.port or 0)

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
