"""The Prometheus endpoint, scraped over real HTTP on a free loopback port."""

from __future__ import annotations

import http.client
import threading
import urllib.error
import urllib.request

import pytest
from pydantic import ValidationError

from edge.metrics import CONTENT_TYPE, MetricsConfig, MetricsServer, render_metrics

SNAPSHOT = {
    "frames_total": 1200,
    "frames_rejected_total": {"blur": 7, "empty": 2, 'odd"reason\n': 1},
    "batches_total": 4,
    "fps": 9.75,
    "queue_depth": {"frames": 3, "results": 0},
    "outbox_depth": 2,
    "last_x50_um": 85.5,
    "last_s_lnd": None,
    "backend": "onnxruntime",
    "version": "0.1.0",
}


def _parse(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_render_metrics_values_and_types():
    text = render_metrics(SNAPSHOT)
    samples = _parse(text)
    assert samples["crystal_edge_frames_total"] == 1200
    assert samples['crystal_edge_frames_rejected_total{reason="blur"}'] == 7
    assert samples['crystal_edge_frames_rejected_total{reason="empty"}'] == 2
    assert samples['crystal_edge_frames_rejected_total{reason="odd\\"reason\\n"}'] == 1
    assert samples["crystal_edge_batches_total"] == 4
    assert samples["crystal_edge_fps"] == 9.75
    assert samples['crystal_edge_queue_depth{queue="frames"}'] == 3
    assert samples["crystal_edge_outbox_depth"] == 2
    assert samples["crystal_edge_last_x50_micrometres"] == 85.5
    assert samples['crystal_edge_info{backend="onnxruntime",version="0.1.0"}'] == 1
    assert "crystal_edge_last_s_lnd" not in text  # None: no sample, no HELP
    assert "# TYPE crystal_edge_frames_total counter" in text
    assert "# TYPE crystal_edge_fps gauge" in text
    assert text.endswith("\n")


def test_render_scalar_queue_depth_nan_and_empty():
    samples = _parse(render_metrics({"queue_depth": 5, "fps": float("nan")}))
    assert samples["crystal_edge_queue_depth"] == 5
    assert render_metrics({"fps": float("nan")}).strip().endswith("crystal_edge_fps NaN")
    assert render_metrics({}) == ""


def test_scrape_over_http_reflects_live_counters():
    counters = {"frames_total": 0, "fps": 0.0}
    lock = threading.Lock()

    def collect():
        with lock:
            return dict(counters)

    with MetricsServer(collect, config=MetricsConfig(enabled=True, port=0)) as srv:
        assert srv.port and srv.port > 0
        with urllib.request.urlopen(srv.url, timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == CONTENT_TYPE
            assert _parse(resp.read().decode())["crystal_edge_frames_total"] == 0
        with lock:
            counters["frames_total"] = 42
            counters["fps"] = 8.5
        with urllib.request.urlopen(srv.url, timeout=5) as resp:
            samples = _parse(resp.read().decode())
        assert samples["crystal_edge_frames_total"] == 42
        assert samples["crystal_edge_fps"] == 8.5

        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/nope", timeout=5)
        assert err.value.code == 404

        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        conn.request("HEAD", "/metrics")
        assert conn.getresponse().status == 200
        conn.close()
        port = srv.port
    # stopped: the port no longer answers
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_failing_callback_gives_500_and_server_keeps_serving():
    calls = {"n": 0}

    def collect():
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("pipeline not started")
        return {"batches_total": 1}

    with MetricsServer(collect, config=MetricsConfig(port=0)) as srv:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(srv.url, timeout=5)
        assert err.value.code == 500
        assert b"pipeline not started" in err.value.read()
        with urllib.request.urlopen(srv.url, timeout=5) as resp:
            assert _parse(resp.read().decode())["crystal_edge_batches_total"] == 1


def test_port_in_use_raises_oserror():
    with MetricsServer(dict, config=MetricsConfig(port=0)) as srv:
        other = MetricsServer(dict, config=MetricsConfig(port=srv.port))
        with pytest.raises(OSError):
            other.start()


def test_config_defaults_off_and_loopback_only():
    cfg = MetricsConfig()
    assert cfg.enabled is False and cfg.host == "127.0.0.1" and cfg.port == 9464
    assert MetricsConfig(host="::1").host == "::1"
    assert MetricsConfig(host="localhost").host == "localhost"
    with pytest.raises(ValidationError, match="not a loopback address"):
        MetricsConfig(host="0.0.0.0")
    with pytest.raises(ValidationError, match="not an IP address"):
        MetricsConfig(host="plant-net")
    with pytest.raises(ValidationError):
        MetricsConfig(port=70000)
    with pytest.raises(ValidationError):
        MetricsConfig(path="/x")
