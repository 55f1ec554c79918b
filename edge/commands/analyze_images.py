"""Image mode of ``crystal-edge analyze`` (not a command by itself; see ``analyze.py``).

``crystal-edge analyze IMAGES_OR_DIRS... [--model M.onnx]`` decodes each frame, runs the
same :class:`edge.vision.analyzer.FrameAnalyzer` as the appliance (quality gate, segmentation in
batches, ROI, crowding check, measurement) and hands its
:class:`edge.vision.result.FrameResult` per frame to the report shared with ``--masks``.
Frames the quality gate rejects and files that cannot be decoded (``unreadable``) are
listed with their reason and skipped; the run goes on.

``--overlays DIR`` writes ``<stem>.overlay.png`` (outlines by kept / rejection reason,
diameters in um); ``--masks-out DIR`` writes ``<stem>.classes.png``, the predicted class
map (uint8 class ids of the model metadata) at *frame* resolution (nearest neighbour), so
``analyze --masks DIR --crystal-class 2 --px-size-um <frame px>`` re-measures it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.commands.analyze_inputs import (
    decode_config_from_args,
    decode_image,
    error_text,
    expand_inputs,
    warn_skipped,
)
from edge.errors import UserError
from edge.vision.finescale import THIN_WIDTH_PX

if TYPE_CHECKING:
    import numpy as np

    from edge.vision.analyzer import FrameAnalyzer
    from edge.vision.result import FrameResult

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
    g.add_argument("--flip-average", action="store_true",
                   help="also segment every frame mirrored left-right and average the two "
                        "outputs ([model] flip_average): a little more exact, twice the "
                        "inference time")
    g.add_argument("--thin-width-px", type=float, default=THIN_WIDTH_PX, metavar="W",
                   help="with --inference-scale auto: frames whose crystals are narrower than "
                        "W network pixels (needles) are segmented again 1.5 times finer "
                        f"([model] thin_width_px; default {THIN_WIDTH_PX:g}, 0 = never)")
    g.add_argument("--roi", choices=["auto", "model", "full"], default=None,
                   help="measuring region: illuminated field from the frame (auto, "
                        "default), from the class map (model), or the whole frame (full)")
    g.add_argument("--no-quality-gate", action="store_true",
                   help="analyse every decodable frame (no blank/exposure/focus/crowding "
                        "rejection)")
    g.add_argument("--no-domain-reject", action="store_true",
                   help="score how much each frame looks like the model's training frames "
                        "but do not reject out_of_domain ones (docs/domain.md)")
    g.add_argument("--overlays", metavar="DIR", default=None,
                   help="write overlay images (crystal outlines, diameters) to DIR")
    g.add_argument("--masks-out", metavar="DIR", default=None,
                   help="write predicted class maps (uint8 PNG, frame size) to DIR")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="threads decoding and post-processing beside inference (default: "
                        "one per core; 1 = one frame after the other)")
    g.add_argument("--progress-every", type=int, default=100, metavar="N",
                   help="without a terminal, log a progress line every N frames (default 100)")


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


def make_folder(folder: Path, what: str) -> None:
    """Create ``folder`` and its missing parents; a clear error naming ``what`` when it
    cannot be (a file in the way, no permission)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{what}: {folder} exists and is not a folder") from None
    except OSError as exc:
        raise UserError(f"{what}: cannot create folder {folder}: "
                        f"{exc.strerror or exc}") from None


def _out_dir(value: str | None, option: str) -> Path | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{option} {value}: exists and is not a directory")
    make_folder(p, f"{option} {value}")
    return p


def _unique_stem(name: str, seen: dict[str, int]) -> str:
    stem = Path(name).stem or "frame"
    n = seen.get(stem, 0)
    seen[stem] = n + 1
    return stem if n == 0 else f"{stem}-{n}"


@dataclass(frozen=True)
class ImageRun:
    """The checked settings of one image-mode run (sections as the service has them)."""

    backend: Any
    quality: Any
    roi: Any
    decode: Any
    overlays: Path | None
    masks_out: Path | None
    workers: int = 1
    progress_every: int = 100
    domain: Any = None


def image_run(args: argparse.Namespace) -> ImageRun:
    """:class:`ImageRun` from the options; one-line UserErrors naming the option."""
    from edge.vision.ood import DomainConfig
    from edge.vision.quality import QualityConfig
    from edge.vision.roi import RoiConfig

    if args.px_size_um is not None and (not math.isfinite(args.px_size_um)
                                        or args.px_size_um <= 0):
        raise UserError(f"--px-size-um: must be a positive number of um, got {args.px_size_um}")
    return ImageRun(backend=_backend_config(args),
                    quality=QualityConfig(enabled=not args.no_quality_gate),
                    roi=RoiConfig(mode=args.roi or "auto"),
                    decode=decode_config_from_args(args),
                    overlays=_out_dir(args.overlays, "--overlays"),
                    masks_out=_out_dir(args.masks_out, "--masks-out"),
                    workers=_count(args.workers, "--workers", os.cpu_count() or 1),
                    progress_every=_count(args.progress_every, "--progress-every", 100),
                    domain=DomainConfig(reject=not args.no_domain_reject))


def _count(value: int | None, option: str, default: int) -> int:
    """A positive count option (``default`` when not given)."""
    if value is None:
        return default
    if value < 1:
        raise UserError(f"{option}: must be >= 1, got {value}")
    return value


def _backend_config(args: argparse.Namespace) -> Any:
    """``[backend]`` from ``--backend``, ``--threads`` and ``--batch``."""
    from edge.backends import BackendConfig

    if args.threads is not None and args.threads < 0:
        raise UserError(f"--threads: must be >= 0, got {args.threads}")
    if args.batch is not None and not 1 <= args.batch <= 64:
        raise UserError(f"--batch: must be 1..64, got {args.batch}")
    given = {"name": args.backend or None, "threads": args.threads, "max_batch": args.batch}
    return BackendConfig(**{k: v for k, v in given.items() if v is not None})


def _analyzer(args: argparse.Namespace, run: ImageRun, measure_config: Any) -> FrameAnalyzer:
    """The :class:`~edge.vision.analyzer.FrameAnalyzer` of ``--model`` with the run's
    settings (the model must exist: a UserError with a hint otherwise)."""
    from edge.modelpath import locate_model
    from edge.vision.analyzer import FrameAnalyzer

    model = locate_model(args.model)
    if not model.is_file():
        hint = " (train and export one with crystal-train, or give --model)" \
            if args.model == DEFAULT_MODEL else ""
        raise UserError(f"--model {args.model}: model file not found{hint}")
    return FrameAnalyzer(model, backend_config=run.backend, measure_config=measure_config,
                         quality_config=run.quality, roi_config=run.roi,
                         domain_config=run.domain, px_size_um=args.px_size_um,
                         inference_scale=_scale(args.inference_scale),
                         flip_average=args.flip_average, thin_width_px=args.thin_width_px,
                         keep_class_maps=run.masks_out is not None)


def results_from_images(args: argparse.Namespace, measure_config: Any
                        ) -> tuple[str, list[FrameResult], float, dict[str, Any]]:
    """Analyse the positional frames: ``(mode, results, px_size_um, extra settings)``."""
    run = image_run(args)
    analyzer = _analyzer(args, run, measure_config)
    t_start = time.perf_counter()
    try:
        results, n_frames = analyze_all(analyzer, expand_inputs(args.inputs), run)
        info = analyzer.model_info
    finally:
        analyzer.close()
    wall = time.perf_counter() - t_start
    rejected = rejection_counts(results)
    if rejected:
        log.info("frames rejected: %s", ", ".join(f"{k} {v}" for k, v in rejected.items()))
    log.info("%d frame(s) in %.1f s (%.2f frames/s) on %s", n_frames, wall,
             n_frames / wall if wall > 0 else 0.0, info.get("backend"))
    extra = {
        "inputs": list(args.inputs),
        "model": info,
        "frame_px_size_um": analyzer.frame_px_size_um,
        "inference_scale": analyzer.inference_scale,
        "quality": run.quality.model_dump(mode="json"),
        "roi": run.roi.model_dump(mode="json"),
        "frames_rejected": rejected,
        "throughput": {"frames": n_frames, "wall_s": round(wall, 3)},
    }
    return "images", results, analyzer.px_size_um, extra


def analyze_all(analyzer: FrameAnalyzer, entries: list[tuple[str, str | None]],
                run: ImageRun) -> tuple[list[FrameResult], int]:
    """Every input in order, ``backend.max_batch`` frames per inference call:
    ``(results, number of frames decoded)``."""
    from tqdm import tqdm

    from edge.vision.parallel import ProgressLine

    results: list[FrameResult] = []
    seen: dict[str, int] = {}
    n_frames = 0
    # tqdm draws on a terminal only; elsewhere (a log file, a pipe) a line every N frames
    lines = None if sys.stderr.isatty() else ProgressLine(len(entries), run.progress_every, log)
    with tqdm(total=len(entries), unit="frame", desc="analyze", disable=None,
              leave=False) as bar:
        for out, n, size in _chunks(analyzer, entries, run, seen):
            results += out
            n_frames += n
            bar.update(size)
            if lines is not None:
                lines.update(size)
    return results, n_frames


def _chunks(analyzer: FrameAnalyzer, entries: list[tuple[str, str | None]], run: ImageRun,
            seen: dict[str, int]) -> Iterator[tuple[list[FrameResult], int, int]]:
    """``(results, frames decoded, inputs)`` of consecutive inputs in order: chunk by
    chunk in this thread (``--workers 1``), else input by input from the pipeline of
    :func:`edge.vision.parallel.analyze_ordered` (the same results)."""
    step = run.backend.max_batch
    if run.workers <= 1:
        for k in range(0, len(entries), step):
            out, n = _analyze_chunk(analyzer, entries[k:k + step], run, seen)
            yield out, n, len(entries[k:k + step])
        return
    from edge.vision.parallel import analyze_ordered

    def decode(entry: tuple[str, str | None]) -> Any:
        return _decoded(*entry, run.decode, warn=False)

    for a in analyze_ordered(analyzer, entries, decode, workers=run.workers, chunk=step):
        r = a.result
        if not r.ok:
            warn_skipped(r.name, r.error or "rejected")
        if a.image is not None:
            write_images(a.image, r, _unique_stem(r.name, seen), run)
        yield [r], int(a.image is not None), 1


def _analyze_chunk(analyzer: FrameAnalyzer, chunk: list[tuple[str, str | None]],
                   run: ImageRun, seen: dict[str, int]) -> tuple[list[FrameResult], int]:
    """Decode the inputs of one chunk, analyse the decoded frames together, write their
    overlays and class maps: ``(results in input order, frames decoded)``."""
    decoded = [_decoded(name, error, run.decode) for name, error in chunk]
    frames = [d for d in decoded if isinstance(d, tuple)]
    analysed = iter(analyzer.analyze_many(frames) if frames else [])
    results = []
    for d in decoded:
        if not isinstance(d, tuple):
            results.append(d)
            continue
        name, image = d
        r = next(analysed)
        if not r.ok:
            warn_skipped(name, r.error or "rejected")
        write_images(image, r, _unique_stem(name, seen), run)
        results.append(r)
    return results, len(frames)


def _decoded(name: str, listed_error: str | None, decode_config: Any, *,
             warn: bool = True) -> tuple[str, np.ndarray] | FrameResult:
    """``(name, image)``, or the ``unreadable`` result of an input that cannot be read
    (warned once on stderr, unless ``warn`` is False)."""
    from edge.vision.result import FrameResult

    error = listed_error
    if error is None:
        try:
            return name, decode_image(name, decode_config)
        except UserError as exc:
            error = error_text(name, exc)
    result = FrameResult.from_error(name, "unreadable", error)
    if warn:
        warn_skipped(name, result.error or error)
    return result


def write_images(image: np.ndarray, result: FrameResult, stem: str, run: ImageRun) -> None:
    """``<stem>.overlay.png`` and ``<stem>.classes.png`` where the run asks for them."""
    if run.overlays is not None and result.reject_reason != "unreadable":
        from edge.vision.overlay import render_overlay

        _imwrite(run.overlays / f"{stem}.overlay.png", render_overlay(image, result))
    if run.masks_out is not None and result.class_map is not None:
        from edge.vision.preprocess import upsample_class_map

        _imwrite(run.masks_out / f"{stem}.classes.png",
                 upsample_class_map(result.class_map, result.frame_hw))
        result.class_map = None  # with its logits a few MB: the report does not read it


def rejection_counts(results: list[FrameResult]) -> dict[str, int]:
    """``{reason: n}`` of the inputs not measured, sorted by reason."""
    counts: dict[str, int] = {}
    for r in results:
        if not r.ok:
            reason = r.reject_reason or "rejected"
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))


def _imwrite(path: Path, image: Any) -> None:
    import cv2

    if not cv2.imwrite(str(path), image):
        raise UserError(f"{path}: cannot write image")
