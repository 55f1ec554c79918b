"""Benchmark of the synthetic frame generator; prints one JSON object on stdout.

    .venv/bin/python bench/bench_synth.py [--n 200] [--size 1024x768] [--fraction 125-180]
        [--png-compression 1] [--out DIR]

Times (wall clock, one process) :func:`trainer.synth.render_frame` and the PNG writing
(RGB + label) one after the other on up to 30 frames (``render_s_per_frame``,
``write_s_per_frame``), then :func:`trainer.synth.generate_dataset` of ``--n`` frames as
``crystal-train synth`` runs it, PNG encoding in background threads overlapping the
rendering (``total_s``, ``total_s_per_frame``). The target is 200 frames of 1024 x 768 in
under a minute, i.e. ``total_s_per_frame`` < 0.3 s including writing;
``render_s_per_frame`` is what the edge's synthetic frame source pays per frame.
``cpu_s_per_frame`` (process CPU time of all threads per frame) is the cost that does not
depend on how busy the machine is (``host.load_average_1min``). Frames go to a temporary
folder unless ``--out`` is given.
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

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.synth import SynthConfig, frame_seed, generate_dataset, render_frame  # noqa: E402
from trainer.synth.dataset import write_frame  # noqa: E402

TARGET_S_PER_FRAME = 0.3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--fraction", default="125-180")
    ap.add_argument("--png-compression", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    lo, hi = (float(v) for v in a.fraction.split("-"))
    cfg = SynthConfig(width=w, height=h, fraction_um=(lo, hi))
    render_t, write_t, n_crystals = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or Path(tmp)
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "labels").mkdir(parents=True, exist_ok=True)
        render_frame(frame_seed(a.seed, 10**6), cfg)  # warm-up (caches, lazy imports)
        # 1) the stages alone, one after the other (a sample of the frames)
        for i in range(min(a.n, 30)):
            t0 = time.perf_counter()
            frame = render_frame(frame_seed(a.seed, i), cfg)
            t1 = time.perf_counter()
            write_frame(out, "stage", frame, png_compression=a.png_compression)
            t2 = time.perf_counter()
            render_t.append(t1 - t0)
            write_t.append(t2 - t1)
            n_crystals.append(len(frame.crystals))
        # 2) what `crystal-train synth` does: generate_dataset (writes overlap rendering)
        t_all, c_all = time.perf_counter(), time.process_time()
        generate_dataset(out / "set", a.n, cfg, a.seed, png_compression=a.png_compression)
        total, cpu = time.perf_counter() - t_all, time.process_time() - c_all
    per = total / max(a.n, 1)
    result = {
        "bench": "synth",
        "frames": a.n,
        "size": [w, h],
        "fraction_um": [lo, hi],
        "png_compression": a.png_compression,
        "crystals_per_frame_mean": round(float(np.mean(n_crystals)), 2),
        "render_s_per_frame": {"mean": round(statistics.fmean(render_t), 4),
                               "median": round(statistics.median(render_t), 4),
                               "p95": round(float(np.percentile(render_t, 95)), 4)},
        "write_s_per_frame": {"mean": round(statistics.fmean(write_t), 4),
                              "median": round(statistics.median(write_t), 4)},
        "total_s": round(total, 3),
        "total_s_per_frame": round(per, 4),
        "cpu_s_per_frame": round(cpu / max(a.n, 1), 4),
        "frames_per_s": round(a.n / total, 2) if total > 0 else None,
        "target_s_per_frame": TARGET_S_PER_FRAME,
        "meets_target": per < TARGET_S_PER_FRAME,
        "host": {"python": platform.python_version(), "opencv": cv2.__version__,
                 "numpy": np.__version__, "cpu_count": os.cpu_count(),
                 "load_average_1min": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
