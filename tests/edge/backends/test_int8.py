"""``[backend] precision = "int8"``: the INT8 sibling runs on ONNX Runtime's CPU (its
activations re-expressed as unsigned, the same function) and on TensorRT (stand-in) with
the INT8 flag; where it cannot, the float model runs and one warning says why."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge.backends import BackendConfig
from edge.backends.qdq import as_uint8_activations
from edge.backends.registry import create_backend
from edge.modelmeta import load_meta, sha256_file, write_meta
from tests.edge.backends import fake_tensorrt
from tests.fixtures.tiny_model import build_tiny_model, synth_frame


def calibration_inputs(n: int = 4, hw: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    """Frames of the tiny model's world as network inputs (1, 3, H, W) in [0, 1]."""
    out = []
    for i in range(n):
        img = synth_frame(*hw, crystals=[(40 + 10 * i, 50, 14), (90, 30 + 5 * i, 9)], seed=i)
        out.append(img[None].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    return out


def quantize_tiny(directory: Path, inputs: list[np.ndarray] | None = None) -> tuple[Path, Path]:
    """The tiny model and its INT8 sibling ``tiny-seg.int8.onnx`` (+ metadata)."""
    from trainer.quantize import int8_path_for, quantize_int8

    model = build_tiny_model(directory)
    q8 = int8_path_for(model)
    info = quantize_int8(model, q8, calibration_inputs() if inputs is None else inputs)
    meta = load_meta(model)
    write_meta(meta.model_copy(update={"onnx_file": q8.name, "sha256": sha256_file(q8),
                                       "precision": "int8", "quantization": info}), q8)
    return model, q8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return quantize_tiny(tmp_path_factory.mktemp("int8"))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "int8" in r.getMessage()]


def test_unsigned_view_is_the_same_function(models):
    _, q8 = models
    data = q8.read_bytes()
    view, n = as_uint8_activations(data)
    assert n >= 2 and view != data
    x = np.concatenate(calibration_inputs(2))
    so = ort.SessionOptions()
    a = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    b = ort.InferenceSession(view, so, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    assert as_uint8_activations(view) == (view, 0)  # nothing signed left


def test_int8_selects_the_sibling_and_agrees_with_float(models, caplog):
    model, q8 = models
    cfg = BackendConfig(name="onnxruntime", onnxruntime_device="cpu", precision="int8")
    b, _ = create_backend(model, load_meta(model), cfg, input_hw=(96, 128))
    assert b.info()["precision"] == "int8" and b.model_path == q8
    f, _ = create_backend(model, load_meta(model), BackendConfig(
        name="onnxruntime", onnxruntime_device="cpu"), input_hw=(96, 128))
    x = np.concatenate(calibration_inputs())
    agree = (b.infer(x).argmax(1) == f.infer(x).argmax(1)).mean()
    assert agree > 0.98 and f.info()["precision"] == "fp32"
    assert not _warnings(caplog)


def test_missing_int8_file_falls_back_with_one_line(tmp_path, caplog):
    model = build_tiny_model(tmp_path)
    cfg = BackendConfig(name="onnxruntime", onnxruntime_device="cpu", precision="int8")
    with caplog.at_level(logging.WARNING):
        b, _ = create_backend(model, load_meta(model), cfg, input_hw=(32, 32))
    assert b.model_path == model and b.info()["precision"] == "fp32"
    (line,) = _warnings(caplog)
    assert "tiny-seg.int8.onnx not found" in line


def test_full_range_weights_on_a_cpu_without_vnni_run_the_float_model(tmp_path, monkeypatch,
                                                                      caplog):
    from edge.backends import precision

    model, q8 = quantize_tiny(tmp_path)
    assert "7-bit" in load_meta(q8).quantization["weights"]
    full = load_meta(q8).model_copy(update={"quantization": {"weights": "int8 per-channel"}})
    write_meta(full, q8)  # as an INT8 file quantized in the full range
    cfg = BackendConfig(name="onnxruntime", onnxruntime_device="cpu", precision="int8")
    monkeypatch.setattr(precision, "x86_without_vnni", lambda: False)
    b, _ = create_backend(model, load_meta(model), cfg, input_hw=(96, 128))
    assert b.model_path == q8 and not _warnings(caplog)  # VNNI: the INT8 file runs
    monkeypatch.setattr(precision, "x86_without_vnni", lambda: True)
    with caplog.at_level(logging.WARNING):
        b, _ = create_backend(model, load_meta(model), cfg, input_hw=(96, 128))
        direct, _ = create_backend(q8, load_meta(q8), cfg, input_hw=(96, 128))
    assert b.model_path == model and b.info()["precision"] == "fp32"
    assert direct.model_path == model  # the INT8 path given directly: its float file runs
    lines = _warnings(caplog)
    assert len(lines) == 2 and all("without VNNI" in ln for ln in lines)
    write_meta(load_meta(q8).model_copy(update={"quantization": {
        "weights": "int8 per-channel symmetric, 7-bit range (reduce_range)"}}), q8)
    b, _ = create_backend(model, load_meta(model), cfg, input_hw=(96, 128))
    assert b.model_path == q8  # 7-bit weights do not overflow: INT8 runs without VNNI


def test_vnni_is_read_from_the_cpu_flags(tmp_path, monkeypatch):
    from edge.backends.precision import x86_without_vnni

    info = tmp_path / "cpuinfo"
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert x86_without_vnni(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not x86_without_vnni(info)
    assert not x86_without_vnni(tmp_path / "missing")  # unreadable: no guess
    monkeypatch.setattr("platform.machine", lambda: "aarch64")  # a Jetson
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert not x86_without_vnni(info)


def _trt_with_int8(monkeypatch, *, fast: bool):
    trt, _ = fake_tensorrt.install(monkeypatch)
    flags = types.SimpleNamespace(FP16=trt.BuilderFlag.FP16, INT8="INT8")
    monkeypatch.setattr(trt, "BuilderFlag", flags)
    monkeypatch.setattr(trt.Builder, "platform_has_fast_int8", fast, raising=False)
    seen: list[set] = []
    make = trt.Builder.create_builder_config

    def create_builder_config(self):
        cfg = make(self)
        seen.append(cfg.flags)
        return cfg

    monkeypatch.setattr(trt.Builder, "create_builder_config", create_builder_config)
    return seen


def test_tensorrt_builds_the_qdq_file_with_int8(monkeypatch, tmp_path, models):
    model, q8 = models
    seen = _trt_with_int8(monkeypatch, fast=True)
    cfg = BackendConfig(name="tensorrt", precision="int8", engine_cache_dir=tmp_path / "e")
    b, _ = create_backend(model, load_meta(model), cfg, input_hw=(96, 128))
    assert b.model_path == q8 and b.info()["precision"] == "int8"
    assert {"INT8"} < seen[-1]  # INT8 and FP16
    b.close()


def test_tensorrt_without_fast_int8_runs_the_float_model(monkeypatch, tmp_path, models, caplog):
    model, _ = models
    seen = _trt_with_int8(monkeypatch, fast=False)
    cfg = BackendConfig(name="tensorrt", precision="int8", engine_cache_dir=tmp_path / "e")
    with caplog.at_level(logging.WARNING):
        b, _ = create_backend(model, load_meta(model), cfg, input_hw=(96, 128))
    assert b.model_path == model and b.info()["precision"] == "fp16"
    assert "INT8" not in seen[-1]
    (line,) = _warnings(caplog)
    assert "no fast INT8" in line and "running tiny-seg.onnx (fp16)" in line
    b.close()


def test_tensorrt_refuses_int8_on_a_float_file(monkeypatch, tmp_path, models):
    from edge.backends.precision import Int8Unsupported
    from edge.backends.tensorrt import TensorRTBackend

    model, _ = models
    _trt_with_int8(monkeypatch, fast=True)
    cfg = BackendConfig(name="tensorrt", precision="int8", engine_cache_dir=tmp_path / "e")
    b = TensorRTBackend(model, load_meta(model), cfg, input_hw=(32, 32))
    with pytest.raises(Int8Unsupported, match="fp32 model, not an INT8 QDQ file"):
        b.load()
    b.close()


def test_analyzer_reports_int8_to_the_payload(models):
    from edge.vision.analyzer import FrameAnalyzer

    model, q8 = models
    cfg = BackendConfig(name="onnxruntime", onnxruntime_device="cpu", precision="int8")
    with FrameAnalyzer(model, backend_config=cfg, frame_hw=(96, 128)) as fa:
        fa.analyze_many([("f0", synth_frame(96, 128, crystals=[(60, 50, 15)]))])
        info = fa.model_info
    assert info["precision"] == "int8" and info["backend_info"]["precision"] == "int8"
    # the payload names the file that ran, so the DCS can tell which model measured
    assert info["file"] == q8.name and info["sha256"] == load_meta(q8).sha256


def test_reference_kernels_run_full_range_weights_on_any_cpu(tmp_path, monkeypatch, caplog):
    """``int8_kernels = "reference"``: the INT8 file itself runs where its integer kernels
    would saturate, with the numbers of its quantization (float arithmetic between the
    quantize and dequantize steps), not the float model."""
    from edge.backends import precision

    model, q8 = quantize_tiny(tmp_path)
    write_meta(load_meta(q8).model_copy(update={"quantization": {"weights": "int8 per-channel"}}),
               q8)  # as an INT8 file quantized in the full range
    monkeypatch.setattr(precision, "x86_without_vnni", lambda: True)
    ref = BackendConfig(name="onnxruntime", onnxruntime_device="cpu", precision="int8",
                        int8_kernels="reference")
    with caplog.at_level(logging.WARNING):
        b, _ = create_backend(model, load_meta(model), ref, input_hw=(96, 128))
        direct, _ = create_backend(q8, load_meta(q8), ref, input_hw=(96, 128))
    assert not _warnings(caplog)
    assert b.model_path == direct.model_path == q8
    assert b.info()["precision"] == "int8" and b.info()["int8_kernels"] == "reference"
    x = np.concatenate(calibration_inputs())
    # the QDQ graph evaluated node by node: what ONNX Runtime gives with no optimisation
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(str(q8), so, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(b.infer(x), plain.run(None, {"input": x})[0], atol=1e-4)
    f, _ = create_backend(model, load_meta(model), BackendConfig(
        name="onnxruntime", onnxruntime_device="cpu"), input_hw=(96, 128))
    logits = b.infer(x)
    assert not np.array_equal(logits, f.infer(x))  # quantized, not the float model
    assert (logits.argmax(1) == f.infer(x).argmax(1)).mean() > 0.98


def test_evaluation_measures_an_int8_file_with_the_reference_kernels(tmp_path, monkeypatch):
    from edge.backends import precision
    from trainer.evalmodel import LoadedModel

    _, q8 = quantize_tiny(tmp_path)
    write_meta(load_meta(q8).model_copy(update={"quantization": {"weights": "int8 per-channel"}}),
               q8)
    monkeypatch.setattr(precision, "x86_without_vnni", lambda: True)
    loaded = LoadedModel(q8)
    assert loaded.backend_config.int8_kernels == "reference"
    b, _ = create_backend(q8, loaded.meta, loaded.backend_config, input_hw=(96, 128))
    assert b.model_path == q8 and b.info()["precision"] == "int8"
