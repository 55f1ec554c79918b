"""Multi-scale training (``--scale-range``): crops cut from the frame resized as the edge
resizes it, at network scales drawn log-uniformly, contacts aligned, recorded in the run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edge.errors import UserError
from trainer.augment import PRESETS
from trainer.cli import main as cli
from trainer.data import LabelledDataset
from trainer.rescale import scale_pair
from trainer.synth import CRYSTAL, SynthConfig, generate_dataset
from trainer.torchdata import TrainCrops
from trainer.trainargs import parse_scale_range


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiscale") / "set"
    cfg = SynthConfig.from_presets("crowded", "agglomerates", width=160, height=120,
                                   px_size_um=3.0, fraction_um=(60.0, 90.0))
    generate_dataset(root, 3, cfg, seed=5)
    return root


def _same_frame_crops(ds, **kw):
    # one frame, crop = the whole resized frame: what the network sees is the resize alone
    return TrainCrops(ds, crop_size=64, samples_per_epoch=1, augment=PRESETS["none"], **kw)


def test_a_fixed_factor_crops_the_frame_resized_as_the_edge_resizes_it(data):
    ds = LabelledDataset(data)
    one = LabelledDataset(data, items=ds.items[:1])  # samples_per_epoch == len: frame 0
    img, lab = ds.load(0)
    for factor in (0.25, 0.3):  # 160 x 120 -> 40 x 30 and 48 x 36: the whole frame fits
        _, y = _same_frame_crops(one, input_scale=1.0, scale_range=(factor, factor))[0]
        _, ref_lab = scale_pair(img, lab, factor)
        h, w = ref_lab.shape
        # the crop holds the resized frame, padded with ignore / black around it; its
        # centre lies half a pixel off the frame's, so the nearest-neighbour warp may
        # repeat or drop one row or column (which one depends on the OpenCV build)
        valid = y.numpy() != 255
        rows, cols = np.nonzero(valid)
        assert abs(np.ptp(rows) + 1 - h) <= 1 and abs(np.ptp(cols) + 1 - w) <= 1, factor
        for c in range(3):  # the same classes in the same shares
            share = float((y.numpy()[valid] == c).mean())
            assert share == pytest.approx(float((ref_lab == c).mean()), abs=0.03), (factor, c)
    # input_scale and the factor multiply, and a finer scale is cut from the frame as
    # stored (its detail), not enlarged from the copy at input_scale
    for a_kw, b_kw in (({"input_scale": 0.5, "scale_range": (0.5, 0.5)},
                        {"input_scale": 0.25}),
                       ({"input_scale": 0.5, "scale_range": (2.0, 2.0)},
                        {"input_scale": 1.0})):
        a = _same_frame_crops(ds, seed=4, **a_kw)[0]
        b = _same_frame_crops(ds, seed=4, **b_kw)[0]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_a_range_draws_scales_log_uniformly_and_contacts_stay_aligned(data, monkeypatch):
    ds = LabelledDataset(data)
    crops = TrainCrops(ds, crop_size=48, samples_per_epoch=40, augment=PRESETS["light"],
                       input_scale=0.5, seed=3, contacts=True, scale_range=(0.5, 2.0))
    drawn = []
    real = crops.frames.get
    monkeypatch.setattr(crops.frames, "get", lambda i, f=1.0: drawn.append(f) or real(i, f))
    seen = on_crystal = 0
    for k in range(len(crops)):
        x, y, c = crops[k]
        assert x.shape == (3, 48, 48) and torch.equal(c == 255, y == 255)
        on = c == 1
        seen += int(on.sum())
        on_crystal += int((y[on] == CRYSTAL).sum())
    # a shrunk contact line keeps every pixel any contact covers, so some fall beside
    # the nearest-neighbour label; a misaligned one would fall mostly off the crystals
    assert seen > 0 and on_crystal > 0.8 * seen
    logs = np.log(drawn)
    assert len(drawn) == 40 and logs.min() >= np.log(0.5) - 1e-9 and logs.max() <= np.log(2)
    # both halves of the log range are drawn (log-uniform: half below 1, half above)
    assert 10 <= int((logs < 0).sum()) <= 30
    # the same seed gives the same crops; without the option the draws are the plain ones
    again = TrainCrops(ds, crop_size=48, samples_per_epoch=40, augment=PRESETS["light"],
                       input_scale=0.5, seed=3, contacts=True, scale_range=(0.5, 2.0))
    assert torch.equal(again[7][0], crops[7][0])
    plain = TrainCrops(ds, crop_size=48, samples_per_epoch=40, augment=PRESETS["light"],
                       input_scale=0.5, seed=3)
    unit = TrainCrops(ds, crop_size=48, samples_per_epoch=40, augment=PRESETS["light"],
                      input_scale=0.5, seed=3, scale_range=None)
    assert torch.equal(plain[5][0], unit[5][0])
    with pytest.raises(ValueError, match="scale_range"):
        TrainCrops(ds, crop_size=48, scale_range=(2.0, 1.0))


def test_scale_range_arguments_are_checked():
    assert parse_scale_range(None, 0.5) is None
    assert parse_scale_range("0.6,2", 0.5) == [0.6, 2.0]
    for bad, msg in (("2", "two numbers"), ("a,b", "two numbers"), ("2,1", "LO <= HI"),
                     ("0,1", "LO <= HI"), ("0.5,10", "more than 4 times")):
        with pytest.raises(UserError, match=msg):
            parse_scale_range(bad, 0.5)


def test_train_records_the_range_and_refuses_a_bad_one(data, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", "--data", str(data), "--backbone", "resnet18", "--weights", "none",
            "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
            "--image-size", "64", "--workers", "0", "--no-progress", "--augment", "none"]
    assert cli([*base, "--out", str(run), "--scale-range", "0.5,2"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["scale_range"] == [0.5, 2.0] and cfg["input_scale"] == 1.0
    from edge.modelmeta import load_meta
    from trainer.export import export_checkpoint

    out = export_checkpoint(run / "checkpoint.pt", tmp_path / "ms.onnx", fp16=False,
                            parity_inputs=None)
    training = load_meta(out.onnx_path).training
    assert training["scale_range"] == [0.5, 2.0] and training["input_scale"] == 1.0
    assert cli([*base, "--out", str(tmp_path / "bad"), "--scale-range", "3,1"]) == 2
    err = capsys.readouterr().err
    assert "--scale-range 3,1" in err and "Traceback" not in err
