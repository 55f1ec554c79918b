"""Run the page in a thread of the service: uvicorn serving :func:`edge.web.app.build_app`.

The socket is bound in :meth:`WebServer.start`, in the caller's thread, so a port another
process holds raises ``OSError`` there (the service logs one ERROR and runs on without the
page, as it does for the metrics endpoint). uvicorn then serves that socket on its own
event loop in a daemon thread; it installs no signal handlers outside the main thread and
leaves the service's logging alone. :meth:`WebServer.stop` asks it to finish and joins.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from edge.web.app import WebContext, build_app
from edge.web.auth import read_token

log = logging.getLogger(__name__)

__all__ = ["WebServer"]


class WebServer:
    """The operators' page on ``[web] host:port`` (see the module docstring).

    Parameters
    ----------
    ctx : WebContext
        What the page shows (snapshot callable, frame tap, history file, settings).
    """

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        token = None
        if self.config.token_file is not None:
            token = read_token(self.config.token_file)
        self._app = build_app(ctx, token=token)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int | None:
        return None if self._sock is None else int(self._sock.getsockname()[1])

    @property
    def url(self) -> str | None:
        if self._sock is None:
            return None
        host = self.config.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def start(self) -> int:
        """Bind and serve; returns the port. OSError (e.g. port in use) propagates."""
        import uvicorn

        if self._sock is not None:
            return int(self.port or 0)
        host = "127.0.0.1" if self.config.host == "localhost" else self.config.host
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, self.config.port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        self._sock = sock
        config = uvicorn.Config(
            self._app, log_config=None, access_log=False, lifespan="off",
            limit_concurrency=self.config.max_connections, timeout_keep_alive=5,
            timeout_graceful_shutdown=2, server_header=False)
        self._server = uvicorn.Server(config)
        # uvicorn's start-up lines say nothing the service's own line does not
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="web-http", daemon=True)
        self._thread.start()
        return int(self.port or 0)

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> WebServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
