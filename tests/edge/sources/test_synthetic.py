"""Synthetic source: the trainer's generator, seeded, paced."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from edge.errors import UserError
from edge.sources import build_source
from edge.sources.synthetic import SyntheticSource, SyntheticSourceConfig
from trainer.synth import SynthConfig, generate_dataset


def _frames(src, stop=None):
    return [f for f in src.frames(stop or threading.Event()) if f is not None]


def test_seeded_frames_match_crystal_train_synth(tmp_path):
    cfg = SyntheticSourceConfig(seed=3, width=256, height=192, count=2,
                                fraction_um=(90.0, 125.0), generator={"density": 0.12})
    src = build_source(cfg, state_dir=tmp_path, px_size_um=1.45)
    src.open()
    frames = _frames(src)
    assert [f.name for f in frames] == ["synthetic:0", "synthetic:1"]
    assert frames[0].image.shape == (192, 256, 3) and frames[0].image.dtype == np.uint8
    assert not np.array_equal(frames[0].image, frames[1].image)
    # the same frames as the dataset generator writes (BGR here, lossless PNG there)
    doc = generate_dataset(tmp_path / "ds", 2, SynthConfig(
        width=256, height=192, px_size_um=1.45, fraction_um=(90.0, 125.0), density=0.12), 3)
    png = cv2.imread(str(tmp_path / "ds" / "images" / f"{doc['frames'][1]['stem']}.png"))
    assert np.array_equal(png, frames[1].image)
    truth = [c["diameter_um"] for c in doc["frames"][1]["crystals"]]
    whole = frames[1].truth["diameters_um"]
    assert frames[1].truth["n_crystals"] == len(truth) and len(whole) <= len(truth)
    assert all(40 < d < 170 for d in whole)
    # a second source with the same seed renders the same bytes
    again = _frames(SyntheticSource(cfg, px_size_um=1.45))
    assert np.array_equal(again[0].image, frames[0].image)


def test_rate_and_stop():
    src = SyntheticSource(SyntheticSourceConfig(width=128, height=96, count=4, rate_fps=20))
    t0 = time.monotonic()
    assert len(_frames(src)) == 4
    assert time.monotonic() - t0 >= 0.14  # 3 periods of 50 ms
    stop = threading.Event()
    stop.set()
    assert _frames(SyntheticSource(SyntheticSourceConfig(width=128, height=96)), stop) == []


def test_bad_generator_key():
    src = SyntheticSource(SyntheticSourceConfig(generator={"densty": 0.1}))
    with pytest.raises(UserError, match=r"source\.generator\.densty"):
        src.open()
