"""What the soak sees of the appliance: the plant's DCS (a durable MQTT subscriber), the
camera writing frames, and the figures computed from them, the JSON-lines file, the
watched folder's ``done``/``failed`` folders and the service log.

A batch is identified by ``(batch_id, batch_start)``: the same pair twice is a duplicate
delivery, one id with two different starts is an id used twice.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import statistics
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

Key = tuple[int, str]


class Dcs:
    """Durable subscriber (persistent session, QoS 1) recording every batch report."""

    def __init__(self, port: int, topic: str, t0: float) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.t0 = t0
        self.records: list[dict[str, Any]] = []
        self.unreadable = 0
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-dcs-{port}",
                                  protocol=mqtt.MQTTv311, clean_session=False)
        self.client.reconnect_delay_set(0.5, 2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError(f"the DCS could not subscribe to {topic}")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        t = time.monotonic() - self.t0
        try:
            rec = batch_record(json.loads(msg.payload))
        except (ValueError, KeyError, TypeError):
            self.unreadable += 1
            return
        with self._lock:
            self.records.append({"t": t, **rec})

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.records)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def batch_record(payload: dict[str, Any]) -> dict[str, Any]:
    """The parts of a batch report (``edge/schemas/psd``) the soak counts."""
    frames = payload["frames"]
    return {"batch_id": int(payload["batch_id"]), "batch_start": str(payload["batch_start"]),
            "device_id": payload.get("device_id"), "used": int(frames["used"]),
            "rejected": int(frames["rejected"]),
            "rejected_by_reason": dict(frames.get("rejected_by_reason", {}))}


class FrameWriter:
    """The camera: writes good frames (``g000000.png`` ...) at ``rate`` per second, each
    written in ``staging`` and renamed into ``inbox`` (as camera software does)."""

    def __init__(self, inbox: Path, staging: Path, rate: float) -> None:
        self.inbox, self.staging, self.rate = inbox, staging, rate
        self.names: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from tests.edge.sources.helpers import write_frames

        next_t = time.monotonic()
        while not self._stop.is_set():
            name = f"g{len(self.names):06d}.png"
            write_frames(self.staging, [name], seed=len(self.names), t0=time.time())
            os.replace(self.staging / name, self.inbox / name)
            self.names.append(name)
            next_t += 1.0 / self.rate
            self._stop.wait(max(0.0, next_t - time.monotonic()))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Batch records of the JSON-lines sink (the sink's own reader: a line still being
    written is skipped; a complete line that is not JSON is a finding and raises)."""
    from edge.sinks.jsonl import read_jsonl as read_sink_file

    return [batch_record(rec["payload"]) for rec in read_sink_file(path)] if path.exists() else []


def log_figures(log: str, bad_names: list[str]) -> dict[str, Any]:
    """Batch ids the service says it closed, tracebacks, bad files named in the log."""
    return {"closed_ids": sorted({int(m) for m in re.findall(r"batch (\d+) closed", log)}),
            "tracebacks": log.count("Traceback (most recent call last)"),
            "bad_files_named": sum(1 for n in bad_names if n in log)}


def _key(r: dict[str, Any]) -> Key:
    return r["batch_id"], r["batch_start"]


def unique_batches(records: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """First record of each batch, in arrival order."""
    out: dict[Key, dict[str, Any]] = {}
    for r in records:
        out.setdefault(_key(r), r)
    return out


def batch_figures(mqtt: list[dict[str, Any]], jsonl: list[dict[str, Any]],
                  closed_ids: list[int]) -> dict[str, Any]:
    """Accepted (closed or in any sink) / delivered over MQTT / duplicated / lost."""
    copies = Counter(_key(r) for r in mqtt)
    starts: dict[int, set[str]] = defaultdict(set)
    for r in mqtt + jsonl:
        starts[r["batch_id"]].add(r["batch_start"])
    delivered = {r["batch_id"] for r in mqtt}
    in_jsonl = {r["batch_id"] for r in jsonl}
    accepted = delivered | in_jsonl | set(closed_ids)
    lost = sorted(accepted - delivered)
    gaps = (sorted(set(range(min(accepted), max(accepted) + 1)) - accepted)
            if accepted else [])
    return {
        "accepted": len(accepted), "delivered": len(delivered), "in_jsonl": len(in_jsonl),
        "duplicated": sum(n - 1 for n in copies.values()),
        "duplicated_ids": sorted({k[0] for k, n in copies.items() if n > 1})[:50],
        "jsonl_duplicated": len(jsonl) - len(unique_batches(jsonl)),
        "lost": len(lost), "lost_ids": lost[:50],
        "missing_from_jsonl": len(delivered - in_jsonl),
        "id_gaps": len(gaps), "ids_reused": sorted(i for i, s in starts.items() if len(s) > 1),
    }


def _names(d: Path) -> set[str]:
    return {p.name for p in d.iterdir() if p.is_file()} if d.is_dir() else set()


def frame_figures(work: Path, good: list[str], bad: list[str],
                  mqtt: list[dict[str, Any]]) -> dict[str, Any]:
    """Frames written vs counted in batches vs delivered (moved to ``done``) vs rejected
    as unreadable (moved to ``failed``) vs still waiting in the watched folder."""
    done, failed, left = _names(work / "done"), _names(work / "failed"), _names(work / "in")
    batches = unique_batches(mqtt).values()
    reasons: Counter[str] = Counter()
    for b in batches:
        reasons.update(b["rejected_by_reason"])
    g, b_ = set(good), set(bad)
    in_batches = sum(b["used"] + b["rejected"] for b in batches)
    return {
        "written_good": len(g), "written_bad": len(b_),
        "in_batches": in_batches, "used": sum(b["used"] for b in batches),
        "rejected": sum(b["rejected"] for b in batches),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "good_delivered": len(g & done), "good_failed": len(g & failed),
        "good_left_in_folder": len(g & left),
        "good_lost": len(g - done - failed),
        "bad_delivered": len(b_ & done), "bad_failed": len(b_ & failed),
        "bad_left_in_folder": len(b_ & left),
        "in_batches_minus_files_acknowledged": in_batches - len((done | failed) & (g | b_)),
    }


def recovery_figures(faults: list[dict[str, Any]],
                     mqtt: list[dict[str, Any]]) -> dict[str, Any]:
    """Per fault, seconds from its end to the next new batch at the DCS (``recovery_s``,
    None when none came); count, median and max, also by kind; the longest time between
    two new batches."""
    firsts = sorted(r["t"] for r in unique_batches(mqtt).values())
    by_kind: dict[str, list[float]] = defaultdict(list)
    unrecovered = []
    for f in faults:
        nxt = next((t for t in firsts if t > f["t_end"]), None)
        f["recovery_s"] = None if nxt is None else round(nxt - f["t_end"], 2)
        if nxt is None:
            unrecovered.append(f"{f['kind']} at {f['t_start']:.1f} s")
        else:
            by_kind[f["kind"]].append(f["recovery_s"])
    every = [s for v in by_kind.values() for s in v]
    silence = max((b - a for a, b in itertools.pairwise(firsts)), default=None)
    return {"count": len(every), "median_s": _median(every),
            "longest_silence_s": None if silence is None else round(silence, 2),
            "max_s": max(every) if every else None, "unrecovered": unrecovered,
            "by_kind": {k: {"count": len(v), "median_s": _median(v), "max_s": max(v)}
                        for k, v in sorted(by_kind.items())}}


def _median(v: list[float]) -> float | None:
    return round(statistics.median(v), 2) if v else None
