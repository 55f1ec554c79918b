"""The operators' page of a real ``crystal-edge run`` process, opened in headless Chromium:
the DOM after the page's scripts ran holds the overlay image, the current x50,3 and the
three charts; the screenshot is kept in the test's folder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.edge.sources.helpers import write_config
from tests.edge.web.helpers import SYNTHETIC, free_port, http, web_section
from tests.faults.conftest import ServiceProcess, wait_until

OPTICS = ('\n[optics]\npx_size_um = 1.45\ncalibrated_at = 2026-11-30T09:15:00Z\n'
          'calibration = "stage micrometer 10 um lines, +-0.3 %"\n')
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def _chromium(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1400,1700", "--virtual-time-budget=4000", *args],
        check=False, capture_output=True, text=True, timeout=timeout)


def test_page_in_a_real_browser_shows_frame_x50_and_charts(workdir, tiny_model, tmp_path):
    port = free_port()
    write_config(workdir / "config.toml", model=tiny_model, batch_frames=4, source=SYNTHETIC,
                 extra=web_section(port) + OPTICS)
    svc = ServiceProcess(workdir)
    base = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: len(json.loads(http(base + "api/batches")[1] or b"[]")) >= 3
                   if "operators' page on" in svc.log() else False, 60,
                   f"3 batches on the page\n{svc.log()[-2000:]}", interval=0.3)
        dom = _chromium("--dump-dom", base).stdout
        shot = tmp_path / "page.png"
        _chromium(f"--screenshot={shot}", base)
        batches = json.loads(http(base + "api/batches")[1])
    finally:
        assert svc.stop() == 0, svc.log()[-3000:]
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    # the overlay came back as an image the browser decoded (its width set by the script)
    m = re.search(r'<img id="frame"[^>]*>', dom)
    assert m and "api/frames/latest.jpg" in m[0] and re.search(r'data-width="\d+"', m[0]), m
    # the current x50,3: one of the batches the service had published by then
    x50 = re.search(r'<span id="x50">([^<]*)</span>', dom)[1]
    assert x50 in {f"{b['statistics']['x50_3_um']:.1f}" for b in batches}, (x50, dom[:500])
    # three uPlot charts drawn with data
    for chart in ("chart-q3", "chart-trend", "chart-process"):
        div = re.search(rf'<div id="{chart}"[^>]*data-points="(\d+)"[^>]*>(.*?)<canvas', dom,
                        re.S)
        assert div and int(div[1]) >= 2 and 'class="uplot' in div[2], chart
    assert "onnxruntime" in dom  # health: the backend
    # the pixel size with its calibration
    assert "1.4500" in dom and "2026-11-30 09:15 UTC" in dom and "stage micrometer" in dom
