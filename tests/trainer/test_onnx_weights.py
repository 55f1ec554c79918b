"""Fine-tuning an exported model: its ONNX weights are read back exactly, BN recalibrated."""

from __future__ import annotations

import csv
import doctest
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import trainer.onnx_weights as ow
from edge.errors import UserError
from tests.trainer.h5data import frames_nchw, train_tiny_run
from trainer.cli import main as cli
from trainer.export import INPUT_NAME, export_checkpoint, load_checkpoint, ort_session
from trainer.model import build_model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("ow"), steps=3)


@pytest.fixture(scope="module")
def frames():
    return frames_nchw(5, 64, 96)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory, frames):
    d = tmp_path_factory.mktemp("owm")
    return {p: Path(export_checkpoint(run[1] / "best.pt", d / f"m{p}.onnx", fp16=p == 16,
                                      parity_inputs=frames).onnx_path) for p in (32, 16)}


def _train_mode_without_dropout(model):
    """Training mode (batch statistics) with dropout off, so outputs are comparable."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()


def _imported(path, frames):
    """An imported model and its evaluation-mode logits on ``frames``."""
    model = build_model("resnet18", weights=str(path))
    x = torch.from_numpy(frames)
    model.eval()
    with torch.no_grad():
        return model, x, model(x)


def _ort(path, x):
    return ort_session(path).run(None, {INPUT_NAME: x})[0]


def test_module_names_doctest():
    assert doctest.testmod(ow).failed == 0


def test_import_reproduces_the_checkpoint_and_the_file(run, exported, frames):
    model = build_model("resnet18", weights=str(exported[32])).eval()
    assert model.needs_bn_calibration
    ref, _ = load_checkpoint(run[1] / "best.pt", prior_correction=False)
    x = torch.from_numpy(frames)
    with torch.no_grad():
        got, want = model(x).numpy(), ref(x).numpy()
    # raw logits as trained (the file's prior correction is not imported) ...
    assert np.abs(got - want).max() < 1e-4
    # ... and with the file's logit adjustment added, the file's own output
    adj = json.loads(exported[32].with_suffix(".json").read_text())["output"]["logit_adjustment"]
    onnx_out = _ort(exported[32], frames)
    assert np.abs(got + np.reshape(adj, (1, -1, 1, 1)) - onnx_out).max() < 1e-4


def test_fp16_file_imports_within_rounding(exported, frames):
    model = build_model("resnet18", weights=str(exported[16])).eval()
    adj = json.loads(exported[16].with_suffix(".json").read_text())["output"]["logit_adjustment"]
    with torch.no_grad():
        got = model(torch.from_numpy(frames)).numpy() + np.reshape(adj, (1, -1, 1, 1))
    ref = _ort(exported[16], frames)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.995


def test_recalibration_keeps_the_function_and_matches_batch_statistics(exported, frames):
    model, x, before = _imported(exported[32], frames)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(float(b.running_mean.abs().max()) == 0 for b in bns)  # unfolded, identity
    assert ow.recalibrate_batchnorm(model, [x[:1], x[1:]]) == len(bns)
    assert not model.needs_bn_calibration
    with torch.no_grad():
        after = model(x)
    assert float((after - before).abs().max()) < 1e-3
    # in training mode the running statistics are now the batch's own: same logits
    _train_mode_without_dropout(model)
    with torch.no_grad():
        train_mode = model(x)
    assert float((train_mode - before).abs().max()) < 1e-2
    assert any(float(b.running_mean.abs().max()) > 0 for b in bns)


def test_uncalibrated_import_would_change_training_mode(exported, frames):
    """The reason for recalibration: identity batch norms in training mode are wrong."""
    model, x, before = _imported(exported[32], frames)
    _train_mode_without_dropout(model)
    with torch.no_grad():
        raw = model(x)
    assert float((raw - before).abs().max()) > 0.1


def test_mismatches_are_one_line_errors(exported, tmp_path):
    with pytest.raises(UserError, match=r"--backbone resnet18.*pass --backbone resnet18"):
        build_model("resnet34", weights=str(exported[32]))
    with pytest.raises(UserError, match=r"--aspp-rates 6,12,18"):
        build_model("resnet18", weights=str(exported[32]), aspp_rates=(12, 24, 36))
    with pytest.raises(UserError, match=r"classes 3, this run 4"):
        build_model("resnet18", n_classes=4, weights=str(exported[32]))
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(exported[32], lonely)
    with pytest.raises(UserError, match=r"lonely.onnx: no metadata file lonely.json"):
        build_model("resnet18", weights=str(lonely))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    shutil.copy(exported[32].with_suffix(".json"), tmp_path / "broken.json")
    with pytest.raises(UserError, match=r"broken.onnx: not a readable ONNX file"):
        build_model("resnet18", weights=str(broken))


def test_train_cli_fine_tunes_an_exported_model(run, exported, tmp_path, caplog):
    train, _ = run
    out = tmp_path / "ft"
    with caplog.at_level("INFO"):
        rc = cli(["train", "--data", str(train), "--out", str(out), "--backbone", "resnet18",
                  "--weights", str(exported[16]), "--epochs", "1", "--steps-per-epoch", "2",
                  "--batch-size", "2", "--image-size", "64", "--input-scale", "0.5",
                  "--workers", "0", "--no-progress", "--augment", "none"])
    assert rc == 0
    assert "batch norm statistics of" in caplog.text
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert rows and float(rows[-1]["train_loss"]) > 0
    # the fine-tuned run exports again like any other
    res = export_checkpoint(out / "best.pt", tmp_path / "again.onnx")
    assert res.parity["argmax_agreement"] >= 0.999


def test_cli_names_a_bad_weights_file(run, tmp_path, capsys):
    train, _ = run
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x00")
    rc = cli(["train", "--data", str(train), "--out", str(tmp_path / "x"), "--backbone",
              "resnet18", "--weights", str(bad), "--epochs", "1", "--steps-per-epoch", "1",
              "--batch-size", "2", "--image-size", "64", "--workers", "0", "--no-progress"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "m.onnx" in err and "Traceback" not in err


def test_an_import_that_does_not_reproduce_the_file_is_refused(exported, tmp_path):
    """The ONNX Runtime check is real: metadata that disagrees with the graph fails it."""
    shutil.copy(exported[32], tmp_path / "odd.onnx")
    meta = json.loads(exported[32].with_suffix(".json").read_text())
    meta["output"]["logit_adjustment"] = [0.0, 0.0, 50.0]  # not what the graph adds
    (tmp_path / "odd.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"odd.onnx: the imported network does not reproduce"):
        build_model("resnet18", weights=str(tmp_path / "odd.onnx"))


def test_a_model_without_the_contact_channel_grows_one(exported, frames):
    # fine-tuning the shipped 3-class model with --contact-weight: the class logits stay
    # those of the file, the new channel starts neutral (zero weights, bias -2)
    _, x, before = _imported(exported[32], frames)
    grown = build_model("resnet18", weights=str(exported[32]), n_aux=1)
    grown.eval()
    with torch.no_grad():
        out = grown(x)
    assert out.shape[1] == 4 and grown.needs_bn_calibration
    assert float((out[:, :3] - before).abs().max()) < 1e-5
    assert torch.allclose(out[:, 3], torch.full_like(out[:, 3], -2.0))
    # the other way round (a contact model into a run without it) stays an error
    with pytest.raises(UserError, match=r"auxiliary channels"):
        ow.check_architecture({"architecture": {"encoder": "resnet18", "aspp_rates": [6, 12, 18]},
                               "classes": ["a", "b", "c"],
                               "output": {"aux_channels": ["contact"]}},
                              "x.onnx", backbone="resnet18", aspp_rates=(6, 12, 18),
                              n_classes=3, n_aux=0)
