"""Cost of the second pass for thin crystals (``[model] thin_width_px``) per frame; one JSON
object on stdout.

    .venv/bin/python bench/bench_thin.py [--model models/crystal-seg.onnx] [--frames 2]
        [--repeats 3] [--width 1024] [--height 768]

Two :class:`edge.vision.analyzer.FrameAnalyzer` on the same model and backend, one with the
default ``thin_width_px`` and one with 0 (no second pass), segment the same generated
frames in alternating repeats (the first one a warm-up): needle frames (aspect 3-10,
which take the second pass at 1.5 times the scale) and compact ones (which do not).
Reported per frame and kind, as medians over the repeats: ``segment_ms`` with and
without, their ratio, and how many of the frames took the second pass. The compact
frames' ratio is the price of measuring the crystals' width on every frame; the needle
frames' is that of the second pass (2.25 times the pixels, plus the first).

Uses ``models/crystal-seg.onnx`` when it exists, else the tiny test model (whose frames
are not thin: ratios near 1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_flip import time_views  # noqa: E402
from bench.bench_pipeline import bench_model  # noqa: E402
from edge.backends import BackendConfig  # noqa: E402
from edge.vision.analyzer import FrameAnalyzer  # noqa: E402
from edge.vision.contact import scale_of  # noqa: E402


def preset_frames(preset: str, n: int, hw: tuple[int, int], seed: int) -> list[np.ndarray]:
    """``n`` generated frames of a generator preset (BGR, as the appliance decodes them)."""
    from trainer.synth import SynthConfig, frame_seed, render_frame

    cfg = SynthConfig.from_presets(preset, width=hw[1], height=hw[0])
    return [np.ascontiguousarray(render_frame(frame_seed(seed, i), cfg).image[:, :, ::-1])
            for i in range(n)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=768)
    args = p.parse_args(argv)
    hw = (args.height, args.width)
    kinds = {"needles": preset_frames("needles", args.frames, hw, 11),
             "compact": preset_frames("compact", args.frames, hw, 12)}
    doc: dict = {"benchmark": "thin", "frame_hw": list(hw), "frames": args.frames,
                 "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        model, kind = bench_model(args.model, Path(tmp))
        cfg = BackendConfig(name="onnxruntime", onnxruntime_device="cpu",
                            max_batch=args.frames, warmup_runs=0)
        analyzers = _analyzers(model, cfg)
        try:
            for name, images in kinds.items():
                times = time_views(analyzers, images, args.repeats)
                med = {k: round(statistics.median(t["segment_ms"]), 2) for k, t in times.items()}
                fine = sum(scale_of(m, 0.0) > 0 for m in analyzers["second_pass"].segment(images))
                doc[name] = {"segment_ms": med, "fine_pass_frames": int(fine),
                             "segment_ratio": round(med["second_pass"] / med["one_pass"], 3)}
            info = analyzers["second_pass"].model_info
        finally:
            for a in analyzers.values():
                a.close()
    doc.update(model={"path": str(model), "kind": kind}, backend=info.get("backend"),
               inference_scale=info.get("inference_scale"),
               fine_scale=info.get("thin_fine_scale"),
               host={"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)})
    print(json.dumps(doc, indent=2))
    return doc


def _analyzers(model: Path, cfg: BackendConfig) -> dict[str, FrameAnalyzer]:
    """The analyzer without the second pass and the one with the default threshold."""
    return {"one_pass": FrameAnalyzer(model, backend_config=cfg, px_size_um=1.45,
                                      thin_width_px=0.0),
            "second_pass": FrameAnalyzer(model, backend_config=cfg, px_size_um=1.45)}


if __name__ == "__main__":
    main()
