"""Cost of the operators' page to the pipeline; one JSON object on stdout.

    .venv/bin/python bench/bench_web.py [--model M] [--seconds 8] [--repeats 4]
        [--width 1024] [--height 768]

In ONE process, alternating runs of the same pipeline (quality gate, inference,
post-processing, batches, the JSON-lines and history sinks) on the same frames:

* **off**: no page;
* **on**: the page served as the service serves it (:mod:`edge.web`: the frame tap in
  post-processing, uvicorn in its thread) and a client that every second fetches what the
  page fetches (``latest.jpg``, status, the last batches, the trend, the rejected frames)
  and the lossless ``/api/frames/latest.png`` on top (:data:`PAGE_REQUESTS`).

Frames come from an in-memory source cycling rendered frames of the trainer's generator
(a camera stand-in: no PNG decoding, so the pipeline runs as fast as it can and the
page's share is not hidden behind I/O). Each run lasts about ``--seconds``; frames per
second are frames over the time from the first frame taken to the last one counted.
Two measures of the page's cost, medians over the pairs (every pair listed too):

* ``web_cost_pct`` (goal < 2 %): CPU seconds of the page's threads (uvicorn's loop and
  the pool where its handlers draw, encode and read) per CPU second of the rest of the
  service, in the "on" runs: the throughput the page takes from a pipeline that keeps every
  core busy, and a number that other processes on a shared machine hardly move;
  ``web_cpu_ms_per_s`` is the same CPU time per second of wall clock, and
  ``web_cost_pct_of_cores`` that time as a share of all cores (the cost to a pipeline
  that has the machine to itself and keeps every core busy). On a machine other processes
  load, the pipeline gets less CPU per second while the client still asks every second,
  so ``web_cost_pct`` is then an upper bound;
* ``fps_cost_pct = 100 * (1 - on_fps / off_fps)`` per adjacent (off, on) pair: the direct
  comparison, which on a loaded machine is dominated by noise.
Uses ``models/crystal-seg.onnx`` when present, else the tiny test model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.backends import BackendConfig  # noqa: E402
from edge.psd import PsdConfig  # noqa: E402
from edge.service.pipeline.analysis import AnalyzerProcessor  # noqa: E402
from edge.service.pipeline.batch import BatchAggregator, BatchConfig, BatchCounter  # noqa: E402
from edge.service.pipeline.runtime import Pipeline, PipelineOptions  # noqa: E402
from edge.sinks.history import HistorySink, HistorySinkConfig  # noqa: E402
from edge.sinks.jsonl import JsonlSink, JsonlSinkConfig  # noqa: E402
from edge.sources.base import Frame  # noqa: E402
from edge.vision.analyzer import FrameAnalyzer  # noqa: E402
from edge.web.app import WebContext  # noqa: E402
from edge.web.config import WebConfig  # noqa: E402
from edge.web.server import WebServer  # noqa: E402
from edge.web.tap import FrameTap  # noqa: E402


class CycleSource:
    """Camera stand-in: the same few frames over and over, as fast as they are taken."""

    name = "bench"

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = images

    def open(self) -> None:
        pass

    def frames(self, stop: threading.Event) -> Iterator[Frame | None]:
        i = 0
        while not stop.is_set():
            yield Frame(f"cycle:{i}", i, self.images[i % len(self.images)], time.time())
            i += 1

    def ack(self, frames: Any) -> None:
        pass

    def health(self) -> dict[str, Any]:
        return {"type": self.name}

    def close(self) -> None:
        pass


CLIENTS: dict[str, tuple[str, ...]] = {
    # what the page's script fetches every refresh; the batches, the trend and the
    # rejected frames only when the status shows a new batch or rejection (PAGE_ON_CHANGE)
    "page": ("api/info", "api/status", "api/frames/latest.jpg"),
    # a script polling the lossless frame and the raw payloads
    "png": ("api/frames/latest.png", "api/status", "api/batches?limit=6"),
}
"""The clients of the "on" runs, each fetching its paths once a second."""


WEB_THREADS = ("web-http", "AnyIO worker thread")
"""Threads of the page: uvicorn's event loop and the pool its handlers draw and read in."""


#: Read by the "page" client when the status changed, as the page's script does.
PAGE_ON_CHANGE = {"batch": ("api/batches?limit=6", "api/trend?hours=6"),
                  "rejected": ("api/rejected",)}


def _fetch(base: str, path: str, counts: dict[str, Any]) -> bytes | None:
    try:
        with urllib.request.urlopen(base + path, timeout=5) as r:
            body = r.read()
        counts[path] = counts.get(path, 0) + 1
        return body
    except urllib.error.HTTPError as exc:  # 404 before the first frame
        counts[f"http_{exc.code}"] = counts.get(f"http_{exc.code}", 0) + 1
    except OSError:
        counts["errors"] = counts.get("errors", 0) + 1
    return None


def _client(base: str, paths: tuple[str, ...], stop: threading.Event,
            counts: dict[str, Any]) -> None:
    """Fetch ``paths`` every second until ``stop`` (and, for the page's paths, what the
    status says changed)."""
    counts["native_id"] = threading.get_native_id()
    shown: dict[str, str] = {}
    while not stop.wait(1.0):
        for path in paths:
            body = _fetch(base, path, counts)
            if path != "api/status" or body is None or "api/info" not in paths:
                continue
            status = json.loads(body)
            keys = {"batch": f"{status.get('last_batch_id')}/{status.get('batches_total')}",
                    "rejected": json.dumps(status.get("frames_rejected_total") or {})}
            for what, key in keys.items():
                if shown.get(what) != key:
                    for extra in PAGE_ON_CHANGE[what]:
                        _fetch(base, extra, counts)
                    shown[what] = key


def thread_cpu_s(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process (Linux /proc)."""
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def web_cpu_s() -> float:
    """CPU seconds so far of the page's threads that are alive now."""
    return sum(thread_cpu_s(t.native_id or 0) for t in threading.enumerate()
               if t.name.startswith(WEB_THREADS))


def run_once(fa: FrameAnalyzer, images: list[np.ndarray], state: Path, *, n: int,
             client: str | None) -> dict[str, Any]:
    """One pipeline run of ``n`` frames; with the page and ``client`` unless None."""
    web = client is not None
    state.mkdir()
    sinks: list[Any] = [JsonlSink(JsonlSinkConfig(path=str(state / "out.jsonl"), fsync=False)),
                        HistorySink(HistorySinkConfig(enabled=True), state_dir=state)]
    for s in sinks:
        s.open()
    agg = BatchAggregator(config=BatchConfig(frames=8), counter=BatchCounter(state),
                          device_id="bench", px_size_um=fa.frame_px_size_um,
                          model={"name": fa.meta.name, "sha256": fa.meta.sha256,
                                 "backend": "onnxruntime", "precision": "fp32"},
                          psd_config=PsdConfig(bootstrap_n=50))
    p = Pipeline(source=CycleSource(images), processor=AnalyzerProcessor(fa), aggregator=agg,
                 sinks=sinks, options=PipelineOptions(max_frames=n, health_interval_s=1.0),
                 state_dir=None)
    server, stop, counts = None, threading.Event(), {}
    fetcher = None
    tap = FrameTap()
    if web:
        server = WebServer(WebContext(snapshot=p.latest_snapshot, tap=tap,
                                      history=sinks[1].path, config=WebConfig(port=0)))
        server.start()
        p.frame_stages.tap = tap
        fetcher = threading.Thread(target=_client, daemon=True,
                                   args=(server.url, CLIENTS[client or ""], stop, counts))
    p.start()
    runner = threading.Thread(target=p.run)
    runner.start()
    if fetcher is not None:
        fetcher.start()
    t0 = None
    cpu0 = time.process_time()
    while p.frames_total < n and runner.is_alive():
        if t0 is None and p.stages["capture"].items:
            t0 = time.perf_counter()
        time.sleep(0.002)
    t1 = time.perf_counter()
    cpu = time.process_time() - cpu0
    web_cpu = web_cpu_s() if web else 0.0  # before the server's threads end
    client_cpu = thread_cpu_s(counts.get("native_id", 0)) if web else 0.0
    stop.set()
    runner.join()
    if fetcher is not None:
        fetcher.join(10)
    if server is not None:
        server.stop()
    for s in sinks:
        s.close()
    counts.pop("native_id", None)
    return {"fps": n / max(t1 - (t0 or t1), 1e-9), "requests": counts,
            "overlay_encodes": tap.encodes, "web_cpu_s": web_cpu,
            # the service's CPU without the page's threads and the client (a browser is
            # elsewhere)
            "pipeline_cpu_s": cpu - web_cpu - client_cpu, "seconds": t1 - (t0 or t1)}


def arm_summary(arm: str, off: list[dict[str, Any]], on: list[dict[str, Any]]
                ) -> dict[str, Any]:
    """Costs of one client against the "off" runs (medians; every run listed)."""
    share = [100.0 * x["web_cpu_s"] / max(x["pipeline_cpu_s"], 1e-9) for x in on]
    fps_cost = [100.0 * (1.0 - b["fps"] / a["fps"]) for a, b in zip(off, on, strict=True)]
    return {
        "paths_each_second": list(CLIENTS[arm]),
        "fps": [round(x["fps"], 3) for x in on],
        "web_cost_pct": round(statistics.median(share), 2),
        "web_cost_pct_all": [round(c, 2) for c in share],
        "web_cpu_ms_per_s": round(statistics.median(
            1e3 * x["web_cpu_s"] / x["seconds"] for x in on), 2),
        "web_cost_pct_of_cores": round(statistics.median(
            100 * x["web_cpu_s"] / x["seconds"] / (os.cpu_count() or 1) for x in on), 2),
        "fps_cost_pct": round(statistics.median(fps_cost), 2),
        "fps_cost_pct_all": [round(c, 2) for c in fps_cost],
        "requests_last_run": on[-1]["requests"],
        "overlay_encodes_last_run": on[-1]["overlay_encodes"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of one run")
    ap.add_argument("--repeats", type=int, default=3, help="(off, on) pairs")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=768)
    args = ap.parse_args(argv)
    from bench_pipeline import bench_model, render_frames

    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    model, kind = bench_model(args.model, work)
    hw = (args.height, args.width)
    (work / "frames").mkdir()
    images = render_frames(work / "frames", 6, hw)
    fa = FrameAnalyzer(model, backend_config=BackendConfig(
        name="onnxruntime", onnxruntime_device="cpu"), frame_hw=hw, px_size_um=1.45,
        inference_scale="auto")
    warm = run_once(fa, images, work / "warm", n=6, client=None)
    n = max(12, int(warm["fps"] * args.seconds))
    runs: dict[str, list[dict[str, Any]]] = {"off": [], **{c: [] for c in CLIENTS}}
    for r in range(max(1, args.repeats)):
        for arm, done in runs.items():  # alternating: off, page, png, off, ...
            done.append(run_once(fa, images, work / f"{arm}{r}", n=n,
                                 client=None if arm == "off" else arm))
    out: dict[str, Any] = {
        "benchmark": "web",
        "model": {"kind": kind, "name": fa.meta.name},
        "frame_hw": list(hw),
        "frames_per_run": n,
        "off_fps": [round(x["fps"], 3) for x in runs["off"]],
    }
    for arm in CLIENTS:
        out[arm] = arm_summary(arm, runs["off"], runs[arm])
    out["web_cost_pct"] = out["page"]["web_cost_pct"]
    out["web_cost_goal_pct"] = 2.0
    out["host"] = {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                   "python": platform.python_version(),
                   "load_average_1min": round(os.getloadavg()[0], 2)}
    fa.close()
    tmp.cleanup()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
