"""Multi-process training through ``torchrun`` (DDP, gloo on the CPU): the path a
multi-GPU user takes, with no code change, run here with two CPU processes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.trainer.h5data import make_dataset

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return (make_dataset(root / "train", 6, h=64, w=96, seed=5),
            make_dataset(root / "val", 2, seed=6))


def _torchrun(data, out, *extra, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "trainer.cli", "train", "--data", str(data[0]), "--val", str(data[1]),
           "--out", str(out), "--backbone", "resnet18", "--weights", "none",
           "--batch-size", "2", "--image-size", "64", "--steps-per-epoch", "2",
           "--workers", "0", "--no-progress", "--seed", "4", "--device", "cpu", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)
    except subprocess.TimeoutExpired as exc:  # a DDP deadlock shows up as a hang
        pytest.fail(f"torchrun did not finish in {timeout} s (DDP deadlock?):\n"
                    f"{(exc.stderr or b'')[-3000:]!r}")


def test_torchrun_two_processes_train_and_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    res = _torchrun(data, run, "--epochs", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["world_size"] == 2
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (ck["epoch"], ck["step"]) == (1, 4)
    # the checkpoint holds the bare model (no DDP 'module.' prefix): export and resume read it
    assert not any(k.startswith("module.") for k in ck["model"])
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    # only rank 0 writes the run: one row per step, not one per process
    assert len(list(csv.DictReader(open(run / "steps.csv")))) == 4


def test_torchrun_time_box_is_agreed_by_all_processes(data, tmp_path):
    # rank 0 validates after each epoch while rank 1 waits; a time box checked by each
    # process alone lets one of them start a step the other never joins (a hang)
    run = tmp_path / "run"
    res = _torchrun(data, run, "--epochs", "40", "--max-minutes", "0.05")
    assert res.returncode == 0, res.stderr[-3000:]
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert 0 < ck["step"] < 80
