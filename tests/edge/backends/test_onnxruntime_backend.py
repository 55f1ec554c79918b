"""ONNX Runtime backend and the registry, on the real tiny ONNX model."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edge.backends import BackendConfig, BackendUnavailable
from edge.backends.onnxruntime import OnnxRuntimeBackend, choose_providers
from edge.backends.registry import create_backend
from edge.errors import TransientError, UserError
from edge.modelmeta import load_meta
from tests.fixtures.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model"))


def test_cpu_backend_runs_batches_and_segments_by_intensity(tiny):
    backend = OnnxRuntimeBackend(tiny, load_meta(tiny), BackendConfig(threads=1),
                                 input_hw=(32, 48), device="cpu")
    backend.load()
    x = np.empty((3, 3, 32, 48), np.float32)
    x[0], x[1], x[2] = 0.02, 0.8, 0.3  # black, light background, crystal grey levels
    logits = backend.infer(x)
    assert logits.shape == (3, 3, 32, 48) and logits.dtype == np.float32
    assert [int(np.unique(logits[i].argmax(0))[0]) for i in range(3)] == [0, 1, 2]
    # batch of 3 == three single inferences
    single = np.concatenate([backend.infer(x[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(single, logits, rtol=1e-6)
    info = backend.info()
    assert info["providers"] == ["CPUExecutionProvider"] and info["threads"] == 1
    assert info["device"] == "cpu" and info["precision"] == "fp32"
    backend.close()
    with pytest.raises(RuntimeError, match="before load"):
        backend.infer(x)


def test_infer_rejects_wrong_layout(tiny):
    backend = OnnxRuntimeBackend(tiny, load_meta(tiny), BackendConfig(), input_hw=(16, 16),
                                 device="cpu")
    backend.load()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*\(16, 16, 3\)"):
        backend.infer(np.zeros((16, 16, 3), np.float32))


def test_auto_falls_back_to_cpu_and_logs_each_skip_once(tiny, caplog):
    caplog.set_level(logging.INFO, logger="edge.backends")
    backend, selection = create_backend(tiny, load_meta(tiny), BackendConfig(name="auto"),
                                        input_hw=(32, 32))
    assert backend.name == "onnxruntime"
    labels = [(s["backend"], s["result"]) for s in selection]
    assert labels[-1] == ("onnxruntime-cpu", "used")
    assert ("tensorrt", "skipped") in labels
    assert all(s["reason"] for s in selection)
    lines = [r.getMessage() for r in caplog.records if "inference backend auto" in r.getMessage()]
    assert len(lines) == 1 and "tensorrt skipped" in lines[0]


def test_named_tensorrt_without_tensorrt_exits_1_so_systemd_tries_again(tiny):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    with pytest.raises(TransientError, match=r"backend.name = 'tensorrt': cannot load: TensorRT"):
        create_backend(tiny, load_meta(tiny), BackendConfig(name="tensorrt"), input_hw=(32, 32))


def test_cuda_device_requested_without_provider_is_unavailable():
    with pytest.raises(BackendUnavailable, match="no CUDAExecutionProvider"):
        choose_providers("cuda", ["CPUExecutionProvider"], config=BackendConfig())
    assert choose_providers("auto", ["CPUExecutionProvider"], config=BackendConfig()) == [
        "CPUExecutionProvider"]
    assert choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"],
                            config=BackendConfig())[0] == "CUDAExecutionProvider"
    trt = choose_providers("tensorrt", ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                        "CPUExecutionProvider"],
                           config=BackendConfig(precision="fp16", workspace_mb=256))
    assert trt[0][0] == "TensorrtExecutionProvider"
    assert trt[0][1]["trt_fp16_enable"] is True
    assert trt[0][1]["trt_max_workspace_size"] == 256 << 20


def test_model_with_wrong_class_count_names_the_file(tmp_path):
    bad = build_tiny_model(tmp_path, name="two-class", out_channels=2)
    with pytest.raises(UserError, match=r"two-class.onnx: model outputs 2 classes but its "
                                        r"metadata lists 3"):
        create_backend(bad, load_meta(bad), BackendConfig(name="onnxruntime"), input_hw=(16, 16))


def test_file_that_is_not_onnx_is_a_user_error(tmp_path, tiny):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"this is not a protobuf at all" * 10)
    with pytest.raises(UserError, match=r"fake.onnx: not an ONNX model"):
        create_backend(fake, load_meta(tiny), BackendConfig(name="onnxruntime"),
                       input_hw=(16, 16))
    fake.write_bytes(b"\x08\x07" + b"a protobuf head, then nothing ONNX Runtime reads" * 10)
    with pytest.raises(UserError, match=r"fake.onnx: not a loadable ONNX model"):
        create_backend(fake, load_meta(tiny), BackendConfig(name="onnxruntime"),
                       input_hw=(16, 16))


def test_config_forbids_unknown_fields_and_resolves_cache_dir(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="extra"):
        BackendConfig(nmae="auto")
    monkeypatch.setenv("CRYSTAL_EDGE_STATE_DIR", str(tmp_path))
    assert BackendConfig().resolved_engine_cache_dir() == tmp_path / "engines"
    assert BackendConfig().resolved_engine_cache_dir(tmp_path / "s") == tmp_path / "s" / "engines"
    assert BackendConfig(engine_cache_dir=tmp_path / "e").resolved_engine_cache_dir() == \
        tmp_path / "e"


@pytest.mark.parametrize("keep_io_types", [True, False])
def test_fp16_weight_model_segments_like_fp32(tmp_path, tiny, keep_io_types):
    onnx = pytest.importorskip("onnx")
    float16 = pytest.importorskip("onnxconverter_common.float16")
    from edge.modelmeta import sha256_file, write_meta

    path = tmp_path / "half.onnx"
    onnx.save(float16.convert_float_to_float16(onnx.load(tiny), keep_io_types=keep_io_types),
              path)
    meta = load_meta(tiny).model_copy(update={"sha256": sha256_file(path), "precision": "fp16",
                                              "onnx_file": path.name})
    write_meta(meta, path)
    half = OnnxRuntimeBackend(path, load_meta(path), BackendConfig(), input_hw=(24, 24),
                              device="cpu")
    half.load()
    full = OnnxRuntimeBackend(tiny, load_meta(tiny), BackendConfig(), input_hw=(24, 24),
                              device="cpu")
    full.load()
    x = np.random.default_rng(2).uniform(0, 1, (2, 3, 24, 24)).astype(np.float32)
    y16, y32 = half.infer(x), full.infer(x)
    assert y16.dtype == np.float32 and half.info()["precision"] == "fp16"
    agree = (y16.argmax(1) == y32.argmax(1)).mean()
    assert agree > 0.99


@pytest.mark.gpu
def test_cuda_provider_matches_cpu(tiny):
    from edge.backends.onnxruntime import available_providers

    if "CUDAExecutionProvider" not in available_providers():
        pytest.skip("needs onnxruntime-gpu with CUDAExecutionProvider and a CUDA GPU")
    gpu = OnnxRuntimeBackend(tiny, load_meta(tiny), BackendConfig(), input_hw=(64, 64),
                             device="cuda")
    gpu.load()
    cpu = OnnxRuntimeBackend(tiny, load_meta(tiny), BackendConfig(), input_hw=(64, 64),
                             device="cpu")
    cpu.load()
    x = np.random.default_rng(4).uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(gpu.infer(x), cpu.infer(x), atol=1e-4)
    assert gpu.info()["device"] == "gpu"
