"""The outline refinement head: its function, its training stage, its file round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge.errors import UserError
from edge.modelmeta import load_meta
from tests.trainer.h5data import frames_nchw, make_dataset, train_tiny_run
from trainer.cli import main as cli
from trainer.refine import DEFAULT_SPEC, RefineHead, check_spec, train_only_refine


def _onnx(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_a_new_head_is_the_identity_and_passes_the_contact_channel_through():
    torch.manual_seed(0)
    head = RefineHead(3, 1, channels=8, layers=3)
    image, logits = torch.randn(2, 3, 20, 24), torch.randn(2, 4, 20, 24)
    assert torch.equal(head(image, logits), logits)
    with torch.no_grad():
        head.out.weight.normal_()
    out = head(image, logits)
    assert torch.equal(out[:, 3], logits[:, 3]) and not torch.allclose(out[:, :3], logits[:, :3])
    assert out.shape == logits.shape
    assert RefineHead(3)(image, logits[:, :3]).shape == (2, 3, 20, 24)


@pytest.mark.parametrize("spec, word", [
    ({"channels": 24, "layers": 4}, "fields"),
    ({"channels": 2, "layers": 4, "kernel": 3}, "channels"),
    ({"channels": 24, "layers": 4, "kernel": 4}, "odd"),
    ({"channels": 24, "layers": True, "kernel": 3}, "layers"),
    ({"channels": "24", "layers": 4, "kernel": 3}, "channels"),
])
def test_a_bad_spec_is_one_line_naming_the_field(spec, word):
    with pytest.raises(UserError, match=word):
        check_spec(spec)
    assert check_spec(dict(DEFAULT_SPEC)) == DEFAULT_SPEC


def _blobs(rng, n=8, size=48):
    """Sharp thin bars (the label), their image, and coarse logits: the label seen on a
    4-pixel grid and enlarged bilinearly, as the decoder does."""
    lab = np.zeros((n, size, size), np.int64)
    img = np.zeros((n, 3, size, size), np.float32)
    for i in range(n):
        for _ in range(3):
            y, x = rng.integers(4, size - 12, 2)
            h, w = (rng.integers(2, 5), rng.integers(8, 20)) if rng.random() < 0.5 else (
                rng.integers(8, 20), rng.integers(2, 5))
            lab[i, y:y + h, x:x + w] = 1
        img[i] = np.where(lab[i] == 1, -1.0, 1.0) + rng.normal(0, 0.2, (3, size, size))
    onehot = F.one_hot(torch.from_numpy(lab), 2).permute(0, 3, 1, 2).float()
    coarse = F.interpolate(F.avg_pool2d(onehot, 4), scale_factor=4, mode="bilinear",
                           align_corners=False)
    return torch.from_numpy(img), 6 * (coarse - 0.5), torch.from_numpy(lab)


def _iou(logits, lab):
    pred = logits.argmax(1) == 1
    return float((pred & (lab == 1)).sum() / (pred | (lab == 1)).sum())


def test_the_head_places_outlines_the_coarse_logits_cannot():
    """Thin bars on a 4-pixel logit grid: the head, reading the image, recovers them."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    img, coarse, lab = _blobs(rng, n=16)
    head = RefineHead(2, channels=16, layers=3)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(head(img, coarse), lab)
        opt.zero_grad()
        loss.backward()
        opt.step()
    img_t, coarse_t, lab_t = _blobs(np.random.default_rng(1), n=8)
    before = _iou(coarse_t, lab_t)
    with torch.no_grad():
        after = _iou(head(img_t, coarse_t), lab_t)
    assert before < 0.75 and after > before + 0.15, (before, after)


def test_train_only_refine_leaves_only_the_head_learning():
    from trainer.model import build_model

    model = build_model("resnet18", n_classes=3, weights="none", refine=dict(DEFAULT_SPEC))
    keep = train_only_refine(model)
    learning = [p for p in model.parameters() if p.requires_grad]
    assert len(keep) == len(learning) == 2 * DEFAULT_SPEC["layers"]
    assert model.needs_bn_calibration is False
    with pytest.raises(ValueError, match="no refine head"):
        train_only_refine(build_model("resnet18", n_classes=3, weights="none"))


def test_refine_only_grows_trains_exports_and_reads_back_the_head(tmp_path, capsys):
    from trainer.export import export_checkpoint
    from trainer.model import build_model, refine_spec_of

    data, run = train_tiny_run(tmp_path / "base", steps=3)
    base = export_checkpoint(run / "checkpoint.pt", tmp_path / "base.onnx",
                             parity_inputs=None).onnx_path
    val = make_dataset(tmp_path / "val", 2, h=64, w=64, seed=9)
    common = ["--backbone", "resnet18", "--batch-size", "2", "--image-size", "64",
              "--input-scale", "0.5", "--workers", "0", "--no-progress", "--augment", "none",
              "--val", str(val)]
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--weights",
                str(base), "--refine-only", "--lr", "0.01", "--epochs", "1",
                "--steps-per-epoch", "12", "--warmup-steps", "1", *common]) == 0
    ref = export_checkpoint(tmp_path / "r" / "checkpoint.pt", tmp_path / "r.onnx",
                            parity_inputs=None).onnx_path
    meta, meta0 = load_meta(ref), load_meta(base)
    assert meta.architecture["refine"] == DEFAULT_SPEC and "refine" not in meta0.architecture
    assert meta.training["refine_only"] is True and meta0.training["refine_only"] is False
    assert meta.training["network"]["sha256"] == meta0.sha256
    np.testing.assert_allclose(meta.output.logit_adjustment, meta0.output.logit_adjustment,
                               atol=2e-6)  # the same prior correction, after the head
    x = frames_nchw(3, 64, 96)
    assert np.abs(_onnx(ref, x) - _onnx(base, x)).max() > 1e-3  # the head moved
    # read back (checked against ONNX Runtime on import), and kept by a plain fine-tune
    back = build_model("resnet18", n_classes=3, weights=str(ref))
    assert refine_spec_of(back) == DEFAULT_SPEC
    with pytest.raises(UserError, match="--refine"):
        build_model("resnet18", n_classes=3, weights=str(ref),
                    refine={"channels": 8, "layers": 2, "kernel": 3})
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "f"), "--weights",
                str(ref), "--epochs", "1", "--steps-per-epoch", "2", *common]) == 0
    fine = export_checkpoint(tmp_path / "f" / "checkpoint.pt", tmp_path / "f.onnx",
                             parity_inputs=None).onnx_path
    assert load_meta(fine).architecture["refine"] == DEFAULT_SPEC
    # --refine on a file whose head is not the default one keeps the file's head
    small = {"channels": 8, "layers": 2, "kernel": 3}
    net = build_model("resnet18", n_classes=3, weights=str(base), refine=small)
    from trainer.export import export_model
    from trainer.onnx_weights import read_onnx_meta

    smeta = read_onnx_meta(base)
    net.logit_bias = torch.tensor(smeta["output"]["logit_adjustment"]).view(1, -1, 1, 1)
    export_model(net, tmp_path / "s.onnx")
    smeta["architecture"]["refine"] = small
    (tmp_path / "s.json").write_text(json.dumps(smeta))
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "s"), "--weights",
                str(tmp_path / "s.onnx"), "--refine-only", "--epochs", "1",
                "--steps-per-epoch", "1", *common]) == 0
    assert json.loads((tmp_path / "s" / "config.json").read_text()
                      )["architecture"]["refine"] == small
    assert cli(["blend", "--model", str(ref), "--with", str(fine),
                "--out", str(tmp_path / "bl.onnx")]) == 0
    # mistakes are one line
    for extra, word in ((["--weights", "none"], ".onnx"),
                        (["--weights", str(base), "--contact-only", "--contact-weight", "1"],
                         "one stage")):
        assert cli(["train", "--data", str(data), "--out", str(tmp_path / "x"), *extra,
                    "--refine-only", *common]) == 2
        err = capsys.readouterr().err
        assert word in err and "Traceback" not in err, err


def test_refine_head_script_smoke(tmp_path):
    """``scripts/refine_head.sh``, the default model's refine step, run small."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from trainer.export import export_checkpoint

    root = Path(__file__).resolve().parents[2]
    _, run = train_tiny_run(tmp_path / "base", steps=2)
    base = export_checkpoint(run / "best.pt", tmp_path / "base.onnx", fp16=True,
                             parity_inputs=None).onnx_path
    out, work = tmp_path / "model" / "refined.onnx", tmp_path / "w"
    env = dict(os.environ, BIN=str(Path(sys.executable).parent), WORK=str(work), OUT=str(out),
               BASE=str(base), STEPS="3", FRAMES_DIV="15", SIZE="256x192", CROP="64",
               BACKBONE="resnet18", NICE="0", WORKERS="0", DOMAIN_FRAMES="1", JOBS="3",
               ROUND="2", SEED="61")
    res = subprocess.run(["bash", str(root / "scripts" / "refine_head.sh")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads((work / "run" / "config.json").read_text())
    assert cfg["refine_only"] and cfg["weights"] == str(base) and cfg["total_steps"] == 3
    assert cfg["seed"] == 61
    assert cfg["architecture"]["refine"] == DEFAULT_SPEC
    train = sorted(p.name for p in (work / "data" / "train" / "images").iterdir())
    assert any(n.startswith("coarse_") for n in train) and any(n.startswith("needles_")
                                                                for n in train)
    # round 2 adds dim light and twins to round 1's sets, and dim light to validation
    assert any(n.startswith("dim2_cr_") for n in train) and any(n.startswith("tw2_dim_")
                                                                 for n in train)
    assert any(n.startswith("v_dim2_") for n in os.listdir(work / "data" / "val" / "images"))
    res = subprocess.run(["bash", str(root / "scripts" / "refine_head.sh")], cwd=root,
                         env={**env, "ROUND": "3"}, capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 2 and "rounds 1 and 2" in res.stderr
    meta = load_meta(out)
    assert meta.architecture["refine"] == DEFAULT_SPEC and meta.precision == "fp16"
    assert meta.training["network"]["sha256"] == load_meta(base).sha256
    assert {"val_a", "val_b", "test_a", "test_b"} <= set(meta.metrics["evaluation"])
    assert len(json.loads((work / "domain_card.json").read_text())["domains"]) == 17
