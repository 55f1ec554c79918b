"""The segmentation stage of :class:`edge.vision.analyzer.FrameAnalyzer`: frames in, class
maps at inference resolution out.

It prepares frames at the inference scale, runs them through the backend in batches of
equal size (the mirror average when asked), records each map's uncertainty for the
out-of-domain score, and segments frames whose crystals are thin once more at the finer
scale of :mod:`edge.vision.finescale` (those maps carry it:
:func:`edge.vision.contact.scale_of`). Each scale has its own backend
(:class:`edge.vision.backendslot.BackendSlot`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edge.backends.base import Backend
from edge.backends.config import BackendConfig
from edge.modelmeta import ModelMeta
from edge.vision.backendslot import BackendSlot
from edge.vision.contact import segmented_maps, with_scale
from edge.vision.finescale import crystal_width_px, fine_scale
from edge.vision.ood import DomainCheck
from edge.vision.preprocess import flip_averaged, padded_hw, prepare_for_inference, to_nchw

log = logging.getLogger("edge.vision.analyzer")


class Segmenter:
    """Batched inference of one model at the frames' scale and, for thin crystals, a
    finer one.

    Parameters
    ----------
    model_path, meta, backend_config, state_dir
        The model and how its backends are created.
    scale : float
        The inference scale.
    fine_scale : float or None
        The second pass's scale (None: no second pass; :func:`second_pass_scale`).
    thin_width_px : float
        Frames whose :func:`edge.vision.finescale.crystal_width_px` is below it get the
        second pass.
    domain : DomainCheck
        Records the uncertainty of each first-pass map (its limits are calibrated there).
    flip_average, color_order, bit_depth, keep_logits
        See :class:`edge.vision.analyzer.FrameAnalyzer`.
    backend : Backend, optional
        A loaded backend with dynamic shapes, used for every scale.
    on_frame_size : callable, optional
        Called with ``(H, W)`` once per new frame size; an ``OSError`` is logged.
    """

    def __init__(self, model_path: Path, meta: ModelMeta, backend_config: BackendConfig, *,
                 scale: float, fine_scale: float | None, thin_width_px: float,
                 domain: DomainCheck, flip_average: bool = False, color_order: str = "bgr",
                 bit_depth: int | None = None, keep_logits: bool = False,
                 state_dir: str | Path | None = None, backend: Backend | None = None,
                 on_frame_size: Callable[[tuple[int, int]], None] | None = None) -> None:
        self.meta, self.backend_config = meta, backend_config
        self.scale, self.fine_scale, self.thin_width_px = scale, fine_scale, thin_width_px
        self.domain, self.flip_average = domain, flip_average
        self.color_order, self.bit_depth, self.keep_logits = color_order, bit_depth, keep_logits
        self.crystal_class = int(meta.crystal_class_id)
        self.slots = {fine: BackendSlot(model_path, meta, backend_config, state_dir=state_dir,
                                        backend=None if fine else backend)
                      for fine in (False, True)}
        self.last_timings: dict[str, float] = {}
        self._on_frame_size = on_frame_size
        self._remembered_hw: tuple[int, int] | None = None

    def backend_for(self, input_hw: tuple[int, int], *, fine: bool = False) -> Backend:
        """The backend of the first (or the fine) pass for a padded input (H, W)."""
        main = self.slots[False]
        if fine and not (main.backend is not None and main.backend.dynamic_shapes):
            return self.slots[True].get(input_hw)
        return main.get(input_hw)

    def segment(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Class maps of ``images``: at :attr:`scale`, and at :attr:`fine_scale` for those
        whose crystals are thin (their uncertainty record moved to the fine map)."""
        t0 = time.perf_counter()
        maps, pre_s, infer_s = self._segment_at(images, self.scale)
        thin = [i for i, m in enumerate(maps) if self.is_thin(m)]
        if thin and self.fine_scale is not None:
            fine, pre2, infer2 = self._segment_at([images[i] for i in thin], self.fine_scale)
            pre_s, infer_s = pre_s + pre2, infer_s + infer2
            for i, m in zip(thin, fine, strict=True):
                self.domain.transfer(maps[i], m)
                maps[i] = m
        n = max(1, len(images))
        self.last_timings = {"preprocess_ms": pre_s * 1e3 / n, "inference_ms": infer_s * 1e3 / n,
                             "segment_ms": (time.perf_counter() - t0) * 1e3 / n}
        return maps

    def is_thin(self, class_map: np.ndarray) -> bool:
        """Whether a first-pass map's crystals are narrower than :attr:`thin_width_px`."""
        return self.fine_scale is not None and crystal_width_px(
            class_map, crystal_class=self.crystal_class) < self.thin_width_px

    def _segment_at(self, images: Sequence[np.ndarray], scale: float
                    ) -> tuple[list[np.ndarray], float, float]:
        """Class maps of ``images`` at ``scale`` (first-pass maps recorded for the
        out-of-domain score), and the seconds spent preparing and in inference."""
        t0 = time.perf_counter()
        fine = scale != self.scale
        prepared = [prepare_for_inference(im, scale, color_order=self.color_order,
                                          bit_depth=self.bit_depth) for im in images]
        pre_s = time.perf_counter() - t0
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(prepared):
            groups.setdefault(padded_hw(p.shape[:2], self.meta.input.size_multiple), []).append(i)
        maps: list[np.ndarray] = list(images)
        infer_s = 0.0
        for hw, idx in groups.items():
            backend = self.backend_for(hw, fine=fine)
            if not fine:
                self._remember_frame_hw(images[idx[0]].shape[:2])
            for k in range(0, len(idx), self.backend_config.max_batch):
                chunk = idx[k:k + self.backend_config.max_batch]
                batch = to_nchw([prepared[i] for i in chunk], hw)
                t1 = time.perf_counter()
                plain = logits = backend.infer(batch)
                if self.flip_average:
                    logits = flip_averaged(backend.infer, batch, plain)
                infer_s += time.perf_counter() - t1
                sizes = [prepared[i].shape[:2] for i in chunk]
                for i, m in zip(chunk, segmented_maps(logits, sizes, self.meta,
                                                      keep_logits=self.keep_logits),
                                strict=True):
                    maps[i] = with_scale(m, scale) if fine else m
                if not fine:
                    self.domain.record([maps[i] for i in chunk], plain[:, :self.meta.n_classes])
        return maps, pre_s, infer_s

    def _remember_frame_hw(self, hw: tuple[int, ...]) -> None:
        """Tell ``on_frame_size`` about a new frame size (once per size; never fatal)."""
        hw2 = (int(hw[0]), int(hw[1]))
        if self._on_frame_size is None or hw2 == self._remembered_hw:
            return
        self._remembered_hw = hw2
        try:
            self._on_frame_size(hw2)
        except OSError as exc:
            log.warning("cannot record the frame size %dx%d: %s", hw2[1], hw2[0], exc)

    def close(self) -> None:
        for slot in self.slots.values():
            slot.close()


def second_pass_scale(asked: float | str, scale: float, thin_width_px: float, factor: float,
                      backend_config: BackendConfig) -> float | None:
    """The second pass's scale, or None: only under ``inference_scale`` "auto", with a
    threshold, a scale that has a finer pass, and no fixed network input size."""
    fixed_input = bool(backend_config.input_height and backend_config.input_width)
    if asked != "auto" or thin_width_px <= 0 or fixed_input:
        return None
    fine = fine_scale(scale, factor)
    if fine is not None:
        log.info("frames whose crystals are under %.3g px wide at the network are segmented "
                 "again at scale %.3g", thin_width_px, fine)
    return fine
