"""``[backend] precision = "int8"``: which model file runs.

The INT8 model of ``models/NAME.onnx`` is its sibling ``models/NAME.int8.onnx`` (with
``NAME.int8.json``), the file ``crystal-train export --int8`` writes; the configured
``[model] path`` stays the float model, so switching precision is one config line and
the float file is always there to fall back to. A model path that is itself an INT8
file (metadata ``precision = "int8"``) runs as it is, with ``NAME.onnx`` beside it as
its fallback.

Where the INT8 file cannot run, the float model runs instead and ONE warning line says
why: the sibling is missing, TensorRT on this device has no fast INT8, or the file's
full-range INT8 weights would overflow the CPU's kernels (:class:`Int8Unsupported` from
the backend; :func:`cpu_int8_saturates`). TensorRT then builds the float model in FP16.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path

from edge.backends.base import BackendUnavailable
from edge.backends.config import BackendConfig
from edge.modelmeta import ModelMeta, load_meta

log = logging.getLogger(__name__)

INT8_SUFFIX = ".int8.onnx"


class Int8Unsupported(BackendUnavailable):
    """The backend cannot run INT8 here; the float model runs instead."""


@dataclass(frozen=True)
class ModelChoice:
    """The model file a backend runs, with its metadata and the effective config."""

    path: Path
    meta: ModelMeta
    config: BackendConfig
    #: the float model to fall back to when the backend cannot run INT8 (None: no INT8)
    fallback: ModelChoice | None = None


def int8_sibling(model_path: str | Path) -> Path:
    """``models/x.onnx`` -> ``models/x.int8.onnx``."""
    p = Path(model_path)
    return p.with_name(p.stem + INT8_SUFFIX)


def float_choice(model_path: Path, meta: ModelMeta, config: BackendConfig) -> ModelChoice:
    """The float model; an ``int8`` request becomes ``fp16`` (TensorRT's float default)."""
    if config.precision == "int8":
        config = config.model_copy(update={"precision": "fp16"})
    return ModelChoice(model_path, meta, config)


def choose_model(model_path: str | Path, meta: ModelMeta, config: BackendConfig) -> ModelChoice:
    """The model file for ``config.precision`` (see the module docstring).

    Raises :class:`~edge.errors.UserError` (via :func:`edge.modelmeta.load_meta`) when the
    INT8 sibling exists but its metadata is missing, invalid or does not match it.
    """
    model_path = Path(model_path)
    if meta.precision == "int8":
        float_path = model_path.with_name(model_path.name.removesuffix(INT8_SUFFIX) + ".onnx")
        fallback = None
        if float_path != model_path and float_path.is_file():
            fallback = float_choice(float_path, load_meta(float_path), config)
        return ModelChoice(model_path, meta, config.model_copy(update={"precision": "int8"}),
                           fallback=fallback)
    if config.precision != "int8":
        return ModelChoice(model_path, meta, config)
    fallback = float_choice(model_path, meta, config)
    sibling = int8_sibling(model_path)
    if not sibling.is_file():
        log.warning("backend.precision = 'int8': %s not found (crystal-train export --int8 "
                    "writes it); running %s (%s)", sibling, model_path.name, meta.precision)
        return fallback
    meta8 = load_meta(sibling)
    return ModelChoice(sibling, meta8, config, fallback=fallback)


def log_fallback(choice: ModelChoice, exc: Exception) -> ModelChoice:
    """Log the one line for a backend that cannot run INT8; the float choice."""
    assert choice.fallback is not None
    log.warning("backend.precision = 'int8': %s; running %s (%s)", exc,
                choice.fallback.path.name, choice.fallback.config.precision)
    return choice.fallback


#: the flags of x86 CPUs whose 8-bit dot products accumulate in 32 bits (VNNI)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def x86_without_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True on an x86 CPU whose flags (Linux ``cpuinfo``) list no VNNI; False elsewhere
    and where the flags cannot be read (an ARM Jetson, another OS)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return False
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), None)
    return flags is not None and not any(f in flags for f in VNNI_FLAGS)


def cpu_int8_saturates(meta: ModelMeta) -> bool:
    """Whether ONNX Runtime's CPU kernels would overflow on this INT8 model here.

    Without VNNI, x86 kernels multiply unsigned by signed 8-bit values in pairs into
    saturating 16-bit sums; full-range weights (-127..127) overflow them (255 * 127 * 2 >
    32767) and the segmentation breaks (the bundled model's full-range file: crystal IoU
    0.28-0.37 instead of 0.94-0.96). Files quantized in the 7-bit range (metadata
    ``quantization.weights`` says so; ``crystal-train export --int8`` writes them) do not.
    """
    q = meta.quantization or {}
    if "7-bit" in str(q.get("weights", "")):
        return False
    return x86_without_vnni()
