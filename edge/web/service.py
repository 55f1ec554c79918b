"""Attach the page to a running pipeline: the frame tap into post-processing, the
snapshot and history as the service has them, the pixel size and its calibration."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.sinks.history import HISTORY_FILE
from edge.web.app import WebContext
from edge.web.server import WebServer
from edge.web.tap import FrameTap

if TYPE_CHECKING:
    from edge.service.config import EdgeConfig

log = logging.getLogger(__name__)

__all__ = ["page_info", "start_web"]


def page_info(cfg: EdgeConfig) -> dict[str, Any]:
    """Device and optics facts the page shows (the calibration when ``[optics]`` has it)."""
    optics = cfg.optics
    at = getattr(optics, "calibrated_at", None)
    return {"device_id": cfg.device_id(), "description": cfg.device.description,
            "px_size_um": optics.px_size_um,
            "calibrated_at": None if at is None else str(at.isoformat()
                                                         if hasattr(at, "isoformat") else at),
            "calibration": getattr(optics, "calibration", None),
            "history": bool(cfg.sinks.history.enabled)}


def start_web(cfg: EdgeConfig, pipeline: Any, state_dir: Path) -> WebServer | None:
    """Start the page for ``pipeline`` (before ``pipeline.start()``); None when it cannot
    listen: the page is a view, so a port another process holds costs the page (one
    ERROR, ``last_error`` in status), never the measurements."""
    web = cfg.web
    tap = FrameTap(interval_s=web.frame_interval_s, per_reason=web.rejected_thumbnails)
    history = state_dir / HISTORY_FILE if cfg.sinks.history.enabled else None
    server = WebServer(WebContext(snapshot=pipeline.latest_snapshot, tap=tap,
                                  history=history, config=web, info=page_info(cfg)))
    try:
        server.start()
    except OSError as exc:
        text = (f"web.port {web.port}: cannot listen on {web.host}: {exc.strerror or exc}; "
                "running without the operators' page")
        log.error("%s", text)
        pipeline.health.error("web", text)
        return None
    pipeline.frame_stages.tap = tap
    log.info("operators' page on %s", server.url)
    return server
