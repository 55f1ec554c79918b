"""Who may see the page and what it answers: credentials off loopback (refused at
start-up), token as Bearer, query or Basic password (401 without), GET/HEAD only (405),
a port another process holds (one ERROR, the service runs on), the overlay rate limit."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from edge.errors import UserError
from edge.service.snapshot import StatusSnapshot
from edge.web.app import WebContext
from edge.web.config import WebConfig
from edge.web.server import WebServer
from edge.web.tap import FrameTap
from tests.edge.sources.helpers import running_service, write_config
from tests.edge.web.helpers import SYNTHETIC, free_port, http, web_section, write_token
from tests.faults.conftest import ROOT, wait_until


def _server(tmp_path, *, token: bool = True, **cfg) -> tuple[WebServer, FrameTap, str]:
    tok = write_token(tmp_path / "token") if token else ""
    config = WebConfig(enabled=True, port=0, token_file=tmp_path / "token" if token else None,
                       **cfg)
    tap = FrameTap(interval_s=config.frame_interval_s,
                   per_reason=config.rejected_thumbnails)
    srv = WebServer(WebContext(snapshot=lambda: StatusSnapshot(frames_total=7), tap=tap,
                               history=tmp_path / "none", config=config))
    return srv, tap, tok


def test_non_loopback_host_without_token_is_refused_at_start_up(tmp_path, tiny_model):
    write_config(tmp_path / "config.toml", model=tiny_model, source=SYNTHETIC,
                 extra=web_section(free_port(), host="0.0.0.0"))
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", "config.toml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "[web] host '0.0.0.0' is not loopback" in lines[0], lines
    assert "token_file" in lines[0] and "Traceback" not in proc.stderr
    # with a token file the same host is accepted by the configuration
    tok = tmp_path / "token"
    write_token(tok)
    ok = WebConfig(enabled=True, host="0.0.0.0", token_file=tok)
    assert ok.token_file == tok


def test_token_as_bearer_query_or_basic_password_and_read_only(tmp_path):
    srv, _tap, tok = _server(tmp_path)
    with srv:
        url = f"http://127.0.0.1:{srv.port}/api/status"
        assert http(url)[0] == 401
        assert http(url, bearer="wrong-token-123")[0] == 401
        assert http(url + "?token=wrong")[0] == 401
        assert http(url, basic=("operator", "wrong"))[0] == 401
        status, body = http(url, bearer=tok)
        assert status == 200 and json.loads(body)["frames_total"] == 7
        assert http(url + f"?token={tok}")[0] == 200
        assert http(url, basic=("operator", tok))[0] == 200
        assert http(f"http://127.0.0.1:{srv.port}/", bearer=tok)[0] == 200
        assert http(url, method="HEAD", bearer=tok)[0] == 200
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert http(url, method=method, bearer=tok)[0] == 405, method
            assert http(url, method=method)[0] == 405, method
        assert http(f"http://127.0.0.1:{srv.port}/static/uPlot.iife.min.js",
                    bearer=tok)[0] == 200


def test_loopback_without_token_needs_none(tmp_path):
    srv, _tap, _ = _server(tmp_path, token=False)
    with srv:
        assert http(f"http://127.0.0.1:{srv.port}/api/status")[0] == 200
        assert http(f"http://127.0.0.1:{srv.port}/api/batches")[1] == b"[]"


def test_token_file_missing_or_short_is_one_line_naming_it(tmp_path):
    cfg = WebConfig(enabled=True, token_file=tmp_path / "nope")
    with pytest.raises(UserError, match=r"^\[web\] token_file .*nope: cannot read it"):
        WebServer(WebContext(snapshot=StatusSnapshot, tap=FrameTap(), history=None,
                             config=cfg))
    (tmp_path / "short").write_text("abc\n")
    cfg = WebConfig(enabled=True, token_file=tmp_path / "short")
    with pytest.raises(UserError, match="at least 8 characters"):
        WebServer(WebContext(snapshot=StatusSnapshot, tap=FrameTap(), history=None,
                             config=cfg))


def _item(name: str, reject: str | None = None) -> SimpleNamespace:
    img = np.full((60, 80), 128, np.uint8)
    return SimpleNamespace(frame=SimpleNamespace(name=name, image=img), reject=reject)


def test_latest_frame_is_encoded_at_most_once_per_interval(tmp_path):
    srv, tap, tok = _server(tmp_path, frame_interval_s=0.5, rejected_thumbnails=2)
    with srv:
        base = f"http://127.0.0.1:{srv.port}/api/"
        assert http(base + "frames/latest.png", bearer=tok)[0] == 404  # no frame yet
        tap(_item("f1"), None)
        status, png = http(base + "frames/latest.png", bearer=tok)
        assert status == 200 and png.startswith(b"\x89PNG")
        for i in range(5):  # new frames, asked for faster than the interval
            tap(_item(f"f{i + 2}"), None)
            assert http(base + "frames/latest.png", bearer=tok)[1] == png
        assert tap.encodes == 1
        time.sleep(0.55)
        assert http(base + "frames/latest.png", bearer=tok)[0] == 200
        assert tap.encodes == 2
        status, jpg = http(base + "frames/latest.jpg", bearer=tok)  # the page's: JPEG
        assert status == 200 and jpg.startswith(b"\xff\xd8") and tap.encodes == 3
        assert http(base + "frames/latest.gif", bearer=tok)[0] == 404
        for i in range(3):
            tap(_item(f"r{i}", reject="defocused"), None)
        listed = json.loads(http(base + "rejected", bearer=tok)[1])
        assert [f["name"] for f in listed["frames"]["defocused"]] == ["r2", "r1"]  # newest 2
        idx = listed["frames"]["defocused"][0]["index"]
        status, thumb = http(base + f"rejected/defocused/{idx}.png", bearer=tok)
        assert status == 200 and thumb.startswith(b"\x89PNG")
        assert http(base + "rejected/defocused/9.png", bearer=tok)[0] == 404


def test_port_taken_is_one_error_and_the_service_runs_on(workdir, tiny_model, caplog):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    write_config(workdir / "config.toml", model=tiny_model, source=SYNTHETIC, batch_frames=3,
                 extra=web_section(port))
    try:
        with caplog.at_level(logging.INFO), running_service(workdir / "config.toml") as svc:
            wait_until(lambda: svc.pipeline.batches_published >= 1, 30, "a batch")
            assert svc.web is None
            assert "web" in (svc.pipeline.last_error or "")
    finally:
        holder.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"web.port {port}: cannot listen" in errors[0].getMessage()


def test_page_serves_again_after_a_reload_on_the_same_port(workdir, tiny_model):
    port = free_port()
    write_config(workdir / "config.toml", model=tiny_model, source=SYNTHETIC, batch_frames=3,
                 extra=web_section(port))
    url = f"http://127.0.0.1:{port}/api/status"
    with running_service(workdir / "config.toml") as svc:
        wait_until(lambda: http(url)[0] == 200, 10, "the page")
        first = svc.web
        assert svc.request_reload("test")
        wait_until(lambda: svc.reloads == 1 and svc.web is not None
                   and svc.web is not first and svc.ready.is_set(), 30, "the reload")
        wait_until(lambda: http(url)[0] == 200, 10, "the page after the reload")
        assert svc.pipeline.frame_stages.tap is svc.web.ctx.tap
