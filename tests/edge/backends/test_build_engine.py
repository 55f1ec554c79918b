"""`crystal-edge build-engine`: input size resolution and the clear error without TensorRT."""

from __future__ import annotations

import argparse
import importlib.util

import pytest

from edge.cli import main
from edge.commands.build_engine import add_arguments, input_hw, resolve_settings
from edge.modelmeta import load_meta
from tests.fixtures.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("m"), px_size_um=2.9, size_multiple=32)


def _args(*argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args([str(a) for a in argv])


def test_input_size_from_frame_size_and_scale(model):
    meta = load_meta(model)
    s = resolve_settings(_args("--model", model, "--frame-size", "1024x768",
                               "--inference-scale", "0.5", "--max-batch", "2"))
    assert s["backend"].name == "tensorrt" and s["backend"].max_batch == 2
    assert input_hw(s, meta) == (384, 512)
    s = resolve_settings(_args("--model", model, "--frame-size", "1000x700",
                               "--inference-scale", "auto"))
    # auto: frames at the model's own px size (no optics given) -> scale 1, padded to 32
    assert input_hw(s, meta) == (704, 1024)


def test_input_size_from_config_file(model, tmp_path):
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f"""
[source]
type = "synthetic"
width = 1024
height = 768

[model]
path = "{model.as_posix()}"
inference_scale = "auto"

[optics]
px_size_um = 1.45

[state]
dir = "{(tmp_path / 'state').as_posix()}"

[backend]
precision = "fp32"
""")
    s = resolve_settings(_args("--config", cfg))
    assert s["model"] == model and s["backend"].precision == "fp32"
    assert s["frame_hw"] == (768, 1024)
    assert input_hw(s, load_meta(model)) == (384, 512)  # 1.45 -> 2.9 um: scale 0.5
    assert s["backend"].resolved_engine_cache_dir(s["state_dir"]) == tmp_path / "state" / "engines"


@pytest.mark.parametrize(("argv", "message"), [
    (["--frame-size", "big"], "--frame-size: expected WIDTHxHEIGHT"),
    ([], "--frame-size: needed"),
    (["--frame-size", "640x480", "--inference-scale", "x"], "--inference-scale: expected"),
])
def test_bad_arguments_are_one_line_errors(model, argv, message, capsys):
    rc = main(["build-engine", "--model", str(model), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="TensorRT installed: the real build is the gpu test's job")
def test_without_tensorrt_says_so_clearly(model, tmp_path, capsys):
    rc = main(["build-engine", "--model", str(model), "--frame-size", "640x480",
               "--engine-cache-dir", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("crystal-edge: error: build-engine: TensorRT is not usable on this "
                          "machine: TensorRT Python package not importable")
    assert not (tmp_path / "e").exists()


def test_input_size_is_the_analyzers(tmp_path):
    """The engine is built for the input the analyzer feeds it: without a pixel size the
    training frames' (1.45 um/px, halved), and frames of 0.5 um/px halved too, not
    shrunk to a sixth."""
    import json

    from edge.modelmeta import meta_path_for
    from edge.vision.analyzer import FrameAnalyzer

    onnx = build_tiny_model(tmp_path, name="half", px_size_um=2.9, size_multiple=32)
    mpath = meta_path_for(onnx)
    mpath.write_text(json.dumps(dict(json.loads(mpath.read_text()), frame_px_size_um=1.45)))
    meta = load_meta(onnx)
    s = resolve_settings(_args("--model", onnx, "--frame-size", "1024x768"))
    assert input_hw(s, meta) == (384, 512)
    for px in (None, 0.5):
        with FrameAnalyzer(onnx, px_size_um=px, inference_scale="auto") as fa:
            assert fa.input_hw_for((768, 1024)) == input_hw(dict(s, px_size_um=px), meta)
