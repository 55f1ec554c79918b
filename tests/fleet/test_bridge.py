"""The fleet bridge (``deploy/fleet/mosquitto-bridge.conf``) with real Mosquittos.

Two appliances (``crystal-edge run`` subprocesses, synthetic source, tiny model, a batch
about every second) publish to their own device broker; each device broker has the
shipped bridge file in its ``conf.d/`` (only the central address and the device name
changed) and bridges to one central broker. A DCS-like subscriber with a persistent QoS 1
session on the central broker subscribes to ``site1/crystallizer/+/psd``. While batches
flow, the central broker stops (the bridges drop) for a few seconds and comes back; during
that outage one device broker restarts too (its bridge queue survives in its persistence
file; the service's outbox holds what it publishes meanwhile). Every
batch id each service wrote to its JSON-lines sink arrives centrally; duplicates (QoS 1
is at-least-once) are counted and reported. At the end one device broker is killed, as a
device losing power: the central broker publishes ``<prefix>/bridge/<device> = 0``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.edge.mqtt.conftest import Broker, Recorder, free_port, make_broker
from tests.faults.conftest import ROOT, ServiceProcess, jsonl_batches, wait_until, write_config

pytest.importorskip("onnxruntime")

BRIDGE_CONF = ROOT / "deploy" / "fleet" / "mosquitto-bridge.conf"
PREFIX = "site1/crystallizer"
DEVICES = ("line3", "line4")
#: 6 frames a batch at 6 frames/s: a batch about every second
SOURCE = 'type = "synthetic"\nwidth = 256\nheight = 192\nseed = {seed}\nrate_fps = 6\n'
OUTAGE_S = 4.0


def bridge_conf(*, central_port: int, device: str) -> str:
    """The shipped bridge file for ``device``, pointed at the central broker on loopback."""
    text = BRIDGE_CONF.read_text()
    for needle in ("address central-broker.plant.local:1883\n", "line3", "cleansession false",
                   f"topic {PREFIX}/line3/# out 1\n"):
        assert needle in text, f"{BRIDGE_CONF.name} lost {needle!r}"
    return (text.replace("central-broker.plant.local:1883", f"127.0.0.1:{central_port}")
            .replace("line3", device))


@dataclass
class DeviceBroker(Broker):
    """A device broker laid out as Debian's: mosquitto.conf + ``conf.d/`` with the bridge."""

    bridge: str = ""

    def write_conf(self) -> Path:
        confd = self.workdir / "conf.d"
        confd.mkdir(exist_ok=True)
        (confd / "crystal-bridge.conf").write_text(self.bridge)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            "user root\n"
            f"persistence true\npersistence_location {self.workdir}/\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"include_dir {confd}\n")
        return conf


def start_device(root: Path, device: str, *, central_port: int, model: Path, seed: int
                 ) -> tuple[DeviceBroker, ServiceProcess]:
    """The device broker (bridged) and ``crystal-edge run`` publishing to it."""
    work = root / device
    (work / "broker").mkdir(parents=True)
    broker = DeviceBroker(workdir=work / "broker", port=free_port(),
                          bridge=bridge_conf(central_port=central_port, device=device))
    broker.start()
    cfg = work / "config.toml"
    write_config(cfg, model=model, source=SOURCE.format(seed=seed), batch_frames=6, extra=(
        f'\n[sinks.mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n'
        f'topic_prefix = "{PREFIX}"\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n'
        "health_interval_s = 2\n"))
    cfg.write_text(cfg.read_text().replace('id = "test-01"', f'id = "{device}"'))
    return broker, ServiceProcess(work)


def central_ids(rec: Recorder) -> dict[str, Counter[int]]:
    """Per device id, how often each batch id arrived on the central broker."""
    got: dict[str, Counter[int]] = {d: Counter() for d in DEVICES}
    for m in rec.on("/psd"):
        payload = json.loads(m.payload)
        assert m.topic == f"{PREFIX}/{payload['device_id']}/psd", m.topic
        got[payload["device_id"]][payload["batch_id"]] += 1
    return got


def produced(root: Path, device: str) -> set[int]:
    return {b["batch_id"] for b in jsonl_batches(root / device / "out.jsonl")}


def retained_status(port: int, device: str) -> dict:
    """The retained ``status`` a new subscriber gets from the central broker."""
    rec = Recorder(port, f"{PREFIX}/{device}/status")
    try:
        msg = wait_until(lambda: rec.all and rec.all[0], 5, f"the retained status of {device}")
    finally:
        rec.close()
    assert msg.retain, f"{device}: status not retained on the central broker"
    return json.loads(msg.payload)


def bridge_state(port: int, device: str) -> str:
    """The retained bridge notification (``1`` connected, ``0`` gone) on the central broker.

    The retained message is the first one a new subscriber gets; a notification published
    while it is subscribed (the will of a bridge that just died) follows it, not retained.
    """
    rec = Recorder(port, f"{PREFIX}/bridge/{device}")
    try:
        msg = wait_until(lambda: rec.all and rec.all[0], 5, f"the bridge state of {device}")
    finally:
        rec.close()
    assert msg.retain, f"{device}: bridge state not retained"
    return msg.payload.decode()


def explain(root: Path) -> str:
    """The tails of every service and broker log under ``root`` (for a failure message)."""
    logs = sorted(root.glob("*/service.log")) + sorted(root.glob("*/broker/mosquitto.log"))
    return "".join(f"\n--- {p.relative_to(root)}\n{p.read_text(errors='replace')[-1500:]}"
                   for p in logs)


def test_bridge_outage_every_batch_arrives_centrally(tmp_path, tiny_model):
    with ExitStack() as cleanup:
        (tmp_path / "central").mkdir()
        central = make_broker(tmp_path / "central", persistence=True)
        central.start()
        cleanup.callback(central.stop)
        dcs = Recorder(central.port, f"{PREFIX}/+/psd", persistent_id="dcs-historian")
        cleanup.callback(dcs.close)
        devices = []
        for i, d in enumerate(DEVICES):
            broker, svc = start_device(tmp_path, d, central_port=central.port,
                                       model=tiny_model, seed=i)
            cleanup.callback(broker.stop)
            cleanup.callback(svc.stop)
            devices.append((broker, svc))
        try:
            run = outage(tmp_path, central, dcs, devices)
        except AssertionError as exc:
            raise AssertionError(f"{exc}{explain(tmp_path)}") from None

    for d in DEVICES:
        made, got = run["made"][d], run["got"][d]
        assert made == set(range(1, max(made) + 1)), f"{d}: batch ids not contiguous"
        assert set(got) == made, f"{d}: missing {made - set(got)}, unexpected {set(got) - made}"
        assert run["in_outage"][d], f"{d}: no batch was made during the outage"
    dupes = {d: sum(n - 1 for n in run["got"][d].values()) for d in DEVICES}
    print(f"\ncentral broker away {run['away_s']:.1f} s; batches made meanwhile "
          f"{ {d: len(v) for d, v in run['in_outage'].items()} } arrived "
          f"{run['caught_up_s']:.1f} s after it came back; delivered "
          f"{[len(run['made'][d]) for d in DEVICES]} batches, duplicates {dupes}; a killed "
          f"device broker showed as bridge = 0 within {run['will_s']:.1f} s")


def outage(root: Path, central: Broker, dcs: Recorder,
           devices: list[tuple[DeviceBroker, ServiceProcess]]) -> dict[str, Any]:
    """Batches flowing, the central broker away for :data:`OUTAGE_S` and back (meanwhile the
    first device broker restarts, so its queued reports live only in its persistence file
    and the service's outbox), the services stopped: what each made, what arrived
    centrally, and the timings."""
    wait_until(lambda: all(central_ids(dcs).values()), 60,
               "a first batch of each device on the central broker")
    status = {d: retained_status(central.port, d)["state"] for d in DEVICES}
    assert status == dict.fromkeys(DEVICES, "online"), status

    central.stop()  # every bridge and the DCS lose the central broker
    t_down = time.monotonic()
    at_stop = {d: produced(root, d) for d in DEVICES}
    time.sleep(OUTAGE_S / 2)
    devices[0][0].stop()
    devices[0][0].start()
    time.sleep(OUTAGE_S / 2)
    in_outage = {d: produced(root, d) - at_stop[d] for d in DEVICES}
    central.start()
    t_up = time.monotonic()
    wait_until(lambda: all(in_outage[d] <= set(central_ids(dcs)[d]) for d in DEVICES), 30,
               "the batches made during the outage on the central broker")
    caught_up_s = time.monotonic() - t_up

    assert [svc.stop() for _, svc in devices] == [0, 0], "a service did not exit 0 on SIGTERM"
    made = {d: produced(root, d) for d in DEVICES}
    wait_until(lambda: all(made[d] <= set(central_ids(dcs)[d]) for d in DEVICES), 15,
               "every batch of both devices on the central broker")
    time.sleep(0.5)  # a late duplicate arrives before counting
    assert bridge_state(central.port, DEVICES[1]) == "1"
    devices[1][0].proc.kill()  # the device dies: the central broker sends the bridge's will
    t_kill = time.monotonic()
    wait_until(lambda: bridge_state(central.port, DEVICES[1]) == "0", 10,
               f"{PREFIX}/bridge/{DEVICES[1]} = 0 on the central broker")
    return {"made": made, "got": central_ids(dcs), "in_outage": in_outage,
            "away_s": t_up - t_down, "caught_up_s": caught_up_s,
            "will_s": time.monotonic() - t_kill}
