"""Per-frame analysis: quality gate -> segmentation -> ROI -> crowding -> measurement.

:class:`FrameAnalyzer` is what the pipeline (``edge.service.pipeline``) and ``crystal-edge analyze``
use; it owns the inference backend. Frames are decoded images as OpenCV gives them (see
:mod:`edge.vision.preprocess` for channels and bit depths).

Scale and pixel size: the class map is measured at inference resolution, with the
frames' pixel size over the inference scale (:mod:`edge.vision.scale`).

Frame size lock (``lock_frame_size``, the service): :mod:`edge.vision.framesize`. A
backend loaded before READY for a size only guessed (the oldest pending file,
``frame_size.json``) is loaded again at most once, if the first real frame shows another
size. ``analyze`` (no lock) takes frames of any size.

Thin crystals: with ``inference_scale = "auto"`` a frame whose crystals are a few network
pixels wide is segmented once more at a finer scale (:mod:`edge.vision.finescale`); its
class map carries that scale, and its field, measurement and result use it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.backends.base import Backend
from edge.backends.config import BackendConfig
from edge.errors import UserError
from edge.measure import MeasureConfig, measure_crystals, select_morphology
from edge.modelmeta import ModelMeta, check_model_file, load_meta
from edge.vision.contact import contact_of, scale_of
from edge.vision.decode import MIN_SIDE_PX
from edge.vision.finescale import THIN_SCALE_FACTOR, THIN_WIDTH_PX
from edge.vision.framesize import FrameSizeLock
from edge.vision.ood import REASON as OUT_OF_DOMAIN
from edge.vision.ood import DomainCheck, DomainConfig
from edge.vision.preprocess import grey_u8, map_grey, padded_hw, scaled_hw
from edge.vision.quality import QualityConfig, QualityResult, check_crowding, check_frame
from edge.vision.result import FrameResult
from edge.vision.roi import FieldTracker, Roi, RoiConfig
from edge.vision.scale import resolve_scale
from edge.vision.segmenter import Segmenter, second_pass_scale

log = logging.getLogger(__name__)



class FrameAnalyzer:
    """Quality gate, batched segmentation and measurement of frames with one model.

    Parameters
    ----------
    model_path : path
        The ONNX; its metadata JSON must lie beside it (:mod:`edge.modelmeta`).
    backend_config, measure_config, quality_config, roi_config, domain_config : optional
        Section configs; defaults when None (``domain_config``: :mod:`edge.vision.ood`).
    px_size_um : float, optional
        Pixel size of the *frames* (um). None = the model's trained pixel size.
    inference_scale : float or "auto"
        Resize factor before inference (see :mod:`edge.vision.scale`).
    flip_average : bool
        Also segment each frame mirrored and average the outputs
        (:func:`edge.vision.preprocess.flip_averaged`); the out-of-domain score reads the
        plain output, the one its limits are calibrated on.
    thin_width_px, thin_scale_factor : float
        With ``inference_scale`` "auto": frames whose crystals are narrower than
        ``thin_width_px`` network pixels (:func:`edge.vision.finescale.crystal_width_px`)
        are segmented again at ``thin_scale_factor`` times the scale
        (:func:`edge.vision.finescale.fine_scale`); 0 = never.
    frame_hw : (H, W), optional
        Expected frame size; with it (or ``backend_config.input_height/width``) the
        backend is loaded now, else on the first frame.
    state_dir : path, optional
        State directory (TensorRT engine cache under ``engines/``).
    keep_class_maps : bool
        Keep each frame's class map in :attr:`FrameResult.class_map`, with its class
        logits (:func:`edge.vision.preprocess.upsample_class_map` enlarges those).
    color_order, bit_depth
        Passed to :func:`edge.vision.preprocess.to_rgb_float`.
    lock_frame_size : bool
        Reject frames whose size differs from the first accepted one
        (:attr:`size_lock`, :mod:`edge.vision.framesize`).
    on_frame_size : callable, optional
        Called with ``(H, W)`` once per new frame size segmented (the service writes
        ``frame_size.json``); an ``OSError`` it raises is logged, never fatal.
    meta, backend : optional
        A model that is not an ONNX file (a training checkpoint in ``crystal-train
        evaluate``): its metadata and a loaded backend with dynamic shapes, used instead
        of reading ``model_path`` and creating one.
    """

    def __init__(self, model_path: str | Path, *, backend_config: BackendConfig | None = None,
                 measure_config: MeasureConfig | None = None,
                 quality_config: QualityConfig | None = None,
                 roi_config: RoiConfig | None = None, px_size_um: float | None = None,
                 inference_scale: float | str = "auto", flip_average: bool = False,
                 thin_width_px: float = THIN_WIDTH_PX,
                 thin_scale_factor: float = THIN_SCALE_FACTOR,
                 frame_hw: tuple[int, int] | None = None,
                 state_dir: str | Path | None = None, keep_class_maps: bool = False,
                 color_order: str = "bgr", bit_depth: int | None = None,
                 lock_frame_size: bool = False,
                 on_frame_size: Callable[[tuple[int, int]], None] | None = None,
                 meta: ModelMeta | None = None,
                 backend: Backend | None = None,
                 domain_config: DomainConfig | None = None) -> None:
        self.model_path = Path(model_path)
        if meta is None:
            check_model_file(self.model_path)
            meta = load_meta(self.model_path)
        self.meta: ModelMeta = meta
        self.backend_config = backend_config or BackendConfig()
        self.measure_config = measure_config or MeasureConfig()
        self.morphology = _morphology(self.measure_config)
        self.quality_config = quality_config or QualityConfig()
        self.roi_config = roi_config or RoiConfig()
        self.state_dir = state_dir
        self.keep_class_maps = keep_class_maps
        self.color_order = color_order
        self.bit_depth = bit_depth
        scale = resolve_scale(px_size_um, inference_scale, meta, model_name=self.model_path.name)
        self.frame_px_size_um = scale.frame_px_size_um
        self.inference_scale = scale.inference_scale
        self.px_size_um = scale.px_size_um
        self.flip_average = bool(flip_average)
        self.fine_scale = second_pass_scale(inference_scale, self.inference_scale,
                                            thin_width_px, thin_scale_factor, self.backend_config)
        self.crystal_class = int(meta.crystal_class_id)
        self.black_class = next((c.id for c in meta.classes if "black" in c.name.lower()), 0)
        self.domain = DomainCheck(domain_config, black_class=self.black_class,
                                  crystal_class=self.crystal_class,
                                  roi_config=self.roi_config, bit_depth=bit_depth)
        self.segmenter = Segmenter(
            self.model_path, meta, self.backend_config, scale=self.inference_scale,
            fine_scale=self.fine_scale, thin_width_px=thin_width_px, domain=self.domain,
            flip_average=self.flip_average, color_order=color_order, bit_depth=bit_depth,
            keep_logits=keep_class_maps, state_dir=state_dir, backend=backend,
            on_frame_size=on_frame_size)
        self._fields = {s: FieldTracker(self.roi_config, black_class=self.black_class, scale=s)
                        for s in {self.inference_scale, self.fine_scale or self.inference_scale}}
        self.size_lock = FrameSizeLock(lock_frame_size, self.input_hw_for)
        self._load_early(frame_hw)

    def _load_early(self, frame_hw: tuple[int, int] | None) -> None:
        """Load the backend now when the input size is known (fixed by ``[backend]``
        input_height/input_width, or from ``frame_hw``); else on the first frame."""
        cfg = self.backend_config
        if cfg.input_height and cfg.input_width:
            in_hw = padded_hw((cfg.input_height, cfg.input_width), self.meta.input.size_multiple)
            self.size_lock.fix_input(in_hw)
            self.segmenter.backend_for(in_hw)
        elif frame_hw is not None:
            self.segmenter.backend_for(self.input_hw_for(frame_hw))

    # ------------------------------------------------------------------ backend
    def input_hw_for(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        """Padded network input (H, W) for frames of ``frame_hw``."""
        return padded_hw(scaled_hw(frame_hw, self.inference_scale), self.meta.input.size_multiple)

    @property
    def backend(self) -> Backend | None:
        """The loaded backend of the first pass (None before the first frame)."""
        return self.segmenter.slots[False].backend

    @property
    def backend_selection(self) -> list[dict[str, str]]:
        return self.segmenter.slots[False].selection

    @property
    def loading(self) -> tuple[str, float] | None:
        """(what, since monotonic) while a backend loads, else None."""
        return next((s.loading for s in self.segmenter.slots.values() if s.loading), None)

    @property
    def loaded_at(self) -> float | None:
        """Monotonic end of the last backend load."""
        return max((s.loaded_at for s in self.segmenter.slots.values()
                    if s.loaded_at is not None), default=None)

    @property
    def last_timings(self) -> dict[str, float]:
        """Per-frame milliseconds of the last :meth:`segment` call."""
        return self.segmenter.last_timings

    @property
    def model_info(self) -> dict[str, Any]:
        """Model and backend description for reports."""
        info = self.backend.info() if self.backend is not None else {}
        # the file that runs: the INT8 sibling when [backend] precision selected it
        path, meta = ((self.backend.model_path, self.backend.meta) if self.backend is not None
                      else (self.model_path, self.meta))
        return {
            "name": meta.name,
            "file": path.name,
            "sha256": meta.sha256,
            "classes": [c.name for c in self.meta.classes],
            "model_px_size_um": self.meta.px_size_um,
            "frame_px_size_um": self.frame_px_size_um,
            "inference_scale": self.inference_scale,
            "flip_average": self.flip_average,
            "thin_fine_scale": self.fine_scale,
            "measure_px_size_um": self.px_size_um,
            "backend": info.get("name"),
            "precision": info.get("precision"),
            "backend_info": info,
            "backend_selection": self.backend_selection,
        }

    def close(self) -> None:
        self.segmenter.close()

    def __enter__(self) -> FrameAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ stages
    def check_quality_full(self, image: np.ndarray | None) -> QualityResult:
        """Pre-inference gate with metrics; ``unreadable`` for None or malformed arrays."""
        if image is None:
            return QualityResult("unreadable", "could not decode")
        try:
            grey = grey_u8(image, bit_depth=self.bit_depth)
        except ValueError as exc:
            return QualityResult("unreadable", str(exc))
        if min(grey.shape) < MIN_SIDE_PX:
            return QualityResult("bad_shape", f"{grey.shape[1]}x{grey.shape[0]} px is smaller "
                                              f"than {MIN_SIDE_PX} px")
        hw = (int(grey.shape[0]), int(grey.shape[1]))
        other_size = self.size_lock.mismatch(hw)
        if other_size:
            return QualityResult("bad_shape", other_size)
        result = check_frame(grey, self.quality_config)
        if result.ok:
            self.size_lock.lock(hw)
        return result

    def check_quality(self, image: np.ndarray | None) -> str | None:
        """Reject reason, or None when the frame may be analysed."""
        return self.check_quality_full(image).reason

    def segment(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Batched inference: uint8 class maps at inference resolution, one per image.

        Images of equal size go through the backend together, at most
        ``backend_config.max_batch`` at a time. Frames whose crystals are thin are
        segmented again at :attr:`fine_scale`; their maps carry that scale
        (:func:`edge.vision.contact.scale_of`).
        """
        if not images:
            return []
        for im in images:
            hw = (int(im.shape[0]), int(im.shape[1]))
            self.size_lock.lock(hw)
            other_size = self.size_lock.mismatch(hw)
            if other_size:
                raise ValueError(f"bad_shape: {other_size}")
        return self.segmenter.segment(images)

    def postprocess(self, name: str, image: np.ndarray, class_map: np.ndarray, *,
                    quality: QualityResult | None = None,
                    timings: dict[str, float] | None = None,
                    roi: Roi | str | None = "detect") -> FrameResult:
        """ROI, crowding check and measurement of one segmented frame (``roi``: its
        :meth:`field`, found already in frame order by a parallel caller)."""
        t0 = time.perf_counter()
        scale = scale_of(class_map, self.inference_scale)
        px_size_um = self.px_size_um if scale == self.inference_scale else \
            self.frame_px_size_um / scale
        common: dict[str, Any] = {
            "px_size_um": px_size_um, "inference_scale": scale,
            "frame_hw": (int(image.shape[0]), int(image.shape[1])),
            "quality": dict(quality.metrics) if quality else {},
            "timings_ms": dict(timings or {}),
            "class_map": class_map if self.keep_class_maps else None}
        grey = map_grey(image, class_map, bit_depth=self.bit_depth)
        roi = self._field_of(grey, class_map) if isinstance(roi, str) else roi
        domain = self.domain.assess(image, class_map, roi)
        if domain is not None:
            common["domain_score"] = domain.score
            common["quality"].update(domain.metrics())
        if roi is None:
            return _timed(FrameResult.from_error(name, "no_field", "no illuminated field found",
                                                 **common), t0)
        if domain is not None and domain.reject:
            return _timed(FrameResult.from_error(name, OUT_OF_DOMAIN, domain.detail, roi=roi,
                                                 **common), t0)
        crowd = check_crowding(class_map, roi.mask, crystal_class=self.crystal_class,
                               config=self.quality_config)
        common["quality"].update(crowd.metrics)
        if not crowd.ok:
            return _timed(FrameResult.from_error(name, crowd.reason, crowd.detail, roi=roi,
                                                 **common), t0)
        crystals = measure_crystals(
            class_map, px_size_um=px_size_um, crystal_class=self.crystal_class,
            roi=roi.mask, config=self.measure_config, morphology=self.morphology,
            contact=contact_of(class_map), grey=grey)
        return _timed(FrameResult.from_mask(name, crystals, roi=roi, **common), t0)

    def field(self, image: np.ndarray, class_map: np.ndarray) -> Roi | None:
        """The illuminated field at the class map's scale (None when there is none)."""
        return self._field_of(map_grey(image, class_map, bit_depth=self.bit_depth), class_map)

    def _field_of(self, grey: np.ndarray, class_map: np.ndarray) -> Roi | None:
        scale = scale_of(class_map, self.inference_scale)
        tracker = self._fields.get(scale)
        if tracker is None:  # a map of another scale than the analyzer's two passes
            tracker = self._fields[scale] = FieldTracker(
                self.roi_config, black_class=self.black_class, scale=scale)
        return tracker.field(grey, class_map)

    def analyze(self, name: str, image: np.ndarray | None) -> FrameResult:
        """All stages for one frame."""
        return self.analyze_many([(name, image)])[0]

    def gate(self, name: str, image: np.ndarray | None
             ) -> tuple[QualityResult, float, FrameResult | None]:
        """Quality gate of one frame: ``(quality, ms, the rejected frame's result or None)``."""
        t0 = time.perf_counter()
        q = self.check_quality_full(image)
        q_ms = (time.perf_counter() - t0) * 1e3
        if q.ok:
            return q, q_ms, None
        hw = (0, 0) if image is None or np.ndim(image) < 2 else tuple(np.shape(image)[:2])
        return q, q_ms, FrameResult.from_error(
            name, q.reason, q.detail, px_size_um=self.px_size_um,
            inference_scale=self.inference_scale, frame_hw=hw, quality=dict(q.metrics),
            timings_ms={"quality_ms": q_ms})

    def analyze_many(self, frames: Sequence[tuple[str, np.ndarray | None]]) -> list[FrameResult]:
        """All stages for several frames; accepted frames are segmented in batches."""
        results: list[FrameResult | None] = [None] * len(frames)
        todo: list[tuple[int, QualityResult, float]] = []
        for i, (name, image) in enumerate(frames):
            q, q_ms, results[i] = self.gate(name, image)
            if results[i] is None:
                todo.append((i, q, q_ms))
        if todo:
            maps = self.segment([frames[i][1] for i, _, _ in todo])
            for (i, q, q_ms), cm in zip(todo, maps, strict=True):
                name, image = frames[i]
                results[i] = self.postprocess(
                    name, image, cm, quality=q, timings={"quality_ms": q_ms, **self.last_timings})
        return [r for r in results if r is not None]


def _timed(result: FrameResult, t0: float) -> FrameResult:
    """``result`` with its post-processing time since ``t0`` (perf_counter) recorded."""
    result.timings_ms["postprocess_ms"] = (time.perf_counter() - t0) * 1e3
    return result


def _morphology(config: MeasureConfig) -> Any:
    """The threshold/closing implementation ``[measure] morphology_device`` asks for."""
    try:
        morphology = select_morphology(config.morphology_device, radius=config.closing_radius_px)
    except RuntimeError as exc:
        raise UserError(f"measure.morphology_device: {exc}") from None
    log.info("post-processing threshold/closing on the %s", morphology.name)
    return morphology

