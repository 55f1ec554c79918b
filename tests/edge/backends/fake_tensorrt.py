"""Stand-ins for TensorRT and cuda-python (hardware this machine lacks), for tests only.

They implement exactly the calls :mod:`edge.backends.tensorrt` makes, with the same
shapes and return conventions (cuda-python returns ``(err, value)`` tuples; device
pointers are integers), so the backend's real code path runs: engine build and cache,
pinned/device buffers, ``set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3``, batching. "Device" memory is host memory here, copies are
``ctypes.memmove``, and the "engine" runs the ONNX with ONNX Runtime on the CPU.
"""

from __future__ import annotations

import ctypes
import json
import sys
import types
from enum import Enum, IntEnum

import numpy as np


class _Err(IntEnum):
    cudaSuccess = 0


class _Kind(Enum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class FakeCudart(types.ModuleType):
    cudaError_t = _Err
    cudaMemcpyKind = _Kind

    def __init__(self, gpu: str = "Fake Orin") -> None:
        super().__init__("cuda.bindings.runtime")
        self.gpu = gpu
        self._mem: dict[int, np.ndarray] = {}
        self.copies = 0

    def _alloc(self, n: int) -> tuple[_Err, int]:
        buf = np.zeros(max(1, n), np.uint8)
        ptr = buf.ctypes.data
        self._mem[ptr] = buf
        return _Err.cudaSuccess, ptr

    def cudaGetDeviceCount(self):
        return _Err.cudaSuccess, 1

    def cudaGetDeviceProperties(self, device):
        return _Err.cudaSuccess, types.SimpleNamespace(name=self.gpu.encode() + b"\0\0")

    def cudaMallocHost(self, n):
        return self._alloc(n)

    def cudaMalloc(self, n):
        return self._alloc(n)

    def cudaFree(self, ptr):
        self._mem.pop(int(ptr), None)
        return (_Err.cudaSuccess,)

    cudaFreeHost = cudaFree

    def cudaStreamCreate(self):
        return _Err.cudaSuccess, 7

    def cudaStreamDestroy(self, stream):
        return (_Err.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):
        return (_Err.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        assert isinstance(kind, _Kind) and stream == 7
        ctypes.memmove(int(dst), int(src), int(n))
        self.copies += 1
        return (_Err.cudaSuccess,)


class _DataType(Enum):
    FLOAT = "float32"


def _make_enums():
    """Logger and the enums the backend reads off the module."""

    class Logger:
        WARNING = 2

        def __init__(self, level=2):
            self.level = level

    class MemoryPoolType(Enum):
        WORKSPACE = 0

    class BuilderFlag(Enum):
        FP16 = 0

    class TensorIOMode(Enum):
        INPUT = 0
        OUTPUT = 1

    return Logger, MemoryPoolType, BuilderFlag, TensorIOMode


def _make_parser():
    """The network the parser fills, and the ONNX parser."""

    class _Input:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class _Network:
        def __init__(self):
            self.onnx = None
            self.inputs = []

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            import onnxruntime as ort

            try:
                sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            except Exception:
                self.num_errors = 1
                return False
            i = sess.get_inputs()[0]
            shape = tuple(d if isinstance(d, int) else -1 for d in i.shape)
            self.network.inputs.append(_Input(i.name, shape))
            self.network.onnx = path
            return True

        def get_error(self, i):
            return "fake parser: not an ONNX model"

    return _Network, OnnxParser


def _make_config(mod):
    """Builder config, its timing cache and optimization profile."""

    class _TimingCache:
        """Entries are the profiles timed so far; the blob carries the version, as
        TensorRT's does, and a cache of another version is refused."""

        def __init__(self, entries):
            self.entries = entries

        def serialize(self):
            return json.dumps({"trt": mod.__version__, "entries": self.entries}).encode()

    class _Config:
        def __init__(self):
            self.flags, self.pool, self.profiles = set(), {}, []
            self.timing = None

        def create_timing_cache(self, data):
            data = bytes(data)
            mod.timing_loads.append(data)
            if not data:
                return _TimingCache([])
            blob = json.loads(data)  # a damaged blob raises, like TensorRT
            return _TimingCache(list(blob["entries"]) if blob["trt"] == mod.__version__
                                else None)

        def set_timing_cache(self, cache, ignore_mismatch):
            assert ignore_mismatch is False
            if cache.entries is None:
                return False
            self.timing = cache
            return True

        def get_timing_cache(self):
            return self.timing

        def set_memory_pool_limit(self, kind, n):
            self.pool[kind] = n

        def set_flag(self, flag):
            self.flags.add(flag)

        def add_optimization_profile(self, p):
            self.profiles.append(p)

    class _Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    return _Config, _Profile


def _make_builder(mod, _Network, _Config, _Profile, BuilderFlag, MemoryPoolType):
    """The builder: its serialized "engine" is a JSON spec of what was built."""

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            assert flags == 0
            return _Network()

        def create_builder_config(self):
            return _Config()

        def create_optimization_profile(self):
            return _Profile()

        def build_serialized_network(self, network, config):
            mod.builds += 1
            (prof,) = config.profiles
            if config.timing is not None:
                config.timing.entries.append(prof.shapes[network.inputs[0].name])
            return json.dumps({
                "onnx": network.onnx, "input": network.inputs[0].name,
                "profile": prof.shapes[network.inputs[0].name],
                "fp16": BuilderFlag.FP16 in config.flags,
                "workspace": config.pool[MemoryPoolType.WORKSPACE]}).encode()

    return Builder


def _make_runtime(TensorIOMode):
    """Runtime, engine and execution context: the engine runs the ONNX on ONNX Runtime."""

    class _Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addr = engine, {}, {}

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.spec["profile"]
            assert all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)), shape
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            n, _, h, w = self.shapes[self.engine.input]
            if name == self.engine.input:
                return self.shapes[name]
            return (n, self.engine.n_out, h, w)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle):
            assert isinstance(stream_handle, int)
            shape = self.shapes[self.engine.input]
            n = int(np.prod(shape))
            x = np.ctypeslib.as_array(
                ctypes.cast(self.addr[self.engine.input], ctypes.POINTER(ctypes.c_float)),
                (n,)).reshape(shape).copy()
            y = self.engine.session.run(None, {self.engine.input: x})[0]
            out = np.ctypeslib.as_array(
                ctypes.cast(self.addr["logits"], ctypes.POINTER(ctypes.c_float)), (y.size,))
            out[:] = y.ravel()
            return True

    class _Engine:
        def __init__(self, spec):
            import onnxruntime as ort

            self.spec = spec
            self.input = spec["input"]
            self.session = ort.InferenceSession(spec["onnx"],
                                                providers=["CPUExecutionProvider"])
            self.n_out = self.session.get_outputs()[0].shape[1]
            self.num_io_tensors = 2

        def get_tensor_name(self, i):
            return [self.input, "logits"][i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == self.input else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return _DataType.FLOAT

        def get_tensor_profile_shape(self, name, index):
            return self.spec["profile"]

        def create_execution_context(self):
            return _Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            try:
                return _Engine(json.loads(bytes(data)))
            except ValueError:
                return None

    return Runtime


class FakeTensorRT(types.ModuleType):
    """The ``tensorrt`` module surface used by the backend."""

    __version__ = "10.3.0"

    def __init__(self, cudart: FakeCudart) -> None:
        super().__init__("tensorrt")
        self.builds = 0
        #: the bytes each build's config got from create_timing_cache (b"" = empty cache)
        self.timing_loads: list[bytes] = []
        self.cudart = cudart
        # Each instance gets its own classes (tests monkeypatch e.g. ``trt.Builder``).
        self.Logger, self.MemoryPoolType, self.BuilderFlag, self.TensorIOMode = _make_enums()
        network, self.OnnxParser = _make_parser()
        config, profile = _make_config(self)
        self.Builder = _make_builder(self, network, config, profile, self.BuilderFlag,
                                     self.MemoryPoolType)
        self.Runtime = _make_runtime(self.TensorIOMode)

    @staticmethod
    def nptype(dtype):
        return np.dtype(dtype.value)


def install(monkeypatch, gpu: str = "Fake Orin", version: str = "10.3.0"):
    """Put the fakes into ``sys.modules``; return ``(trt, cudart)``."""
    cudart = FakeCudart(gpu)
    trt = FakeTensorRT(cudart)
    trt.__version__ = version
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    cuda.bindings = bindings
    for name, mod in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings),
                      ("cuda.bindings.runtime", cudart)):
        monkeypatch.setitem(sys.modules, name, mod)
    return trt, cudart
