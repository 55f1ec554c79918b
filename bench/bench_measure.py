"""Benchmark: edge.measure (OpenCV) vs the scikit-image oracle on a 2048 x 2048 mask.

Prints one JSON object on stdout: ms per image (median of the repeats) for each
implementation, their ratio, and the crystal counts.

    .venv/bin/python bench/bench_measure.py [--size 2048] [--crystals 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from edge.measure import MeasureConfig, measure_crystals  # noqa: E402
from tests.edge.measure.oracle import oracle_measure  # noqa: E402
from tests.edge.measure.shapes import random_scene  # noqa: E402


def _time(fn, repeats: int) -> tuple[list[float], object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048, help="mask side (px)")
    p.add_argument("--crystals", type=int, default=300, help="crystals to place")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the OpenCV pipeline")
    p.add_argument("--oracle-repeats", type=int, default=3, help="timed runs of the oracle")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    mask = random_scene(a.size, a.size, a.crystals, seed=a.seed, r_range=(10, 40))
    cfg = MeasureConfig()
    px = 1.45
    t_cv, res = _time(lambda: measure_crystals(mask, px_size_um=px, config=cfg), a.repeats)
    t_sk, (ref, _n_small) = _time(
        lambda: oracle_measure(mask, px_size_um=px, min_area_px=cfg.min_area_px,
                               closing_radius_px=cfg.closing_radius_px, h_px=cfg.h_px,
                               h_rel=cfg.h_rel), a.oracle_repeats)
    med_cv, med_sk = statistics.median(t_cv), statistics.median(t_sk)
    out = {
        "bench": "measure",
        "mask": [a.size, a.size],
        "crystal_pixels_fraction": round(float(mask.mean()), 4),
        "crystals_found": len(res),
        "crystals_kept": res.n_kept,
        "oracle_crystals_found": len(ref),
        "opencv_ms": {"median": round(med_cv, 2), "runs": [round(t, 2) for t in t_cv]},
        "skimage_oracle_ms": {"median": round(med_sk, 2), "runs": [round(t, 2) for t in t_sk]},
        "speedup": round(med_sk / med_cv, 2),
        "opencv_version": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
