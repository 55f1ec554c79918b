"""Unsupervised adaptation to a plant's frames: re-estimate the input normalisation.

A plant's microscope rarely has the training frames' lamp level, black level or lamp
colour. The network normalises its input with fixed statistics (folded into the graph),
so a dimmer or greyer camera moves every activation away from what the network learned;
a frame at a third of the training brightness loses most of its crystal pixels. The
input statistics of a plant's own unlabeled frames fix that without labels:

for each channel ``c``, the quantiles ``t_c(q)`` of the plant frames' pixel values and the
quantiles ``r_c(q)`` of reference frames of the training domain (by default frames of the
generator the model was trained on) are matched by a least-squares line

.. math:: r_c(q) \\approx g_c \\, t_c(q) + o_c, \\qquad q \\in Q,

with ``Q`` spread over the whole distribution (black level outside the field stop, crystal
shadows, light background). The adapted model computes the original network on
``g * x + o``: two element-wise nodes at the graph input (:func:`add_input_affine`), so
the file runs on every backend unchanged and its metadata records what was estimated.
A gain and an offset correct a global change of lamp level, exposure, black level and
lamp colour exactly; they do not learn a new crystal habit (that needs labelled frames:
``crystal-train train --weights``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError

#: Quantiles matched between the plant's and the reference frames.
QUANTILES = tuple(np.round(np.linspace(0.01, 0.99, 33), 4).tolist())
#: Pixels drawn per frame for the statistics (uniform subsample; the quantiles of a few
#: hundred thousand pixels are exact to well below one grey level).
PIXELS_PER_FRAME = 50_000
#: Gains outside this range mean the frames are not of the same kind (say a blank or a
#: saturated frame set): refused instead of written.
GAIN_RANGE = (0.2, 8.0)


@dataclass
class InputAffine:
    """Per-channel ``gain`` and ``offset`` applied to the model input (RGB, [0, 1])."""

    gain: np.ndarray
    offset: np.ndarray
    residual: float
    """RMS of the quantile fit on the reference scale (0..1 units)."""

    def to_json(self) -> dict[str, Any]:
        return {"gain": [round(float(g), 6) for g in self.gain],
                "offset": [round(float(o), 6) for o in self.offset],
                "fit_rms": round(float(self.residual), 6)}


def frame_pixels(images: Sequence[np.ndarray], *, color_order: str = "bgr",
                 per_frame: int = PIXELS_PER_FRAME, seed: int = 0) -> np.ndarray:
    """RGB values in [0, 1], ``(N, 3)`` float32, subsampled uniformly from each frame.

    Frames go through :func:`edge.vision.preprocess.to_rgb_float`, the conversion the
    appliance feeds the network with (grey frames become three equal channels).
    """
    from edge.vision.preprocess import to_rgb_float

    rng = np.random.default_rng(seed)
    parts = []
    for image in images:
        rgb = to_rgb_float(image, color_order=color_order).reshape(-1, 3)
        k = min(per_frame, rgb.shape[0])
        parts.append(rgb[rng.choice(rgb.shape[0], size=k, replace=False)])
    if not parts:
        raise ValueError("no frames")
    return np.concatenate(parts, axis=0)


def fit_input_affine(reference: np.ndarray, target: np.ndarray, *,
                     quantiles: Sequence[float] = QUANTILES) -> InputAffine:
    """Per-channel least-squares line from the target's quantiles to the reference's.

    Parameters
    ----------
    reference, target : ndarray (N, 3)
        Pixel values in [0, 1] of the training-domain and of the plant frames.
    quantiles : sequence of float
        The quantile levels ``Q`` that are matched.

    Returns
    -------
    InputAffine
        ``gain`` and ``offset`` such that ``gain * target + offset`` has (in the least
        squares sense) the reference's quantiles.
    """
    reference = np.asarray(reference, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if reference.ndim != 2 or target.ndim != 2 or reference.shape[1] != target.shape[1]:
        raise ValueError(f"expected (N, C) pixel arrays with equal C, got {reference.shape} "
                         f"and {target.shape}")
    q = np.asarray(quantiles, dtype=np.float64)
    r_q = np.quantile(reference, q, axis=0)
    t_q = np.quantile(target, q, axis=0)
    gain = np.empty(reference.shape[1])
    offset = np.empty(reference.shape[1])
    sq = 0.0
    for c in range(reference.shape[1]):
        spread = np.ptp(t_q[:, c])
        if spread < 1e-3:
            raise UserError("the frames have (almost) no contrast: no intensity mapping "
                            "can be estimated from them")
        a, b = np.polyfit(t_q[:, c], r_q[:, c], 1)
        gain[c], offset[c] = a, b
        sq += float(np.mean((a * t_q[:, c] + b - r_q[:, c]) ** 2))
    if np.any(gain < GAIN_RANGE[0]) or np.any(gain > GAIN_RANGE[1]):
        raise UserError(f"estimated input gain {np.round(gain, 3).tolist()} is outside "
                        f"{GAIN_RANGE}: the frames do not look like the same kind of "
                        "flow-cell frames as the reference")
    return InputAffine(gain=gain, offset=offset, residual=float(np.sqrt(sq / reference.shape[1])))


def add_input_affine(model_in: str | Path, model_out: str | Path, affine: InputAffine) -> Path:
    """Write a copy of the ONNX model that computes the original on ``gain * x + offset``.

    The graph input keeps its name, shape and type, so every backend and the metadata's
    input spec stay valid; the two nodes act on the float32 input before anything else.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_in))
    graph = model.graph
    if len(graph.input) != 1:
        raise UserError(f"{model_in}: expected one graph input, found {len(graph.input)}")
    name = graph.input[0].name
    scaled, shifted = f"{name}__adapt_scaled", f"{name}__adapted"
    for node in graph.node:
        node.input[:] = [shifted if i == name else i for i in node.input]
    shape = (1, len(affine.gain), 1, 1)
    graph.initializer.extend([
        numpy_helper.from_array(affine.gain.astype(np.float32).reshape(shape),
                                f"{name}__adapt_gain"),
        numpy_helper.from_array(affine.offset.astype(np.float32).reshape(shape),
                                f"{name}__adapt_offset")])
    nodes = [helper.make_node("Mul", [name, f"{name}__adapt_gain"], [scaled],
                              name="adapt_input_gain"),
             helper.make_node("Add", [scaled, f"{name}__adapt_offset"], [shifted],
                              name="adapt_input_offset")]
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)
    onnx.checker.check_model(model)
    out = Path(model_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


@dataclass
class AdaptResult:
    """What ``crystal-train adapt`` estimated and wrote."""

    model: Path
    affine: InputAffine
    n_frames: int
    n_reference: int
    reference: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"model": str(self.model), "method": "input_normalisation",
                "frames": self.n_frames, "reference_frames": self.n_reference,
                "reference": self.reference, **self.affine.to_json(), **self.extra}


IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")


def list_frames(folder: str | Path, *, option: str = "--frames") -> list[Path]:
    """Image files of a folder (its ``images/`` subfolder when it is a dataset)."""
    folder = Path(folder)
    if (folder / "images").is_dir():
        folder = folder / "images"
    if not folder.is_dir():
        raise UserError(f"{option} {folder}: not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"{option} {folder}: no frames ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def read_frames(paths: Sequence[Path], *, limit: int) -> list[np.ndarray]:
    """Decode up to ``limit`` frames evenly spread over ``paths`` (the one decoder).

    A file that does not decode is skipped with one warning, as ``crystal-edge analyze``
    and the service skip it; only a folder without any decodable frame is an error.
    """
    from edge.vision.decode import DecodeError, decode_file

    idx = np.unique(np.linspace(0, len(paths) - 1, min(limit, len(paths))).round().astype(int))
    images, failed = [], []
    for i in idx:
        try:
            images.append(decode_file(paths[i]).image)
        except DecodeError as exc:
            failed.append(f"{paths[i]}: {exc}")
            logging.getLogger(__name__).warning("%s (skipped)", failed[-1])
    if not images:
        raise UserError(f"none of the {len(idx)} frames decodes ({failed[0]})")
    return images


def generated_reference(meta: Any, hw: tuple[int, int], *, n: int, seed: int
                        ) -> list[np.ndarray]:
    """Frames of the generator the default models are trained on, at the plant frames'
    size and the model's training frame pixel size (BGR uint8, as decoded files)."""
    import cv2

    from trainer.synth import SynthConfig, frame_seed, render_frame

    cfg = SynthConfig(width=hw[1], height=hw[0], px_size_um=meta.training_frame_px_size_um)
    return [cv2.cvtColor(render_frame(frame_seed(seed, i), cfg).image, cv2.COLOR_RGB2BGR)
            for i in range(n)]


def adapt_model(model: str | Path, frames: str | Path, out: str | Path, *,
                reference: str | Path | None = None, max_frames: int = 32,
                n_reference: int = 8, seed: int = 0) -> AdaptResult:
    """Estimate the input normalisation of ``frames`` and write the adapted model.

    Parameters
    ----------
    model : path
        An exported ONNX model with its metadata JSON.
    frames : path
        Folder of the plant's unlabeled frames (or a dataset with ``images/``).
    out : path
        The adapted ``.onnx``; its metadata JSON is written beside it, recording the
        estimate under ``training.adaptation``.
    reference : path, optional
        Frames of the model's training domain; default ``n_reference`` generated frames.
    """
    from edge.modelmeta import check_model_file, load_meta, sha256_file, write_meta

    model, out = Path(model), Path(out)
    check_model_file(model)
    meta = load_meta(model)
    if out.resolve() == model.resolve():
        raise UserError(f"--out {out}: must differ from --model (the original stays as is)")
    target = read_frames(list_frames(frames), limit=max_frames)
    if reference is not None:
        ref_images = read_frames(list_frames(reference, option="--reference"), limit=max_frames)
        ref_name = str(reference)
    else:
        ref_images = generated_reference(meta, target[0].shape[:2], n=n_reference, seed=seed)
        ref_name = "generated (trainer.synth defaults)"
    affine = fit_input_affine(frame_pixels(ref_images, seed=seed),
                              frame_pixels(target, seed=seed + 1))
    add_input_affine(model, out, affine)
    result = AdaptResult(model=out, affine=affine, n_frames=len(target),
                         n_reference=len(ref_images), reference=ref_name)
    training = dict(meta.training)
    training["adaptation"] = {**result.to_json(), "from_model": model.name,
                              "from_sha256": meta.sha256, "frames_dir": str(frames)}
    training["adaptation"].pop("model")
    new = meta.model_copy(update={"onnx_file": out.name, "sha256": sha256_file(out),
                                  "training": training})
    write_meta(new, out)
    return result
