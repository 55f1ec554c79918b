"""INT8 export of the tiny model end to end: calibration on generated frames, the QDQ file
in ONNX Runtime, the agreement with the float model, the release gate, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge.errors import UserError
from edge.modelmeta import load_meta
from tests.edge.backends.test_int8 import quantize_tiny
from tests.fixtures.tiny_model import build_tiny_model
from trainer.cli import main as train_cli
from trainer.int8gate import check_release, gate_problems, measure_agreement
from trainer.quantize import float32_model, generate_calibration_set, image_files
from trainer.synth import SynthConfig, generate_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("q8data")
    calib = generate_calibration_set(root / "calib", n_per_domain=1, width=320, height=240)
    generate_dataset(root / "agree", 3, SynthConfig(width=384, height=288,
                                                    fraction_um=(90.0, 125.0)), seed=5)
    return calib, root / "agree"


def test_calibration_set_has_every_domain(data):
    calib, _ = data
    assert len(image_files(calib)) == 5
    assert {p.name for p in calib.iterdir()} >= {"sieve_90_125", "sieve_125_180", "dim",
                                                  "bright", "lognormal"}


def test_fp16_file_is_widened_back_to_fp32(tmp_path):
    from onnxconverter_common import float16

    model = build_tiny_model(tmp_path)
    m16 = float16.convert_float_to_float16(onnx.load(str(model)), keep_io_types=True)
    onnx.save(m16, str(tmp_path / "m16.onnx"))
    m32 = float32_model(tmp_path / "m16.onnx")
    types = {i.data_type for i in m32.graph.initializer}
    assert types == {onnx.TensorProto.FLOAT}
    w16 = {i.name: numpy_helper.to_array(i) for i in m16.graph.initializer}
    for init in m32.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(init), w16[init.name])


def test_gate_accepts_the_calibrated_model_and_refuses_tampered_scales(tmp_path, data):
    _, agree = data
    model, q8 = quantize_tiny(tmp_path)
    good = measure_agreement(model, q8, {"agree": agree})
    assert good["pixel_agreement"] > 0.98, good
    assert gate_problems(good) == []
    check_release(good, q8)

    m = onnx.load(str(q8))  # the activation scale after the grey-value conv, x 6
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and "grey" in n.input[0])
    init = next(i for i in m.graph.initializer if i.name == q.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 6, init.name))
    bad_path = tmp_path / "bad" / "tiny-seg.int8.onnx"
    bad_path.parent.mkdir()
    onnx.save(m, str(bad_path))
    meta = load_meta(q8)
    from edge.modelmeta import sha256_file, write_meta
    write_meta(meta.model_copy(update={"sha256": sha256_file(bad_path)}), bad_path)
    bad = measure_agreement(model, bad_path, {"agree": agree})
    assert gate_problems(bad)
    with pytest.raises(UserError, match=r"INT8 release gate refused: agree: ") as exc:
        check_release(bad, bad_path)
    assert "\n" not in str(exc.value)


def test_cli_export_int8_writes_the_sibling_with_its_agreement(tmp_path, data, capsys):
    _, agree = data  # a threshold model: calibrated on frames like those it is measured on
    model = build_tiny_model(tmp_path / "m")
    from edge.modelmeta import write_meta

    fmeta = load_meta(model)  # a float model with its own per-domain table
    write_meta(fmeta.model_copy(update={"metrics": dict(fmeta.metrics, domains={"rows": {}})}),
               model)
    assert train_cli(["export", "--checkpoint", str(model), "--out", str(model), "--int8",
                      "--calibration-data", str(agree), "--agreement-data", str(agree)]) == 0
    out = json.loads(capsys.readouterr().out)
    q8 = Path(out["onnx"])
    assert q8.name == "tiny-seg.int8.onnx" and out["crystal_iou_delta"] >= -0.005
    meta = load_meta(q8)
    assert meta.precision == "int8"
    assert "domains" not in meta.metrics  # the float model's rows are not the INT8 file's
    qi = meta.quantization
    assert qi["calibration"] == {"data": str(agree), "n_frames": 3, "domains": ["agree"]}
    assert qi["agreement"]["sets"]["agree"]["x50_3_shift"] is not None
    assert qi["activation_type"] == "int8" and qi["format"] == "QDQ"
    assert "7-bit" in qi["weights"]  # runs on x86 CPUs without VNNI too (no overflow)


def test_full_range_export_is_measured_as_int8_on_a_cpu_without_vnni(tmp_path, data, capsys,
                                                                     monkeypatch):
    """``--weight-range full`` on a CPU whose kernels would saturate: the gate measures the
    INT8 file itself with the reference numerics (not the float model the edge falls back
    to, which would agree with itself)."""
    from edge.backends import precision

    monkeypatch.setattr(precision, "x86_without_vnni", lambda: True)
    _, agree = data
    model = build_tiny_model(tmp_path / "m")
    assert train_cli(["export", "--checkpoint", str(model), "--out", str(model), "--int8",
                      "--calibration-data", str(agree), "--agreement-data", str(agree),
                      "--weight-range", "full"]) == 0
    out = json.loads(capsys.readouterr().out)
    qi = load_meta(out["onnx"]).quantization
    assert qi["weights"] == "int8 per-channel symmetric, full range"
    assert precision.cpu_int8_saturates(load_meta(out["onnx"]))  # the edge would not run it
    a = qi["agreement"]["sets"]["agree"]
    # measured on the quantized file: close to the float model, but not identical to it
    assert 0.98 < a["pixel_agreement"] < 1.0, a
    with pytest.raises(SystemExit) as exc:  # argparse's usage line names the choices
        train_cli(["export", "--checkpoint", str(model), "--out", str(model), "--int8",
                   "--calibration-data", str(agree), "--weight-range", "6bit"])
    assert exc.value.code == 2 and "--weight-range" in capsys.readouterr().err


def test_cli_refuses_a_model_calibrated_on_dark_blank_frames(tmp_path, data, capsys):
    import cv2

    _, agree = data
    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(2):
        cv2.imwrite(str(blank / f"b{i}.png"), np.full((240, 320, 3), 10, np.uint8))
    model = build_tiny_model(tmp_path / "m")
    assert train_cli(["export", "--checkpoint", str(model), "--out", str(model), "--int8",
                      "--calibration-data", str(blank), "--agreement-data", str(agree)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "INT8 release gate refused" in err[0]
    assert not (tmp_path / "m" / "tiny-seg.int8.onnx").exists()


def test_int8_needs_calibration_data(tmp_path, capsys):
    model = build_tiny_model(tmp_path)
    assert train_cli(["export", "--checkpoint", str(model), "--out", str(model),
                      "--int8"]) == 2
    assert "--calibration-data DIR is required" in capsys.readouterr().err


ROOT = Path(__file__).resolve().parents[2]
SHIPPED_INT8 = ROOT / "models" / "crystal-seg.int8.onnx"


@pytest.mark.skipif(not SHIPPED_INT8.is_file(), reason="no models/crystal-seg.int8.onnx")
def test_shipped_int8_model_passed_the_gate_and_the_card_quotes_it():
    from trainer.int8gate import card_rows

    meta = load_meta(SHIPPED_INT8)
    q = meta.quantization
    assert meta.precision == "int8" and q["source_sha256"] == load_meta(
        ROOT / "models" / "crystal-seg.onnx").sha256
    assert gate_problems(q["agreement"]) == []
    assert "7-bit" in q["weights"]  # the card: it runs as INT8 on every x86 CPU
    assert set(q["agreement"]["sets"]) == {"val_a", "val_b", "test_a", "test_b"}
    card = (ROOT / "models" / "README.md").read_text()
    for row in card_rows(q):
        assert row in card, f"models/README.md does not quote: {row}"


def _dequantized_inputs(path: Path, node_name: str) -> list[str]:
    """Inputs of ``node_name`` in a QDQ file that come out of a DequantizeLinear."""
    g = onnx.load(str(path)).graph
    dq = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    node = next(n for n in g.node if n.name == node_name)
    return [i for i in node.input if i in dq]


def test_float_nodes_stay_float_and_are_recorded(tmp_path, data, capsys):
    """``--float-nodes PREFIX`` keeps every node starting with it out of the quantization
    (its weight and input not dequantized INT8 values); recorded in the metadata; a
    prefix that names no node is one line, not a traceback."""
    calib, agree = data
    model = build_tiny_model(tmp_path / "m")
    plain = tmp_path / "plain" / "m.onnx"
    assert train_cli(["export", "--checkpoint", str(model), "--out", str(plain), "--int8",
                      "--calibration-data", str(calib), "--agreement-data", str(agree)]) == 0
    assert _dequantized_inputs(plain.with_suffix(".int8.onnx"), "grey")  # quantized
    kept = tmp_path / "kept" / "m.onnx"
    assert train_cli(["export", "--checkpoint", str(model), "--out", str(kept), "--int8",
                      "--calibration-data", str(calib), "--agreement-data", str(agree),
                      "--float-nodes", "gr"]) == 0
    q8 = kept.with_suffix(".int8.onnx")
    assert _dequantized_inputs(q8, "grey") == []
    qi = load_meta(q8).quantization
    assert qi["float_nodes"] == ["gr"] and "grey" in qi["excluded_nodes"]
    capsys.readouterr()
    assert train_cli(["export", "--checkpoint", str(model), "--out", str(kept), "--int8",
                      "--calibration-data", str(calib), "--agreement-data", str(agree),
                      "--float-nodes", "/net/nothing"]) != 0
    err = capsys.readouterr().err
    assert "--float-nodes /net/nothing: no node" in err and "Traceback" not in err
