"""Benchmark of the inference backend and per-frame post-processing; one JSON object on stdout.

    .venv/bin/python bench/bench_backend.py [--model models/crystal-seg.onnx] [--frames N]
        [--batch 4] [--threads 0] [--inference-scale auto] [--backend onnxruntime]

At the demo frame size (1024 x 768 synthetic back-lit frames of 1.45 um/px with ~30
crystals) and the given inference scale (default ``auto``, the ``[model] inference_scale``
default: the network sees the pixel size it was trained at):

* ``backend.batch1_fps`` / ``backend.batchN_fps``: bare ``Backend.infer`` throughput on
  pre-built NCHW tensors (no decoding, no pre-processing), batch 1 and batch N;
* ``preprocess_ms_per_frame``: BGR uint8 -> padded float RGB tensor;
* ``postprocess_ms_per_frame``: ROI + crowding check + ``measure_crystals``
  (:meth:`FrameAnalyzer.postprocess`) on the real class maps;
* ``quality_ms_per_frame``: the pre-inference quality gate.

Uses ``models/crystal-seg.onnx`` when it exists (the trained DeepLabv3+), else the tiny
test model (a 1x1-conv threshold net: measures the plumbing, not a real network); the
``model.kind`` field says which. Times are medians (and ``*_min_ms`` the best) of
wall-clock repeats in one process; ``host.load_average_1min`` tells how busy the machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.backends import BackendConfig  # noqa: E402
from edge.vision.analyzer import FrameAnalyzer  # noqa: E402
from edge.vision.preprocess import resize_for_inference, to_nchw, to_rgb_float  # noqa: E402
from tests.fixtures.tiny_model import build_tiny_model, synth_frame  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "crystal-seg.onnx"


def _frames(n: int, hw: tuple[int, int]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        crystals = [(rng.uniform(60, hw[1] - 60), rng.uniform(60, hw[0] - 60),
                     rng.lognormal(np.log(14), 0.35)) for _ in range(30)]
        out.append(synth_frame(hw[0], hw[1], crystals=crystals, seed=i))
    return out


def _median_ms(times: list[float]) -> float:
    return round(statistics.median(times) * 1e3, 3)


def _min_ms(times: list[float]) -> float:
    return round(min(times) * 1e3, 3)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="ONNX (default models/crystal-seg.onnx, "
                                                  "else the tiny test model)")
    ap.add_argument("--frames", type=int, default=None,
                    help="frames per measurement (default 16 with the tiny model, 8 with a "
                         "real network: each frame is inferred four times)")
    ap.add_argument("--batch", type=int, default=4, help="batch size of the batched run")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    ap.add_argument("--inference-scale", default="auto",
                    help="number, or 'auto' (default, as the appliance): the model's trained "
                         "pixel size for frames of 1.45 um/px")
    ap.add_argument("--backend", default="onnxruntime",
                    choices=["auto", "onnxruntime", "tensorrt"])
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=768)
    return ap


def _timed(fn: Any, items: list[Any]) -> list[float]:
    """Seconds of ``fn(item)`` for every item."""
    out = []
    for x in items:
        t0 = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t0)
    return out


def _measure(fa: FrameAnalyzer, frames: list[np.ndarray], batch: int) -> dict[str, Any]:
    """Timings of every stage of ``fa`` on ``frames`` (medians in ms, fps)."""
    backend = fa.backend
    assert backend is not None
    in_hw = backend.input_hw
    tensors: list[np.ndarray] = []
    pre = _timed(lambda f: tensors.append(
        to_nchw([resize_for_inference(to_rgb_float(f), fa.inference_scale)], in_hw)), frames)
    t1 = _timed(backend.infer, tensors)
    batched = [np.concatenate(tensors[i:i + batch])
               for i in range(0, len(tensors) - batch + 1, batch)]
    tb = _timed(backend.infer, batched)
    tq = _timed(fa.check_quality, frames)
    maps = fa.segment(frames)
    kept: list[int] = []

    def post(i: int) -> None:
        r = fa.postprocess(f"f{i}", frames[i], maps[i])
        kept.append(r.crystals.n_kept if r.crystals is not None else 0)
    tp = _timed(post, list(range(len(frames))))
    e2e = sum(_timed(fa.analyze_many, [[(f"f{i}", f) for i, f in enumerate(frames)]]))
    b1 = statistics.median(t1)
    bn = statistics.median(tb) if tb else float("nan")
    return {
        "backend": {**fa.model_info["backend_info"],
                    "batch1_ms": round(b1 * 1e3, 3),
                    "batch1_min_ms": _min_ms(t1),
                    "batch1_fps": round(1.0 / b1, 2),
                    f"batch{batch}_ms": round(bn * 1e3, 3),
                    f"batch{batch}_min_ms": _min_ms(tb) if tb else None,
                    f"batch{batch}_fps": round(batch / bn, 2) if tb else None},
        "network_input_hw": list(in_hw),
        "preprocess_ms_per_frame": _median_ms(pre),
        "quality_ms_per_frame": _median_ms(tq),
        "postprocess_ms_per_frame": _median_ms(tp),
        "postprocess_min_ms": _min_ms(tp),
        "crystals_kept_per_frame": round(float(np.mean(kept)), 1),
        "analyze_many_fps": round(len(frames) / e2e, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    tmp = None
    if args.model:
        model, kind = Path(args.model), "given"
    elif DEFAULT_MODEL.is_file():
        model, kind = DEFAULT_MODEL, "trained (models/crystal-seg.onnx)"
    else:
        tmp = tempfile.TemporaryDirectory()
        model, kind = build_tiny_model(tmp.name), "tiny test model (1x1-conv threshold net)"
    if args.frames is None:
        args.frames = 16 if tmp is not None else 8
    if args.frames < args.batch:
        ap.error(f"--frames ({args.frames}) must be at least --batch ({args.batch})")
    hw = (args.height, args.width)
    cfg = BackendConfig(name=args.backend, threads=args.threads, max_batch=args.batch)
    scale = args.inference_scale if args.inference_scale == "auto" else float(
        args.inference_scale)
    fa = FrameAnalyzer(model, backend_config=cfg, inference_scale=scale, frame_hw=hw,
                       px_size_um=1.45)
    frames = _frames(args.frames, hw)
    timings = _measure(fa, frames, args.batch)
    out = {
        "benchmark": "backend",
        "model": {"path": str(model) if kind != "tiny test model (1x1-conv threshold net)"
                  else "tiny", "kind": kind, "name": fa.meta.name},
        "backend": timings.pop("backend"),
        "frame_hw": list(hw),
        "inference_scale": fa.inference_scale,
        "network_input_hw": timings.pop("network_input_hw"),
        "frames": len(frames),
        **timings,
        "host": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                 "python": platform.python_version(),
                 "load_average_1min": round(os.getloadavg()[0], 2)},
    }
    fa.close()
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
