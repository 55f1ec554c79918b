"""ONNX Runtime backend: CPU execution provider, or CUDA / TensorRT providers when the
installed ``onnxruntime`` (``onnxruntime-gpu`` on x86, NVIDIA's wheel on a Jetson) has them.

CPU sessions use ``threads`` intra-op threads, one inter-op thread and sequential
execution (the graph is a single chain; parallel execution only adds overhead). An INT8
QDQ file runs as it is (ONNX Runtime fuses each ``DQ -> Conv -> Q`` into an integer
convolution); on the CPU its activations are first re-expressed as unsigned
(:mod:`edge.backends.qdq`, the same function), the form x86 VNNI kernels run fastest.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.backends.base import BackendUnavailable, check_logits, check_nchw
from edge.backends.config import BackendConfig
from edge.backends.precision import Int8Unsupported, cpu_int8_saturates
from edge.backends.qdq import as_uint8_activations
from edge.errors import TransientError, UserError
from edge.modelmeta import ModelMeta, check_model_file

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"


def available_providers() -> list[str]:
    """Execution providers of the installed onnxruntime ([] when it is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def choose_providers(device: str, available: list[str], *, config: BackendConfig,
                     engine_cache: Path | None = None) -> list[Any]:
    """Provider list for ``device`` ('auto' | 'cpu' | 'cuda' | 'tensorrt').

    Raises :class:`BackendUnavailable` when the requested provider is not in
    ``available``. 'auto' picks CUDA when available, else the CPU.
    """
    if CPU not in available:
        raise BackendUnavailable(f"onnxruntime has no {CPU} (available: {available})")
    if device == "auto":
        device = "cuda" if CUDA in available else "cpu"
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise BackendUnavailable(
                f"onnxruntime has no {CUDA} (available: {', '.join(available)}); install "
                "onnxruntime-gpu or use device 'cpu'")
        return [CUDA, CPU]
    if device == "tensorrt":
        if TENSORRT_EP not in available:
            raise BackendUnavailable(
                f"onnxruntime has no {TENSORRT_EP} (available: {', '.join(available)})")
        opts: dict[str, Any] = {
            "trt_fp16_enable": config.precision == "fp16",
            "trt_max_workspace_size": config.workspace_mb << 20,
        }
        if engine_cache is not None:
            opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(engine_cache))
        return [(TENSORRT_EP, opts), CUDA, CPU] if CUDA in available else [(TENSORRT_EP, opts), CPU]
    raise ValueError(f"unknown onnxruntime device {device!r}")


class OnnxRuntimeBackend:
    """:class:`~edge.backends.base.Backend` on ONNX Runtime."""

    name = "onnxruntime"
    dynamic_shapes = True

    def __init__(self, model_path: str | Path, meta: ModelMeta, config: BackendConfig, *,
                 input_hw: tuple[int, int], device: str | None = None,
                 state_dir: str | Path | None = None) -> None:
        self.model_path = Path(model_path)
        self.meta = meta
        self.config = config
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.device = device or config.onnxruntime_device
        self.state_dir = state_dir
        self.precision = meta.precision
        self._session: Any = None
        self._input_name = "input"
        self._input_dtype: Any = np.float32
        self._providers: list[str] = []
        self.load_ms = 0.0

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable(
                "onnxruntime is not installed (pip install 'crystal-psd[cpu]')") from None
        t0 = time.perf_counter()
        if self.device == "auto" and CUDA in ort.get_available_providers():
            try:
                self._open(ort, "cuda")
            except BackendUnavailable as exc:
                log.warning("onnxruntime: CUDA provider unusable (%s); using the CPU", exc)
                self._open(ort, "cpu")
        else:
            self._open(ort, "cpu" if self.device == "auto" else self.device)
        h, w = self.input_hw
        for _ in range(max(1, self.config.warmup_runs)):
            out = self.infer(np.zeros((1, 3, h, w), np.float32))
        check_logits(out, self.meta, self.model_path, input_hw=(h, w))
        self.load_ms = (time.perf_counter() - t0) * 1e3
        log.debug("onnxruntime session ready on %s in %.0f ms", self._providers, self.load_ms)

    def _open(self, ort: Any, device: str) -> None:
        """Create the session on ``device`` ('cpu' | 'cuda' | 'tensorrt')."""
        cache = None
        if device == "tensorrt":
            cache = self.config.resolved_engine_cache_dir(self.state_dir) / "ort-trt"
            cache.mkdir(parents=True, exist_ok=True)
        providers = choose_providers(device, list(ort.get_available_providers()),
                                     config=self.config, engine_cache=cache)
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(self.config.threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        check_model_file(self.model_path)
        model: str | bytes = str(self.model_path)
        if self.precision == "int8" and providers == [CPU] and \
                self.config.int8_kernels == "reference":
            # the QDQ pairs stay separate nodes: integer values, float arithmetic
            so.add_session_config_entry("session.disable_quant_qdq", "1")
        elif self.precision == "int8" and providers == [CPU]:
            if cpu_int8_saturates(self.meta):
                raise Int8Unsupported(
                    f"{self.model_path.name} has full-range INT8 weights, which overflow "
                    "ONNX Runtime's kernels on this x86 CPU without VNNI (re-quantize with "
                    "crystal-train export --int8 for the 7-bit weight range)")
            # signed activations run 2-3x slower than unsigned on x86 (edge.backends.qdq)
            model, _ = as_uint8_activations(self.model_path.read_bytes())
        try:
            session = ort.InferenceSession(model, so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if device in ("cuda", "tensorrt") and "provider" in msg.lower():
                raise BackendUnavailable(f"onnxruntime {device}: {msg}") from None
            if any(w in msg.lower() for w in ("alloc", "memory")):
                raise TransientError(f"{self.model_path}: cannot load now ({msg})") from None
            raise UserError(f"{self.model_path}: not a loadable ONNX model ({msg})") from None
        active = list(session.get_providers())
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if wanted not in active:
            raise BackendUnavailable(
                f"onnxruntime could not start {wanted} (active: {', '.join(active)}); "
                "CUDA/cuDNN libraries missing?")
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise UserError(f"{self.model_path}: expected one input tensor, found {len(inputs)}")
        self._session = session
        self._input_name = inputs[0].name
        # exports keep float32 I/O; a float16-input model gets its batch cast
        self._input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        self._providers = active

    def infer(self, nchw: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise RuntimeError("OnnxRuntimeBackend.infer() before load()")
        x = check_nchw(nchw)
        if self._input_dtype is not np.float32:
            x = x.astype(self._input_dtype)
        (logits,) = self._session.run(None, {self._input_name: x})[:1]
        return np.asarray(logits, dtype=np.float32)

    def close(self) -> None:
        self._session = None

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "precision": self.precision,
            "device": "gpu" if any(p != CPU for p in self._providers) else "cpu",
            "providers": list(self._providers),
            "threads": int(self.config.threads),
            "input_hw": list(self.input_hw),
            "load_ms": round(self.load_ms, 1),
            **({"int8_kernels": self.config.int8_kernels} if self.precision == "int8" else {}),
        }
