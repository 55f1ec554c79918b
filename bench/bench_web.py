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
``web_cost_pct = 100 * (1 - on_fps / off_fps)`` for each adjacent (off, on) pair; the
median is reported (goal < 2 %) with every pair, since a shared machine is noisy.
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
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_pipeline import DEFAULT_MODEL, TINY  # noqa: E402

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


PAGE_REQUESTS = ("api/frames/latest.png", "api/frames/latest.jpg", "api/status",
                 "api/batches?limit=6", "api/trend?hours=6", "api/rejected")
"""Each second: what the page's script fetches, and the lossless PNG on top."""


def _client(base: str, stop: threading.Event, counts: dict[str, int]) -> None:
    """What the page's script does each second."""
    while not stop.wait(1.0):
        for path in PAGE_REQUESTS:
            try:
                with urllib.request.urlopen(base + path, timeout=5) as r:
                    r.read()
                counts[path] = counts.get(path, 0) + 1
            except OSError:
                counts["errors"] = counts.get("errors", 0) + 1


def run_once(fa: FrameAnalyzer, images: list[np.ndarray], state: Path, *, n: int,
             web: bool) -> dict[str, Any]:
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
    client = None
    tap = FrameTap()
    if web:
        server = WebServer(WebContext(snapshot=p.latest_snapshot, tap=tap,
                                      history=sinks[1].path, config=WebConfig(port=0)))
        server.start()
        p.frame_stages.tap = tap
        client = threading.Thread(target=_client, args=(server.url, stop, counts), daemon=True)
    p.start()
    runner = threading.Thread(target=p.run)
    runner.start()
    if client is not None:
        client.start()
    t0 = None
    while p.frames_total < n and runner.is_alive():
        if t0 is None and p.stages["capture"].items:
            t0 = time.perf_counter()
        time.sleep(0.002)
    t1 = time.perf_counter()
    stop.set()
    runner.join()
    if client is not None:
        client.join(10)
    if server is not None:
        server.stop()
    for s in sinks:
        s.close()
    return {"fps": n / max(t1 - (t0 or t1), 1e-9), "requests": counts,
            "overlay_encodes": tap.encodes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of one run")
    ap.add_argument("--repeats", type=int, default=4, help="(off, on) pairs")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=768)
    args = ap.parse_args(argv)
    from bench_pipeline import render_frames

    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    if args.model:
        model, kind = Path(args.model), "given"
    elif DEFAULT_MODEL.is_file():
        model, kind = DEFAULT_MODEL, "trained (models/crystal-seg.onnx)"
    else:
        from tests.fixtures.tiny_model import build_tiny_model

        model, kind = build_tiny_model(work / "model"), TINY
    hw = (args.height, args.width)
    (work / "frames").mkdir()
    images = render_frames(work / "frames", 6, hw)
    fa = FrameAnalyzer(model, backend_config=BackendConfig(
        name="onnxruntime", onnxruntime_device="cpu"), frame_hw=hw, px_size_um=1.45,
        inference_scale="auto")
    warm = run_once(fa, images, work / "warm", n=6, web=False)
    n = max(12, int(warm["fps"] * args.seconds))
    pairs = []
    for r in range(max(1, args.repeats)):
        off = run_once(fa, images, work / f"off{r}", n=n, web=False)
        on = run_once(fa, images, work / f"on{r}", n=n, web=True)
        pairs.append((off, on))
    costs = [100.0 * (1.0 - on["fps"] / off["fps"]) for off, on in pairs]
    out = {
        "benchmark": "web",
        "model": {"kind": kind, "name": fa.meta.name},
        "frame_hw": list(hw),
        "frames_per_run": n,
        "off_fps": [round(off["fps"], 3) for off, _ in pairs],
        "on_fps": [round(on["fps"], 3) for _, on in pairs],
        "web_cost_pct_all": [round(c, 2) for c in costs],
        "web_cost_pct": round(statistics.median(costs), 2),
        "web_cost_goal_pct": 2.0,
        "client_requests_last_run": pairs[-1][1]["requests"],
        "overlay_encodes_last_run": pairs[-1][1]["overlay_encodes"],
        "host": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                 "python": platform.python_version(),
                 "load_average_1min": round(os.getloadavg()[0], 2)},
    }
    fa.close()
    tmp.cleanup()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
