"""Model metadata: the JSON written beside every exported ONNX (``NAME.json``).

The trainer writes it (``crystal-train export``); the edge runtime reads it. It is the
only place where classes, input layout, normalisation and the trained pixel size are
recorded, so nothing is hard-coded twice.

Input convention (version 1): NCHW float32, RGB channel order, values in [0, 1];
the ImageNet mean/std normalisation is folded into the graph (``normalization_in_graph``).
Output: per-pixel class logits, NCHW float32 (N, n_classes, H, W), same H and W as the
input, optionally followed by ``output.aux_channels`` (a ``contact`` logit). H and W
must be multiples of ``input.size_multiple`` (pad, then crop).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.errors import UserError

SCHEMA_ID = "crystal-psd/model-meta"
SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassInfo(_Strict):
    id: int = Field(description="class id (channel index of the logits, value in label maps)")
    name: str = Field(description="class name, e.g. 'crystal'")


class InputSpec(_Strict):
    layout: Literal["NCHW"] = Field("NCHW", description="tensor layout")
    channels: int = Field(3, description="number of input channels")
    color_order: Literal["RGB"] = Field("RGB", description="channel order of the input")
    dtype: Literal["float32"] = Field("float32", description="input element type")
    value_range: tuple[float, float] = Field((0.0, 1.0), description="expected input value range")
    mean: tuple[float, ...] = Field(
        (0.485, 0.456, 0.406), description="per-channel mean (on [0,1] values)")
    std: tuple[float, ...] = Field(
        (0.229, 0.224, 0.225), description="per-channel std (on [0,1] values)")
    normalization_in_graph: bool = Field(
        True, description="True: mean/std applied inside the graph; feed values in value_range")
    size_multiple: int = Field(16, description="H and W must be multiples of this (pad, then crop)")


class OutputSpec(_Strict):
    kind: Literal["logits"] = Field("logits", description="per-pixel class logits")
    layout: Literal["NCHW"] = Field("NCHW", description="(N, n_classes, H, W)")
    logit_adjustment: tuple[float, ...] | None = Field(
        None,
        description="per-class constants already added to the logits inside the graph "
                    "(-log of the training class weights, undoing the weighted loss's prior "
                    "shift); informational, consumers take argmax as is")
    aux_channels: list[str] = Field(
        default_factory=list,
        description="auxiliary per-pixel channels appended after the class channels, in "
                    "order (output (N, n_classes + len(aux_channels), H, W)); 'contact' = "
                    "logit of 'this crystal pixel touches another crystal' (sigmoid -> "
                    "probability), used for the watershed markers; consumers take the argmax "
                    "over the class channels only")


class ModelMeta(_Strict):
    schema_id: Literal["crystal-psd/model-meta"] = Field(SCHEMA_ID, description="schema id")
    schema_version: int = Field(SCHEMA_VERSION, description="schema version")
    name: str = Field(description="model name, e.g. 'crystal-seg'")
    onnx_file: str = Field(description="file name of the ONNX beside this JSON")
    sha256: str = Field(description="sha256 of the ONNX file")
    opset: int = Field(17, description="ONNX opset")
    classes: list[ClassInfo] = Field(description="classes in channel order")
    crystal_class_id: int = Field(2, description="id of the crystal class")
    input: InputSpec = Field(default_factory=InputSpec, description="input tensor spec")
    output: OutputSpec = Field(default_factory=OutputSpec, description="output tensor spec")
    px_size_um: float = Field(
        gt=0, description="pixel size (um) of the frames the model was trained on, "
                          "at the network input")
    frame_px_size_um: float | None = Field(
        None, gt=0,
        description="camera pixel size (um) of the training frames before any input scaling "
                    "(px_size_um / frame_px_size_um = the input scale used in training); the "
                    "default frame pixel size when a user gives none")
    architecture: dict[str, Any] = Field(
        default_factory=dict,
        description="e.g. {'name': 'DeepLabV3Plus', 'encoder': 'resnet50'}")
    training: dict[str, Any] = Field(
        default_factory=dict, description="training data summary and command")
    metrics: dict[str, Any] = Field(default_factory=dict, description="validation metrics")
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp32", description="weight precision stored in the ONNX ('int8': a QDQ file with "
                            "INT8 weights and activations, see quantization)")
    quantization: dict[str, Any] | None = Field(
        None,
        description="int8 only: how the file was quantized (source float model, calibration "
                    "set and method) and its measured agreement with the float model "
                    "(pixel agreement, crystal IoU delta, x50,3 shift per set)")
    trainer_version: str = Field("", description="crystal-psd trainer version that exported it")
    created: str = Field("", description="UTC ISO 8601 time of export")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def training_frame_px_size_um(self) -> float:
        """Camera pixel size of the training frames (before the training input scale).

        ``frame_px_size_um`` when recorded; else derived from ``training.input_scale``
        (older exports); else ``px_size_um`` (trained at full resolution).
        """
        if self.frame_px_size_um:
            return float(self.frame_px_size_um)
        scale = self.training.get("input_scale") if isinstance(self.training, dict) else None
        if isinstance(scale, (int, float)) and scale > 0:
            return float(self.px_size_um) * float(scale)
        return float(self.px_size_um)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def meta_path_for(onnx_path: str | Path) -> Path:
    """``models/x.onnx`` -> ``models/x.json``."""
    return Path(onnx_path).with_suffix(".json")


_MODELPROTO_FIRST_TAGS = frozenset({0x08, 0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72})


def check_model_file(path: str | Path) -> None:
    """UserError unless ``path`` exists and starts like an ONNX protobuf.

    The one check every door makes before it loads a model (analyzer, backends,
    ``check-config``, ``build-engine``, the trainer's evaluation).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found")
    with open(path, "rb") as f:
        head = f.read(2)
    # protobuf writes fields in number order: ir_version (tag 0x08) first, or the first set
    # field of ModelProto (producer, domain, version, doc, graph, opset_import, metadata)
    if len(head) < 2 or head[0] not in _MODELPROTO_FIRST_TAGS:
        raise UserError(f"{path}: not an ONNX model (expected a protobuf ModelProto)")


def load_meta(onnx_path: str | Path, *, verify_sha256: bool = True) -> ModelMeta:
    """Read and validate the metadata JSON beside ``onnx_path``.

    Raises :class:`UserError` naming the file when it is missing, not JSON, invalid,
    or (with ``verify_sha256``) does not match the ONNX file.
    """
    onnx_path = Path(onnx_path)
    mpath = meta_path_for(onnx_path)
    if not mpath.is_file():
        raise UserError(f"{mpath}: model metadata missing (expected beside {onnx_path.name})")
    try:
        raw = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{mpath}: cannot read model metadata: {exc}") from None
    try:
        meta = ModelMeta.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{mpath}: invalid model metadata at '{loc}': {first['msg']}") from None
    if verify_sha256 and onnx_path.is_file():
        actual = sha256_file(onnx_path)
        if actual != meta.sha256:
            raise UserError(
                f"{mpath}: sha256 {meta.sha256[:12]}... does not match {onnx_path.name} "
                f"({actual[:12]}...); re-export the model or fix the metadata")
    return meta


def write_meta(meta: ModelMeta, onnx_path: str | Path) -> Path:
    mpath = meta_path_for(onnx_path)
    mpath.write_text(json.dumps(meta.model_dump(mode="json"), indent=2) + "\n")
    return mpath
