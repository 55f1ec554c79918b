"""``crystal-train evaluate``: pixel accuracy, IoU, confusion matrix (and x50,3 vs truth)."""

from __future__ import annotations

import argparse

HELP = "evaluate a model (.onnx or .pt) on a labelled dataset: accuracy, IoU, x50,3 vs truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="exported .onnx (with its .json) or a .pt checkpoint")
    parser.add_argument("--data", required=True,
                        help="labelled dataset folder (truth.json used when present)")
    parser.add_argument("--json", default=None, help="write the full result as JSON here")
    parser.add_argument("--baseline", metavar="MODEL", default=None,
                        help="also evaluate this model (e.g. the shipped one) on the same "
                             "frames with the same settings, and say whether --model is "
                             "better, worse or not distinguishable from it on these frames "
                             "(crystal IoU, |x50,3 error|, Q3 distance; paired frame "
                             "bootstrap, 95 %%)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="evaluate only the first N frames")
    parser.add_argument("--no-measure", action="store_true",
                        help="skip the full measurement even when truth.json exists")
    parser.add_argument("--update-meta", action="store_true",
                        help="record the metrics in the model's metadata JSON (.onnx only)")
    parser.add_argument("--config", metavar="EDGE.toml", default=None,
                        help="measure with the settings of this crystal-edge configuration "
                             "([measure], [psd], [quality], [roi], [optics] px_size_um, "
                             "[model] inference_scale), as the appliance running it would")
    parser.add_argument("--px-size-um", type=float, default=None, metavar="F",
                        help="pixel size of the frames in um (default: the dataset's "
                             "classes.json, or [optics] px_size_um with --config)")
    parser.add_argument("--backend", choices=("onnxruntime-cpu", "auto", "onnxruntime",
                                              "tensorrt"),
                        default="onnxruntime-cpu",
                        help="inference backend for an .onnx, as on the appliance "
                             "(default onnxruntime-cpu: the file as stored, reproducible)")


def run(args: argparse.Namespace) -> int:
    import math

    from edge.backends import BackendConfig
    from edge.errors import UserError
    from trainer.evalmodel import EVAL_BACKEND
    from trainer.evalstats import compare_results, comparison_summary
    from trainer.evaluate import (
        ChainSettings,
        evaluate_model,
        settings_from_config,
        update_model_metrics,
        write_json,
    )

    px = args.px_size_um
    if px is not None and (not math.isfinite(px) or px <= 0):
        raise UserError(f"--px-size-um: must be a positive number of um, got {px}")
    settings = (settings_from_config(args.config, px_size_um=px) if args.config
                else ChainSettings(px_size_um=px))
    backend = (BackendConfig(**EVAL_BACKEND) if args.backend == "onnxruntime-cpu"
               else BackendConfig(name=args.backend))
    result = evaluate_model(args.model, args.data, max_frames=args.max_frames,
                            measure=not args.no_measure, backend=backend, settings=settings)
    print(result.summary())
    comparison = None
    if args.baseline:
        base = evaluate_model(args.baseline, args.data, max_frames=args.max_frames,
                              measure=not args.no_measure, backend=backend, settings=settings)
        print(base.summary())
        comparison = compare_results(base, result)
        print(comparison_summary(comparison, base, result))
    if args.json:
        write_json(result, args.json, comparison=comparison)
    if args.update_meta:
        if not str(args.model).lower().endswith(".onnx"):
            raise UserError(f"--update-meta: {args.model} is not an .onnx model")
        update_model_metrics(args.model, result)
    return 0
