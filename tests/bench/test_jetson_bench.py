"""scripts/jetson_bench.sh end to end off a Jetson: a fake ``trtexec`` on PATH (prints
trtexec's summary lines) and the test suite's stand-in TensorRT
(tests/edge/backends/fake_tensorrt.py, installed by a sitecustomize.py) for the
appliance's own benchmark; the real script, the real bench/bench_backend.py, a real ONNX."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "jetson_bench.sh"

SITECUSTOMIZE = """
from tests.edge.backends import fake_tensorrt


class _Patch:  # fake_tensorrt.install wants a monkeypatch; sys.modules is set for good here
    @staticmethod
    def setitem(mapping, key, value):
        mapping[key] = value


fake_tensorrt.install(_Patch(), gpu="Stand-in Orin")
"""

TRTEXEC = """#!{python}
import os, sys
args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in sys.argv[1:])
with open(os.environ["FAKE_TRTEXEC_LOG"], "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_TRTEXEC_FAIL") and "int8" in args:
    print("[E] [TRT] ModelImporter.cpp:949: ERROR: failed to parse onnx file", file=sys.stderr)
    print("&&&& FAILED TensorRT.trtexec [TensorRT v100300]", file=sys.stderr)
    sys.exit(1)
open(args["saveEngine"], "wb").write(b"engine")
batch = int(args["shapes"].split(":")[1].split("x")[0])
qps = (400.0 if "int8" in args else 250.0) / batch
print("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec " + " ".join(sys.argv[1:]))
print("[12/01/2026-13:00:00] [I] === Performance summary ===")
print(f"[12/01/2026-13:00:00] [I] Throughput: {{qps:.4f}} qps")
# lines whose names end like the summary's (the parser must not take them)
print("[12/01/2026-13:00:00] [I] End-to-End Host Latency: min = 9.1 ms, max = 9.9 ms, "
      "mean = 9.5 ms, median = 9.4 ms, percentile(99%) = 9.8 ms")
print("[12/01/2026-13:00:00] [I] Total GPU Compute Time: 2.99 s")
print("[12/01/2026-13:00:00] [I] Latency: min = 3.1 ms, max = 4.9 ms, mean = 3.5 ms, "
      "median = 3.4 ms, percentile(90%) = 3.9 ms, percentile(95%) = 4.1 ms, "
      "percentile(99%) = 4.6 ms")
print("[12/01/2026-13:00:00] [I] GPU Compute Time: min = 2.9 ms, max = 4.5 ms, mean = 3.2 ms, "
      "median = 3.1 ms, percentile(90%) = 3.6 ms, percentile(95%) = 3.8 ms, "
      "percentile(99%) = 4.2 ms")
print("&&&& PASSED TensorRT.trtexec [TensorRT v100300] # trtexec")
"""


@pytest.fixture()
def standin(tmp_path) -> Path:
    d = tmp_path / "standin"
    d.mkdir()
    (d / "sitecustomize.py").write_text(SITECUSTOMIZE)
    t = d / "trtexec"
    t.write_text(TRTEXEC.format(python=sys.executable))
    t.chmod(0o755)
    return d


@pytest.fixture()
def models(tmp_path) -> Path:
    """The tiny model and a copy standing for its INT8 sibling (NAME.int8.onnx)."""
    model = build_tiny_model(tmp_path / "models")
    shutil.copy(model, model.with_name("tiny-seg.int8.onnx"))
    shutil.copy(model.with_suffix(".json"), model.with_name("tiny-seg.int8.json"))
    return model


def _run(args, env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "JETSON_BENCH_STANDIN"}}
    env.update(PY=sys.executable, FAKE_TRTEXEC_LOG=str(tmp_path / "trtexec.log"),
               CRYSTAL_EDGE_STATE_DIR=str(tmp_path / "state"), **env_extra)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240, check=False)


def test_end_to_end_with_stand_ins(standin, models, tmp_path):
    out = tmp_path / "out"
    p = _run(["--model", str(models), "--out", str(out), "--batch", "2", "--duration", "1",
              "--frame-size", "320x256", "--frames", "4"],
             {"JETSON_BENCH_STANDIN": str(standin)}, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((out / "all.json").read_text())
    assert json.loads(p.stdout) == doc
    assert doc["failed"] == {} and doc["host"]["standin"] is True
    runs = doc["trtexec"]["runs"]
    assert set(runs) == {"fp16_b1", "fp16_b2", "int8_b1", "int8_b2"}
    assert runs["fp16_b2"]["frames_per_s"] == 250.0 and runs["int8_b1"]["frames_per_s"] == 400.0
    assert runs["fp16_b1"]["latency"]["median_ms"] == 3.4
    assert runs["fp16_b1"]["gpu_compute"]["p99_ms"] == 4.2
    assert doc["trtexec"]["int8_speedup_vs_fp16"] == 1.6
    assert doc["trtexec"]["input"] == {"name": "input", "shape_hw": [256, 320]}
    # trtexec's options: FP16 for the float file, INT8 + FP16 (QDQ) for the INT8 file
    calls = (tmp_path / "trtexec.log").read_text().splitlines()
    assert any("tiny-seg.onnx" in c and "--fp16" in c and "--int8" not in c for c in calls)
    assert any("tiny-seg.int8.onnx" in c and "--int8 --fp16" in c for c in calls)
    assert all("--shapes=input:" in c and "x3x256x320" in c for c in calls)
    # the appliance's own benchmark, make bench's JSON, through the (stand-in) TensorRT
    for key in ("backend", "backend_int8"):
        bench = json.loads((out / f"{key}.json").read_text())
        assert bench == doc["benchmarks"][key] and bench["benchmark"] == "backend"
        assert bench["backend"]["name"] == "tensorrt" and bench["backend"]["batch2_fps"] > 0
    assert json.loads((out / "trtexec.json").read_text()) == doc["trtexec"]


def test_a_failed_step_is_not_hidden(standin, models, tmp_path):
    out = tmp_path / "out"
    p = _run(["--model", str(models), "--out", str(out), "--batch", "1", "--duration", "1",
              "--frame-size", "320x256", "--frames", "2"],
             {"JETSON_BENCH_STANDIN": str(standin), "FAKE_TRTEXEC_FAIL": "1"}, tmp_path)
    assert p.returncode == 1
    assert "trtexec_int8_b1 FAILED (exit status 1)" in p.stderr
    assert "failed to parse onnx file" in p.stderr
    doc = json.loads((out / "all.json").read_text())
    assert set(doc["failed"]) == {"trtexec_int8_b1"}
    assert "fp16_b1" in doc["trtexec"]["runs"] and "backend" in doc["benchmarks"]


@pytest.mark.skipif(Path("/etc/nv_tegra_release").exists(), reason="this is a Jetson")
def test_off_a_jetson_without_stand_ins_is_one_line(models, tmp_path):
    p = _run(["--model", str(models), "--out", str(tmp_path / "out")], {}, tmp_path)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("jetson_bench: not a Jetson")
    assert not (tmp_path / "out").exists()
