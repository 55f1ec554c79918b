"""Soak: N batch reports through a broker outage and restart; JSON on stdout.

Starts a Mosquitto (persistence on) on a free loopback port, a durable subscriber (the
"DCS", QoS 1, persistent session), and an MqttSink with a fresh state directory. Publishes
``--n`` reports as fast as ``publish()`` returns; after ``--outage-at`` of them the broker
is stopped for ``--outage-s`` seconds and started again. Then waits until the outbox is
empty and the subscriber has everything (or ``--timeout-s``).

Reports: produced, delivered (unique batch ids), lost, duplicates, order kept,
publish throughput (reports/s into the outbox), delivery throughput (acknowledged
reports/s, whole run), backlog peak and drain time, process CPU seconds. Phase 2
(``--drain-n``) queues reports with the broker down and times how fast the outbox empties
once it is back (the delivery capacity, independent of the producer).

    .venv/bin/python bench/soak_mqtt.py [--n 10000] [--outage-s 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.mqtt.config import MqttConfig
from edge.mqtt.sink import MqttSink
from edge.mqtt.sparkplug import codec

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.edge.mqtt.conftest import (  # noqa: E402  (the tests' broker helpers)
    fake_report,
    free_port,
    wait_port,
)

MOSQUITTO = "/usr/sbin/mosquitto"


class _Broker:
    def __init__(self, workdir: Path, port: int) -> None:
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"user root\npersistence true\npersistence_location {workdir}/\n"
                             f"log_dest file {workdir}/mosquitto.log\n"
                             f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                             "max_queued_messages 0\n")
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _report(batch_id: int) -> Any:
    """A realistic batch report (the tests' fixed numbers; the sink builds its payload)."""
    return fake_report(batch_id, device_id="soak")


class _Dcs:
    """Durable subscriber: records every batch id it receives (duplicates too)."""

    def __init__(self, port: int) -> None:
        self.ids: list[int] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-dcs",
                             protocol=mqtt.MQTTv311, clean_session=False)
        self.c.reconnect_delay_set(1, 1)
        self.c.max_inflight_messages_set(100)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [("soak/#", 1), ("spBv1.0/soak/NDATA/#", 1)])
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/psd"):
            bid = json.loads(msg.payload)["batch_id"]
        elif msg.topic.startswith("spBv1.0/"):
            bid = codec.decode(msg.payload)["metrics"].get("PSD/Batch ID")
            if bid is None:  # a health NDATA
                return
        else:
            return
        with self.lock:
            self.ids.append(int(bid))

    def snapshot(self) -> list[int]:
        with self.lock:
            return list(self.ids)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _backlog_drain(sink: MqttSink, broker: _Broker, dcs: _Dcs, *, n: int, drain_n: int,
                   timeout_s: float) -> float:
    """Phase 2: a pure backlog (broker down while ``drain_n`` reports are produced), then
    the broker comes back; seconds until the outbox is empty."""
    broker.stop()
    for i in range(n + 1, n + drain_n + 1):
        sink.publish(_report(i))
    t = time.perf_counter()
    broker.start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sink.health()["outbox_depth"] > 0:
        time.sleep(0.01)
    drain_s = time.perf_counter() - t
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(set(dcs.snapshot())) < n + drain_n:
        time.sleep(0.05)
    return drain_s


def _open_sink(port: int, work: Path, *, max_inflight: int, mode: str) -> MqttSink:
    """An open MqttSink on the soak broker, its state directory under ``work``."""
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=port, device_id="soak",
                     topic_prefix="soak", sparkplug_group_id="soak", reconnect_min_s=0.5,
                     reconnect_max_s=2.0,
                     max_inflight=max_inflight, mode=mode, sparkplug_ndata_qos=1)  # type: ignore[arg-type]
    sink = MqttSink(cfg, state_dir=work / "state", close_timeout_s=10.0)
    sink.open()
    return sink


def _wait_delivered(sink: MqttSink, dcs: _Dcs, *, n: int, timeout_s: float) -> None:
    """Until the outbox is empty and the subscriber has ``n`` distinct batch ids (or
    ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sink.health()["outbox_depth"] == 0 and len(set(dcs.snapshot())) >= n:
            break
        time.sleep(0.05)


def _delivery_counts(ids: list[int], *, total: int) -> dict[str, Any]:
    """What the subscriber received (``ids``, in arrival order) against ``total`` produced."""
    unique = set(ids) & set(range(1, total + 1))
    first_seen = list(dict.fromkeys(ids))
    return {
        "produced": total,
        "delivered_unique": len(unique),
        "lost": total - len(unique),
        "duplicates": len(ids) - len(set(ids)),
        "order_kept": first_seen == sorted(first_seen),
        "delivered_over_produced": len(unique) / total,
    }


def run(n: int, *, outage_at: float, outage_s: float, max_inflight: int, timeout_s: float,
        mode: str, drain_n: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="soak-mqtt-"))
    broker = _Broker(work, free_port())
    broker.start()
    dcs = _Dcs(broker.port)
    time.sleep(0.3)
    sink = _open_sink(broker.port, work, max_inflight=max_inflight, mode=mode)
    reports = [_report(i) for i in range(1, n + 1)]
    outage_index = int(n * outage_at)
    peak_depth = 0
    cpu0 = _cpu()
    t_start = time.perf_counter()
    publish_time = 0.0
    outage_started = outage_ended = None
    try:
        for i, r in enumerate(reports, start=1):
            t = time.perf_counter()
            sink.publish(r)
            publish_time += time.perf_counter() - t
            if i == outage_index:
                broker.stop()
                outage_started = time.perf_counter()
            if outage_started and outage_ended is None and \
                    time.perf_counter() - outage_started >= outage_s:
                broker.start()
                outage_ended = time.perf_counter()
            if i % 200 == 0:
                peak_depth = max(peak_depth, sink.health()["outbox_depth"])
        if outage_ended is None:  # producing was faster than the outage
            assert outage_started is not None
            while time.perf_counter() - outage_started < outage_s:
                peak_depth = max(peak_depth, sink.health()["outbox_depth"])
                time.sleep(0.05)
            broker.start()
            outage_ended = time.perf_counter()
        t_produced = time.perf_counter()
        peak_depth = max(peak_depth, sink.health()["outbox_depth"])
        _wait_delivered(sink, dcs, n=n, timeout_s=timeout_s)
        t_drained = time.perf_counter()
        health = sink.health()
        drain_s = _backlog_drain(sink, broker, dcs, n=n, drain_n=drain_n,
                                 timeout_s=timeout_s) if drain_n else None
    finally:
        sink.close()
        time.sleep(0.5)
        dcs.close()
        broker.stop()
    counts = _delivery_counts(dcs.snapshot(), total=n + drain_n)
    cpu = _cpu() - cpu0
    shutil.rmtree(work, ignore_errors=True)
    return {
        "bench": "soak_mqtt",
        "mode": mode,
        **counts,
        "publish_reports_per_s": n / publish_time,
        "publish_mean_ms": 1000 * publish_time / n,
        "delivery_reports_per_s_phase1": health["published"] / (t_drained - t_start),
        "outage_s": (outage_ended or 0) - (outage_started or 0),
        "outage_after_report": outage_index,
        "outbox_peak_depth": peak_depth,
        "drain_after_production_s": t_drained - t_produced,
        "total_s": t_drained - t_start,
        "backlog_drain_reports": drain_n,
        "backlog_drain_s": drain_s,  # from broker start: includes the reconnect back-off
        "backlog_drain_reports_per_s": (drain_n / drain_s) if drain_s else None,
        "sink_published_phase1": health["published"],
        "outbox_left": health["outbox_depth"],
        "max_inflight": max_inflight,
        "process_cpu_s": cpu,
        "host": {"python": platform.python_version(), "machine": platform.machine(),
                 "cpus": __import__("os").cpu_count()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="reports to produce (10000)")
    ap.add_argument("--outage-at", type=float, default=0.3,
                    help="fraction of reports produced before the broker stops (0.3)")
    ap.add_argument("--outage-s", type=float, default=3.0, help="outage length (3 s)")
    ap.add_argument("--max-inflight", type=int, default=10, help="MqttConfig.max_inflight (10)")
    ap.add_argument("--mode", choices=["json", "sparkplug"], default="json")
    ap.add_argument("--drain-n", type=int, default=2000,
                    help="phase 2: reports queued while the broker is down, then timed "
                         "while the outbox drains (2000; 0 = skip)")
    ap.add_argument("--timeout-s", type=float, default=300.0)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if not Path(MOSQUITTO).exists():
        print(f"soak_mqtt: {MOSQUITTO} missing (apt-get install mosquitto)", file=sys.stderr)
        return 2
    result = run(args.n, outage_at=args.outage_at, outage_s=args.outage_s,
                 max_inflight=args.max_inflight, timeout_s=args.timeout_s,
                 mode=args.mode, drain_n=args.drain_n)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if result["lost"] == 0 and result["order_kept"] else 1


if __name__ == "__main__":
    sys.exit(main())
