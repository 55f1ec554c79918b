"""The fleet's Prometheus files and Grafana dashboard (``deploy/fleet/``) against a real service.

Every metric name in the dashboard's PromQL and in the alert rules is in a real
``crystal-edge run``'s ``/metrics`` (with the labels the queries group by); the dashboard is
Grafana dashboard JSON with a ``device`` variable; ``promtool`` (Debian package
``prometheus``) checks both configurations and runs the alert rules' unit tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from edge.service.metrics import MetricsConfig
from tests.edge.mqtt.conftest import free_port
from tests.faults.conftest import ROOT, ServiceProcess, wait_until, write_config

FLEET = ROOT / "deploy" / "fleet"
DASHBOARD = FLEET / "grafana-crystal-edge.json"
ALERTS = FLEET / "alerts.yml"
SOURCE = 'type = "synthetic"\nwidth = 640\nheight = 480\nseed = 5\nrate_fps = 8\n'
NAME = re.compile(r"\bcrystal_edge_[a-z0-9_]+\b")
#: labels the queries group by or show, per metric (the agent adds ``device`` and ``job``)
LABELS = {"crystal_edge_frames_rejected_total": "reason", "crystal_edge_queue_depths": "queue"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def alert_exprs(text: str) -> list[str]:
    """The ``expr`` of every rule in an alert rules file (one line, or a ``|`` block)."""
    exprs: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        key, _, value = line.strip().partition(":")
        if key != "expr":
            continue
        if value.strip() != "|":
            exprs.append(value.strip())
            continue
        indent = len(line) - len(line.lstrip())
        block = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            block.append(nxt.strip())
        exprs.append(" ".join(block).strip())
    return exprs


def test_grafana_dashboard_json():
    dash = dashboard()
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    device = variables["device"]
    assert device["type"] == "query" and device["multi"] and device["includeAll"]
    assert "device" in device["query"]["query"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    for p in dash["panels"]:
        assert p["type"] in {"timeseries", "stat", "table"}, p["title"]
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t["refId"] and t["datasource"]["uid"] == "${datasource}", p["title"]
            assert 'device=~"$device"' in t["expr"], f"{p['title']}: {t['expr']}"
    titles = " ".join(p["title"] for p in dash["panels"])
    for what in ("x50,3", "Batches", "Frames per second", "Rejected frames", "outbox",
                 "up"):
        assert what in titles, f"no panel for {what}"


def test_alert_rules_are_read():
    exprs = alert_exprs(ALERTS.read_text())
    assert len(exprs) == ALERTS.read_text().count("- alert:") >= 5
    assert any("max_over_time(up" in e and "unless" in e for e in exprs), exprs


def scrape(port: int) -> tuple[set[str], set[tuple[str, str]]]:
    """Metric names declared in a ``/metrics`` scrape, and (name, label) of its samples."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:  # not listening yet
        return set(), set()
    names = {ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE ")}
    labels = {(m[1], lab) for m in re.finditer(r"^(\w+)\{([^}]*)\}", text, re.M)
              for lab in re.findall(r"(\w+)=", m[2])}
    return names, labels


def test_every_queried_metric_is_in_real_metrics(tmp_path, tiny_model, broker):
    """A real service with MQTT (so the outbox depth is there) and ``[metrics]`` on; the
    names (and grouping labels) of every dashboard and alert query appear in its scrapes."""
    port = free_port()
    write_config(tmp_path / "config.toml", model=tiny_model, source=SOURCE, batch_frames=4,
                 extra=(f'\n[sinks.mqtt]\nenabled = true\nhost = "127.0.0.1"\n'
                        f'port = {broker.port}\n\n[metrics]\nenabled = true\nport = {port}\n'))
    used = {n for e in dashboard_exprs() + alert_exprs(ALERTS.read_text())
            for n in NAME.findall(e)}
    assert len(used) >= 8, used
    want_labels = {(n, lab) for n, lab in LABELS.items() if n in used}
    seen_names: set[str] = set()
    seen_labels: set[tuple[str, str]] = set()

    def covered() -> bool:
        names, labels = scrape(port)
        seen_names.update(names)
        seen_labels.update(labels)
        return used <= seen_names and want_labels <= seen_labels

    svc = ServiceProcess(tmp_path)
    try:
        try:
            wait_until(covered, 45, "every queried metric in /metrics", interval=0.5)
        except AssertionError:
            raise AssertionError(f"not in /metrics: {sorted(used - seen_names)}, labels "
                                 f"{sorted(want_labels - seen_labels)}\n{svc.log()[-2000:]}"
                                 ) from None
    finally:
        assert svc.stop() == 0
    print(f"\n{len(used)} metric names queried, all in /metrics: {sorted(used)}")


def promtool(*args: str) -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    r = subprocess.run([exe, *args], cwd=FLEET, capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, f"promtool {' '.join(args)}:\n{r.stdout}{r.stderr}"
    return r.stdout


def test_promtool_checks_the_configurations_and_the_rules():
    promtool("check", "config", "prometheus.yml")  # also checks alerts.yml, which it names
    promtool("check", "config", "prometheus-agent.yml")
    out = promtool("check", "rules", "alerts.yml")
    assert f"{ALERTS.read_text().count('- alert:')} rules found" in out, out
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")


def test_agent_scrapes_the_job_the_rules_select():
    text = (FLEET / "prometheus-agent.yml").read_text()
    assert "job_name: crystal-edge" in text
    defaults = MetricsConfig()
    assert f'targets: ["{defaults.host}:{defaults.port}"]' in text
    for expr in alert_exprs(ALERTS.read_text()) + dashboard_exprs():
        for job in re.findall(r'job="([^"]+)"', expr):
            assert job == "crystal-edge", expr



# ------------------------------------------------------- agent -> central, real Prometheus
def prometheus_exe() -> str:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("prometheus not installed (Debian: apt-get install prometheus)")
    return exe


def start_prometheus(tmp: Path, name: str, config: str, *args: str) -> subprocess.Popen:
    """``prometheus`` with ``config`` (written to ``tmp/name.yml``), log in ``name.log``."""
    (tmp / f"{name}.yml").write_text(config)
    with open(tmp / f"{name}.log", "wb") as log:
        return subprocess.Popen([prometheus_exe(), f"--config.file={tmp / name}.yml", *args],
                                cwd=tmp, stdout=log, stderr=subprocess.STDOUT)


def query(port: int, expr: str) -> list[dict]:
    """The result of an instant PromQL query on the Prometheus at ``port`` ([] if down)."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{expr}: {exc.read().decode()}") from None
    except OSError:
        return []
    assert body["status"] == "success", body
    return body["data"]["result"]


def api(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=5) as r:
        return json.loads(r.read())["data"]


def fleet_prometheus(tmp: Path, metrics_port: int) -> tuple[int, list[subprocess.Popen]]:
    """The shipped central server and device agent on loopback (1 s intervals): the
    central server's port and both processes."""
    central, agent = free_port(), free_port()
    shutil.copy(ALERTS, tmp / "alerts.yml")
    central_cfg = ((FLEET / "prometheus.yml").read_text()
                   .replace("evaluation_interval: 30s", "evaluation_interval: 1s")
                   .replace("127.0.0.1:9090", f"127.0.0.1:{central}"))
    agent_cfg = ((FLEET / "prometheus-agent.yml").read_text()
                 .replace("scrape_interval: 15s", "scrape_interval: 1s")
                 .replace("scrape_timeout: 5s", "scrape_timeout: 1s")
                 .replace("batch_send_deadline: 5s", "batch_send_deadline: 1s")
                 .replace("127.0.0.1:9464", f"127.0.0.1:{metrics_port}")
                 .replace("https://prometheus.plant.local:9090", f"http://127.0.0.1:{central}"))
    procs = [start_prometheus(tmp, "central", central_cfg, "--web.enable-remote-write-receiver",
                              f"--web.listen-address=127.0.0.1:{central}",
                              f"--storage.tsdb.path={tmp / 'tsdb'}"),
             start_prometheus(tmp, "agent", agent_cfg, "--enable-feature=agent",
                              f"--web.listen-address=127.0.0.1:{agent}",
                              f"--storage.agent.path={tmp / 'agent-wal'}")]
    return central, procs


@pytest.mark.slow
def test_agent_to_central_prometheus_end_to_end(tmp_path, tiny_model, broker):
    """A real service, the shipped agent file scraping it, the shipped central file
    receiving: every dashboard query returns the device's series, the alert rules load,
    and a stopped service shows as ``up == 0`` with CrystalEdgeDown pending."""
    prometheus_exe()
    port = free_port()
    write_config(tmp_path / "config.toml", model=tiny_model, source=SOURCE, batch_frames=4,
                 extra=(f'\n[sinks.mqtt]\nenabled = true\nhost = "127.0.0.1"\n'
                        f'port = {broker.port}\n\n[metrics]\nenabled = true\nport = {port}\n'))
    panels = [e.replace("$device", "line3").replace("$__rate_interval", "20s")
              for e in dashboard_exprs()]
    central, procs = fleet_prometheus(tmp_path, port)
    svc = ServiceProcess(tmp_path)
    try:
        # a batch without x50,3 (every frame defocused) leaves the last-batch gauges empty
        # until the next one, as on a dashboard, so a panel counts once it has shown data
        answered: set[str] = set()

        def all_panels_have_data() -> bool:
            answered.update(e for e in panels if e not in answered and query(central, e))
            return len(answered) == len(panels)

        try:
            wait_until(all_panels_have_data, 60, "every dashboard query answered", 1.0)
        except AssertionError:
            empty = [e for e in panels if e not in answered]
            # the service's own log says whether a batch closed at all
            logs = "".join((tmp_path / f"{n}.log").read_text()[-1500:] for n in ("service",
                                                                                 "agent",
                                                                                 "central"))
            raise AssertionError(f"no data for {empty}\n{logs}") from None
        rules = [r for g in api(central, "rules")["groups"] for r in g["rules"]]
        assert len(rules) == ALERTS.read_text().count("- alert:"), rules
        assert all(r["health"] == "ok" for r in rules), rules
        for expr in alert_exprs(ALERTS.read_text()):
            query(central, expr)  # evaluates without error on the real series
        assert svc.stop() == 0
        wait_until(lambda: query(central, 'up{job="crystal-edge"} == 0'), 20,
                   "up == 0 for the stopped service")
        alerts = wait_until(lambda: api(central, "alerts")["alerts"], 10, "an alert")
    finally:
        svc.stop()
        for p in reversed(procs):  # the agent first: it flushes to a central server still up
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
    assert [(a["labels"]["alertname"], a["labels"]["device"], a["state"]) for a in alerts] \
        == [("CrystalEdgeDown", "line3", "pending")], alerts
