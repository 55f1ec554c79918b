"""One chain, one truth: the same frames give the same numbers through every door.

The frames (an 8-bit colour PNG, a 12-bit grey frame in a 16-bit TIFF, a colour JPEG;
each format its own set) go through ``crystal-edge analyze``, through ``crystal-edge
run`` (a real process: folder source, one batch of all the frames, JSON lines to a file)
and through ``crystal-train evaluate`` with the same settings (pixel size, inference
scale, default ``[measure]``, ``[psd]``, ``[quality]``, ``[roi]``). Crystal counts, x50,3
(to 1e-6 relative), the size classes' upper edges and Q3 must agree. The JPEG loses a
little, so each format's three doors are compared with each other, not formats with
each other.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.cli import main as edge_cli
from tests.faults.conftest import ServiceProcess, jsonl_batches, wait_until
from tests.fixtures.tiny_model import build_tiny_model, synth_frame
from trainer.cli import main as train_cli
from trainer.data import write_classes

N_FRAMES = 3
FRAME_PX_UM = 1.45  # the frames' pixel size; the model's is 2.9: frames are halved
H, W = 300, 400  # halved: 150 x 200, padded to 160 x 208 at the network
NAMES = ["black_background", "light_background", "crystal"]
FORMATS = ("png8", "tiff12", "jpeg")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("one-chain-model"), px_size_um=2.9)


def _frame(i: int) -> tuple[np.ndarray, np.ndarray]:
    """A tinted back-lit frame (BGR uint8) with dark crystals, and its class labels."""
    rng = np.random.default_rng(100 + i)
    crystals = [(rng.uniform(30, W - 30), rng.uniform(30, H - 30), rng.uniform(7, 16))
                for _ in range(14)]
    grey = synth_frame(H, W, crystals=crystals, seed=i)[:, :, 0].astype(np.float64)
    bgr = np.clip(grey[:, :, None] * np.array([0.93, 1.0, 1.04]), 0, 255).round()
    label = np.where(grey < 30, 0, np.where(grey > 140, 1, 2)).astype(np.uint8)
    return bgr.astype(np.uint8), label


def _write_image(path_stem: Path, bgr: np.ndarray, fmt: str) -> Path:
    if fmt == "png8":
        path = path_stem.with_suffix(".png")
        ok = cv2.imwrite(str(path), bgr)
    elif fmt == "tiff12":  # a mono 12-bit camera: values 0..4095 in a 16-bit container
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)
        path = path_stem.with_suffix(".tif")
        ok = cv2.imwrite(str(path), np.round(grey * 4095.0 / 255.0).astype(np.uint16))
    else:
        path = path_stem.with_suffix(".jpg")
        ok = cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok, path
    return path


def write_dataset(root: Path, fmt: str) -> Path:
    """A labelled dataset (``images/``, ``labels/``, ``classes.json``); the images arrive
    in name order (increasing mtimes) for the folder source."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    t0 = time.time() - 1000
    for i in range(N_FRAMES):
        bgr, label = _frame(i)
        path = _write_image(root / "images" / f"f{i:02d}", bgr, fmt)
        os.utime(path, (t0 + i, t0 + i))
        assert cv2.imwrite(str(root / "labels" / f"f{i:02d}.png"), label)
    write_classes(root / "classes.json", NAMES, crystal_class=2, px_size_um=FRAME_PX_UM)
    return root


def write_run_config(path: Path, *, model: Path, images: Path,
                     flip_average: bool = False) -> None:
    path.write_text(f"""
[device]
id = "one-chain"

[source]
type = "folder"
path = "{images}"
poll_s = 0.05
stable_polls = 1

[model]
path = "{model}"
flip_average = {str(flip_average).lower()}

[backend]
name = "onnxruntime"
onnxruntime_device = "cpu"
threads = 1
max_batch = 1
warmup_runs = 0

[batch]
frames = {N_FRAMES}

[optics]
px_size_um = {FRAME_PX_UM}

[state]
dir = "state"

[sinks.jsonl]
path = "out.jsonl"

[health]
interval_s = 0.5
""")


def _numbers(n: Any, x50: Any, edges: list[float | None], Q3: list[float],
             process: dict[str, Any]) -> dict[str, Any]:
    # the overflow class has no upper edge (None); process values as the payload names them
    return {"n": int(n), "x50_3_um": x50,
            "upper_edges_um": [None if v is None else float(v) for v in edges],
            "Q3": [float(v) for v in Q3],
            "process": {k: v for k, v in process.items() if k != "frames_rejected_by_reason"}}


def through_analyze(model: Path, images: Path, out: Path, *options: str) -> dict[str, Any]:
    assert edge_cli(["analyze", str(images), "--model", str(model), "--backend", "onnxruntime",
                     "--threads", "1", "--batch", "1", "--px-size-um", str(FRAME_PX_UM),
                     "--json", str(out), *options]) == 0
    doc = json.loads(out.read_text())
    assert doc["n_images_ok"] == N_FRAMES, doc["images"]
    return _numbers(doc["n_crystals"], doc["x50_3_um"], [b["upper_um"] for b in doc["bins"]],
                    [b["Q3"] for b in doc["bins"]], doc["process"])


def through_run(workdir: Path) -> dict[str, Any]:
    svc = ServiceProcess(workdir)
    try:
        wait_until(lambda: jsonl_batches(workdir / "out.jsonl"), 60.0,
                   f"a batch in out.jsonl; log:\n{svc.log()[-2000:]}")
    finally:
        rc = svc.stop()
    assert rc == 0, svc.log()[-3000:]
    # a line is the batch report, or an envelope {"type": "psd", "payload": report}
    batches = [line.get("payload", line) for line in jsonl_batches(workdir / "out.jsonl")
               if line.get("type", "psd") == "psd"]
    assert len(batches) == 1, batches
    b = batches[0]
    assert b["frames"]["used"] == N_FRAMES, (b["frames"], svc.log()[-2000:])
    return _numbers(b["crystals"]["measured"], b["statistics"]["x50_3_um"],
                    b["classes"]["upper_edges_um"], b["classes"]["Q3"], b["process"])


def through_evaluate(model: Path, data: Path, config: Path, out: Path) -> dict[str, Any]:
    assert train_cli(["evaluate", "--model", str(model), "--data", str(data),
                      "--config", str(config), "--json", str(out)]) == 0
    psd = json.loads(out.read_text())["psd"]
    assert psd["frames_used"] == N_FRAMES, psd["frames_rejected_by_reason"]
    return _numbers(psd["n_crystals"], psd["x50_3_um"], [b["upper_um"] for b in psd["bins"]],
                    [b["Q3"] for b in psd["bins"]], psd["process"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_three_doors_give_the_same_numbers(tmp_path, model, fmt, monkeypatch):
    monkeypatch.delenv("CRYSTAL_EDGE_STATE_DIR", raising=False)
    data = write_dataset(tmp_path / "data", fmt)
    config = tmp_path / "config.toml"
    write_run_config(config, model=model, images=data / "images")

    evaluated = through_evaluate(model, data, config, tmp_path / "evaluate.json")
    analyzed = through_analyze(model, data / "images", tmp_path / "analyze.json")
    served = through_run(tmp_path)

    assert evaluated["n"] >= 10, evaluated  # enough crystals that a difference would show
    assert_same(evaluated, analyze=analyzed, run=served)


def assert_same(evaluated: dict[str, Any], **others: dict[str, Any]) -> None:
    for name, other in others.items():
        assert other["n"] == evaluated["n"], (name, other["n"], evaluated["n"])
        assert other["x50_3_um"] == pytest.approx(evaluated["x50_3_um"], rel=1e-6), name
        assert other["upper_edges_um"] == evaluated["upper_edges_um"], name
        assert other["Q3"] == evaluated["Q3"], name
        assert other["process"].keys() == evaluated["process"].keys(), name
        for key, value in evaluated["process"].items():
            assert other["process"][key] == pytest.approx(value, rel=1e-9), (name, key)


def test_the_mirror_average_is_the_same_through_every_door(tmp_path, monkeypatch):
    """``[model] flip_average = true`` (``analyze --flip-average``) on a model that is not
    mirror-symmetric: every door measures the mirror-averaged segmentation, which is not
    the plain one."""
    monkeypatch.delenv("CRYSTAL_EDGE_STATE_DIR", raising=False)
    model = build_tiny_model(tmp_path / "model", px_size_um=2.9, shift_px=1)
    data = write_dataset(tmp_path / "data", "png8")
    plain_config, config = tmp_path / "plain.toml", tmp_path / "config.toml"
    write_run_config(plain_config, model=model, images=data / "images")
    write_run_config(config, model=model, images=data / "images", flip_average=True)

    plain = through_evaluate(model, data, plain_config, tmp_path / "plain.json")
    evaluated = through_evaluate(model, data, config, tmp_path / "evaluate.json")
    analyzed = through_analyze(model, data / "images", tmp_path / "analyze.json",
                               "--flip-average")
    served = through_run(tmp_path)

    assert evaluated["n"] >= 10, evaluated
    # the averaged view widens each crystal by the half pixel the shifted view lacks
    assert evaluated["x50_3_um"] > plain["x50_3_um"] * 1.01, (evaluated, plain)
    doc = json.loads((tmp_path / "analyze.json").read_text())
    assert doc["settings"]["model"]["flip_average"] is True
    assert_same(evaluated, analyze=analyzed, run=served)
