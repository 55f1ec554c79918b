"""INT8 post-training quantization of an exported model: one QDQ ONNX for CPU and TensorRT.

The float model (FP32, or an FP16 export whose weights are widened back to FP32 exactly by
:func:`float32_model`) is prepared with ONNX Runtime's ``quant_pre_process`` (shape
inference, graph optimisation: batch norms are already folded into the convolutions) and
quantized statically with ``quantize_static``:

* format QDQ (``QuantizeLinear``/``DequantizeLinear`` pairs around float ops): ONNX
  Runtime's CPU provider fuses each ``DQ -> Conv -> Q`` into an integer convolution
  (VNNI on x86), and TensorRT's explicit-quantization path builds INT8 kernels from the
  same file;
* weights: signed INT8, symmetric, one scale per output channel (``per_channel``), in
  the 7-bit range -64..63 (``reduce_range``): x86 CPUs without VNNI (AVX2 only) multiply
  unsigned by signed 8-bit values in pairs into saturating 16-bit sums, and full-range
  weights overflow them (255 * 127 * 2 > 32767): the full-range model read crystal IoU
  0.28-0.37 on the card's sets on such a CPU, against 0.94-0.96 on one with VNNI;
* activations: signed INT8, symmetric (``ActivationSymmetric``; zero point 0), the form
  TensorRT accepts; a scale per tensor from the calibration ranges
  ``s = max(|min|, |max|) / 127``;
* the output head stays float: the final convolution, the final ``Resize`` and the
  ``Add`` of the prior correction (``-log w_c``, see :mod:`trainer.export`) are excluded
  (:func:`output_head_nodes`), so the logits are the float head's convolution and
  bilinear upsampling of the dequantized 1/4-resolution features plus exact constants.

Calibration frames pass through the appliance's own preprocessing
(:func:`edge.vision.preprocess.prepare_for_inference` at the model's automatic inference
scale, padding to the size multiple), so the ranges are those the network sees in the
service. :func:`generate_calibration_set` writes generated frames of every domain (both
sieve fractions, a log-normal population, dim and bright illumination).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError

log = logging.getLogger(__name__)

#: calibration methods of ``onnxruntime.quantization.CalibrationMethod`` by CLI name
METHODS = ("minmax", "percentile", "entropy")
#: op types after the last convolution that stay float (upsampling, prior correction)
EXCLUDE_OP_TYPES_AT_OUTPUT = ("Resize", "Add", "Cast")
#: ``--weight-range`` -> the ``quantization.weights`` record (the backend reads "7-bit")
WEIGHT_RANGES = {"7bit": "int8 per-channel symmetric, 7-bit range (reduce_range)",
                 "full": "int8 per-channel symmetric, full range"}
#: seed of the generated calibration set (domain k uses CALIBRATION_SEED + k)
CALIBRATION_SEED = 900
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")

#: generated calibration domains: name -> SynthConfig keywords (see trainer.synth.config)
CALIBRATION_DOMAINS: dict[str, dict[str, Any]] = {
    "sieve_90_125": {"fraction_um": (90.0, 125.0)},
    "sieve_125_180": {"fraction_um": (125.0, 180.0)},
    "lognormal": {"size_mode": "lognormal", "lognormal_x50_um": 130.0, "lognormal_s": 0.3},
    "dim": {"fraction_um": (90.0, 180.0), "brightness": (120.0, 170.0)},
    "bright": {"fraction_um": (90.0, 180.0), "brightness": (230.0, 250.0),
               "illumination_gradient": (0.05, 0.2)},
}


# ----------------------------------------------------------------------------- float graph
def float32_model(path: str | Path):
    """The model at ``path`` as an FP32 ``onnx.ModelProto``.

    An FP16 export (:func:`trainer.export.export_model` with ``fp16``) holds float16
    initializers and constants and ``Cast`` nodes at the float32 inputs/outputs and around
    the ops kept in float32. Every float16 value is widened to float32 (exact: float16 is
    a subset of float32) and each ``Cast`` to float16 becomes a cast to float32 (an
    identity the optimiser removes), so the graph computes the FP16 model's function in
    FP32 arithmetic.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    for i, init in enumerate(g.initializer):
        if init.data_type == TensorProto.FLOAT16:
            arr = numpy_helper.to_array(init).astype(np.float32)
            g.initializer[i].CopyFrom(numpy_helper.from_array(arr, init.name))
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT16:
                a.i = TensorProto.FLOAT
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT16:
                a.t.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT16:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.checker.check_model(m)
    return m


def output_head_nodes(model) -> list[str]:
    """Names of the nodes the quantizer keeps float: the last ``Conv`` (the head's final
    convolution, 3-4 output channels and a fraction of a percent of the compute, whose
    output holds every logit the edge thresholds: with one activation scale for all of
    them, an 8-bit step of the class logits' range is a visible share of the contact
    channel's decision margin) and the nodes after it whose type is in
    :data:`EXCLUDE_OP_TYPES_AT_OUTPUT`."""
    last_conv = max(i for i, n in enumerate(model.graph.node) if n.op_type == "Conv")
    return [model.graph.node[last_conv].name] + [
        n.name for n in model.graph.node[last_conv + 1:]
        if n.op_type in EXCLUDE_OP_TYPES_AT_OUTPUT]


def nodes_named(model, prefixes: Sequence[str]) -> list[str]:
    """Names of the nodes of ``model`` that start with one of ``prefixes`` (a whole node
    name is its own prefix); :class:`UserError` naming a prefix that matches none."""
    names = [n.name for n in model.graph.node]
    out: list[str] = []
    for prefix in prefixes:
        hit = [n for n in names if n.startswith(prefix)]
        if not hit:
            raise UserError(f"--float-nodes {prefix}: no node of the model starts with it "
                            f"(the first ones: {', '.join(names[:3])})")
        out += hit
    return out


# ----------------------------------------------------------------------------- calibration
def _is_frame(p: Path, root: Path) -> bool:
    """In a dataset (a folder with ``images/``) only ``images/`` holds frames: its
    ``labels/``, ``contacts/`` and any other sibling folder hold maps, not frames."""
    if "overlays" in p.parts:
        return False
    for folder in p.relative_to(root).parents:
        base = root / folder
        if (base / "images").is_dir():
            return (base / "images") in p.parents
    return "labels" not in p.parts


def image_files(data_dir: str | Path) -> list[Path]:
    """Frames under ``data_dir`` (a dataset's ``images/`` folders, or image files at any
    depth; labels, contact maps and overlays excluded), sorted."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(f"--calibration-data {root}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and p.is_file() and _is_frame(p, root))
    if not files:
        raise UserError(f"--calibration-data {root}: no image files")
    return files


def network_inputs(files: Sequence[Path], meta: Any, *, px_size_um: float | None = None,
                   ) -> Iterator[np.ndarray]:
    """Each frame as the appliance feeds it to the network: (1, 3, H, W) float32.

    Frames are decoded by :mod:`edge.vision.decode`, scaled by the automatic inference
    scale for ``px_size_um`` (default: the model's training frame pixel size) and
    padded (REFLECT_101) to the model's size multiple.
    """
    from edge.vision.decode import DecodeError, decode_file
    from edge.vision.preprocess import padded_hw, prepare_for_inference, to_nchw
    from edge.vision.scale import resolve_scale

    px = px_size_um or meta.training_frame_px_size_um
    scale = resolve_scale(px, "auto", meta, model_name=meta.name).inference_scale
    for f in files:
        try:
            image = decode_file(f).image
        except DecodeError as exc:
            raise UserError(f"{f}: {exc.reason}") from None
        rgb = prepare_for_inference(image, scale)
        yield to_nchw([rgb], padded_hw(rgb.shape[:2], meta.input.size_multiple))


def generate_calibration_set(out: str | Path, *, n_per_domain: int = 4, width: int = 1024,
                             height: int = 768, px_size_um: float = 1.45,
                             seed: int = CALIBRATION_SEED,
                             ) -> Path:
    """Generated frames of every :data:`CALIBRATION_DOMAINS` entry into ``out/<domain>/``
    (each a labelled dataset written by :func:`trainer.synth.generate_dataset`)."""
    from trainer.synth import SynthConfig, generate_dataset

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--calibration-data {out}: not empty; generated frames go into a "
                        "new folder")
    for k, (name, kw) in enumerate(CALIBRATION_DOMAINS.items()):
        cfg = SynthConfig(width=width, height=height, px_size_um=px_size_um, **kw)
        generate_dataset(out / name, n_per_domain, cfg, seed=seed + k)
    return out


def _reader(inputs: list[np.ndarray], input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class _Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {input_name: x}

        def rewind(self) -> None:
            self._it = iter(inputs)

    return _Frames()


# ----------------------------------------------------------------------------- quantize
def quantize_int8(float_model: str | Path, out: str | Path, inputs: list[np.ndarray], *,
                  method: str = "minmax", activation_symmetric: bool = True,
                  exclude_nodes: Sequence[str] = (),
                  weight_range: str = "7bit") -> dict[str, Any]:
    """Quantize ``float_model`` (an ONNX file, FP16 or FP32) to a QDQ INT8 ``out``.

    Parameters
    ----------
    float_model : path
        The exported float model.
    out : path
        Target ``.onnx``.
    inputs : list of numpy.ndarray
        Calibration batches (N, 3, H, W) float32, see :func:`network_inputs`.
    method : {"minmax", "percentile", "entropy"}
        Range estimation: min/max over all frames; the 99.999th percentile of
        ``|x|``; or the range that minimises the KL divergence between the float and the
        quantized histogram.
    activation_symmetric : bool
        Signed activations with zero point 0 (TensorRT's form); False gives unsigned
        asymmetric activations (ONNX Runtime CPU only).
    exclude_nodes : sequence of str
        More nodes to keep float (beyond the output head): every node whose name starts
        with one of these (``/net/decoder/block2`` keeps that block's convolutions
        float); :class:`UserError` for one that names no node.
    weight_range : {"7bit", "full"}
        Weights in -64..63 (``reduce_range``: runs on every x86 CPU) or in -127..127 (half
        the rounding error; TensorRT and CPUs with VNNI, elsewhere the edge runs the float
        model, see :func:`edge.backends.precision.cpu_int8_saturates`).

    Returns
    -------
    dict
        ``method``, ``activation_type``, ``excluded`` nodes, ``seconds`` taken.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise UserError(f"--calibration-method {method}: expected one of {', '.join(METHODS)}")
    if not inputs:
        raise UserError("calibration: no frames")
    if weight_range not in WEIGHT_RANGES:
        raise UserError(f"--weight-range {weight_range}: expected one of "
                        f"{', '.join(WEIGHT_RANGES)}")
    t0 = time.perf_counter()
    m32 = float32_model(float_model)
    act = QuantType.QInt8 if activation_symmetric else QuantType.QUInt8
    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]
    with tempfile.TemporaryDirectory(prefix="crystal-int8-") as tmp:
        f32 = Path(tmp) / "float32.onnx"
        pre = Path(tmp) / "prepared.onnx"
        onnx.save(m32, str(f32))
        quant_pre_process(str(f32), str(pre), skip_symbolic_shape=True)
        # node names after the optimiser's rewrites
        graph = onnx.load(str(pre))
        excluded = sorted(set(output_head_nodes(graph)) | set(nodes_named(graph, exclude_nodes)))
        quantize_static(
            str(pre), str(out), _reader(inputs, m32.graph.input[0].name),
            quant_format=QuantFormat.QDQ, per_channel=True,
            reduce_range=weight_range == "7bit",
            activation_type=act, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
            calibrate_method=calib,
            extra_options={"ActivationSymmetric": activation_symmetric,
                           "WeightSymmetric": True,
                           "CalibPercentile": 99.999})
    return {"method": method, "activation_type": "int8" if activation_symmetric else "uint8",
            "activation_symmetric": activation_symmetric,
            "weights": WEIGHT_RANGES[weight_range],
            "format": "QDQ", "excluded_nodes": excluded, "n_calibration_frames": len(inputs),
            "seconds": round(time.perf_counter() - t0, 1)}


# ----------------------------------------------------------------------------- export
def int8_path_for(out: str | Path) -> Path:
    """``models/x.onnx`` -> ``models/x.int8.onnx`` (the file ``precision = "int8"`` runs)."""
    from edge.backends.precision import int8_sibling

    return int8_sibling(out)


def write_float32(src: str | Path, out: str | Path) -> Path:
    """The float model ``src`` as an FP32 ONNX ``out`` with its metadata beside it."""
    import onnx

    from edge.modelmeta import load_meta, sha256_file, write_meta

    meta = load_meta(src)
    onnx.save(float32_model(src), str(out))
    meta = meta.model_copy(update={"onnx_file": Path(out).name, "sha256": sha256_file(out),
                                   "precision": "fp32"})
    write_meta(meta, out)
    return Path(out)


def export_int8(float_model: str | Path, out: str | Path, calibration_data: str | Path, *,
                agreement_data: Sequence[str | Path] = (), method: str = "minmax",
                max_calibration_frames: int | None = None,
                px_size_um: float | None = None,
                calibration_recipe: dict[str, Any] | None = None,
                weight_range: str = "7bit",
                float_nodes: Sequence[str] = ()) -> dict[str, Any]:
    """Quantize ``float_model`` to ``<out stem>.int8.onnx`` if it passes the release gate.

    The INT8 file is calibrated on the frames of ``calibration_data``, measured against
    the FP32 form of ``float_model`` on ``agreement_data`` (labelled sets; default: the
    model card's generated sets, regenerated) and written with its metadata only when
    :func:`trainer.int8gate.check_release` passes; otherwise a one-line
    :class:`UserError` and no file. Returns the payload recorded as
    ``quantization`` in the INT8 metadata, plus ``onnx``, ``meta``, ``size_bytes``;
    ``calibration_recipe`` (how the calibration frames were generated) is recorded there;
    ``float_nodes``: name prefixes of nodes kept float (:func:`quantize_int8`'s
    ``exclude_nodes``; recorded as ``float_nodes`` and in ``excluded_nodes``).
    """
    import shutil

    from edge.modelmeta import load_meta, sha256_file, write_meta
    from trainer.int8gate import card_sets, check_release, measure_agreement

    float_model, target = Path(float_model), int8_path_for(out)
    meta = load_meta(float_model)
    files = image_files(calibration_data)[:max_calibration_frames]
    inputs = list(network_inputs(files, meta, px_size_um=px_size_um))
    with tempfile.TemporaryDirectory(prefix="crystal-int8-") as tmp:
        ref = write_float32(float_model, Path(tmp) / f"{meta.name}.fp32.onnx")
        q8 = Path(tmp) / target.name
        info = quantize_int8(float_model, q8, inputs, method=method,
                             weight_range=weight_range, exclude_nodes=float_nodes)
        if float_nodes:
            info["float_nodes"] = list(float_nodes)
        log.info("quantized %s in %.0f s (%d calibration frames)", float_model.name,
                 info["seconds"], len(inputs))
        # the weights' range is in the metadata from the start: the backend reads it; the
        # per-domain rows are the float model's, measured again for this file by
        # scripts/domain_card.py
        meta8 = meta.model_copy(update={"onnx_file": target.name, "sha256": sha256_file(q8),
                                        "precision": "int8", "quantization": info,
                                        "metrics": {k: v for k, v in meta.metrics.items()
                                                    if k != "domains"}})
        write_meta(meta8, q8)
        sets = ({Path(d).name: Path(d) for d in agreement_data} if agreement_data
                else card_sets(meta, Path(tmp) / "sets"))
        if not sets:
            raise UserError(f"{float_model}: its metadata has no generated evaluation sets "
                            "to measure the INT8 model on; give --agreement-data")
        agreement = measure_agreement(ref, q8, sets)
        check_release(agreement, target)
        quant = dict(info, source=float_model.name, source_sha256=meta.sha256,
                     calibration={"data": str(calibration_data), "n_frames": len(files),
                                  "domains": _domains(calibration_data),
                                  **({"generated": calibration_recipe}
                                     if calibration_recipe else {})},
                     agreement=agreement, reference="fp32 form of the source")
        write_meta(meta8.model_copy(update={"quantization": quant}), q8)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(q8), target)
        shutil.move(str(q8.with_suffix(".json")), target.with_suffix(".json"))
    return dict(quant, onnx=str(target), meta=str(target.with_suffix(".json")),
                size_bytes=target.stat().st_size)


def _domains(calibration_data: str | Path) -> list[str]:
    """Sub-folders of the calibration set (the generated domains), else its name (a
    dataset itself: its images/, labels/, contacts/ are not domains)."""
    root = Path(calibration_data)
    if (root / "images").is_dir():
        return [root.name]
    subs = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "overlays")
    return subs or [root.name]
