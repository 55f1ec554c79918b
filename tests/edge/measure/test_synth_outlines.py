"""The defaults against the synthetic generator's crystal outlines (trainer.synth).

Small samples of what ``bench/bench_measure.py --window-study`` measures in full.
"""

from __future__ import annotations

import math

import numpy as np

from edge.measure import measure_crystals, split_touching
from trainer.synth.geometry import convex_mask, make_outline


def test_generator_single_crystals_are_kept_and_never_split() -> None:
    rng = np.random.default_rng(7)
    kept, n = 0, 150
    for _ in range(n):
        d = float(rng.uniform(10, 70))
        poly, _shape, _aspect = make_outline(rng, d)
        size = int(d * 1.8) + 10
        c = measure_crystals(convex_mask(poly + size / 2, (size, size)), px_size_um=1.0)
        assert len(c) == 1
        kept += c.n_kept
    assert kept / n >= 0.95


def test_generator_pairs_touching_at_their_rims_are_split() -> None:
    rng = np.random.default_rng(8)
    overlapping = 0
    for _ in range(25):
        d1 = float(rng.uniform(15, 60))
        d2 = d1 * float(rng.uniform(0.8, 1.25))
        p1, _s1, _a1 = make_outline(rng, d1)
        p2, _s2, _a2 = make_outline(rng, d2)
        n = int((d1 + d2) * 1.5) + 20
        ang = rng.uniform(0, 2 * math.pi)
        c1 = np.array([n / 2, n / 2])
        c2 = c1 + 0.95 * (d1 + d2) / 2 * np.array([math.cos(ang), math.sin(ang)])
        a, b = convex_mask(p1 + c1, (n, n)), convex_mask(p2 + c2, (n, n))
        overlapping += bool((a & b).any())
        assert split_touching(a | b).max() == 2
    assert overlapping >= 10
