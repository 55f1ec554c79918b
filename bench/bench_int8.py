"""FP32, FP16 and INT8 side by side on ONNX Runtime's CPU; one JSON object on stdout.

    .venv/bin/python bench/bench_int8.py [--model models/crystal-seg.onnx] [--frames 8]
        [--batches 1 2 4] [--repeats 3] [--threads 0] [--no-accuracy]

In ONE process, on generated 1024 x 768 frames of 1.45 um/px at the default inference
scale (``auto``: the model's training pixel size, 0.5 for the bundled model, so the
network sees 512 x 384):

* ``fp32`` (the float model widened to FP32, :func:`trainer.quantize.write_float32`),
  ``fp16`` (the shipped file) and ``int8`` (its ``<stem>.int8.onnx`` sibling, as
  ``[backend] precision = "int8"`` runs it) through the edge backend, bare ``infer`` on
  pre-built tensors, batch 1 and every ``--batches`` size; the measurements ALTERNATE
  (precision after precision, batch after batch, ``--repeats`` rounds), so the machine's
  load falls on all alike; figures are medians over the rounds;
* ``int8.speedup_vs_fp32``: INT8 best-batch frames/s over FP32 best-batch frames/s (and
  ``speedup_vs_fp32_batch1``; ``speedup_vs_fp32_paired``: the median ratio of the
  back-to-back measurements, the figure least moved by other load on the machine);
* ``int8.pipeline``: the streaming pipeline vs the bare backend with the INT8 model
  (``bench_pipeline``'s own runs), ``ratio`` = pipeline_fps / backend_fps;
* ``int8.crystal_iou_delta``, ``int8.x50_3_shift_pct``, ``int8.pixel_agreement``: INT8 vs
  FP32 on the model card's generated sets, measured now (:mod:`trainer.int8gate`; with
  ``--no-accuracy`` taken from the INT8 file's metadata, measured at export).
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for p in (ROOT, BENCH):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_pipeline import bare_backend_fps, pipeline_run, render_frames  # noqa: E402

from edge.backends import BackendConfig  # noqa: E402
from edge.backends.precision import int8_sibling  # noqa: E402
from edge.backends.registry import create_backend  # noqa: E402
from edge.errors import UserError  # noqa: E402
from edge.modelmeta import load_meta  # noqa: E402
from edge.vision.analyzer import FrameAnalyzer  # noqa: E402
from edge.vision.preprocess import padded_hw, prepare_for_inference, to_nchw  # noqa: E402
from edge.vision.scale import resolve_scale  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "crystal-seg.onnx"
PX_SIZE_UM = 1.45


def time_backends(backends: dict, tensors: list[np.ndarray], batches: list[int],
                  repeats: int) -> dict[str, dict[int, list[float]]]:
    """Seconds per frame of every (precision, batch), alternating, ``repeats`` rounds."""
    t: dict[str, dict[int, list[float]]] = {k: {b: [] for b in batches} for k in backends}
    for _ in range(repeats):
        for b in batches:
            groups = [np.concatenate(tensors[i:i + b])
                      for i in range(0, len(tensors) - b + 1, b)]
            for name, be in backends.items():
                be.infer(groups[0])  # warm this batch shape
                t0 = time.perf_counter()
                for x in groups:
                    be.infer(x)
                t[name][b].append((time.perf_counter() - t0) / (len(groups) * b))
    return t


def summarise(times: dict[int, list[float]]) -> dict:
    per = {b: statistics.median(v) for b, v in times.items()}
    best = min(per, key=per.get)
    out = {f"batch{b}": {"ms_per_frame": round(1e3 * s, 2), "fps": round(1.0 / s, 3),
                         "all_ms": [round(1e3 * x, 1) for x in times[b]]}
           for b, s in per.items()}
    return dict(out, best_batch=best, best_fps=round(1.0 / per[best], 3),
                best_ms_per_frame=round(1e3 * per[best], 2))


def paired_speedup(slow: dict[int, list[float]], fast: dict[int, list[float]]) -> float:
    """Median over rounds and batch sizes of the time ratio of two precisions measured
    back to back (the same round and batch): robust to the load changing between rounds."""
    return round(statistics.median(a / b for k in slow for a, b in zip(
        slow[k], fast[k], strict=True)), 3)


def pipeline_ratio(model: Path, work: Path, frames_dir: Path, images, *, n: int, batch: int,
                   repeats: int) -> dict:
    """bench_pipeline's alternating bare/pipeline runs with ``model``: the median pair."""
    cfg = BackendConfig(name="onnxruntime", onnxruntime_device="cpu", max_batch=batch)
    fa = FrameAnalyzer(model, backend_config=cfg, frame_hw=images[0].shape[:2],
                       px_size_um=PX_SIZE_UM, inference_scale="auto")
    pairs = []
    try:
        for r in range(repeats):
            state = work / f"state{r}"
            state.mkdir()
            b = bare_backend_fps(fa, images, batch)
            p = pipeline_run(fa, frames_dir, state, n=n, batch=batch, post_workers=1)
            pairs.append((b, p["fps"]))
    finally:
        fa.close()
    ratios = sorted(p / b for b, p in pairs)
    bare, fps = sorted(pairs, key=lambda bp: bp[1] / bp[0])[len(pairs) // 2]
    return {"backend_fps": round(bare, 3), "pipeline_fps": round(fps, 3),
            "ratio": round(fps / bare, 3), "ratios_all": [round(r, 3) for r in ratios],
            "frames": n, "batch": batch}


def accuracy(fp32: Path, int8: Path, work: Path, measure: bool) -> dict:
    """INT8 vs FP32 on the model card's sets (measured now, or from the INT8 metadata)."""
    from trainer.int8gate import card_sets, gate_problems, measure_agreement

    if measure:
        agree = measure_agreement(fp32, int8, card_sets(load_meta(fp32), work / "sets"))
        source = "measured now on the model card's generated sets"
    else:
        agree = (load_meta(int8).quantization or {}).get("agreement") or {}
        source = "the INT8 file's metadata (measured at export)"
    return {"pixel_agreement": agree.get("pixel_agreement"),
            "crystal_iou_delta": agree.get("crystal_iou_delta"),
            "x50_3_shift_pct": agree.get("x50_3_shift_pct"),
            "per_set": {k: {kk: v[kk] for kk in ("pixel_agreement", "crystal_iou_delta",
                                                 "x50_3_shift")}
                        for k, v in (agree.get("sets") or {}).items()},
            "gate_problems": gate_problems(agree) if agree else ["no agreement recorded"],
            "accuracy_source": source}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                    help="the float model; its <stem>.int8.onnx sibling must exist")
    ap.add_argument("--frames", type=int, default=8, help="frames per measurement")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    ap.add_argument("--no-accuracy", action="store_true",
                    help="take the accuracy deltas from the INT8 metadata")
    args = ap.parse_args(argv)
    int8 = int8_sibling(args.model)
    if not int8.is_file():
        raise SystemExit(f"bench_int8: {int8} not found (crystal-train export --int8)")
    from trainer.quantize import write_float32

    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    models = {"fp32": write_float32(args.model, work / "fp32.onnx"), "fp16": args.model,
              "int8": int8}
    hw = (768, 1024)
    meta = load_meta(args.model)
    scale = resolve_scale(PX_SIZE_UM, "auto", meta, model_name=meta.name).inference_scale
    (work / "in").mkdir()
    images = render_frames(work / "in", args.frames, hw)
    rgbs = [prepare_for_inference(im, scale) for im in images]
    in_hw = padded_hw(rgbs[0].shape[:2], meta.input.size_multiple)
    tensors = [to_nchw([r], in_hw) for r in rgbs]
    cfg = BackendConfig(name="onnxruntime", onnxruntime_device="cpu", threads=args.threads,
                        max_batch=max(args.batches), warmup_runs=1)
    backends = {k: create_backend(p, load_meta(p), cfg, input_hw=in_hw)[0]
                for k, p in models.items()}
    info = {k: b.info() for k, b in backends.items()}
    times = time_backends(backends, tensors, sorted(set(args.batches)), args.repeats)
    for b in backends.values():
        b.close()
    figs = {k: summarise(v) for k, v in times.items()}
    out = {
        "benchmark": "int8",
        "model": str(args.model), "int8_model": str(int8),
        "size_bytes": {k: Path(p).stat().st_size for k, p in models.items()},
        "frame_hw": list(hw), "inference_scale": scale, "network_input_hw": list(in_hw),
        "frames": args.frames, "repeats": args.repeats,
        "fp32": figs["fp32"], "fp16": figs["fp16"],
        "int8": dict(figs["int8"],
                     speedup_vs_fp32=round(figs["int8"]["best_fps"] / figs["fp32"]["best_fps"],
                                           3),
                     speedup_vs_fp32_batch1=round(figs["int8"]["batch1"]["fps"]
                                                  / figs["fp32"]["batch1"]["fps"], 3),
                     speedup_vs_fp16=round(figs["int8"]["best_fps"] / figs["fp16"]["best_fps"],
                                           3),
                     speedup_vs_fp32_paired=paired_speedup(times["fp32"], times["int8"]),
                     speedup_goal=1.8),
        "backend_info": info,
    }
    out["int8"]["pipeline"] = pipeline_ratio(
        int8, work, work / "in", images, n=args.frames, batch=figs["int8"]["best_batch"],
        repeats=args.repeats)
    try:
        out["int8"].update(accuracy(models["fp32"], int8, work, not args.no_accuracy))
    except UserError as exc:
        out["int8"]["accuracy_error"] = str(exc)
    out["host"] = {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                   "python": platform.python_version(),
                   "load_average_1min": round(os.getloadavg()[0], 2)}
    tmp.cleanup()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
