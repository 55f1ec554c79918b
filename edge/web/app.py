"""The page's routes: one HTML page, its static files and read-only JSON/PNG endpoints.

=============================== ====================================================
``/``                           the page (``static/index.html``; its script draws it)
``/static/<file>``              script, style and the vendored uPlot (MIT)
``/api/status``                 the service's :class:`~edge.service.snapshot.StatusSnapshot`
                                as published last (the same object as ``status.json``)
``/api/info``                   device, pixel size and its calibration, page settings
``/api/batches?limit=N&hours=H`` the newest ``N`` batch payloads (of the last ``H`` hours)
                                from the batch history, oldest first
``/api/frames/latest.png``      the latest frame with its segmentation overlay (404 before
                                the first frame)
``/api/rejected``               last rejected frames by reason, and counts since start
``/api/rejected/<reason>/<i>.png`` thumbnail of one of them
=============================== ====================================================
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

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


def _png(data: bytes | None, what: str) -> Response:
    if data is None:
        return Response(f"no {what} yet\n", 404, media_type="text/plain", headers=_NO_STORE)
    return Response(data, media_type="image/png", headers=_NO_STORE)


def build_app(ctx: WebContext, *, token: str | None = None) -> ReadOnlyAuth:
    """The ASGI application of the page (see the module docstring), behind
    :class:`~edge.web.auth.ReadOnlyAuth`."""

    async def status(_: Request) -> Response:
        return JSONResponse(ctx.snapshot().to_json(), headers=_NO_STORE)

    async def info(_: Request) -> Response:
        cfg = ctx.config
        return JSONResponse({**ctx.info, "refresh_s": cfg.refresh_s,
                             "trend_hours": cfg.trend_hours}, headers=_NO_STORE)

    async def batches(request: Request) -> Response:
        limit = _int_param(request, "limit", ctx.config.max_batches, ctx.config.max_batches)
        hours = _float_param(request, "hours")
        since = None if hours is None else time.time() - hours * 3600.0
        rows = [] if ctx.history is None else await run_in_threadpool(
            read_history, ctx.history, since=since, limit=limit)
        return JSONResponse(rows, headers=_NO_STORE)

    async def latest(_: Request) -> Response:
        return _png(await run_in_threadpool(ctx.tap.latest_png), "frame")

    async def rejected(_: Request) -> Response:
        counts = ctx.snapshot().frames_rejected_total
        return JSONResponse({"counts": counts, "frames": ctx.tap.rejected_list()},
                            headers=_NO_STORE)

    async def thumb(request: Request) -> Response:
        reason = request.path_params["reason"]
        index = request.path_params["index"]
        return _png(await run_in_threadpool(ctx.tap.thumbnail_png, reason, index),
                    "such rejected frame")

    static = resources.files("edge.web") / "static"

    async def index(_: Request) -> Response:
        return Response((static / "index.html").read_bytes(), media_type="text/html",
                        headers=_NO_STORE)

    get = ["GET", "HEAD"]
    routes = [
        Route("/", index, methods=get),
        Route("/api/status", status, methods=get),
        Route("/api/info", info, methods=get),
        Route("/api/batches", batches, methods=get),
        Route("/api/frames/latest.png", latest, methods=get),
        Route("/api/rejected", rejected, methods=get),
        Route("/api/rejected/{reason}/{index:int}.png", thumb, methods=get),
        Mount("/static", StaticFiles(directory=str(static)), name="static"),
    ]
    return ReadOnlyAuth(Starlette(routes=routes), token=token)
