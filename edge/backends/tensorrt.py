"""TensorRT backend (TensorRT 10 Python API; target JetPack 6.x: TensorRT 10.3, CUDA 12.6,
Python 3.10).

The engine is built from the ONNX once (``OnnxParser``, ``BuilderFlag.FP16`` for
precision fp16, ``INT8`` + ``FP16`` for precision int8 from the QDQ file's scales
(explicit quantization; a GPU without fast INT8 raises
:class:`~edge.backends.precision.Int8Unsupported` and the float model runs), one
optimisation profile covering batch 1..max_batch at the configured input size, workspace
limited with ``set_memory_pool_limit``) and serialised into the engine cache
(``[backend] engine_cache_dir``, default ``<state dir>/engines``). The cache key is
sha256 over (ONNX sha256, TensorRT version, GPU name, precision, max batch, input size),
see :mod:`edge.backends.engine_cache`; it keeps a few engines per model (LRU) and a
TensorRT timing cache per GPU and TensorRT version.

CUDA memory and streams use NVIDIA's ``cuda-python`` runtime bindings
(``cuda.bindings.runtime``, older ``cuda.cudart``): pinned host buffers, device buffers,
one stream, ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``. The
runtime API uses the device's primary context, so the backend may run in any thread.
Imports are guarded: on a machine without TensorRT the module imports and ``load()``
raises :class:`~edge.backends.base.BackendUnavailable`.
"""

from __future__ import annotations

import ctypes
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.backends.base import BackendUnavailable, check_logits, check_nchw
from edge.backends.config import BackendConfig
from edge.backends.engine_cache import (
    EngineKey,
    attach_timing_cache,
    lookup_engine,
    save_timing_cache,
    store_engine,
    timing_cache_path,
    touch_engine,
)
from edge.backends.precision import Int8Unsupported
from edge.errors import UserError
from edge.modelmeta import ModelMeta, check_model_file, sha256_file

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- guarded imports
def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(
            f"TensorRT Python package not importable ({exc}); on a Jetson it comes with "
            "JetPack 6 (python3-libnvinfer)") from None
    if int(str(trt.__version__).split(".")[0]) < 10:
        raise BackendUnavailable(f"TensorRT {trt.__version__} found; this backend needs >= 10")
    return trt


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise BackendUnavailable(
                f"cuda-python not importable ({exc}); pip install 'cuda-python>=12.6,<13'"
            ) from None
    return cudart


def _check(result: Any) -> Any:
    """Unpack a cuda-python call's ``(err, *values)``; raise on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:  # cudaError_t.cudaSuccess == 0
        raise RuntimeError(f"CUDA runtime error {err}")
    return values[0] if len(values) == 1 else values


def gpu_name(cudart: Any, device: int = 0) -> str:
    count = _check(cudart.cudaGetDeviceCount())
    if count < 1:
        raise BackendUnavailable("no CUDA device")
    props = _check(cudart.cudaGetDeviceProperties(device))
    name = props.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return str(name).strip()


def build_serialized_engine(trt: Any, onnx_path: str | Path, *, precision: str,
                            workspace_mb: int, max_batch: int, input_hw: tuple[int, int],
                            timing_cache: Path | None = None) -> bytes:
    """Parse the ONNX and build a serialised engine (TensorRT 10 API), reusing and
    extending the timing cache file ``timing_cache`` when given."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"{onnx_path}: TensorRT cannot parse the ONNX: {errors or 'unknown'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        # explicit quantization: the QDQ file carries the scales, no calibrator
        flag = getattr(trt.BuilderFlag, "INT8", None)
        if flag is None or getattr(builder, "platform_has_fast_int8", True) is False:
            raise Int8Unsupported(f"TensorRT {trt.__version__} on this GPU has no fast INT8")
        config.set_flag(flag)
    h, w = input_hw
    inp = network.get_input(0)
    static = tuple(int(d) for d in inp.shape)  # -1 = dynamic axis
    if len(static) != 4:
        raise UserError(f"{onnx_path}: input {inp.name} has shape {static}, expected NCHW")
    for axis, size in ((2, h), (3, w)):
        if static[axis] not in (-1, size):
            raise UserError(f"{onnx_path}: input size is fixed at {static[2]}x{static[3]} in "
                            f"the ONNX, but {h}x{w} is needed; export with dynamic H/W or set "
                            f"[backend] input_height/input_width to it")
    lo, hi = (1, max_batch) if static[0] == -1 else (static[0], static[0])
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, (lo, 3, h, w), (hi, 3, h, w), (hi, 3, h, w))
    config.add_optimization_profile(profile)
    attach_timing_cache(config, timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT engine build failed for {onnx_path} (see TensorRT log)")
    save_timing_cache(config, timing_cache)
    return bytes(serialized)


class _Buffer:
    """A pinned host array and its device twin, sized for max_batch."""

    def __init__(self, cudart: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.cudart = cudart
        self.dtype = np.dtype(dtype)
        self.size = int(np.prod(shape))
        self.nbytes = self.size * self.dtype.itemsize
        self.host_ptr = _check(cudart.cudaMallocHost(self.nbytes))
        raw = np.ctypeslib.as_array(ctypes.cast(int(self.host_ptr), ctypes.POINTER(ctypes.c_uint8)),
                                    (self.nbytes,))
        self.host = raw.view(self.dtype)  # bytes viewed as the tensor type (fp16 has no ctype)
        self.device = _check(cudart.cudaMalloc(self.nbytes))

    def free(self) -> None:
        if self.device is not None:
            self.cudart.cudaFree(self.device)
            self.cudart.cudaFreeHost(self.host_ptr)
            self.device = None


class TensorRTBackend:
    """:class:`~edge.backends.base.Backend` on a cached TensorRT engine."""

    name = "tensorrt"
    dynamic_shapes = False

    def __init__(self, model_path: str | Path, meta: ModelMeta, config: BackendConfig, *,
                 input_hw: tuple[int, int], state_dir: str | Path | None = None) -> None:
        self.model_path = Path(model_path)
        self.meta = meta
        self.config = config
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.precision = config.precision
        self.max_batch = int(config.max_batch)
        self.cache_dir = config.resolved_engine_cache_dir(state_dir)
        self.engine_file: Path | None = None
        self.timing_cache_file: Path | None = None
        self.built = False
        self.load_ms = 0.0
        self._gpu = ""
        self._trt_version = ""
        self._cudart: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._in: _Buffer | None = None
        self._out: _Buffer | None = None
        self._names = ("input", "logits")

    def engine_key(self) -> EngineKey:
        return EngineKey(model_name=self.model_path.stem, onnx_sha256=sha256_file(self.model_path),
                         tensorrt_version=self._trt_version, gpu_name=self._gpu,
                         precision=self.precision, max_batch=self.max_batch,
                         input_hw=self.input_hw)

    def prepare_engine(self) -> Path:
        """Build the engine unless a matching one is cached; return its path."""
        trt = import_tensorrt()
        self._cudart = import_cudart()
        self._gpu = gpu_name(self._cudart)
        self._trt_version = str(trt.__version__)
        check_model_file(self.model_path)
        if self.precision == "int8" and self.meta.precision != "int8":
            # INT8 needs the QDQ file's scales (edge.backends.precision.choose_model)
            raise Int8Unsupported(f"{self.model_path.name} is a {self.meta.precision} model, "
                                  "not an INT8 QDQ file")
        key = self.engine_key()
        path, reason = lookup_engine(self.cache_dir, key)
        if path is not None:
            touch_engine(path)
        else:
            log.info("building TensorRT %s engine for %s at %dx%d, batch <= %d (%s); this "
                     "takes minutes once", self.precision, self.model_path.name,
                     *self.input_hw, self.max_batch, reason)
            t0 = time.perf_counter()
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self.timing_cache_file = timing_cache_path(
                self.cache_dir, gpu=self._gpu, tensorrt_version=self._trt_version)
            data = build_serialized_engine(
                trt, self.model_path, precision=self.precision,
                workspace_mb=self.config.workspace_mb, max_batch=self.max_batch,
                input_hw=self.input_hw, timing_cache=self.timing_cache_file)
            path = store_engine(self.cache_dir, key, data, keep=self.config.engine_cache_keep)
            self.built = True
            log.info("TensorRT engine written to %s in %.0f s", path, time.perf_counter() - t0)
        self.engine_file = path
        return path

    def load(self) -> None:
        t0 = time.perf_counter()
        path = self.prepare_engine()
        trt = import_tensorrt()
        cudart = self._cudart
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:  # damaged file or built by another TensorRT: drop, rebuild once
            path.unlink(missing_ok=True)
            path = self.prepare_engine()
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise RuntimeError(f"{path}: TensorRT cannot deserialise the engine it built")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{self.model_path}: expected 1 input and 1 output, found "
                            f"{len(inputs)} and {len(outputs)}")
        self._names = (inputs[0], outputs[0])
        # the profile's largest batch (a model exported with a fixed batch of 1 has 1)
        self.max_batch = int(engine.get_tensor_profile_shape(inputs[0], 0)[2][0])
        context = engine.create_execution_context()
        h, w = self.input_hw
        context.set_input_shape(inputs[0], (self.max_batch, 3, h, w))
        out_shape = tuple(context.get_tensor_shape(outputs[0]))
        self._in = _Buffer(cudart, (self.max_batch, 3, h, w),
                           trt.nptype(engine.get_tensor_dtype(inputs[0])))
        self._out = _Buffer(cudart, out_shape, trt.nptype(engine.get_tensor_dtype(outputs[0])))
        context.set_tensor_address(inputs[0], int(self._in.device))
        context.set_tensor_address(outputs[0], int(self._out.device))
        self._stream = _check(cudart.cudaStreamCreate())
        self._engine, self._context = engine, context
        for _ in range(max(1, self.config.warmup_runs)):
            out = self.infer(np.zeros((1, 3, h, w), np.float32))
        check_logits(out, self.meta, self.model_path, input_hw=(h, w))
        self.load_ms = (time.perf_counter() - t0) * 1e3

    def infer(self, nchw: np.ndarray) -> np.ndarray:
        if self._context is None or self._in is None or self._out is None:
            raise RuntimeError("TensorRTBackend.infer() before load()")
        x = check_nchw(nchw)
        if tuple(x.shape[2:]) != self.input_hw:
            raise ValueError(f"TensorRT engine is built for input {self.input_hw}, got "
                             f"batch of shape {x.shape}")
        if x.shape[0] > self.max_batch:
            return np.concatenate([self.infer(x[i:i + self.max_batch])
                                   for i in range(0, x.shape[0], self.max_batch)])
        cudart, ctx = self._cudart, self._context
        in_name, out_name = self._names
        ctx.set_input_shape(in_name, tuple(x.shape))
        out_shape = tuple(ctx.get_tensor_shape(out_name))
        n_in, n_out = x.size, int(np.prod(out_shape))
        self._in.host[:n_in] = x.ravel().astype(self._in.dtype, copy=False)
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(self._in.device, self._in.host_ptr,
                                      n_in * self._in.dtype.itemsize, h2d, self._stream))
        if not ctx.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        _check(cudart.cudaMemcpyAsync(self._out.host_ptr, self._out.device,
                                      n_out * self._out.dtype.itemsize, d2h, self._stream))
        _check(cudart.cudaStreamSynchronize(self._stream))
        return self._out.host[:n_out].reshape(out_shape).astype(np.float32)

    def close(self) -> None:
        for buf in (self._in, self._out):
            if buf is not None:
                buf.free()
        if self._stream is not None and self._cudart is not None:
            self._cudart.cudaStreamDestroy(self._stream)
        self._in = self._out = self._stream = None
        self._context = self._engine = None

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "precision": self.precision,
            "device": "gpu",
            "gpu": self._gpu,
            "tensorrt_version": self._trt_version,
            "engine": str(self.engine_file) if self.engine_file else None,
            "engine_built_now": self.built,
            "timing_cache": str(self.timing_cache_file) if self.timing_cache_file else None,
            "max_batch": self.max_batch,
            "input_hw": list(self.input_hw),
            "load_ms": round(self.load_ms, 1),
        }
