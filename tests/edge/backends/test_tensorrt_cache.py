"""TensorRT engine cache: keys, lookup and invalidation (pure, no GPU), plus the real
backend where TensorRT and a GPU exist."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from edge.backends import BackendConfig
from edge.backends.engine_cache import EngineKey, engine_path, lookup_engine, store_engine
from edge.backends.tensorrt import TensorRTBackend
from edge.modelmeta import load_meta
from tests.fixtures.tiny_model import build_tiny_model

KEY = EngineKey(model_name="crystal-seg", onnx_sha256="a" * 64, tensorrt_version="10.3.0",
                gpu_name="Orin", precision="fp16", max_batch=4, input_hw=(384, 512))


def test_key_depends_on_every_field_but_the_name():
    base = KEY.digest()
    assert len(base) == 64 and KEY.digest() == base
    for change in ({"onnx_sha256": "b" * 64}, {"tensorrt_version": "10.3.1"},
                   {"gpu_name": "Orin Nano"}, {"precision": "fp32"}, {"max_batch": 1},
                   {"input_hw": (384, 528)}):
        assert KEY.model_copy(update=change).digest() != base, change
    assert KEY.model_copy(update={"model_name": "other"}).digest() == base
    assert engine_path("/c", KEY).name == f"crystal-seg-{base[:16]}.engine"


def test_lookup_reuses_matching_engine_and_explains_rebuilds(tmp_path):
    path, reason = lookup_engine(tmp_path, KEY)
    assert path is None and "no cached engine" in reason
    stored = store_engine(tmp_path, KEY, b"ENGINE-1")
    assert lookup_engine(tmp_path, KEY) == (stored, "cached")

    newer = KEY.model_copy(update={"onnx_sha256": "c" * 64, "tensorrt_version": "10.4.0"})
    path, reason = lookup_engine(tmp_path, newer)
    assert path is None
    assert reason == "onnx_sha256, tensorrt_version changed since the cached engine"

    # another TensorRT version: the old engine can never load again and is removed
    new_path = store_engine(tmp_path, newer, b"ENGINE-2")
    assert not stored.exists() and new_path.read_bytes() == b"ENGINE-2"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [new_path.name, new_path.name.replace(".engine", ".engine.json")])
    side = new_path.with_name(new_path.name.replace(".engine", ".engine.json"))
    assert json.loads(side.read_text())["tensorrt_version"] == "10.4.0"


def test_other_models_engines_are_kept(tmp_path):
    a = store_engine(tmp_path, KEY, b"A", keep=1)
    b = store_engine(tmp_path, KEY.model_copy(update={"model_name": "other",
                                                      "onnx_sha256": "d" * 64}), b"B", keep=1)
    c = store_engine(tmp_path, KEY.model_copy(update={"precision": "fp32"}), b"C", keep=2)
    assert a.exists() and b.exists() and c.exists()  # keep=2: a stays beside c
    store_engine(tmp_path, KEY.model_copy(update={"max_batch": 1}), b"D", keep=1)
    assert not a.exists() and not c.exists() and b.exists()  # b is another model


def test_damaged_or_mismatching_sidecar_forces_rebuild(tmp_path):
    path = store_engine(tmp_path, KEY, b"E")
    side = path.with_name(path.name.replace(".engine", ".engine.json"))
    side.write_text("{not json")
    p, reason = lookup_engine(tmp_path, KEY)
    assert p is None and "unreadable" in reason
    side.write_text(json.dumps(KEY.model_copy(update={"gpu_name": "x"}).model_dump(mode="json")))
    p, reason = lookup_engine(tmp_path, KEY)
    assert p is None and "differs in gpu_name" in reason


def _have_tensorrt_gpu() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT Python package not installed"
    if importlib.util.find_spec("cuda") is None:
        return "cuda-python not installed"
    try:
        from edge.backends.tensorrt import gpu_name, import_cudart
        gpu_name(import_cudart())
    except Exception as exc:
        return f"no usable CUDA GPU ({exc})"
    return None


@pytest.mark.gpu
def test_real_tensorrt_backend_builds_caches_and_matches_onnxruntime(tmp_path):
    why = _have_tensorrt_gpu()
    if why:
        pytest.skip(f"needs TensorRT + CUDA GPU: {why}")
    model = build_tiny_model(tmp_path / "m")
    cfg = BackendConfig(name="tensorrt", precision="fp32", max_batch=2,
                        engine_cache_dir=tmp_path / "engines")
    backend = TensorRTBackend(model, load_meta(model), cfg, input_hw=(64, 96))
    backend.load()
    assert backend.built and backend.engine_file.is_file()
    x = np.random.default_rng(0).uniform(0, 1, (3, 3, 64, 96)).astype(np.float32)
    out = backend.infer(x)
    backend.close()
    from edge.backends.onnxruntime import OnnxRuntimeBackend
    ref = OnnxRuntimeBackend(model, load_meta(model), cfg, input_hw=(64, 96), device="cpu")
    ref.load()
    np.testing.assert_allclose(out, ref.infer(x), atol=1e-3)
    again = TensorRTBackend(model, load_meta(model), cfg, input_hw=(64, 96))
    again.load()
    assert not again.built and again.engine_file == backend.engine_file
    again.close()
