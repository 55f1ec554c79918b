"""Engine rebuilds: frames of alternating sizes must not rebuild TensorRT engines forever.

TensorRT and the GPU are mocked (``tests/edge/backends/fake_tensorrt``: hardware this
machine lacks); everything else is the backend's real code path, a real tiny ONNX model
and a real cache directory. A build on an Orin Nano takes 15-20 min, so each build the
stand-in counts stands for that much of a stopped appliance.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edge.backends import BackendConfig
from edge.backends.engine_cache import timing_cache_path
from edge.backends.tensorrt import TensorRTBackend
from edge.modelmeta import load_meta
from tests.edge.backends import fake_tensorrt

A, B, C = (32, 32), (64, 32), (32, 64)


def _load(model: Path, cache: Path, hw: tuple[int, int], keep: int = 3) -> TensorRTBackend:
    cfg = BackendConfig(name="tensorrt", engine_cache_dir=cache, engine_cache_keep=keep)
    backend = TensorRTBackend(model, load_meta(model), cfg, input_hw=hw)
    backend.load()
    out = backend.infer(np.zeros((1, 3, *hw), np.float32))
    assert out.shape == (1, 3, *hw)
    backend.close()
    return backend


def _engines(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("*.engine"))


def test_alternating_sizes_build_each_engine_once(monkeypatch, tmp_path, tiny_model):
    trt, _ = fake_tensorrt.install(monkeypatch)
    cache = tmp_path / "engines"
    built = [_load(tiny_model, cache, hw).built for hw in (A, B, A, B, A, B)]
    assert trt.builds == 2, "alternating between two sizes rebuilt an engine"
    assert built == [True, True, False, False, False, False]
    assert len(_engines(cache)) == 2


def test_lru_eviction_beyond_keep(monkeypatch, tmp_path, tiny_model):
    trt, _ = fake_tensorrt.install(monkeypatch)
    cache = tmp_path / "engines"
    a = _load(tiny_model, cache, A, keep=2).engine_file
    b = _load(tiny_model, cache, B, keep=2).engine_file
    assert _load(tiny_model, cache, A, keep=2).built is False  # A is now the newer use
    c = _load(tiny_model, cache, C, keep=2).engine_file
    # least recently used (B) is gone, not the oldest built (A)
    assert _engines(cache) == sorted([a.name, c.name]) and not b.exists()
    assert trt.builds == 3
    assert _load(tiny_model, cache, A, keep=2).built is False
    # B was evicted: it builds again and evicts C, now the least recently used
    assert _load(tiny_model, cache, B, keep=2).built is True
    assert _engines(cache) == sorted([a.name, b.name]) and trt.builds == 4


def test_sequence_a_b_c_a_rebuilds_only_the_evicted(monkeypatch, tmp_path, tiny_model):
    trt, _ = fake_tensorrt.install(monkeypatch)
    cache = tmp_path / "engines"
    built = [_load(tiny_model, cache, hw, keep=2).built for hw in (A, B, C, A)]
    assert built == [True, True, True, True] and trt.builds == 4
    # after A, B, C, A with keep 2: C and A remain, B (least recently used) went
    assert len(_engines(cache)) == 2
    assert [_load(tiny_model, cache, hw, keep=2).built for hw in (C, A)] == [False, False]
    assert trt.builds == 4


def test_timing_cache_written_then_passed_to_the_next_build(monkeypatch, tmp_path,
                                                           tiny_model, caplog):
    trt, _ = fake_tensorrt.install(monkeypatch)
    cache = tmp_path / "engines"
    timing = timing_cache_path(cache, gpu="Fake Orin", tensorrt_version="10.3.0")
    first = _load(tiny_model, cache, A)
    assert first.timing_cache_file == timing and timing.is_file()
    assert trt.timing_loads == [b""]  # nothing cached yet: an empty timing cache
    saved = timing.read_bytes()
    assert len(json.loads(saved)["entries"]) == 1
    _load(tiny_model, cache, B)
    assert trt.timing_loads[-1] == saved  # the second build starts from the first's timings
    assert len(json.loads(timing.read_bytes())["entries"]) == 2

    # a damaged timing cache: one warning naming the file, an empty cache, the build goes on
    timing.write_bytes(b"\x00garbage")
    with caplog.at_level(logging.WARNING, logger="edge.backends.engine_cache"):
        assert _load(tiny_model, cache, C).built
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(timing) in warnings[0] and "\n" not in warnings[0]
    assert len(json.loads(timing.read_bytes())["entries"]) == 1
    assert trt.builds == 3


def test_timing_cache_is_per_tensorrt_version(monkeypatch, tmp_path, tiny_model):
    fake_tensorrt.install(monkeypatch)
    cache = tmp_path / "engines"
    _load(tiny_model, cache, A)
    trt, _ = fake_tensorrt.install(monkeypatch, version="10.3.1")
    _load(tiny_model, cache, A)
    assert trt.timing_loads == [b""]  # the 10.3.0 cache is not offered to 10.3.1
    assert sorted(p.name for p in cache.glob("timing-*.cache")) == [
        "timing-Fake_Orin-trt10.3.0.cache", "timing-Fake_Orin-trt10.3.1.cache"]
    # the 10.3.0 engine cannot load under 10.3.1 again: removed when the new one is written
    assert len(_engines(cache)) == 1


@pytest.mark.parametrize("keep", [0, 21])
def test_engine_cache_keep_is_validated(keep):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="engine_cache_keep"):
        BackendConfig(engine_cache_keep=keep)
