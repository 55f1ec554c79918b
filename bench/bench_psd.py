"""Benchmark of the PSD statistics (edge.psd); prints one JSON object on stdout.

    .venv/bin/python bench/bench_psd.py [--repeat 5] [--sizes 100 1000 5000 20000]

Times (median of ``--repeat`` runs, milliseconds, one process, wall clock):
``compute_psd`` with the default 1000-resample bootstrap and the log-normal fit, the
bootstrap alone, ``compute_psd`` without bootstrap, and the ROI edge correction
(``RoiSurvival`` of a 1024 x 1024 circular field, then weights for N crystals).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np

from edge.psd import (
    PsdConfig,
    RoiSurvival,
    bootstrap_quantile_ci,
    compute_psd,
    edge_correction_weights,
)


def _ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000, 20000])
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    cfg = PsdConfig()
    no_boot = PsdConfig(bootstrap_n=0)
    roi = np.zeros((1024, 1024), np.uint8)
    cv2.circle(roi, (512, 512), 500, 1, -1)
    results = []
    for n in args.sizes:
        d = rng.lognormal(np.log(100.0), 0.3, n)
        ds = np.sort(d)
        side = d / 1.45
        surv = RoiSurvival(roi)
        results.append({
            "n": n,
            "compute_psd_ms": _ms(lambda d=d: compute_psd(d, config=cfg), args.repeat),
            "compute_psd_no_bootstrap_ms": _ms(lambda d=d: compute_psd(d, config=no_boot),
                                               args.repeat),
            "bootstrap_1000_ms": _ms(
                lambda ds=ds: bootstrap_quantile_ci(ds, ds**3, 0.5, n_boot=1000, seed=0),
                args.repeat),
            "edge_weights_roi_ms": _ms(
                lambda side=side, surv=surv: edge_correction_weights(side, side, roi=surv),
                args.repeat),
        })
    out = {
        "benchmark": "psd",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "repeat": args.repeat,
        "roi_survival_1024_ms": _ms(lambda: RoiSurvival(roi), args.repeat),
        "results": results,
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
