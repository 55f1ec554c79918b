"""Training: loss goes down, class weights reach the loss, checkpoints resume exactly."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from edge.errors import UserError
from tests.trainer.h5data import make_dataset
from trainer.augment import PRESETS
from trainer.cli import main as cli
from trainer.engine import make_criterion, train_one_epoch
from trainer.model import build_model
from trainer.torchdata import EvalFrames, TrainCrops


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return (make_dataset(root / "train", 5, h=64, w=96, seed=1),
            make_dataset(root / "val", 2, seed=2))


def test_training_steps_lower_the_loss(tiny):
    from trainer.data import LabelledDataset

    torch.manual_seed(0)
    ds = TrainCrops(LabelledDataset(tiny[0]), crop_size=64, samples_per_epoch=4,
                    augment=PRESETS["none"], seed=0)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    model = build_model("resnet18", n_classes=3, weights="none")
    crit = make_criterion(np.array([1.0, 0.5, 3.0]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    hist = train_one_epoch(model, crit, opt, [batch] * 10, torch.device("cpu"), epoch=0,
                           n_classes=3, on_step=lambda r: losses.append(r["loss"]))
    assert hist["steps"] == 10 and len(losses) == 10
    assert losses[-1] < 0.6 * losses[0], losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_class_weights_are_used_by_the_loss():
    # two pixels: true classes 0 and 2, logits chosen by hand
    logits = torch.tensor([[[[2.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, 3, 1, 2)
    target = torch.tensor([[[0, 2]]])
    nll0 = -np.log(np.exp(2) / (np.exp(2) + np.exp(1) + 1))
    nll1 = -np.log(np.e / (1 + 1 + np.e))
    w = np.array([0.5, 1.0, 3.0])
    plain = float(make_criterion(None)(logits, target))
    weighted = float(make_criterion(w)(logits, target))
    assert plain == pytest.approx((nll0 + nll1) / 2, rel=1e-6)
    assert weighted == pytest.approx((0.5 * nll0 + 3.0 * nll1) / 3.5, rel=1e-6)
    assert abs(weighted - plain) > 0.05
    # padding (ignore index 255) does not count
    padded = torch.tensor([[[0, 255]]])
    assert float(make_criterion(w)(logits, padded)) == pytest.approx(nll0, rel=1e-6)


def _train_args(tiny, out, *extra):
    return ["train", "--data", str(tiny[0]), "--val", str(tiny[1]), "--out", str(out),
            "--backbone", "resnet18", "--weights", "none", "--batch-size", "2",
            "--image-size", "64", "--steps-per-epoch", "2", "--workers", "0", "--no-progress",
            "--seed", "3", *extra]


def test_cli_train_writes_run_and_resumes(tiny, tmp_path):
    from trainer.data import LabelledDataset
    from trainer.weights import class_pixel_stats

    run = tmp_path / "run"
    assert cli(_train_args(tiny, run, "--epochs", "1")) == 0
    for name in ("config.json", "class_weights.json", "metrics.csv", "steps.csv",
                 "training.png", "checkpoint.pt", "best.pt"):
        assert (run / name).is_file(), name
    cw = json.loads((run / "class_weights.json").read_text())["weights"]
    np.testing.assert_allclose(cw, class_pixel_stats(LabelledDataset(tiny[0])).weights)
    c1 = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (c1["epoch"], c1["step"]) == (0, 2)
    np.testing.assert_allclose(c1["class_weights"], cw)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["px_size_um"] == pytest.approx(1.45) and cfg["classes"][2] == "crystal"

    # resume to 3 epochs: continues at epoch 1, optimizer and scheduler states carry on
    assert cli(_train_args(tiny, run, "--epochs", "3", "--resume", str(run / "checkpoint.pt"))) == 0
    c3 = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (c3["epoch"], c3["step"]) == (2, 6)
    adam_steps = {int(s["step"]) for s in c3["optimizer"]["state"].values()}
    assert adam_steps == {6}
    assert c3["scheduler"]["last_epoch"] == 6
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert all(0.0 <= float(r["val_accuracy"]) <= 1.0 for r in rows)
    assert len(list(csv.DictReader(open(run / "steps.csv")))) == 6


def test_eval_frames_pad_to_multiple_of_16(tiny):
    from trainer.data import LabelledDataset

    x, y = EvalFrames(LabelledDataset(tiny[0]), input_scale=0.5)[0]
    assert tuple(x.shape) == (3, 32, 48)  # 96x64 frames at half scale: 48x32, already multiples
    x, y = EvalFrames(LabelledDataset(tiny[1]), input_scale=0.75)[0]
    assert tuple(x.shape) == (3, 48, 48) and int((y == 255).sum()) == 48 * 48 - 48 * 48
    x, y = EvalFrames(LabelledDataset(tiny[1]), input_scale=0.6)[0]  # 38x38 -> 48x48
    assert tuple(x.shape) == (3, 48, 48) and int((y == 255).sum()) == 48 * 48 - 38 * 38


def test_user_errors_are_one_line(tiny, tmp_path, capsys):
    assert cli(_train_args(tiny, tmp_path / "r", "--image-size", "60")) == 2
    assert "--image-size 60" in capsys.readouterr().err
    assert cli(_train_args(tiny, tmp_path / "r", "--batch-size", "1")) == 2
    assert "--batch-size 1: must be >= 2" in capsys.readouterr().err
    args = _train_args(tiny, tmp_path / "r")
    args[2] = str(tmp_path / "missing")
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err
    assert cli(_train_args(tiny, tmp_path / "r", "--resume", str(tmp_path / "nope.pt"))) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_weights_none_never_downloads_and_imagenet_offline_is_a_user_error(monkeypatch):
    import segmentation_models_pytorch.encoders as enc

    calls = []

    def offline(*a, **k):
        calls.append(a)
        raise OSError("We couldn't connect to 'https://huggingface.co' (offline)")

    monkeypatch.setattr(enc, "hf_hub_download", offline)
    build_model("resnet18", weights="none")
    assert calls == []
    with pytest.raises(UserError, match="--weights imagenet: cannot obtain"):
        build_model("resnet18", weights="imagenet")
    assert calls, "imagenet weights must be looked up"


def test_lovasz_term_is_added_on_prior_corrected_logits():
    from segmentation_models_pytorch.losses import LovaszLoss

    from trainer.engine import CELovasz

    torch.manual_seed(3)
    logits = torch.randn(2, 3, 8, 8)
    targets = torch.randint(0, 3, (2, 8, 8))
    targets[0, 0, :] = 255  # padding stays ignored
    w = np.array([1.0, 0.5, 3.0])
    ce = make_criterion(w)
    both = make_criterion(w, lovasz_weight=0.5)
    assert isinstance(both, CELovasz) and not isinstance(ce, CELovasz)
    adj = torch.tensor(-np.log(w), dtype=torch.float32).view(1, 3, 1, 1)
    want = ce(logits, targets) + 0.5 * LovaszLoss("multiclass", ignore_index=255)(
        logits + adj, targets)
    assert float(both(logits, targets)) == pytest.approx(float(want), rel=1e-6)
    # the IoU term is not the raw logits' (those favour the up-weighted crystal class)
    raw = ce(logits, targets) + 0.5 * LovaszLoss("multiclass", ignore_index=255)(logits, targets)
    assert float(both(logits, targets)) != pytest.approx(float(raw), rel=1e-6)
    with pytest.raises(ValueError):
        make_criterion(w, lovasz_weight=-1)


def test_lovasz_option_trains_and_is_recorded(tiny, tmp_path):
    out = tmp_path / "lv"
    assert cli(["train", "--data", str(tiny[0]), "--out", str(out), "--backbone", "resnet18",
                "--weights", "none", "--epochs", "1", "--steps-per-epoch", "2",
                "--batch-size", "2", "--image-size", "64", "--workers", "0", "--no-progress",
                "--augment", "none", "--lovasz-weight", "1"]) == 0
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ck["config"]["lovasz_weight"] == 1.0
    from trainer.export import export_checkpoint

    res = export_checkpoint(out / "best.pt", tmp_path / "lv.onnx")
    meta = json.loads((tmp_path / "lv.json").read_text())
    assert meta["training"]["loss"] == "weighted cross-entropy + 1 x Lovasz-softmax"
    assert res.parity["argmax_agreement"] >= 0.999
    assert cli(["train", "--data", str(tiny[0]), "--out", str(tmp_path / "neg"),
                "--weights", "none", "--lovasz-weight", "-1"]) != 0


def test_every_epoch_draws_its_own_crops_in_worker_processes(tiny, tmp_path):
    # the loader's worker processes must see the epoch the loop sets, or every epoch
    # repeats the first epoch's crops
    from trainer.data import LabelledDataset
    from trainer.train import _loaders, get_args_parser
    from trainer.trainargs import check_args

    args = get_args_parser().parse_args([
        "--data", str(tiny[0]), "--out", str(tmp_path / "r"), "--weights", "none",
        "--batch-size", "2", "--image-size", "32", "--workers", "1", "--augment", "study"])
    check_args(args)
    data = LabelledDataset(tiny[0])
    _, ds, _, loader, _ = _loaders(args, torch.nn.Identity(), data, None,
                                   device=torch.device("cpu"), world=1, local_rank=0,
                                   main_proc=True, steps_per_epoch=3)

    def key(x: torch.Tensor) -> float:
        return round(float(x.double().sum()), 3)

    seen = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        got = sorted(key(x) for xb, _ in loader for x in xb)
        assert got == sorted(key(ds[k][0]) for k in range(len(ds)))  # this epoch's crops
        seen.append(got)
    assert seen[0] != seen[1] != seen[2]
