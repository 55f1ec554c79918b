"""Benchmark: edge.measure (OpenCV) vs the scikit-image oracle on a 2048 x 2048 mask.

Prints one JSON object on stdout: ms per image (median of the repeats) for each
implementation, their ratio, and the crystal counts.

    .venv/bin/python bench/bench_measure.py [--size 2048] [--crystals 300] [--repeats 5]

``--window-study`` instead measures what the defaults of ``MeasureConfig`` rest on, on
the synthetic generator's crystal outlines (``trainer.synth.geometry``): circularity of
single crystals and of the 2-3 crystal clumps the watershed leaves unsplit, the share
of each the lower circularity bound would reject, and how often pairs are split.
"""

from __future__ import annotations

import argparse
import json
import os
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


def _time(fn, repeats: int) -> tuple[list[float], list[float], object]:
    """Wall and CPU (all threads of the process) ms per run, and the last result."""
    out = fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        cpu.append((time.process_time() - c0) * 1000.0)
        wall.append((time.perf_counter() - t0) * 1000.0)
    return wall, cpu, out


def window_study(n_singles: int, n_clumps: int, seed: int) -> dict[str, object]:
    """Circularity of synthetic single crystals and unsplit clumps; pair split rates."""
    import math

    from edge.measure import split_touching
    from trainer.synth.geometry import convex_mask, make_outline

    rng = np.random.default_rng(seed)
    cfg = MeasureConfig()
    # the study's window, opened: every object is measured (model_copy skips the validator
    # that selects the rule from the window fields, so the rule is named)
    open_window = cfg.model_copy(update={"agglomerate_rule": "circularity",
                                         "circularity_min": 0.0, "circularity_max": 10.0})
    singles, oversplit = [], 0
    for _ in range(n_singles):
        d = float(rng.uniform(10, 70))
        poly, _shape, _aspect = make_outline(rng, d)
        n = int(d * 1.8) + 10
        res = measure_crystals(convex_mask(poly + n / 2, (n, n)), px_size_um=1.0,
                               config=open_window)
        oversplit += len(res) > 1
        singles.append(float(res.circularity[np.argmax(res.area_px)]))
    clumps = []
    split_by_sep: dict[str, list[bool]] = {}
    for _ in range(n_clumps):
        k = int(rng.choice([2, 3]))
        d = float(rng.uniform(15, 60))
        n = int(d * 5) + 20
        m = np.zeros((n, n), np.uint8)
        centres = [np.array([n / 2, n / 2])]
        sep = 1.0
        for j in range(k):
            dj = d * float(rng.uniform(0.7, 1.3))
            poly, _shape, _aspect = make_outline(rng, dj)
            c = centres[0]
            if j > 0:
                base = centres[int(rng.integers(0, len(centres)))]
                ang = rng.uniform(0, 2 * math.pi)
                sep = float(rng.uniform(0.55, 1.0))
                c = base + sep * (d + dj) / 2 * np.array([math.cos(ang), math.sin(ang)])
                centres.append(c)
            m |= convex_mask(poly + c, (n, n))
        if k == 2:
            key = f"{min(sep, 0.99) // 0.1 * 0.1:.1f}"
            split_by_sep.setdefault(key, []).append(int(split_touching(m).max()) >= 2)
        res = measure_crystals(m, px_size_um=1.0, config=open_window)
        if len(res) < k:
            clumps.append(float(res.circularity[np.argmax(res.area_px)]))
    s, c = np.array(singles), np.array(clumps)
    bounds = (0.65, 0.70, 0.72, 0.75, 0.80)
    return {
        "bench": "measure-window-study",
        "h_rel": cfg.h_rel, "circularity_min": cfg.circularity_min,
        "singles": {"n": n_singles, "oversplit": oversplit,
                    "circularity_pct_1_5_50": np.round(np.percentile(s, [1, 5, 50]), 3).tolist(),
                    "rejected_below": {str(b): round(float((s < b).mean()), 4) for b in bounds}},
        "clumps": {"n": n_clumps, "unsplit": int(c.size),
                   "circularity_pct_5_50_95": np.round(np.percentile(c, [5, 50, 95]), 3).tolist()
                   if c.size else [],
                   "rejected_below": {str(b): round(float((c < b).mean()), 4) if c.size else 0.0
                                      for b in bounds}},
        "pairs_split_rate_by_centre_distance": {
            k: round(float(np.mean(v)), 3) for k, v in sorted(split_by_sep.items())},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048, help="mask side (px)")
    p.add_argument("--crystals", type=int, default=300, help="crystals to place")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the OpenCV pipeline")
    p.add_argument("--oracle-repeats", type=int, default=3, help="timed runs of the oracle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window-study", action="store_true",
                   help="measure the circularity window / marker suppression defaults instead")
    p.add_argument("--singles", type=int, default=600, help="window study: single crystals")
    p.add_argument("--clumps", type=int, default=400, help="window study: 2-3 crystal clumps")
    a = p.parse_args(argv)
    if a.window_study:
        print(json.dumps(window_study(a.singles, a.clumps, a.seed), indent=2))
        return 0

    mask = random_scene(a.size, a.size, a.crystals, seed=a.seed, r_range=(10, 40))
    cfg = MeasureConfig()
    px = 1.45
    t_cv, c_cv, res = _time(lambda: measure_crystals(mask, px_size_um=px, config=cfg),
                            a.repeats)
    t_sk, c_sk, (ref, _n_small) = _time(
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
        "opencv_cpu_ms_median": round(statistics.median(c_cv), 2),
        "skimage_oracle_cpu_ms_median": round(statistics.median(c_sk), 2),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
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
