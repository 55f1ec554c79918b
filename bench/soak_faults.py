"""Soak with faults: the real appliance for ``--minutes`` with faults injected at random.

Not a ``make bench`` benchmark (those are ``bench/bench_*.py``) and not in CI: a long run
for the closing figures of an unattended-operation change. It sets up a work directory
with a real Mosquitto (persistence on) on a free loopback port, a 16 MB tmpfs as the
service's state directory (root; otherwise a plain directory and no disk-full fault), a
watched folder and a configuration (folder source, JSON lines, MQTT with commands,
batches of 5 frames), then:

- runs ``python -m edge.cli run`` under a supervisor that restarts it 1-2 s after any
  exit, as systemd does, and notes the exits after which the unit would stay down;
- lets a durable MQTT subscriber (the plant's DCS) record every batch report;
- writes good frames into the watched folder at ``--rate`` per second;
- injects one fault at a time, every 10-40 s (seeded): bad files (a PNG header declaring
  60000x60000 px, an 8000x8000 PNG, a truncated JPEG, an empty file, random bytes),
  a broker restart (down 5-20 s), ``kill -9``, a full state directory for 30 s, retained
  junk on the command topic (deeply nested JSON, invalid UTF-8, ``reload_config``; held
  10-20 s, then cleared), SIGHUP;
- at the end stops the frames, waits up to 60 s for every frame to be delivered, sends
  SIGTERM and prints one JSON document (also written to ``--out``): batches accepted /
  delivered / duplicated / lost, frames, faults by kind, recovery times (fault end ->
  next new batch at the DCS), service exits by status, peak memory, and a verdict.

    .venv/bin/python bench/soak_faults.py [--minutes 30] [--seed 1]
        [--model models/crystal-seg.onnx] [--out bench-out/soak_faults.json]

Exit status 0 when the verdict is ``pass``, 1 when ``fail``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from soak import appliance, faults, observe  # noqa: E402

STATE_TMPFS_MB = 16
DRAIN_S = 60.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0,
                    help="how long faults are injected (default 30)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fault schedule")
    ap.add_argument("--model", type=Path, default=None,
                    help="ONNX model (default: the tests' tiny model, built on the fly)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "soak_faults.json",
                    help="where the JSON document is written too")
    ap.add_argument("--rate", type=float, default=2.0, help="good frames per second")
    ap.add_argument("--fault-gap", type=float, nargs=2, default=(10.0, 40.0),
                    metavar=("MIN_S", "MAX_S"), help="seconds between faults (uniform)")
    ap.add_argument("--first-fault-s", type=float, default=15.0,
                    help="quiet seconds before the first fault")
    ap.add_argument("--faults", nargs="+", choices=list(faults.WEIGHTS), default=[],
                    metavar="KIND", help=f"only these kinds ({', '.join(faults.WEIGHTS)})")
    ap.add_argument("--memory-max-mb", type=float, default=2048.0,
                    help="kill the service above this resident memory (the unit's MemoryMax)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="work directory (default: a fresh temporary one, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    return ap.parse_args(argv)


def setup(work: Path, model: Path | None) -> dict[str, Any]:
    """Folders, the state tmpfs, the model, the broker; returns them with the reason the
    disk-full fault is skipped (None when the tmpfs is mounted)."""
    from tests.edge.mqtt.conftest import make_broker

    for d in ("in", "staging", "done", "failed"):
        (work / d).mkdir(parents=True, exist_ok=True)
    no_tmpfs = appliance.mount_tmpfs(work / "state", STATE_TMPFS_MB)
    if model is None:
        from tests.fixtures.tiny_model import build_tiny_model
        model = build_tiny_model(work / "model")
    broker = make_broker(work, persistence=True)
    broker.start()
    config = work / "config.toml"
    config.write_text(appliance.config_text(model=model.resolve(), broker_port=broker.port))
    return {"broker": broker, "config": config, "model": model, "no_tmpfs": no_tmpfs}


def run_faults(injector: faults.Injector, sup: appliance.Supervisor, args: argparse.Namespace,
               rng: random.Random) -> None:
    """Inject faults one after another until ``--minutes`` have passed."""
    end = args.minutes * 60.0
    next_t = args.first_fault_s
    while True:
        wait = next_t - sup.now()
        if next_t >= end:
            time.sleep(max(0.0, end - sup.now()))
            return
        time.sleep(max(0.0, wait))
        injector.inject_random()
        next_t = sup.now() + rng.uniform(*args.fault_gap)


def drain(work: Path, writer: observe.FrameWriter, dcs: observe.Dcs, sup: appliance.Supervisor,
          timeout: float) -> float:
    """Wait until every good frame is in ``done`` or ``failed`` and every batch in the JSON
    lines has reached the DCS; the seconds it took (``timeout`` when it did not)."""
    t = time.monotonic()
    good = set(writer.names)
    while time.monotonic() - t < timeout:
        acked = {p.name for d in ("done", "failed") for p in (work / d).iterdir()}
        sent = {r["batch_id"] for r in dcs.snapshot()}
        jsonl = {r["batch_id"] for r in observe.read_jsonl(work / "out.jsonl")}
        if good <= acked and jsonl <= sent:
            return round(time.monotonic() - t, 1)
        time.sleep(0.5)
    print(f"[{sup.now():7.1f} s] drain: not everything delivered within {timeout:.0f} s",
          file=sys.stderr, flush=True)
    return timeout


def verdict(doc: dict[str, Any]) -> tuple[str, list[str]]:
    """``pass`` when no batch or frame was lost, every fault was recovered from, no exit
    would have left the appliance down for good and the service stopped on SIGTERM."""
    b, f, r = doc["batches"], doc["frames"], doc["recoveries"]
    problems = []
    if b["lost"]:
        problems.append(f"{b['lost']} batch(es) accepted but not delivered over MQTT")
    if f["good_lost"]:
        problems.append(f"{f['good_lost']} good frame(s) written but never delivered")
    if b["ids_reused"]:
        problems.append(f"batch id(s) used for two batches: {b['ids_reused'][:10]}")
    if r["unrecovered"]:
        problems.append(f"no batch after {len(r['unrecovered'])} fault(s): "
                        f"{r['unrecovered'][:5]}")
    if doc["service"]["memory_max_kills"]:
        problems.append(f"killed {doc['service']['memory_max_kills']} time(s) above "
                        f"{doc['service']['memory_max_mb']:.0f} MB")
    problems += doc["service"]["systemd_would_stay_down"]
    final = doc["service"]["final"]
    if final["killed_after_timeout"] or final["exit_code"] not in (0, None):
        problems.append(f"SIGTERM at the end: {final}")
    return ("pass" if not problems else "fail"), problems


def warnings(doc: dict[str, Any]) -> list[str]:
    """What the verdict does not fail on but a reader should see."""
    b, s = doc["batches"], doc["service"]
    out = []
    if b["duplicated"]:
        out.append(f"{b['duplicated']} duplicate deliveries (QoS 1 allows some)")
    if s["tracebacks_in_log"]:
        out.append(f"{s['tracebacks_in_log']} traceback(s) in the service log")
    named, _, total = s["bad_files_named_in_log"].partition(" of ")
    if named != total:
        out.append(f"bad files named in the log: {s['bad_files_named_in_log']}")
    return out


def figures(work: Path, *, env: dict[str, Any], sup: appliance.Supervisor,
            injector: faults.Injector, writer: observe.FrameWriter,
            mqtt: list[dict[str, Any]], final: dict[str, Any],
            args: argparse.Namespace) -> dict[str, Any]:
    """The closing JSON document (without the verdict)."""
    log_path = work / "service.log"
    log = observe.log_figures(log_path.read_text(errors="replace") if log_path.exists()
                              else "", injector.bad_names)
    jsonl = observe.read_jsonl(work / "out.jsonl")
    kills = [e for e in sup.exits if e.by_supervisor]
    no_tmpfs = env["no_tmpfs"]
    return {
        "benchmark": "soak_faults",
        "host": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                 "python": platform.python_version()},
        "duration_s": round(sup.now(), 1), "minutes": args.minutes, "seed": args.seed,
        "model": str(env["model"]),
        "state_dir": (f"tmpfs {STATE_TMPFS_MB} MB" if no_tmpfs is None
                      else f"plain directory ({no_tmpfs}); disk_full fault skipped"),
        "frames": {"rate_per_s": args.rate,
                   **observe.frame_figures(work, writer.names, injector.bad_names, mqtt)},
        "batches": {**observe.batch_figures(mqtt, jsonl, log["closed_ids"]),
                    "nominal_interval_s": round(5 / args.rate, 2)},
        "faults": {"total": len(injector.log),
                   "by_kind": dict(Counter(f["kind"] for f in injector.log)),
                   "by_variant": dict(Counter(f"{f['kind']}:{f['variant']}"
                                              for f in injector.log if f["variant"]))},
        "recoveries": observe.recovery_figures(injector.log, mqtt),
        "service": {
            "starts": len(sup.starts),
            "exits_by_code": dict(Counter(str(e.code) for e in sup.exits)),
            "injected_kills": sum(e.by_supervisor == "injected kill -9" for e in kills),
            "memory_max_kills": sum(e.by_supervisor == "memory_max" for e in kills),
            "memory_max_mb": args.memory_max_mb,
            "peak_memory_mb": round(sup.peak_kb / 1024, 1),
            "systemd_would_stay_down": appliance.systemd_notes(sup.exits, sup.starts),
            "final": final, "tracebacks_in_log": log["tracebacks"],
            "bad_files_named_in_log": f"{log['bad_files_named']} of "
                                      f"{len(injector.bad_names)}",
        },
        "fault_log": injector.log,
    }


def soak(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Set up, run with faults, drain, stop; the closing document."""
    env = setup(work, args.model)
    broker, t0 = env["broker"], time.monotonic()
    topic = f"{appliance.TOPIC_PREFIX}/{appliance.DEVICE_ID}"
    sup = appliance.Supervisor(work, env["config"], t0, memory_max_mb=args.memory_max_mb,
                               seed=args.seed)
    dcs = observe.Dcs(broker.port, f"{topic}/psd", t0)
    rng = random.Random(args.seed)
    injector = faults.Injector(inbox=work / "in", staging=work / "staging",
                               state_dir=work / "state", supervisor=sup, broker=broker,
                               cmd_topic=f"{topic}/cmd", rng=rng,
                               disk_full=env["no_tmpfs"] is None, only=tuple(args.faults))
    writer = observe.FrameWriter(work / "in", work / "staging", args.rate)
    if env["no_tmpfs"]:
        print(f"soak: state directory is a plain directory ({env['no_tmpfs']}); "
              "no disk-full fault", file=sys.stderr, flush=True)
    final: dict[str, Any] = {}
    try:
        sup.start()
        writer.start()
        run_faults(injector, sup, args, rng)
        writer.stop()
        drain_s = drain(work, writer, dcs, sup, DRAIN_S)
        final = sup.stop()
        time.sleep(2.0)  # reports still in flight reach the DCS
    finally:
        writer.stop()
        final = final or sup.stop()
        dcs.close()
        broker.stop()
        if env["no_tmpfs"] is None:
            appliance.unmount(work / "state")
    doc = figures(work, env=env, sup=sup, injector=injector, writer=writer,
                  mqtt=dcs.snapshot(), final=final, args=args)
    doc["drain_s"] = drain_s
    return doc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: the service, the broker and the tmpfs are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="soak-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        doc = {"started": started, **soak(work.resolve(), args)}
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    doc["verdict"], doc["problems"] = verdict(doc)
    doc["warnings"] = warnings(doc)
    if args.keep or args.workdir is not None:
        doc["workdir"] = str(work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0 if doc["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
