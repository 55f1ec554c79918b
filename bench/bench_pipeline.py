"""Benchmark of the streaming pipeline against the bare backend; one JSON object on stdout.

    .venv/bin/python bench/bench_pipeline.py [--model models/crystal-seg.onnx] [--frames N]
        [--batch 4] [--threads 0] [--post-workers 1] [--width 1024] [--height 768]

In ONE process, at the demo frame size (synthetic frames of the trainer's generator,
125-180 um, written as PNG files into a temporary watched folder):

* ``backend_fps``: bare ``Backend.infer`` throughput on pre-built NCHW tensors in batches
  of ``--batch`` (no decoding, no pre-processing, no post-processing);
* ``pipeline_fps``: end to end through ``edge.service.pipeline.Pipeline`` with the folder source
  (PNG decoding), quality gate, pre-processing, inference, post-processing (ROI,
  measurement, edge-correction weights), aggregation and the JSON-lines sink: frames
  over the time from the first frame taken to the last frame counted into a batch;
* ``ratio = pipeline_fps / backend_fps``: how well the pipeline hides capture and
  post-processing behind inference (goal >= 0.85);
* ``postprocess_ms_per_frame``: busy time of the post-processing stage per frame in that
  same pipeline run (and inference-stage busy time, which includes pre-processing).

Uses ``models/crystal-seg.onnx`` when it exists (the trained DeepLabv3+), else the tiny
test model (a 1x1-conv threshold net whose inference costs almost nothing, so the
ratio then measures post-processing, not the hiding of it); ``model.kind`` says which.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.backends import BackendConfig  # noqa: E402
from edge.psd import PsdConfig  # noqa: E402
from edge.service.pipeline.analysis import AnalyzerProcessor  # noqa: E402
from edge.service.pipeline.batch import BatchAggregator, BatchConfig, BatchCounter  # noqa: E402
from edge.service.pipeline.runtime import Pipeline, PipelineOptions  # noqa: E402
from edge.sinks.jsonl import JsonlSink, JsonlSinkConfig  # noqa: E402
from edge.sources.folder import FolderSource, FolderSourceConfig  # noqa: E402
from edge.vision.analyzer import FrameAnalyzer  # noqa: E402
from edge.vision.preprocess import resize_for_inference, to_nchw, to_rgb_float  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "crystal-seg.onnx"
TINY = "tiny test model (1x1-conv threshold net)"


def bench_model(given: str | None, work: Path) -> tuple[Path, str]:
    """The model a benchmark runs and what it is: the one given, the shipped one, or
    (without it) the tiny test model written to ``work``."""
    if given:
        return Path(given), "given"
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL, "trained (models/crystal-seg.onnx)"
    from tests.fixtures.tiny_model import build_tiny_model

    return build_tiny_model(work / "model"), TINY


def render_frames(directory: Path, n: int, hw: tuple[int, int]) -> list[np.ndarray]:
    """``n`` synthetic frames as PNG files (arrival order = index); returns the images."""
    from trainer.synth import SynthConfig, frame_seed, render_frame

    cfg = SynthConfig(width=hw[1], height=hw[0])
    images = []
    t0 = time.time() - 100
    for i in range(n):
        img = np.ascontiguousarray(render_frame(frame_seed(7, i), cfg).image[:, :, ::-1])
        path = directory / f"frame_{i:04d}.png"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        os.utime(path, (t0 + i, t0 + i))
        images.append(img)
    return images


def bare_backend_fps(fa: FrameAnalyzer, images: list[np.ndarray], batch: int) -> float:
    backend = fa.backend
    assert backend is not None
    tensors = [to_nchw([resize_for_inference(to_rgb_float(im), fa.inference_scale)],
                       backend.input_hw) for im in images]
    batches = [np.concatenate(tensors[i:i + batch]) for i in range(0, len(tensors), batch)]
    backend.infer(batches[0])  # warm
    t0 = time.perf_counter()
    for x in batches:
        backend.infer(x)
    return len(images) / (time.perf_counter() - t0)


def pipeline_run(fa: FrameAnalyzer, frames_dir: Path, state: Path, *, n: int, batch: int,
                 post_workers: int) -> dict:
    proc = AnalyzerProcessor(fa, psd_config=PsdConfig())
    src = FolderSource(FolderSourceConfig(path=frames_dir, poll_s=0.02, stable_polls=1,
                                          truncated_grace_s=0), state_dir=state)
    src.open()
    sink = JsonlSink(JsonlSinkConfig(path=str(state / "out.jsonl")))
    sink.open()
    agg = BatchAggregator(config=BatchConfig(frames=n), counter=BatchCounter(state),
                          device_id="bench", px_size_um=fa.frame_px_size_um,
                          model={"name": fa.meta.name, "sha256": fa.meta.sha256,
                                 "backend": "onnxruntime", "precision": "fp32"},
                          psd_config=PsdConfig())
    p = Pipeline(source=src, processor=proc, aggregator=agg, sinks=[sink],
                 options=PipelineOptions(infer_batch=batch, post_workers=post_workers,
                                         max_frames=n, health_interval_s=3600),
                 state_dir=None)
    depth_max = {"inference": 0, "post": 0, "aggregate": 0}
    t_first: list[float] = []
    p.start()
    runner = threading.Thread(target=p.run)
    runner.start()
    while p.frames_total < n and runner.is_alive():
        if not t_first and p.stages["capture"].items:
            t_first.append(time.perf_counter())
        for k, v in p.flow.depths().items():
            if k in depth_max:
                depth_max[k] = max(depth_max[k], v)
        time.sleep(0.002)
    t_last = time.perf_counter()
    runner.join()
    sink.close()
    src.close()
    t0 = t_first[0] if t_first else t_last
    post_busy = sum(s.busy_s for s in p.post_stages)
    post_items = max(1, sum(s.items for s in p.post_stages))
    inf = p.stages["inference"]
    rep = p.reports[0] if p.reports else None
    return {
        "fps": n / max(t_last - t0, 1e-9),
        "postprocess_ms_per_frame": 1e3 * post_busy / post_items,
        "inference_stage_ms_per_frame": 1e3 * inf.busy_s / max(1, inf.items),
        "frames_used": rep.frames_used if rep else 0,
        "frames_rejected": rep.frames_rejected_by_reason if rep else {},
        "crystals": rep.crystals_measured if rep else 0,
        "max_queue_depths": depth_max,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="ONNX (default models/crystal-seg.onnx, "
                                                  "else the tiny test model)")
    ap.add_argument("--frames", type=int, default=None,
                    help="frames per run (default 16 with the trained model, 48 tiny)")
    ap.add_argument("--batch", type=int, default=4, help="frames per inference call")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    ap.add_argument("--post-workers", type=int, default=1, help="post-processing threads")
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternating bare/pipeline measurements; the ratio reported is the "
                         "median of the adjacent pairs (this machine is noisy)")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=768)
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    model, kind = bench_model(args.model, work)
    n = args.frames or (48 if kind == TINY else 16)
    hw = (args.height, args.width)
    (work / "in").mkdir()
    images = render_frames(work / "in", n, hw)
    cfg = BackendConfig(name="onnxruntime", onnxruntime_device="cpu", threads=args.threads,
                        max_batch=args.batch)
    # the appliance's defaults: frames of 1.45 um/px, inference scale 'auto' (the network
    # sees the pixel size it was trained at; 0.5 for the bundled half-resolution model)
    fa = FrameAnalyzer(model, backend_config=cfg, frame_hw=hw, px_size_um=1.45,
                       inference_scale="auto")
    pairs = []
    for r in range(max(1, args.repeats)):
        state = work / f"state{r}"  # a fresh folder-source ledger: the same frames again
        state.mkdir()
        b = bare_backend_fps(fa, images, args.batch)
        p = pipeline_run(fa, work / "in", state, n=n, batch=args.batch,
                         post_workers=args.post_workers)
        pairs.append((b, p))
    k = sorted(range(len(pairs)), key=lambda i: pairs[i][1]["fps"] / pairs[i][0])[
        len(pairs) // 2]
    bare, run = pairs[k]  # the pair with the median ratio
    out = {
        "benchmark": "pipeline",
        "model": {"kind": kind, "name": fa.meta.name,
                  "path": "tiny" if kind == TINY else str(model)},
        "backend": fa.model_info["backend_info"],
        "frame_hw": list(hw),
        "frames": n,
        "batch": args.batch,
        "post_workers": args.post_workers,
        "backend_fps": round(bare, 3),
        "pipeline_fps": round(run["fps"], 3),
        "ratio": round(run["fps"] / bare, 3),
        "ratios_all": [round(p["fps"] / b, 3) for b, p in pairs],
        "ratio_goal": 0.85,
        "postprocess_ms_per_frame": round(run["postprocess_ms_per_frame"], 2),
        "inference_stage_ms_per_frame": round(run["inference_stage_ms_per_frame"], 2),
        "pipeline": {k: run[k] for k in ("frames_used", "frames_rejected", "crystals",
                                         "max_queue_depths")},
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
