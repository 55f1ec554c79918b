"""The contact channel in the trainer: labels written, read back aligned, trained, exported."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge.errors import UserError
from edge.modelmeta import load_meta
from trainer.augment import PRESETS, augment_pair, augment_with_contact
from trainer.cli import main as cli
from trainer.data import LabelledDataset
from trainer.synth import (
    CRYSTAL,
    SynthConfig,
    contact_map,
    frame_seed,
    generate_dataset,
    render_frame,
)
from trainer.torchdata import TrainCrops


def _cfg() -> SynthConfig:
    return SynthConfig.from_presets("crowded", "agglomerates", width=128, height=96,
                                    px_size_um=4.0, fraction_um=(60.0, 90.0))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("contacts") / "set"
    generate_dataset(root, 4, _cfg(), seed=3)
    return root


def test_augmentation_moves_the_contact_label_with_the_label():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, (60, 80)).astype(np.uint8)
    image = rng.integers(0, 256, (60, 80, 3)).astype(np.uint8)
    contact = (label == 2).astype(np.uint8)  # a contact label that mirrors one class
    for seed in range(8):  # flips, rotations, shears, crops reaching outside the frame
        x, y, c = augment_with_contact(image, label, contact, np.random.default_rng(seed),
                                       PRESETS["study"], out_size=(48, 48),
                                       src_center=(20.0, 50.0))
        x0, y0 = augment_pair(image, label, np.random.default_rng(seed), PRESETS["study"],
                              out_size=(48, 48), src_center=(20.0, 50.0))
        assert np.array_equal(x, x0) and np.array_equal(y, y0)
        assert np.array_equal(c == 255, y == 255) and (y == 255).any()
        valid = y != 255
        assert np.array_equal(c[valid] == 1, y[valid] == 2)
    with pytest.raises(ValueError, match="must share"):
        augment_with_contact(image, label, contact[:-1], rng)


def test_generated_contact_labels_are_exact_and_read_back(data):
    ds = LabelledDataset(data)
    assert ds.has_contacts and len(ds) == 4
    n_contact = 0
    for i in range(len(ds)):
        frame = render_frame(frame_seed(3, i), _cfg())
        expect = contact_map(frame.instances, frame.coverage)
        got = ds.load_contact(i)
        assert got is not None and np.array_equal(got, expect)
        _img, lab = ds.load(i)
        assert np.all(lab[got == 1] == CRYSTAL)  # contacts lie on crystal pixels
        n_contact += int(got.sum())
    assert n_contact > 0


def test_train_crops_carry_contacts_aligned_through_augmentation(data):
    ds = LabelledDataset(data)
    crops = TrainCrops(ds, crop_size=64, samples_per_epoch=12, augment=PRESETS["study"],
                       seed=1, contacts=True)
    seen = 0
    for k in range(len(crops)):
        x, y, c = crops[k]
        assert x.shape == (3, 64, 64) and y.shape == c.shape == (64, 64)
        assert torch.equal(c == 255, y == 255)
        on = c == 1
        assert bool((y[on] == CRYSTAL).all())  # warped with the label, pixel for pixel
        seen += int(on.sum())
    assert seen > 0
    plain = TrainCrops(ds, crop_size=64, samples_per_epoch=2, seed=1)
    assert len(plain[0]) == 2


def test_contact_weight_trains_exports_and_the_edge_loads_it(data, tmp_path):
    from edge.vision.analyzer import FrameAnalyzer
    from edge.vision.contact import contact_of
    from edge.vision.decode import decode_file
    from trainer.export import export_checkpoint
    from trainer.model import build_model

    run = tmp_path / "run"
    assert cli(["train", "--data", str(data), "--out", str(run), "--backbone", "resnet18",
                "--weights", "none", "--epochs", "1", "--steps-per-epoch", "2",
                "--batch-size", "2", "--image-size", "64", "--workers", "0", "--no-progress",
                "--augment", "none", "--contact-weight", "1"]) == 0
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ck["config"]["aux_channels"] == ["contact"]
    assert ck["config"]["contact_pos_weight"] >= 1.0
    # crystal-train evaluate on the checkpoint uses the channel as the export does
    from trainer.evalmodel import LoadedModel

    assert LoadedModel(run / "checkpoint.pt").meta.output.aux_channels == ["contact"]
    onnx = tmp_path / "m.onnx"
    export_checkpoint(run / "checkpoint.pt", onnx)
    meta = load_meta(onnx)
    assert meta.output.aux_channels == ["contact"]
    assert len(meta.output.logit_adjustment) == meta.n_classes == 3
    image = decode_file(data / "images" / "synth_00000.png").image
    with FrameAnalyzer(onnx, inference_scale=1.0) as fa:
        cmap = fa.segment([image])[0]
        res = fa.postprocess("f", image, cmap)
    contact = contact_of(cmap)
    assert contact is not None and contact.shape == cmap.shape and int(cmap.max()) <= 2
    assert res.crystals is not None or res.reject_reason  # measured through the hook
    # the exported file is read back as a network with the channel, and only as one
    model = build_model("resnet18", n_classes=3, weights=str(onnx), n_aux=1)
    assert model.net.segmentation_head[0].out_channels == 4
    with pytest.raises(UserError, match="auxiliary channels"):
        build_model("resnet18", n_classes=3, weights=str(onnx))


def test_contact_weight_needs_contact_labels(data, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(data, bare)
    shutil.rmtree(bare / "contacts")
    assert cli(["train", "--data", str(bare), "--out", str(tmp_path / "r"), "--weights",
                "none", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
                "--image-size", "64", "--workers", "0", "--contact-weight", "1"]) == 2
    assert cli(["train", "--data", str(bare), "--out", str(tmp_path / "r2"), "--weights",
                "none", "--contact-weight", "-1"]) == 2


def test_contact_only_learns_the_channel_and_keeps_the_class_output(data, tmp_path, capsys,
                                                                    caplog):
    import onnxruntime as ort

    from trainer.export import export_checkpoint

    def run_onnx(path, x):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]

    common = ["--backbone", "resnet18", "--batch-size", "2", "--image-size", "64",
              "--workers", "0", "--no-progress", "--augment", "light", "--val", str(data)]
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "a"), "--weights",
                "none", "--epochs", "1", "--steps-per-epoch", "3", *common]) == 0
    base = export_checkpoint(tmp_path / "a" / "checkpoint.pt", tmp_path / "a.onnx",
                             parity_inputs=None).onnx_path
    run = tmp_path / "c"
    assert cli(["train", "--data", str(data), "--out", str(run), "--weights", str(base),
                "--contact-weight", "1", "--contact-only", "--head-kernel", "3",
                "--lr", "0.05", "--epochs", "1",
                "--steps-per-epoch", "20", "--warmup-steps", "1", *common]) == 0
    grown = export_checkpoint(run / "checkpoint.pt", tmp_path / "c.onnx",
                              parity_inputs=None).onnx_path
    meta, meta0 = load_meta(grown), load_meta(base)
    assert meta.output.aux_channels == ["contact"]
    np.testing.assert_allclose(meta.output.logit_adjustment, meta0.output.logit_adjustment,
                               atol=2e-6)
    x = np.random.default_rng(4).random((2, 3, 96, 128), dtype=np.float32)
    y0, y = run_onnx(base, x), run_onnx(grown, x)
    assert y.shape[1] == 4 and y0.shape[1] == 3
    np.testing.assert_allclose(y[:, :3], y0, atol=1e-5)  # the class output is the file's
    assert np.abs(y[:, 3] - (-2.0)).max() > 0.1  # the channel moved from its start
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ck["config"]["contact_only"] is True
    # a 3x3 head: recorded, and the file is read back as such a network (checked on import)
    assert meta.architecture["head_kernel"] == 3 and "head_kernel" not in meta0.architecture
    from trainer.model import build_model, head_kernel_of

    assert head_kernel_of(build_model("resnet18", n_classes=3, weights=str(grown),
                                      n_aux=1)) == 3
    with pytest.raises(UserError, match="--head-kernel"):
        build_model("resnet18", n_classes=3, weights=str(grown), n_aux=1, head_kernel=1)
    assert meta.training["contact_only"] is True and meta0.training["contact_only"] is False
    src = meta.training["class_output"]  # the class output's provenance is carried
    assert src["sha256"] == meta0.sha256 and src["training"]["steps"] == 3
    # a fine-tune of such a file without contact labels carries the channel: the same
    # network as its source (so the two blend), the channel untrained
    ft = tmp_path / "ft"
    assert cli(["train", "--data", str(data), "--out", str(ft), "--weights", str(grown),
                "--epochs", "1", "--steps-per-epoch", "2", *common]) == 0
    assert "carried untrained" in caplog.text and "contact_clears_concave = false" in caplog.text
    fine = export_checkpoint(ft / "checkpoint.pt", tmp_path / "ft.onnx",
                             parity_inputs=None).onnx_path
    mf = load_meta(fine)
    assert mf.output.aux_channels == ["contact"] and mf.architecture["head_kernel"] == 3
    assert cli(["blend", "--model", str(grown), "--with", str(fine),
                "--out", str(tmp_path / "bl.onnx")]) == 0
    # mistakes are one line
    for extra, word in ((["--weights", str(base)], "--contact-weight"),
                        (["--weights", "none", "--contact-weight", "1"], ".onnx")):
        assert cli(["train", "--data", str(data), "--out", str(tmp_path / "x"), *extra,
                    "--contact-only", *common]) == 2
        err = capsys.readouterr().err
        assert word in err and "Traceback" not in err, err


def test_train_only_aux_fits_the_channel_and_nothing_else():
    from trainer.model import add_aux_channels, build_model, train_only_aux

    torch.manual_seed(0)
    model = add_aux_channels(build_model("resnet18", n_classes=3, weights="none"), 1)
    model.eval()
    x = torch.full((2, 3, 64, 64), 0.2) + 0.05 * torch.rand(2, 3, 64, 64)
    target = torch.zeros(2, 64, 64)
    for i, (r, c) in enumerate(((8, 12), (30, 24))):  # a bright square: the readable target
        x[i, :, r:r + 24, c:c + 24] += 0.6
        target[i, r:r + 24, c:c + 24] = 1.0
    with torch.no_grad():
        model.train()
        model(x)  # batch norms get statistics that are not the defaults
        model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    y0 = model(x).detach()
    params = train_only_aux(model, 3)
    opt = torch.optim.AdamW(params, lr=0.05, weight_decay=0.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    losses = []
    for _ in range(30):
        out = model(x)
        loss = bce(out[:, 3], target) + out[:, :3].square().mean()  # class rows get gradient
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(bce(out[:, 3], target)))
    y = model(x).detach()
    assert torch.equal(y[:, :3], y0[:, :3])  # bit for bit: the class output is kept
    assert losses[-1] < 0.8 * losses[0]
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["net.segmentation_head.0.weight", "net.segmentation_head.0.bias"]
    head = after["net.segmentation_head.0.weight"]
    assert torch.equal(head[:3], before["net.segmentation_head.0.weight"][:3])
    with pytest.raises(ValueError, match="no auxiliary channel"):
        train_only_aux(build_model("resnet18", n_classes=3, weights="none"), 3)


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_a_grown_head_keeps_the_class_output(kernel):
    from trainer.model import add_aux_channels, build_model, head_kernel_of

    torch.manual_seed(1)
    model = build_model("resnet18", n_classes=3, weights="none").eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        y0 = model(x)
        grown = add_aux_channels(model, 1, kernel_size=kernel).eval()
        torch.nn.init.normal_(grown.net.segmentation_head[0].weight[3:])
        y = grown(x)
    assert head_kernel_of(grown) == kernel and y.shape[1] == 4
    torch.testing.assert_close(y[:, :3], y0, atol=1e-5, rtol=0)
    assert float(y[:, 3].std()) > 0  # the new channel reads the features
    with pytest.raises(UserError, match="only grow"):
        add_aux_channels(grown, 1, kernel_size=2 * kernel)
