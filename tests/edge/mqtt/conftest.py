"""A real Mosquitto broker on a free loopback port, started per test, plus helpers:
a recording subscriber, certificates made with the openssl CLI, and report factories."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.mqtt.config import MqttConfig
from edge.psd import LogNormalFit, ProcessValues, PsdConfig, PSDResult, class_edges
from edge.psd.process import frames_rejected_closed
from edge.service.pipeline.batch import BatchReport
from edge.sinks.psd_payload import build_psd_payload

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on {port} within {timeout} s")


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@dataclass
class Broker:
    """A mosquitto process; ``stop()``/``start()`` keep the port (an outage)."""

    workdir: Path
    port: int
    extra_conf: str = ""
    tls_port: int | None = None
    persistence: bool = False
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "mosquitto.log"

    def write_conf(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            "user root\n"
            + (f"persistence true\npersistence_location {self.workdir}/\n"
               if self.persistence else "persistence false\n")
            +
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            "per_listener_settings true\n"
            f"listener {self.port} 127.0.0.1\n"
            + self.extra_conf)
        return conf

    def start(self) -> None:
        conf = self.write_conf()
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
            if self.tls_port:
                wait_port(self.tls_port)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"mosquitto failed: {self.log_text()}") from None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def make_broker(tmp_path: Path, extra_conf: str = "", *, anonymous: bool = True,
                tls_port: int | None = None, persistence: bool = False) -> Broker:
    workdir = tmp_path / "broker"
    workdir.mkdir(exist_ok=True)
    port = free_port()
    conf = f"allow_anonymous {'true' if anonymous else 'false'}\n" + extra_conf
    return Broker(workdir=workdir, port=port, extra_conf=conf, tls_port=tls_port,
                  persistence=persistence)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = make_broker(tmp_path)
    b.start()
    yield b
    b.stop()


class Recorder:
    """A paho subscriber that records (topic, payload, retain) from a topic filter."""

    def __init__(self, port: int, topic: str, *, host: str = "127.0.0.1",
                 persistent_id: str | None = None) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.all: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        if persistent_id:  # a durable session: queued messages survive its and our restarts
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=persistent_id,
                                      protocol=mqtt.MQTTv311, clean_session=False)
            self.client.reconnect_delay_set(0.2, 0.5)  # type: ignore[arg-type]
        else:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                      client_id=f"rec-{time.time_ns()}", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("recorder could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.all.append(msg)
        self.messages.put(msg)

    def on(self, suffix: str) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self.all if m.topic.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def recorder_factory() -> Iterator[Any]:
    made: list[Recorder] = []

    def make(port: int, topic: str = "#", persistent_id: str | None = None) -> Recorder:
        r = Recorder(port, topic, persistent_id=persistent_id)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def mqtt_config(port: int, **kw: Any) -> MqttConfig:
    base: dict[str, Any] = dict(enabled=True, host="127.0.0.1", port=port, device_id="dev1",
                                topic_prefix="plant/cryst", reconnect_min_s=0.2,
                                reconnect_max_s=1.0, health_interval_s=3600.0)
    base.update(kw)
    return MqttConfig(**base)


T0 = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)


def fake_report(batch_id: int, *, device_id: str = "dev1", empty: bool = False) -> BatchReport:
    """A realistic batch report with fixed numbers (what the aggregator closes), on the
    default fixed class grid (0..1000 um in 10 um classes and the overflow class)."""
    cfg = PsdConfig(class_width_um=10.0)
    edges = class_edges(cfg)
    k = edges.size - 1
    counts = np.zeros(k)
    if not empty:
        counts[1:11] = [3, 11, 25, 31, 22, 12, 6, 3, 1, 0]
    mid = edges[:-1] + 5.0
    vol = counts * mid ** 3
    total_n, total_v = counts.sum(), vol.sum()
    q0 = counts / total_n if total_n else np.zeros(k)
    q3 = vol / total_v if total_v else np.zeros(k)
    Q0 = np.minimum(np.cumsum(q0), 1.0)
    Q3 = np.minimum(np.cumsum(q3), 1.0)
    if not empty:
        Q0[-1] = Q3[-1] = 1.0
    stats = dict.fromkeys(("x10_3_um", "x50_3_um", "x90_3_um", "x10_0_um", "x50_0_um",
                           "x90_0_um", "span", "d32_um", "x50_3_ci95_um"))
    if not empty:
        stats.update(x10_3_um=41.2, x50_3_um=58.7, x90_3_um=86.0, x50_0_um=49.9, span=0.763,
                     d32_um=55.1, x50_3_ci95_um=(56.0, 61.5))
    psd = PSDResult(
        n=int(total_n), weight_sum=float(total_n), n_eff_volume=float(total_n),
        edges_um=edges, counts=counts, q0=q0, q3=q3, Q0=Q0, Q3=Q3,
        class_largest_um=np.where(counts > 0, mid, np.nan),
        lognormal=None if empty else LogNormalFit(58.1, 0.29, 0.012, n_points=12),
        weighted=False, config=cfg, **stats)
    process = ProcessValues(
        crystals_per_frame=None if empty else 114 / 118,
        agglomerate_fraction_number=None if empty else 10 / 124,
        agglomerate_fraction_volume=None if empty else 0.21,
        x50_feret_max_um=None if empty else 61.0, x50_feret_min_um=None if empty else 40.5,
        median_aspect_ratio=None if empty else 1.42,
        median_circularity=None if empty else 0.81, fines_below_um=20.0,
        fines_fraction_number=None if empty else 0.1,
        fines_fraction_volume=None if empty else 0.002,
        frames_rejected_by_reason=frames_rejected_closed({"defocused": 2}),
        confidence=None if empty else 0.93)
    return BatchReport(
        batch_id=batch_id, device_id=device_id,
        batch_start=T0 + timedelta(minutes=batch_id),
        batch_end=T0 + timedelta(minutes=batch_id + 1), close_reason="frames",
        frames_used=118, frames_rejected_by_reason={"defocused": 2},
        crystals_measured=0 if empty else 114,
        crystals_rejected_by_reason={"border": 30, "agglomerate": 10},
        psd=psd, px_size_um=1.45,
        model={"name": "crystal-seg", "sha256": "ab" * 32, "backend": "onnxruntime-cpu",
               "precision": "fp32"},
        timing={}, software_version="0.1.0", process=process)


def psd_payload(batch_id: int, *, device_id: str = "dev1", empty: bool = False) -> dict[str, Any]:
    """The schema-valid ``psd`` payload of :func:`fake_report` (as the sinks publish it)."""
    return build_psd_payload(fake_report(batch_id, device_id=device_id, empty=empty)).to_payload()


# ----------------------------------------------------------------------------- TLS
def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            f"/CN={name}", "-keyout", str(key), "-out", str(crt), cwd=d)
    return key, crt


def make_cert(d: Path, name: str, ca: tuple[Path, Path], *, san: str | None) -> tuple[Path, Path]:
    key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key),
            "-out", str(csr), cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
            "-CAcreateserial", "-days", "2", "-out", str(crt), "-extfile", str(ext), cwd=d)
    return key, crt


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """CA, server certificate (SAN 127.0.0.1/localhost), client certificate, and a rogue CA."""
    if shutil.which("openssl") is None:  # pragma: no cover - Debian always has it
        pytest.skip("openssl CLI missing (apt-get install openssl)")
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    rogue = make_ca(d, "rogue-ca")
    skey, scrt = make_cert(d, "server", ca, san="IP:127.0.0.1,DNS:localhost")
    ckey, ccrt = make_cert(d, "client", ca, san=None)
    for p in d.iterdir():
        os.chmod(p, 0o644)
    return {"ca": ca[1], "rogue_ca": rogue[1], "server_key": skey, "server_crt": scrt,
            "client_key": ckey, "client_crt": ccrt}
