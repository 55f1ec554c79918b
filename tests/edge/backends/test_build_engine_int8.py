"""`crystal-edge build-engine --precision int8` builds the engine of the file the service
runs: the model's INT8 sibling (TensorRT stand-in, as for the other TensorRT paths)."""

from __future__ import annotations

from edge.cli import main
from tests.edge.backends.test_int8 import _trt_with_int8, quantize_tiny


def test_build_engine_int8_uses_the_sibling(monkeypatch, tmp_path, capsys):
    model, q8 = quantize_tiny(tmp_path / "m")
    seen = _trt_with_int8(monkeypatch, fast=True)
    rc = main(["build-engine", "--model", str(model), "--precision", "int8",
               "--frame-size", "128x96", "--inference-scale", "1",
               "--engine-cache-dir", str(tmp_path / "engines")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert q8.name in out and "int8" in out
    assert "INT8" in seen[-1]
