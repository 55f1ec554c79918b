"""Security: untrusted pickles are refused unrun; deploy names never reach ssh as options.

The pickle tests run ``crystal-train`` on a file whose ``__reduce__`` calls
``os.system`` to create a marker file: the command must exit 2 with one line naming the
file, and the marker must not exist (the payload never ran). Checkpoints this trainer
writes still load (a real tiny training run).

The deploy tests run ``python -m deploy`` with recording stand-ins for ``ssh`` and
``rsync`` first on the PATH: a refused name must stop the tool before either runs
(nothing recorded, no marker from ``ProxyCommand``); an accepted one reaches ssh after
``--``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer.h5data import make_dataset, train_tiny_run
from trainer.cli import main as train_cli

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "optimizer": {}, "config": {}}, path)
    return path, marker


def _one_error_line(err: str, name: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert name in lines[0] and "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("sec"), steps=2)[1]


def test_code_executing_checkpoint_is_refused_unrun(tmp_path, capsys):
    evil, marker = _evil(tmp_path)
    data = make_dataset(tmp_path / "data", 2, h=64, w=64, seed=1)
    cases = {
        "export": ["export", "--checkpoint", str(evil), "--out", str(tmp_path / "m.onnx")],
        "resume": ["train", "--data", str(data), "--out", str(tmp_path / "r"),
                   "--resume", str(evil), "--workers", "0"],
        "weights": ["train", "--data", str(data), "--out", str(tmp_path / "w"),
                    "--backbone", "resnet18", "--weights", str(evil), "--epochs", "1",
                    "--steps-per-epoch", "1", "--batch-size", "2", "--image-size", "64",
                    "--workers", "0", "--no-progress"],
    }
    for name, argv in cases.items():
        assert train_cli(argv) == 2, name
        line = _one_error_line(capsys.readouterr().err, str(evil))
        assert "refused" in line and "posix.system" in line, line
        assert not marker.exists(), f"{name}: the pickle's payload ran"


def test_checkpoints_of_this_trainer_still_load(run_dir, tmp_path):
    from trainer.export import export_checkpoint, load_checkpoint

    model, ckpt = load_checkpoint(run_dir / "best.pt")
    assert ckpt["config"]["backbone"] == "resnet18" and model.training is False
    res = export_checkpoint(run_dir / "checkpoint.pt", tmp_path / "m.onnx")
    assert Path(res.onnx_path).is_file()


# ----------------------------------------------------------------------------- deploy names
RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
exit 255
"""


def _deploy(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    for tool in ("ssh", "rsync"):
        (bin_dir / tool).write_text(RECORDER.format(log=log))
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "deploy", "--allow-missing-tensorrt", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls


@pytest.mark.parametrize("hosts, option", [
    ("-oProxyCommand=touch@MARKER@", "--hosts"),
    ("jetson-01 -oProxyCommand=touch@MARKER@", "--hosts"),
    ("root@-oProxyCommand=x", "--hosts"),
    ("jetson;touch@MARKER@", "--hosts"),
    ("-x@jetson", "--hosts"),
    ("[jetson-01]", "--hosts"),
])
def test_deploy_refuses_bad_hosts_before_ssh(tmp_path, hosts, option):
    marker = tmp_path / "pwned"
    proc, calls = _deploy(tmp_path, f"--hosts={hosts.replace('@MARKER@', str(marker))}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = _one_error_line(proc.stderr, option)
    assert line.startswith("deploy: error: --hosts '")
    assert calls == [] and not marker.exists()
    assert "release" not in proc.stdout  # refused before the release was even built


@pytest.mark.parametrize("name", ["../x", "a/b", "-rf", ".hidden", "x..y", "", "a b"])
def test_deploy_refuses_bad_release_names_before_ssh(tmp_path, name):
    proc, calls = _deploy(tmp_path, "--hosts", "jetson-01", f"--release-name={name}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = _one_error_line(proc.stderr, "--release-name")
    assert repr(name) in line
    assert calls == [] and not (ROOT / "x").exists()


def test_deploy_bad_ssh_user_is_refused(tmp_path):
    proc, calls = _deploy(tmp_path, "--hosts", "jetson-01", "--ssh-user=-oProxyCommand=x")
    assert proc.returncode == 2 and calls == []
    _one_error_line(proc.stderr, "--ssh-user")


def test_deploy_accepted_hosts_follow_double_dash(tmp_path):
    proc, calls = _deploy(tmp_path, "--hosts", "ubuntu@jetson-01,10.0.0.5 fe80::1 [fd00::2]",
                          "--release-name", "1.0.0-test")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the stand-in ssh fails
    ssh = [c.split() for c in calls if c.startswith("ssh ") and " -O " not in c]
    dests = sorted(argv[argv.index("--") + 1] for argv in ssh)
    assert dests == ["10.0.0.5", "fd00::2", "fe80::1", "ubuntu@jetson-01"]
