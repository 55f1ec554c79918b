"""A batch whose frames were all rejected (blank, defocused, ...) carries Q3 = 0 in every
class. The page's Q3 chart draws the distributions of the batches that have one; the
empty batch is not drawn as a flat line at 0 (which reads as "everything coarser than the
grid"). Real history file, the page's real server, headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import timedelta

import pytest

from edge.service.snapshot import StatusSnapshot
from edge.sinks.history import HistorySink
from edge.web.app import WebContext
from edge.web.config import WebConfig
from edge.web.server import WebServer
from edge.web.tap import FrameTap
from tests.edge.web.test_history_trend import NOW, payload

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def _empty(batch_id: int, end) -> dict:
    p = payload(batch_id, end, 30.0)
    p["frames"] = {"used": 0, "rejected": 4, "rejected_by_reason": {"blank": 4}}
    p["crystals"] = {"measured": 0, "rejected": 0, "rejected_by_reason": {}}
    p["statistics"] = {k: None for k in p["statistics"]}
    p["lognormal"] = None
    p["classes"] = {"upper_edges_um": [10.0, 20.0, 30.0], "q3": [0.0] * 3, "Q3": [0.0] * 3}
    p["process"] = None
    return p


def test_q3_chart_leaves_out_a_batch_without_crystals(tmp_path):
    sink = HistorySink(state_dir=tmp_path)
    sink.add(payload(1, NOW - timedelta(minutes=2), 20.0))
    sink.add(payload(2, NOW - timedelta(minutes=1), 25.0))
    sink.add(_empty(3, NOW))
    sink.close()
    ctx = WebContext(snapshot=StatusSnapshot, tap=FrameTap(), history=sink.path,
                     config=WebConfig(enabled=True, port=0))
    with WebServer(ctx) as srv:
        dom = subprocess.run(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--virtual-time-budget=4000", "--dump-dom", f"http://127.0.0.1:{srv.port}/"],
            check=False, capture_output=True, text=True, timeout=60).stdout
    div = re.search(r'<div id="chart-q3"[^>]*>', dom)
    assert div, dom[:2000]
    assert 'data-batches="1,2"' in div[0], div[0]
