"""The page's routes: one HTML page, its static files and read-only JSON/PNG endpoints.

=============================== ====================================================
``/``                           the page (``static/index.html``; its script draws it)
``/static/<file>``              script, style and the vendored uPlot (MIT)
``/api/status``                 the service's :class:`~edge.service.snapshot.StatusSnapshot`
                                as published last (the same object as ``status.json``)
``/api/info``                   device, pixel size and its calibration, page settings
``/api/batches?limit=N&hours=H`` the newest ``N`` batch payloads (of the last ``H`` hours)
                                from the batch history, oldest first
``/api/trend?hours=H``          one trend row per batch of the last ``H`` hours
                                (:func:`edge.web.payloads.trend_row`), oldest first
``/api/frames/latest.png``      the latest frame with its segmentation overlay (404 before
                                the first frame); ``latest.jpg`` the same as JPEG (the page's)
``/api/rejected``               last rejected frames by reason, and counts since start
``/api/rejected/<reason>/<i>.png`` thumbnail of one of them
=============================== ====================================================

The history is read again only when its file changed (a new batch), so a page refreshing
every second costs a file ``stat``, not a database read, between batches.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape as html_escape
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edge.service.snapshot import StatusSnapshot
from edge.sinks.history import read_history
from edge.web.auth import ReadOnlyAuth
from edge.web.config import WebConfig
from edge.web.payloads import batch_end_s, trend_row
from edge.web.tap import FrameTap

__all__ = ["WebContext", "build_app"]

_NO_STORE = {"Cache-Control": "no-store"}


@dataclass
class WebContext:
    """What the routes read: all of it owned by the service, none of it changed here."""

    snapshot: Callable[[], StatusSnapshot]
    tap: FrameTap
    history: Path | None
    config: WebConfig = field(default_factory=WebConfig)
    info: dict[str, Any] = field(default_factory=dict)


class HistoryCache:
    """The newest ``limit`` payloads of a history file and their trend rows, read again
    only when the file (or its write-ahead log) changed."""

    def __init__(self, path: Path | None, *, limit: int) -> None:
        self.path = path
        self.limit = limit
        self._key: tuple[int, ...] | None = None
        self._rows: list[tuple[float, dict[str, Any], dict[str, Any]]] = []
        self.reads = 0
        self._lock = threading.Lock()

    def _signature(self) -> tuple[int, ...]:
        assert self.path is not None
        sig: list[int] = []
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                st = p.stat()
                sig += [st.st_mtime_ns, st.st_size]
            except OSError:
                sig += [0, 0]
        return tuple(sig)

    def rows(self, since: float | None = None) -> list[tuple[float, dict[str, Any],
                                                             dict[str, Any]]]:
        """``(end time, payload, trend row)`` per batch ending at or after ``since``."""
        if self.path is None:
            return []
        with self._lock:
            key = self._signature()
            if key != self._key:
                payloads = read_history(self.path, limit=self.limit)
                self._rows = [(batch_end_s(p) or 0.0, p, trend_row(p)) for p in payloads]
                self._key = key
                self.reads += 1
            rows = self._rows
        return [r for r in rows if since is None or r[0] >= since]


def _int_param(request: Request, name: str, default: int, hi: int) -> int:
    try:
        return max(1, min(hi, int(request.query_params.get(name, default))))
    except ValueError:
        return default


def _float_param(request: Request, name: str) -> float | None:
    try:
        v = float(request.query_params[name])
    except (KeyError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _png(data: bytes | None, what: str, media_type: str = "image/png") -> Response:
    if data is None:
        return Response(f"no {what} yet\n", 404, media_type="text/plain", headers=_NO_STORE)
    return Response(data, media_type=media_type, headers=_NO_STORE)


class Endpoints:
    """The handlers of the routes (see the module docstring); they only read."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.cache = HistoryCache(ctx.history, limit=ctx.config.max_batches)
        self.static = resources.files("edge.web") / "static"

    async def index(self, request: Request) -> Response:
        html = (self.static / "index.html").read_text(encoding="utf-8")
        token = request.query_params.get("token")
        if token:
            # a kiosk bookmark `/?token=...`: the page's own script and styles need the
            # token as well (the middleware has checked it), or the browser is asked for
            # a password instead of loading the page
            q = "?token=" + html_escape(quote(token, safe=""))
            html = re.sub(r'((?:src|href)="static/[^"?]+)"', lambda m: m[1] + q + '"', html)
        return Response(html, media_type="text/html", headers=_NO_STORE)

    async def status(self, _: Request) -> Response:
        return JSONResponse(self.ctx.snapshot().to_json(), headers=_NO_STORE)

    async def info(self, _: Request) -> Response:
        cfg = self.ctx.config
        return JSONResponse({**self.ctx.info, "refresh_s": cfg.refresh_s,
                             "trend_hours": cfg.trend_hours}, headers=_NO_STORE)

    @staticmethod
    def _since(request: Request) -> float | None:
        hours = _float_param(request, "hours")
        return None if hours is None else time.time() - hours * 3600.0

    async def batches(self, request: Request) -> Response:
        most = self.ctx.config.max_batches
        limit = _int_param(request, "limit", most, most)
        rows = await run_in_threadpool(self.cache.rows, self._since(request))
        return JSONResponse([p for _, p, _ in rows[-limit:]], headers=_NO_STORE)

    async def trend(self, request: Request) -> Response:
        rows = await run_in_threadpool(self.cache.rows, self._since(request))
        return JSONResponse([t for _, _, t in rows], headers=_NO_STORE)

    async def latest(self, request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in ("png", "jpg"):
            return Response("not found\n", 404, media_type="text/plain")
        data = await run_in_threadpool(self.ctx.tap.latest_image, fmt)
        return _png(data, "frame", "image/png" if fmt == "png" else "image/jpeg")

    async def rejected(self, _: Request) -> Response:
        counts = self.ctx.snapshot().frames_rejected_total
        return JSONResponse({"counts": counts, "frames": self.ctx.tap.rejected_list()},
                            headers=_NO_STORE)

    async def thumb(self, request: Request) -> Response:
        reason, index = request.path_params["reason"], request.path_params["index"]
        data = await run_in_threadpool(self.ctx.tap.thumbnail_png, reason, index)
        return _png(data, "such rejected frame")


def build_app(ctx: WebContext, *, token: str | None = None) -> ReadOnlyAuth:
    """The ASGI application of the page (see the module docstring), behind
    :class:`~edge.web.auth.ReadOnlyAuth`."""
    e = Endpoints(ctx)
    get = ["GET", "HEAD"]
    routes = [
        Route("/", e.index, methods=get),
        Route("/api/status", e.status, methods=get),
        Route("/api/info", e.info, methods=get),
        Route("/api/batches", e.batches, methods=get),
        Route("/api/trend", e.trend, methods=get),
        Route("/api/frames/latest.{fmt:str}", e.latest, methods=get),
        Route("/api/rejected", e.rejected, methods=get),
        Route("/api/rejected/{reason}/{index:int}.png", e.thumb, methods=get),
        Mount("/static", StaticFiles(directory=str(e.static)), name="static"),
    ]
    return ReadOnlyAuth(Starlette(routes=routes), token=token)
