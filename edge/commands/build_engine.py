"""``crystal-edge build-engine``: build the TensorRT engine ahead of time.

The first start of ``crystal-edge run`` with the TensorRT backend would otherwise spend
minutes building it. The engine goes into the same cache the service uses
(``[backend] engine_cache_dir``, default ``<state dir>/engines``), keyed by the ONNX's
sha256, the TensorRT version, the GPU, the precision, the batch size and the input size,
so the service finds and reuses it; the cache keeps ``[backend] engine_cache_keep``
engines per model (least recently used removed) and a TensorRT timing cache that makes
later builds faster. The input size comes from ``[backend]
input_height/input_width``, else from the frame size (``--frame-size`` or the source's
width/height in the configuration) and the inference scale.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.modelpath import DEFAULT_MODEL, locate_model

HELP = "build (or verify) the TensorRT engine for a model ahead of time (Jetson)"

log = logging.getLogger("edge.build_engine")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="M.onnx",
                        help="ONNX model (default: [model] path of --config, else "
                             "models/crystal-seg.onnx)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="edge configuration (TOML): [backend], [model], [source], [state]")
    parser.add_argument("--frame-size", default=None, metavar="WxH",
                        help="frame size in pixels, e.g. 1024x768 (default: from --config)")
    parser.add_argument("--inference-scale", default=None, metavar="S",
                        help="override [model] inference_scale (number or 'auto')")
    parser.add_argument("--precision", choices=["fp16", "fp32", "int8"], default=None,
                        help="override [backend] precision (int8: the model's sibling "
                             "<stem>.int8.onnx, as the service runs it)")
    parser.add_argument("--max-batch", type=int, default=None, metavar="N",
                        help="override [backend] max_batch")
    parser.add_argument("--engine-cache-dir", default=None, metavar="DIR",
                        help="override [backend] engine_cache_dir")


def _frame_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 16 or int(m.group(2)) < 16:
        raise UserError(f"--frame-size: expected WIDTHxHEIGHT (>= 16 each), got {text!r}")
    return int(m.group(2)), int(m.group(1))


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Model path, backend config, frame size, scale, state dir from config + options."""
    from edge.backends import BackendConfig

    model: Path = DEFAULT_MODEL
    backend = BackendConfig()
    scale: float | str = "auto"  # [model] inference_scale's default, as the service
    px_size = None
    frame_hw = None
    state_dir = None
    if args.config:
        from edge.service.config import load_config
        from edge.service.state import resolve_state_dir

        cfg = load_config(args.config)
        model, backend, scale = Path(cfg.model.path), cfg.backend, cfg.model.inference_scale
        px_size = cfg.optics.px_size_um
        state_dir = resolve_state_dir(cfg.state.dir)
        w, h = getattr(cfg.source, "width", None), getattr(cfg.source, "height", None)
        if w and h:
            frame_hw = (int(h), int(w))
    if args.model:
        model = Path(args.model)
    model = locate_model(model)
    backend = backend.model_copy(update=_backend_updates(args))
    if args.frame_size:
        frame_hw = _frame_size(args.frame_size)
    if args.inference_scale is not None:
        scale = _scale(args.inference_scale)
    return {"model": model, "backend": backend, "scale": scale, "px_size_um": px_size,
            "frame_hw": frame_hw, "state_dir": state_dir}


def _backend_updates(args: argparse.Namespace) -> dict[str, Any]:
    """``[backend]`` fields the options override (the backend is TensorRT here)."""
    updates: dict[str, Any] = {"name": "tensorrt"}
    if args.precision:
        updates["precision"] = args.precision
    if args.max_batch is not None:
        if not 1 <= args.max_batch <= 64:
            raise UserError(f"--max-batch: must be 1..64, got {args.max_batch}")
        updates["max_batch"] = args.max_batch
    if args.engine_cache_dir:
        updates["engine_cache_dir"] = Path(args.engine_cache_dir)
    return updates


def _scale(text: str) -> float | str:
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--inference-scale: expected a number or 'auto', got {text!r}"
                        ) from None


def input_hw(settings: dict[str, Any], meta: Any) -> tuple[int, int]:
    """Padded network input (H, W) the engine is built for."""
    from edge.vision.preprocess import padded_hw, scaled_hw
    from edge.vision.scale import resolve_scale

    b = settings["backend"]
    mult = meta.input.size_multiple
    if b.input_height and b.input_width:
        return padded_hw((b.input_height, b.input_width), mult)
    if settings["frame_hw"] is None:
        raise UserError("--frame-size: needed (or [backend] input_height/input_width, or the "
                        "source's width/height in --config) to know the engine's input size")
    scale = resolve_scale(settings["px_size_um"] or None, settings["scale"], meta,
                          model_name=Path(settings["model"]).name).inference_scale
    return padded_hw(scaled_hw(settings["frame_hw"], scale), mult)


def run(args: argparse.Namespace) -> int:
    from edge.backends import BackendUnavailable
    from edge.backends.precision import choose_model
    from edge.backends.registry import load_choice
    from edge.modelmeta import check_model_file, load_meta

    s = resolve_settings(args)
    check_model_file(s["model"])
    meta = load_meta(s["model"])
    hw = input_hw(s, meta)
    # the file the service runs for this precision (the INT8 sibling, or the float model
    # with one warning line where TensorRT has no fast INT8)
    choice = choose_model(s["model"], meta, s["backend"])
    try:
        # builds or reuses, then a warm-up inference checks the engine
        backend = load_choice("tensorrt", choice, input_hw=hw, state_dir=s["state_dir"])
    except BackendUnavailable as exc:
        raise UserError(f"build-engine: TensorRT is not usable on this machine: {exc}") from None
    backend.close()
    meta = backend.meta
    verb = "built" if backend.built else "reused (already cached, key unchanged)"
    print(f"engine {verb}: {backend.engine_file}")
    print(f"  model {meta.name} ({backend.model_path.name}, sha256 {meta.sha256[:12]}...), "
          f"{backend.precision}, input {hw[0]}x{hw[1]}, batch <= {backend.max_batch}, "
          f"GPU {backend.info().get('gpu')}, TensorRT {backend.info().get('tensorrt_version')}")
    if backend.timing_cache_file is not None:
        print(f"  timing cache: {backend.timing_cache_file}")
    return 0
