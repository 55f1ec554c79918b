"""A page left open at the skid shows the pixel size the service runs with now: after a
reload with a new calibration (`crystal-edge calibrate --write-config`, SIGHUP) the page's
pixel-size panel follows without the browser being reloaded. The page's real server and
headless Chromium; the service's page information changes after the first request."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from edge.service.snapshot import StatusSnapshot
from edge.web.app import WebContext
from edge.web.config import WebConfig
from edge.web.server import WebServer
from edge.web.tap import FrameTap

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


class Recalibrated(Mapping):
    """The page information: 1.45 um/px on the first read, 1.52 after (a reload)."""

    def __init__(self) -> None:
        self.reads = 0

    def _now(self) -> dict[str, Any]:
        if self.reads <= 1:
            return {"device_id": "skid", "px_size_um": 1.45}
        return {"device_id": "skid", "px_size_um": 1.52,
                "calibrated_at": "2026-12-01T14:21:08+00:00",
                "calibration": "stage micrometer 10 um divisions"}

    def keys(self):  # what {**info} reads first: one read of the information
        self.reads += 1
        return self._now().keys()

    def __getitem__(self, key: str) -> Any:
        return self._now()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._now())

    def __len__(self) -> int:
        return len(self._now())


def test_open_page_follows_a_new_calibration():
    info = Recalibrated()
    ctx = WebContext(snapshot=StatusSnapshot, tap=FrameTap(), history=None,
                     config=WebConfig(enabled=True, port=0, refresh_s=1.0), info=info)
    with WebServer(ctx) as srv:
        dom = subprocess.run(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--virtual-time-budget=6000", "--dump-dom", f"http://127.0.0.1:{srv.port}/"],
            check=False, capture_output=True, text=True, timeout=60).stdout
    assert info.reads >= 2, "the page read its information once"
    assert "1.5200" in dom and "stage micrometer 10 um divisions" in dom, dom[-3000:]
