"""The TensorRT backend's real code path against stand-ins for TensorRT and CUDA
(``fake_tensorrt``: this machine has neither): build, cache, reuse, rebuild, buffers,
batching, auto selection. The real thing is the ``gpu`` test in test_tensorrt_cache.py."""

from __future__ import annotations

import numpy as np
import pytest

from edge.backends import BackendConfig
from edge.backends.onnxruntime import OnnxRuntimeBackend
from edge.backends.registry import create_backend
from edge.backends.tensorrt import TensorRTBackend
from edge.errors import UserError
from edge.modelmeta import load_meta
from edge.vision.analyzer import FrameAnalyzer
from tests.edge.backends import fake_tensorrt
from tests.fixtures.tiny_model import build_tiny_model, synth_frame


@pytest.fixture()
def model(tmp_path):
    return build_tiny_model(tmp_path / "m")


def _cfg(tmp_path, **kw):
    return BackendConfig(name="tensorrt", engine_cache_dir=tmp_path / "engines", **kw)


def test_builds_once_then_reuses_and_matches_onnxruntime(monkeypatch, tmp_path, model):
    trt, cudart = fake_tensorrt.install(monkeypatch)
    cfg = _cfg(tmp_path, max_batch=2, workspace_mb=64)
    b = TensorRTBackend(model, load_meta(model), cfg, input_hw=(32, 48))
    b.load()
    assert trt.builds == 1 and b.built and b.engine_file.parent == tmp_path / "engines"
    info = b.info()
    assert info["gpu"] == "Fake Orin" and info["tensorrt_version"] == "10.3.0"
    assert info["precision"] == "fp16" and info["max_batch"] == 2
    x = np.random.default_rng(0).uniform(0, 1, (5, 3, 32, 48)).astype(np.float32)
    copies = cudart.copies
    y = b.infer(x)  # 5 frames through a max-batch-2 engine: 3 launches
    assert cudart.copies - copies == 6  # host->device and device->host per launch
    ref = OnnxRuntimeBackend(model, load_meta(model), cfg, input_hw=(32, 48), device="cpu")
    ref.load()
    np.testing.assert_allclose(y, ref.infer(x), rtol=1e-6)
    with pytest.raises(ValueError, match=r"built for input \(32, 48\)"):
        b.infer(np.zeros((1, 3, 64, 48), np.float32))
    b.close()
    b.close()

    again = TensorRTBackend(model, load_meta(model), cfg, input_hw=(32, 48))
    again.load()
    assert trt.builds == 1 and not again.built and again.engine_file == b.engine_file
    again.close()


def test_any_key_change_rebuilds_and_drops_unloadable_engines(monkeypatch, tmp_path, model):
    fake_tensorrt.install(monkeypatch)
    meta = load_meta(model)
    first = TensorRTBackend(model, meta, _cfg(tmp_path), input_hw=(32, 32))
    first.load()
    first.close()
    fake_tensorrt.install(monkeypatch, version="10.3.1")
    upgraded = TensorRTBackend(model, meta, _cfg(tmp_path), input_hw=(32, 32))
    upgraded.load()
    assert upgraded.built and not first.engine_file.exists()
    upgraded.close()
    bigger = TensorRTBackend(model, meta, _cfg(tmp_path), input_hw=(64, 32))
    bigger.load()
    assert bigger.built and bigger.engine_file != upgraded.engine_file
    # another input size on the same TensorRT: both stay cached (LRU, keep 3)
    assert sorted((tmp_path / "engines").glob("*.engine")) == sorted(
        [upgraded.engine_file, bigger.engine_file])
    bigger.close()


def test_damaged_cached_engine_is_rebuilt(monkeypatch, tmp_path, model):
    trt, _ = fake_tensorrt.install(monkeypatch)
    b = TensorRTBackend(model, load_meta(model), _cfg(tmp_path), input_hw=(32, 32))
    b.load()
    b.close()
    b.engine_file.write_bytes(b"garbage")
    c = TensorRTBackend(model, load_meta(model), _cfg(tmp_path), input_hw=(32, 32))
    c.load()
    assert trt.builds == 2 and c.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3, 32, 32)
    c.close()


def test_auto_prefers_tensorrt_and_frame_analyzer_reloads_on_new_size(monkeypatch, tmp_path,
                                                                      model):
    trt, _ = fake_tensorrt.install(monkeypatch)
    backend, selection = create_backend(model, load_meta(model),
                                        _cfg(tmp_path).model_copy(update={"name": "auto"}),
                                        input_hw=(32, 32))
    assert backend.name == "tensorrt" and selection == [
        {"backend": "tensorrt", "result": "used", "reason": "first that loaded"}]
    backend.close()

    fa = FrameAnalyzer(model, backend_config=_cfg(tmp_path), frame_hw=(120, 160))
    assert fa.backend.input_hw == (128, 160)
    crystals = [(80, 60, 12)]
    r = fa.analyze("a", synth_frame(120, 160, crystals=crystals))
    assert r.ok and r.crystals.n_kept == 1
    r2 = fa.analyze("b", synth_frame(100, 160, crystals=crystals))  # other size: new engine
    assert r2.ok and fa.backend.input_hw == (112, 160) and trt.builds == 3
    assert fa.model_info["backend"] == "tensorrt"
    fa.close()


def test_wrong_class_count_and_unparsable_model(monkeypatch, tmp_path, model):
    fake_tensorrt.install(monkeypatch)
    wrong = build_tiny_model(tmp_path / "w", name="wrong", out_channels=2)
    with pytest.raises(UserError, match=r"wrong\.onnx: model outputs 2 classes"):
        TensorRTBackend(wrong, load_meta(wrong), _cfg(tmp_path), input_hw=(16, 16)).load()
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not onnx")
    with pytest.raises(UserError, match=r"fake\.onnx: not an ONNX model"):
        TensorRTBackend(fake, load_meta(model), _cfg(tmp_path), input_hw=(16, 16)).load()
    fake.write_bytes(b"\x08\x07 a protobuf head, then nothing TensorRT parses")
    with pytest.raises(UserError, match=r"fake\.onnx: TensorRT cannot parse the ONNX"):
        TensorRTBackend(fake, load_meta(model), _cfg(tmp_path), input_hw=(16, 16)).load()
