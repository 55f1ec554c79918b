"""Cost of the learned ``contact`` channel at inference; one JSON object on stdout.

    .venv/bin/python bench/bench_contact.py [--backbone resnet50] [--repeats 9]
        [--height 384 --width 512] [--threads 0]

Builds the default architecture (DeepLabV3+ / ResNet-50, ASPP 6,12,18) twice from the same
seed, once with the three class channels and once with the ``contact`` channel appended
(``crystal-train train --contact-weight``) in a 3 x 3 final convolution (``--head-kernel
3``, the form the default model ships in: the class rows keep their 1 x 1 weights at the
centre), exports both to ONNX (FP32; random weights:
timing does not depend on them) and times them on ONNX Runtime's CPU provider at the
default inference size (1024 x 768 frames at inference scale 0.5 -> 512 x 384), batch 1.
Each repeat runs both models back to back in alternating order, so load on the machine
hits both alike; the figures are medians:

* ``infer_ms``: ``session.run`` alone;
* ``segment_ms``: ``session.run`` plus what the edge does with the output
  (:func:`edge.vision.preprocess.logits_to_class_maps` over the class channels and, for the
  contact model, :func:`edge.vision.contact.contact_maps`);
* ``contact_cost_pct``: ``100 * (segment_ms with / segment_ms without - 1)``; the issue's
  budget is 10 %. ``contact_cost_min_pct`` compares the best repeats. The channel turns
  the last convolution from 1 x 1 into 3 x 3 (4 x 256 x 9 weights, about 0.1 GMAC at
  512 x 384) and adds a fourth plane to the final upsampling and to the edge's crop: on
  a busy machine the spread between repeats is larger than that, and the figure can
  come out negative.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.vision.contact import contact_maps  # noqa: E402
from edge.vision.preprocess import logits_to_class_maps  # noqa: E402

N_CLASSES = 3


def export_pair(directory: Path, backbone: str) -> dict[str, Path]:
    """The two ONNX files: ``without`` (3 channels) and ``with`` (3 + contact)."""
    import torch

    from trainer.export import export_model
    from trainer.model import build_model

    out = {}
    for key, n_aux, kernel in (("without", 0, 1), ("with", 1, 3)):
        torch.manual_seed(0)
        model = build_model(backbone, n_classes=N_CLASSES, weights="none", n_aux=n_aux,
                            head_kernel=kernel)
        out[key] = export_model(model, directory / f"{key}.onnx", sample_hw=(256, 256))
    return out


def session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads > 0:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def time_pair(sessions: dict[str, object], x: np.ndarray, repeats: int,
              with_contact: tuple[str, ...] = ("with",)) -> dict[str, dict[str, list[float]]]:
    """Alternating repeats: per model, lists of infer and segment seconds (the models
    named in ``with_contact`` have the contact channel)."""
    hw = [x.shape[2:]]
    times: dict[str, dict[str, list[float]]] = {k: {"infer": [], "segment": []}
                                                for k in sessions}
    for r in range(repeats + 1):
        order = list(sessions) if r % 2 == 0 else list(reversed(list(sessions)))
        for key in order:
            sess = sessions[key]
            t0 = time.perf_counter()
            logits = sess.run(None, {"input": x})[0]  # type: ignore[attr-defined]
            t1 = time.perf_counter()
            logits_to_class_maps(logits, hw, n_classes=N_CLASSES)
            contact_maps(logits, hw, N_CLASSES if key in with_contact else None)
            t2 = time.perf_counter()
            if r == 0:
                continue  # warm-up
            times[key]["infer"].append(t1 - t0)
            times[key]["segment"].append(t2 - t0)
    return times


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    """The options of a pair benchmark (backbone, input size, repeats, threads)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: default)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    return run_pair("contact", export_pair, __doc__, argv)


def run_pair(what: str, export: Callable[[Path, str], dict[str, Path]], doc: str,
             argv: list[str] | None, with_contact: tuple[str, ...] = ("with",)) -> dict:
    """Export the ``without`` / ``with`` pair, time it, print and return the report."""
    args = parse_args(argv, doc.splitlines()[0])
    with tempfile.TemporaryDirectory() as tmp:
        paths = export(Path(tmp), args.backbone)
        sessions = {k: session(v, args.threads) for k, v in paths.items()}
        x = np.random.default_rng(0).random((1, 3, args.height, args.width), np.float32)
        times = time_pair(sessions, x, args.repeats, with_contact)
    report = pair_report(what, times, args)
    print(json.dumps(report, indent=2))
    return report


def pair_report(what: str, times: dict[str, dict[str, list[float]]],
                args: argparse.Namespace) -> dict:
    """The JSON document of a ``without`` / ``with`` pair timed by :func:`time_pair`:
    medians in ms, ``infer_cost_pct``, ``<what>_cost_pct`` and ``<what>_cost_min_pct``."""
    med = {k: {m: round(statistics.median(v) * 1e3, 2) for m, v in t.items()}
           for k, t in times.items()}
    best = {k: round(min(t["segment"]) * 1e3, 2) for k, t in times.items()}
    return {
        "benchmark": what,
        "backbone": args.backbone, "input_hw": [args.height, args.width], "batch": 1,
        "provider": "CPUExecutionProvider", "repeats": args.repeats,
        f"without_{what}": med["without"], f"with_{what}": med["with"],
        "infer_cost_pct": round(100 * (med["with"]["infer"] / med["without"]["infer"] - 1), 2),
        f"{what}_cost_pct": round(
            100 * (med["with"]["segment"] / med["without"]["segment"] - 1), 2),
        "segment_min_ms": best,
        f"{what}_cost_min_pct": round(100 * (best["with"] / best["without"] - 1), 2),
        "budget_pct": 10.0,
        "host": {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)},
    }


if __name__ == "__main__":
    main()
