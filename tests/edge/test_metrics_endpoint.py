"""The Prometheus endpoint, scraped over real HTTP on a free loopback port."""

from __future__ import annotations

import http.client
import threading
import urllib.error
import urllib.request

import pytest
from pydantic import ValidationError

from edge.service.metrics import (
    CONTENT_TYPE,
    METRICS,
    MetricsConfig,
    MetricsServer,
    render_metrics,
)
from edge.service.snapshot import LastBatch, StatusSnapshot

SNAPSHOT = StatusSnapshot(
    device_id="skid-07",
    frames_total=1200,
    frames_rejected_total={"blur": 7, "empty": 2, 'odd"reason\n': 1},
    batches_total=4,
    frames_per_s=9.75,
    queue_depths={"inference": 3, "post": 0},
    outbox_depth=2,
    last_batch_id=4,
    last_batch={"batch_id": 4, "x50_3_um": 85.5, "s_lnd": None},
    backend={"name": "onnxruntime"},
    software_version="0.1.0",
)


def _parse(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_render_metrics_values_and_types():
    """Every metric is named after its snapshot field; the HELP is its description."""
    text = render_metrics(SNAPSHOT)
    samples = _parse(text)
    assert samples["crystal_edge_frames_total"] == 1200
    assert samples['crystal_edge_frames_rejected_total{reason="blur"}'] == 7
    assert samples['crystal_edge_frames_rejected_total{reason="empty"}'] == 2
    assert samples['crystal_edge_frames_rejected_total{reason="odd\\"reason\\n"}'] == 1
    assert samples["crystal_edge_batches_total"] == 4
    assert samples["crystal_edge_frames_per_s"] == 9.75
    assert samples['crystal_edge_queue_depths{queue="inference"}'] == 3
    assert samples["crystal_edge_outbox_depth"] == 2
    assert samples["crystal_edge_last_batch_id"] == 4
    assert samples["crystal_edge_last_batch_x50_3_um"] == 85.5
    assert samples['crystal_edge_info{backend="onnxruntime",software_version="0.1.0",'
                   'device_id="skid-07"}'] == 1
    assert "crystal_edge_last_batch_s_lnd" not in text  # None: no sample, no HELP
    assert "crystal_edge_current_batch_id" not in text
    assert "# TYPE crystal_edge_frames_total counter" in text
    assert "# TYPE crystal_edge_frames_per_s gauge" in text
    desc = StatusSnapshot.model_fields["frames_per_s"].description
    assert f"# HELP crystal_edge_frames_per_s {desc}" in text
    assert text.endswith("\n")


def test_every_metric_is_a_snapshot_field():
    for path, _kind, _label in METRICS:
        head, _, rest = path.partition(".")
        assert head in StatusSnapshot.model_fields, path
        if rest:
            assert rest in LastBatch.model_fields, path


def test_render_nan_and_a_status_json_mapping():
    text = render_metrics(StatusSnapshot(frames_per_s=float("nan")))
    assert "crystal_edge_frames_per_s NaN\n" in text
    # a mapping is read as status.json is: the previous name of a field is still read
    samples = _parse(render_metrics({"fps": 2.5, "queue_depths": {"post": 1}}))
    assert samples["crystal_edge_frames_per_s"] == 2.5
    assert samples['crystal_edge_queue_depths{queue="post"}'] == 1


def test_scrape_over_http_reflects_live_counters():
    counters = {"frames_total": 0, "frames_per_s": 0.0}
    lock = threading.Lock()

    def collect():
        with lock:
            return StatusSnapshot(**counters)

    with MetricsServer(collect, config=MetricsConfig(enabled=True, port=0)) as srv:
        assert srv.port and srv.port > 0
        with urllib.request.urlopen(srv.url, timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == CONTENT_TYPE
            assert _parse(resp.read().decode())["crystal_edge_frames_total"] == 0
        with lock:
            counters["frames_total"] = 42
            counters["frames_per_s"] = 8.5
        with urllib.request.urlopen(srv.url, timeout=5) as resp:
            samples = _parse(resp.read().decode())
        assert samples["crystal_edge_frames_total"] == 42
        assert samples["crystal_edge_frames_per_s"] == 8.5

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
        return StatusSnapshot(batches_total=1)

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


def _idle(port: int, n: int) -> list:
    import socket

    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]


def _closed_by_server(sock, timeout: float) -> bool:
    """True when the server closed ``sock`` (EOF or reset) within ``timeout`` s; a 503
    sent before closing counts as closed."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
            if data.startswith(b"HTTP/1.1 503"):
                continue
            return False
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_connections_are_closed_after_the_request_timeout():
    import time

    cfg = MetricsConfig(port=0, request_timeout_s=0.5, max_connections=4)
    with MetricsServer(dict, config=cfg) as srv:
        socks = _idle(srv.port, 3)
        t0 = time.monotonic()
        try:
            assert all(_closed_by_server(s, 3.0) for s in socks)
            assert time.monotonic() - t0 < 2.0
        finally:
            for s in socks:
                s.close()
        with urllib.request.urlopen(srv.url, timeout=5) as resp:
            assert resp.status == 200


def test_connections_beyond_the_cap_get_503_without_a_thread():
    import time

    cfg = MetricsConfig(port=0, request_timeout_s=30, max_connections=3)
    with MetricsServer(dict, config=cfg) as srv:
        threads_before = threading.active_count()
        held = _idle(srv.port, 3)
        try:
            time.sleep(0.3)  # the three handler threads are up and waiting
            extra = _idle(srv.port, 20)
            answers = []
            for s in extra:
                s.settimeout(5)
                answers.append(s.recv(4096))
                s.close()
            assert all(a.startswith(b"HTTP/1.1 503") for a in answers), answers[:3]
            assert threading.active_count() <= threads_before + 3
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(srv.url, timeout=5)
            assert err.value.code == 503
        finally:
            for s in held:
                s.close()
        # the held slots are freed when their clients go: scrapes are served again
        deadline = time.monotonic() + 5
        while True:
            try:
                with urllib.request.urlopen(srv.url, timeout=5) as resp:
                    assert resp.status == 200
                break
            except urllib.error.HTTPError as exc:
                assert exc.code == 503 and time.monotonic() < deadline


def test_timeout_and_cap_are_validated():
    with pytest.raises(ValidationError, match="request_timeout_s"):
        MetricsConfig(request_timeout_s=0)
    with pytest.raises(ValidationError, match="max_connections"):
        MetricsConfig(max_connections=0)
