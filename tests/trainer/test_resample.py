"""``crystal-train resample``: a labelled dataset at another pixel size."""

from __future__ import annotations

import json

import cv2
import numpy as np

from trainer.cli import main as train_main
from trainer.data import LabelledDataset
from trainer.synth import SynthConfig, generate_dataset


def test_coarse_frames_join_a_training_set_at_its_pixel_size(tmp_path, capsys):
    src = tmp_path / "coarse"
    generate_dataset(src, 2, SynthConfig(width=160, height=120, px_size_um=5.0), seed=3)
    out = tmp_path / "coarse_at_1.45"
    assert train_main(["resample", "--data", str(src), "--out", str(out),
                       "--px-size-um", "1.45"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["frames"] == 2 and abs(printed["factor"] - 5.0 / 1.45) < 1e-6
    a, b = LabelledDataset(src), LabelledDataset(out)
    assert b.px_size_um == 1.45 and b.class_names == a.class_names and b.has_contacts
    for i in range(2):
        (img_a, lab_a), (img_b, lab_b) = a.load(i), b.load(i)
        assert lab_b.shape == (414, 552) and img_b.shape[:2] == lab_b.shape
        # every class keeps its area (um^2) within the outline's resampling error
        for c in range(3):
            area_a = (lab_a == c).sum() * 5.0 ** 2
            area_b = (lab_b == c).sum() * 1.45 ** 2
            assert abs(area_b - area_a) <= 0.03 * max(area_a, 1e4), (c, area_a, area_b)
        # the image is the source enlarged (linear), not re-rendered
        back = cv2.resize(img_b, (160, 120), interpolation=cv2.INTER_AREA)
        assert np.abs(back.astype(int) - img_a.astype(int)).mean() < 3.0
        assert b.load_contact(i).sum() >= a.load_contact(i).sum()
    truth = json.loads((out / "truth.json").read_text())
    assert truth["resampled"]["from_px_size_um"] == 5.0


def test_mistakes_are_one_line(tmp_path, capsys):
    src = tmp_path / "d"
    generate_dataset(src, 1, SynthConfig(width=96, height=64), seed=1)
    for args, word in ((["--px-size-um", "0"], "--px-size-um"),
                       (["--px-size-um", "inf"], "--px-size-um"),
                       (["--px-size-um", "1.45", "--out", str(src)], "--out"),
                       (["--px-size-um", "1.45", "--data", str(tmp_path / "none")], "none")):
        base = {"--data": str(src), "--out": str(tmp_path / "o")}
        for k in ("--data", "--out"):
            if k in args:
                base.pop(k)
        argv = ["resample", *[x for kv in base.items() for x in kv], *args]
        assert train_main(argv) == 2
        err = capsys.readouterr().err
        assert word in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_dataset_without_pixel_size_is_refused(tmp_path, capsys):
    src = tmp_path / "d"
    generate_dataset(src, 1, SynthConfig(width=96, height=64), seed=1)
    doc = json.loads((src / "classes.json").read_text())
    doc.pop("px_size_um")
    (src / "classes.json").write_text(json.dumps(doc))
    assert train_main(["resample", "--data", str(src), "--out", str(tmp_path / "o"),
                       "--px-size-um", "1.45"]) == 2
    assert "px_size_um" in capsys.readouterr().err
