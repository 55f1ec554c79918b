"""Cost of ``[model] flip_average`` (the mirror average) per frame; one JSON object on stdout.

    .venv/bin/python bench/bench_flip.py [--model models/crystal-seg.onnx] [--frames 4]
        [--repeats 5] [--width 1024] [--height 768]

Two :class:`edge.vision.analyzer.FrameAnalyzer` on the same model and backend, one with
``flip_average`` and one without, segment the same generated frames (the demo's size,
125-180 um) in alternating repeats (the first one a warm-up). Reported per frame, as
medians over the repeats:

* ``segment_ms``: :meth:`FrameAnalyzer.segment` (pre-processing, inference, class maps);
* ``inference_ms``: the backend calls alone (two per frame with the average);
* ``segment_ratio`` = with / without (the price of the option in segmentation time;
  post-processing, which it does not touch, comes on top of both: ``docs/performance.md``).

Uses ``models/crystal-seg.onnx`` when it exists, else the tiny test model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_pipeline import bench_model, render_frames  # noqa: E402
from edge.backends import BackendConfig  # noqa: E402
from edge.vision.analyzer import FrameAnalyzer  # noqa: E402


def time_views(analyzers: dict[str, FrameAnalyzer], images: list, repeats: int
               ) -> dict[str, dict[str, list[float]]]:
    """Alternating repeats: per analyzer, lists of per-frame segment and inference ms."""
    times: dict[str, dict[str, list[float]]] = {k: {"segment_ms": [], "inference_ms": []}
                                                for k in analyzers}
    for r in range(repeats + 1):
        order = list(analyzers) if r % 2 == 0 else list(reversed(list(analyzers)))
        for key in order:
            a = analyzers[key]
            t0 = time.perf_counter()
            a.segment(images)
            dt = time.perf_counter() - t0
            if r == 0:
                continue  # warm-up
            times[key]["segment_ms"].append(dt * 1e3 / len(images))
            times[key]["inference_ms"].append(a.last_timings["inference_ms"])
    return times


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=768)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, kind = bench_model(args.model, work)
        (work / "frames").mkdir()
        images = render_frames(work / "frames", args.frames, (args.height, args.width))
        cfg = BackendConfig(name="onnxruntime", onnxruntime_device="cpu",
                            max_batch=args.frames, warmup_runs=0)
        analyzers = {key: FrameAnalyzer(model, backend_config=cfg, px_size_um=1.45,
                                        flip_average=key == "with")
                     for key in ("without", "with")}
        try:
            times = time_views(analyzers, images, args.repeats)
            info = analyzers["with"].model_info
        finally:
            for a in analyzers.values():
                a.close()
    med = {k: {m: round(statistics.median(v), 2) for m, v in t.items()}
           for k, t in times.items()}
    doc = {
        "benchmark": "flip",
        "model": {"path": str(model), "kind": kind},
        "backend": info.get("backend"), "precision": info.get("precision"),
        "frame_hw": [args.height, args.width], "inference_scale": info.get("inference_scale"),
        "frames": args.frames, "repeats": args.repeats,
        "without_flip": med["without"], "with_flip": med["with"],
        "segment_ratio": round(med["with"]["segment_ms"] / med["without"]["segment_ms"], 3),
        "inference_ratio": round(
            med["with"]["inference_ms"] / med["without"]["inference_ms"], 3),
        "host": {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(doc, indent=2))
    return doc


if __name__ == "__main__":
    main()
