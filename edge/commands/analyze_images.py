"""Image mode of ``crystal-edge analyze`` (not a command by itself; see ``analyze.py``).

``crystal-edge analyze IMAGES_OR_DIRS... [--model M.onnx]`` decodes each frame, runs the
same :class:`edge.vision.analyzer.FrameAnalyzer` as the appliance (quality gate, segmentation in
batches, ROI, crowding check, measurement) and hands one :class:`edge.report.FileResult`
per frame to the report shared with ``--masks``. Frames the quality gate rejects and
files that cannot be decoded are listed with their reason and skipped; the run goes on.

``--overlays DIR`` writes ``<stem>.overlay.png`` (outlines by kept / rejection reason,
diameters in um); ``--masks-out DIR`` writes ``<stem>.classes.png``, the predicted class
map (uint8 class ids of the model metadata) at *frame* resolution (nearest neighbour), so
``analyze --masks DIR --crystal-class 2 --px-size-um <frame px>`` re-measures it.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any

from edge.errors import UserError

log = logging.getLogger("edge.analyze")

DEFAULT_MODEL = "models/crystal-seg.onnx"


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """Positional frames and the options of the image mode."""
    parser.add_argument("inputs", nargs="*", metavar="IMAGES_OR_DIRS",
                        help="frames to segment and measure (files or directories; "
                             "png, tif, tiff, bmp, jpg)")
    g = parser.add_argument_group("image mode (segment frames with a model)")
    g.add_argument("--model", default=DEFAULT_MODEL, metavar="M.onnx",
                   help=f"segmentation model with its metadata JSON beside it "
                        f"(default {DEFAULT_MODEL})")
    g.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default=None,
                   help="inference backend (default auto: tensorrt -> onnxruntime-gpu -> "
                        "onnxruntime-cpu)")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for ONNX Runtime (default: one per core)")
    g.add_argument("--batch", type=int, default=None, metavar="N",
                   help="frames per inference call (default 4)")
    g.add_argument("--inference-scale", default=None, metavar="S",
                   help="resize frames by S for inference, or 'auto' (default) to match "
                        "the pixel size the model was trained at; diameters use px size / S")
    g.add_argument("--roi", choices=["auto", "model", "full"], default=None,
                   help="measuring region: illuminated field from the frame (auto, "
                        "default), from the class map (model), or the whole frame (full)")
    g.add_argument("--no-quality-gate", action="store_true",
                   help="analyse every decodable frame (no blank/exposure/focus/crowding "
                        "rejection)")
    g.add_argument("--overlays", metavar="DIR", default=None,
                   help="write overlay images (crystal outlines, diameters) to DIR")
    g.add_argument("--masks-out", metavar="DIR", default=None,
                   help="write predicted class maps (uint8 PNG, frame size) to DIR")


def _scale(value: str | None) -> float | str:
    if value is None or value == "auto":
        return "auto"
    try:
        s = float(value)
    except ValueError:
        raise UserError(f"--inference-scale: expected a number or 'auto', got {value!r}") from None
    if not math.isfinite(s) or not 0.05 <= s <= 4.0:
        raise UserError(f"--inference-scale: must be between 0.05 and 4, got {value}")
    return s


def _out_dir(value: str | None, option: str) -> Path | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{option} {value}: exists and is not a directory")
    if not p.parent.is_dir():
        raise UserError(f"{option} {value}: folder {p.parent} does not exist")
    p.mkdir(exist_ok=True)
    return p


def _unique_stem(name: str, seen: dict[str, int]) -> str:
    stem = Path(name).stem or "frame"
    n = seen.get(stem, 0)
    seen[stem] = n + 1
    return stem if n == 0 else f"{stem}-{n}"


def results_from_images(args: argparse.Namespace, measure_config: Any
                        ) -> tuple[str, list[Any], float, dict[str, Any]]:
    """Analyse the positional frames: ``(mode, results, px_size_um, extra settings)``."""
    import cv2
    from tqdm import tqdm

    from edge.backends import BackendConfig
    from edge.commands.analyze import (
        decode_config_from_args,
        decode_image,
        expand_inputs,
        warn_skipped,
    )
    from edge.report import FileResult
    from edge.vision.analyzer import FrameAnalyzer
    from edge.vision.overlay import render_overlay
    from edge.vision.preprocess import upsample_class_map
    from edge.vision.quality import QualityConfig
    from edge.vision.roi import RoiConfig

    if args.px_size_um is not None and (not math.isfinite(args.px_size_um)
                                        or args.px_size_um <= 0):
        raise UserError(f"--px-size-um: must be a positive number of um, got {args.px_size_um}")
    if args.threads is not None and args.threads < 0:
        raise UserError(f"--threads: must be >= 0, got {args.threads}")
    if args.batch is not None and not 1 <= args.batch <= 64:
        raise UserError(f"--batch: must be 1..64, got {args.batch}")
    overlays = _out_dir(args.overlays, "--overlays")
    masks_out = _out_dir(args.masks_out, "--masks-out")
    bfields: dict[str, Any] = {}
    if args.backend:
        bfields["name"] = args.backend
    if args.threads is not None:
        bfields["threads"] = args.threads
    if args.batch is not None:
        bfields["max_batch"] = args.batch
    backend_config = BackendConfig(**bfields)
    quality_config = QualityConfig(enabled=not args.no_quality_gate)
    roi_config = RoiConfig(mode=args.roi or "auto")
    decode_config = decode_config_from_args(args)

    model = Path(args.model)
    if not model.is_file():
        hint = " (train and export one with crystal-train, or give --model)" \
            if args.model == DEFAULT_MODEL else ""
        raise UserError(f"--model {args.model}: model file not found{hint}")
    analyzer = FrameAnalyzer(model, backend_config=backend_config,
                             measure_config=measure_config, quality_config=quality_config,
                             roi_config=roi_config, px_size_um=args.px_size_um,
                             inference_scale=_scale(args.inference_scale),
                             keep_class_maps=masks_out is not None)
    entries = expand_inputs(args.inputs)
    results: list[Any] = []
    seen: dict[str, int] = {}
    n_frames = 0
    step = backend_config.max_batch
    t_start = time.perf_counter()
    try:
        with tqdm(total=len(entries), unit="frame", desc="analyze", disable=None,
                  leave=False) as bar:
            for k in range(0, len(entries), step):
                chunk = entries[k:k + step]
                frames: list[tuple[str, Any]] = []
                for name, listed_error in chunk:
                    error = listed_error
                    if error is None:
                        try:
                            frames.append((name, decode_image(name, decode_config)))
                            continue
                        except UserError as exc:
                            error = str(exc).removeprefix(f"{name}: ")
                    warn_skipped(name, error)
                    results.append(FileResult(name=name, error=error))
                analysed = analyzer.analyze_many(frames) if frames else []
                n_frames += len(frames)
                for (name, image), r in zip(frames, analysed, strict=True):
                    results.append(_file_result(r, FileResult))
                    if not r.ok:
                        warn_skipped(name, f"rejected: {r.reject_reason} ({r.reject_detail})")
                    stem = _unique_stem(name, seen)
                    if overlays is not None and r.reject_reason != "unreadable":
                        _imwrite(overlays / f"{stem}.overlay.png", render_overlay(image, r), cv2)
                    if masks_out is not None and r.class_map is not None:
                        cm = upsample_class_map(r.class_map, r.frame_hw)
                        _imwrite(masks_out / f"{stem}.classes.png", cm, cv2)
                bar.update(len(chunk))
        info = analyzer.model_info
    finally:
        analyzer.close()
    wall = time.perf_counter() - t_start
    rejected: dict[str, int] = {}
    for r in results:
        reason = r.info.get("reject_reason") or ("undecodable" if r.error else None)
        if reason:
            rejected[reason] = rejected.get(reason, 0) + 1
    if rejected:
        log.info("frames rejected: %s", ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())))
    log.info("%d frame(s) in %.1f s (%.2f frames/s) on %s", n_frames, wall,
             n_frames / wall if wall > 0 else 0.0, info.get("backend"))
    extra = {
        "inputs": list(args.inputs),
        "model": info,
        "frame_px_size_um": analyzer.frame_px_size_um,
        "inference_scale": analyzer.inference_scale,
        "quality": quality_config.model_dump(mode="json"),
        "roi": roi_config.model_dump(mode="json"),
        "frames_rejected": dict(sorted(rejected.items())),
        "throughput": {"frames": n_frames, "wall_s": round(wall, 3)},
    }
    return "images", results, analyzer.px_size_um, extra


def _file_result(r: Any, file_result: type) -> Any:
    info: dict[str, Any] = {"quality": {k: round(float(v), 4) for k, v in r.quality.items()}}
    if r.roi is not None:
        info["roi"] = r.roi_info
    if not r.ok:
        info["reject_reason"] = r.reject_reason
        return file_result(name=r.name, error=f"rejected: {r.reject_reason} ({r.reject_detail})",
                           timings_ms=dict(r.timings_ms), info=info)
    return file_result(name=r.name, crystals=r.crystals, roi=r.roi.mask,
                       timings_ms=dict(r.timings_ms), info=info)


def _imwrite(path: Path, image: Any, cv2: Any) -> None:
    if not cv2.imwrite(str(path), image):
        raise UserError(f"{path}: cannot write image")
