"""The kiosk bookmark of docs/web.md, `http://device:8080/?token=TOKEN`: the page's own
script and styles are fetched with the token too, so the page draws (without it they got
401 with a Basic challenge and the browser asked for a password instead). Real server with
a token file, headless Chromium; without the token everything stays 401."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from edge.service.snapshot import StatusSnapshot
from edge.web.app import WebContext
from edge.web.config import WebConfig
from edge.web.server import WebServer
from edge.web.tap import FrameTap
from tests.edge.web.helpers import http, write_token

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def test_kiosk_bookmark_with_token_loads_the_page(tmp_path):
    token = write_token(tmp_path / "token")
    ctx = WebContext(snapshot=StatusSnapshot, tap=FrameTap(), history=None,
                     config=WebConfig(enabled=True, port=0, token_file=tmp_path / "token"),
                     info={"device_id": "skid-07", "px_size_um": 1.45})
    with WebServer(ctx) as srv:
        base = f"http://127.0.0.1:{srv.port}/"
        assert http(base + "static/page.js")[0] == 401
        try:
            dom = subprocess.run(
                [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                 "--virtual-time-budget=3000", "--dump-dom", f"{base}?token={token}"],
                check=False, capture_output=True, text=True, timeout=30).stdout
        except subprocess.TimeoutExpired:
            pytest.fail("the browser hung on a password prompt: static files got 401")
    # the script ran: it filled the device name and the pixel size from /api/info
    assert "skid-07" in dom and "1.4500" in dom, dom[-2000:]
