"""Calibrate and check the out-of-domain score (``[domain]``, :mod:`edge.vision.ood`).

Runs the default model through :class:`edge.vision.analyzer.FrameAnalyzer` on

* in-domain frames: the generator (:mod:`trainer.synth`) in every illumination variant
  (:data:`VARIANTS`: its ranges pinned at their ends, a mono camera, frames at 2.9 um/px),
  both sieve fractions, many seeds;
* out-of-domain frames: the natural images scikit-image ships (no download; colour and
  grey), noise, blank frames, inverted and over-exposed flow-cell frames;

and prints, per set, how many frames are rejected (by the quality gate or as
``out_of_domain``), the spread of every score component, and the score's cost per
frame. ``tests/edge/test_ood.py`` uses the same sets (smaller)::

    .venv/bin/python scripts/calibrate_ood.py --n 8 --width 1024 --height 768
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "crystal-seg.onnx"

#: name -> (SynthConfig overrides, frame pixel size um, mono camera)
VARIANTS: dict[str, tuple[dict[str, Any], float, bool]] = {
    "default": ({}, 1.45, False),
    "bright-flat": ({"brightness": (235.0, 250.0), "vignetting": (0.15, 0.15),
                     "illumination_gradient": (0.0, 0.0), "tint": (0.97, 0.97)}, 1.45, False),
    "dim-vignetted": ({"brightness": (185.0, 190.0), "vignetting": (0.35, 0.35),
                       "illumination_gradient": (0.12, 0.12), "tint": (0.86, 0.86),
                       "black_level": (14.0, 14.0)}, 1.45, False),
    "noisy-blurred": ({"noise": 2.0, "psf_sigma_px": (0.9, 0.9),
                       "motion_blur_px": (5.0, 5.0)}, 1.45, False),
    "mono": ({}, 1.45, True),
    "px-2.9": ({}, 2.9, False),
}
FRACTIONS = ((90.0, 125.0), (125.0, 180.0))
#: natural images scikit-image ships inside the package (no download)
NATURAL = ("astronaut", "coffee", "chelsea", "camera", "coins", "moon", "page", "text",
           "rocket", "horse", "brick", "grass", "gravel", "cell", "clock", "hubble_deep_field",
           "immunohistochemistry", "retina", "colorwheel", "logo", "checkerboard",
           "microaneurysms", "shepp_logan_phantom", "cat", "stereo_motorcycle", "binary_blobs")


def in_domain(n: int, width: int, height: int, seed: int = 0
              ) -> Iterator[tuple[str, np.ndarray, float]]:
    """``(name, BGR or grey uint8 frame, px_size_um)`` for every variant, fraction and of
    ``n`` seeds."""
    from trainer.synth import SynthConfig, render_frame

    for k, (variant, (over, px, mono)) in enumerate(VARIANTS.items()):
        for f, fraction in enumerate(FRACTIONS):
            cfg = SynthConfig(width=width, height=height, px_size_um=px, fraction_um=fraction,
                              **over)
            for i in range(n):
                rgb = render_frame(np.random.default_rng(seed + 1000 * k + 100 * f + i),
                                   cfg).image
                frame = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY if mono else cv2.COLOR_RGB2BGR)
                yield f"{variant}/{fraction[0]:g}-{fraction[1]:g}/{i}", frame, px


def fit_frame(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """An RGB/grey/bool/float image as a uint8 BGR or grey frame: centre crop to the
    frame's aspect, then resize."""
    im = np.asarray(image)
    if im.dtype == bool:
        im = im.astype(np.uint8) * 255
    elif im.dtype != np.uint8:
        lo, hi = float(im.min()), float(im.max())
        im = np.round((im - lo) / max(hi - lo, 1e-9) * 255).astype(np.uint8)
    if im.ndim == 3:
        im = cv2.cvtColor(np.ascontiguousarray(im[..., :3]), cv2.COLOR_RGB2BGR)
    h, w = im.shape[:2]
    aspect = width / height
    cw, ch = (w, round(w / aspect)) if w / h < aspect else (round(h * aspect), h)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    im = im[y0:y0 + ch, x0:x0 + cw]
    return cv2.resize(im, (width, height), interpolation=cv2.INTER_AREA
                      if cw > width else cv2.INTER_LINEAR)


def natural(width: int, height: int) -> Iterator[tuple[str, np.ndarray]]:
    """Every :data:`NATURAL` image, as shipped and (colour ones) in grey too."""
    import skimage.data

    for name in NATURAL:
        im = getattr(skimage.data, name)()
        im = im[0] if isinstance(im, tuple) else im  # a stereo pair: its left image
        frame = fit_frame(im, width, height)
        yield name, frame
        if frame.ndim == 3:
            yield f"{name}-grey", cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def noise_and_blank(width: int, height: int, seed: int = 0
                    ) -> Iterator[tuple[str, str, np.ndarray]]:
    """``(set, name, frame)``: noise of several kinds and blank frames."""
    rng = np.random.default_rng(seed)
    hw = (height, width)
    yield "noise", "uniform-colour", rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    yield "noise", "uniform-grey", rng.integers(0, 256, hw, dtype=np.uint8)
    gauss = np.clip(rng.normal(128, 40, hw), 0, 255).astype(np.uint8)
    yield "noise", "gaussian-grey", gauss
    yield "noise", "smooth-grey", cv2.normalize(cv2.GaussianBlur(gauss, (0, 0), 6), None, 0,
                                                255, cv2.NORM_MINMAX)
    yield "noise", "bright-gaussian", np.clip(rng.normal(200, 25, hw), 0, 255).astype(np.uint8)
    yield "noise", "salt-pepper", (rng.random(hw) > 0.5).astype(np.uint8) * 255
    for v in (0, 128, 255):
        yield "blank", f"grey-{v}", np.full(hw, v, np.uint8)
    yield "blank", "colour", np.full((*hw, 3), (40, 160, 220), np.uint8)


def altered(n: int, width: int, height: int, seed: int = 500
            ) -> Iterator[tuple[str, str, np.ndarray]]:
    """``(set, name, frame)``: inverted and over-exposed (gain 2-3) generated frames."""
    frames = list(in_domain(max(1, n // 2), width, height, seed))
    frames = [f for f in frames if f[2] == 1.45]
    step = max(1, len(frames) // n)
    for i, (name, frame, _px) in enumerate(frames[::step][:n]):
        yield "inverted", name, 255 - frame
        gain = 2.0 + (i % 5) / 4.0
        yield "overexposed", name, np.clip(frame.astype(np.float32) * gain, 0, 255
                                           ).astype(np.uint8)


def out_of_domain(n: int, width: int, height: int) -> Iterator[tuple[str, str, np.ndarray]]:
    """Every out-of-domain set: ``(set, name, frame)``."""
    for name, frame in natural(width, height):
        yield "natural", name, frame
    yield from noise_and_blank(width, height)
    yield from altered(n, width, height)


def analyzers(config: Any = None) -> dict[float, Any]:
    """A score-only FrameAnalyzer without the quality gate per frame pixel size (default
    model, ONNX Runtime): the gate is applied apart, so both verdicts are known."""
    from edge.backends import BackendConfig
    from edge.vision.analyzer import FrameAnalyzer
    from edge.vision.ood import DomainConfig
    from edge.vision.quality import QualityConfig

    cfg = (config or DomainConfig()).model_copy(update={"reject": False})
    pxs = sorted({px for _o, px, _m in VARIANTS.values()})
    return {px: FrameAnalyzer(MODEL, backend_config=BackendConfig(name="onnxruntime"),
                              quality_config=QualityConfig(enabled=False), px_size_um=px,
                              domain_config=cfg) for px in pxs}


def run_sets(n: int, width: int, height: int, config: Any = None) -> dict[str, list[dict]]:
    """Every frame of every set: ``{set: [row, ...]}``; a row has the quality gate's
    reason (``gate``), whether the score alone rejects it (``ood``) and the final
    ``reason`` (the gate's, else ``out_of_domain``, else the analysis's)."""
    from edge.vision.ood import DomainConfig
    from edge.vision.preprocess import grey_u8
    from edge.vision.quality import check_frame

    config = config or DomainConfig()
    an = analyzers(config)
    rows: dict[str, list[dict]] = {}

    def one(set_name: str, name: str, frame: np.ndarray, px: float) -> None:
        gate = check_frame(grey_u8(frame)).reason
        t0 = time.perf_counter()
        res = an[px].analyze(name, frame)
        ms = (time.perf_counter() - t0) * 1e3
        ood = res.domain_score is not None and res.domain_score < config.threshold
        rows.setdefault(set_name, []).append({
            "name": name, "gate": gate, "ood": ood, "score": res.domain_score,
            "reason": gate or ("out_of_domain" if ood else res.reject_reason),
            "values": {k[7:]: v for k, v in res.quality.items() if k.startswith("domain_")},
            "ms": ms})

    for name, frame, px in in_domain(n, width, height):
        one("in-domain", name, frame, px)
    for set_name, name, frame in out_of_domain(n, width, height):
        one(set_name, name, frame, 1.45)
    for a in an.values():
        a.close()
    return rows


def score_cost_ms(width: int, height: int, repeat: int = 20) -> dict[str, float]:
    """Cost of the score per frame (ms): the logits' uncertainty and the assessment."""
    from edge.vision.ood import DomainCheck, uncertain_fraction
    from edge.vision.roi import detect_roi
    from trainer.synth import SynthConfig, render_frame

    frame = render_frame(np.random.default_rng(1), SynthConfig(width=width, height=height)).image
    h, w = height // 2, width // 2
    logits = np.random.default_rng(2).normal(0, 3, (3, h, w)).astype(np.float32)
    cm = logits.argmax(0).astype(np.uint8)
    roi = detect_roi(cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (w, h)))
    check = DomainCheck(None, black_class=0, crystal_class=2)
    t0 = time.perf_counter()
    for _ in range(repeat):
        uncertain_fraction(logits, black_class=0, margin_logit=1.1, boundary_px=2)
    t1 = time.perf_counter()
    for _ in range(repeat):
        check.assess(frame, cm, roi)
    t2 = time.perf_counter()
    return {"uncertainty_ms": (t1 - t0) * 1e3 / repeat, "assess_ms": (t2 - t1) * 1e3 / repeat}


def summary(rows: dict[str, list[dict]]) -> list[str]:
    """Rejection rates per set (all reasons; the score alone) and each component's spread."""
    lines = []
    for set_name, rs in rows.items():
        reasons = Counter(r["reason"] for r in rs)
        rejected = sum(v for k, v in reasons.items() if k is not None)
        ood = sum(r["ood"] for r in rs)
        what = ", ".join(f"{k} {v}" for k, v in reasons.most_common() if k is not None)
        lines.append(f"{set_name:12s} {len(rs):4d} frames: rejected {100 * rejected / len(rs):5.1f}"
                     f" % ({what}); by the score alone {100 * ood / len(rs):5.1f} %")
    lines.append("component spread (min / p1 / p50 / p99 / max):")
    for set_name, rs in rows.items():
        vals: dict[str, list[float]] = {}
        for r in rs:
            for k, v in r["values"].items():
                vals.setdefault(k, []).append(v)
        parts = [f"{k} " + "/".join(f"{q:.3f}" for q in np.quantile(v, [0, .01, .5, .99, 1]))
                 for k, v in sorted(vals.items())]
        lines.append(f"  {set_name}: " + "; ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8, help="seeds per variant and fraction")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--show", action="store_true", help="list every rejected in-domain frame "
                                                       "and every accepted out-of-domain one")
    args = ap.parse_args(argv)
    rows = run_sets(args.n, args.width, args.height)
    for line in summary(rows):
        print(line)
    ood = [r for k, rs in rows.items() if k != "in-domain" for r in rs]
    ind = rows["in-domain"]
    def pct(flags: list[bool]) -> str:
        return f"{100 * np.mean(flags):.1f} %"

    print(f"out-of-domain frames rejected: {pct([r['reason'] is not None for r in ood])} of "
          f"{len(ood)} (by the score alone {pct([r['ood'] for r in ood])}); in-domain frames "
          f"rejected as out_of_domain: {pct([r['ood'] for r in ind])} of {len(ind)} (by the "
          f"quality gate {pct([r['gate'] is not None for r in ind])})")
    cost = score_cost_ms(args.width, args.height)
    print(f"score cost per {args.width}x{args.height} frame: uncertainty "
          f"{cost['uncertainty_ms']:.2f} ms + assessment {cost['assess_ms']:.2f} ms; "
          f"whole analysis {np.median([r['ms'] for r in ind]):.0f} ms (median)")
    if args.show:
        for set_name, rs in rows.items():
            for r in rs:
                if r["ood"] == (set_name == "in-domain"):
                    print(f"  {set_name} {r['name']}: {r['reason']} score {r['score']} "
                          f"{r['values']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
