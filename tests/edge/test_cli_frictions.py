"""A newcomer's first hour with the command lines: ``--version``, ``--log-level`` for
``run``, output folders of ``analyze``, and the service's log naming what it watches and
each frame it rejects (the real service as a subprocess for the log lines)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import main as edge_main
from tests.faults.conftest import (  # noqa: F401 (fixtures)
    ROOT,
    jsonl_batches,
    service_factory,
    tiny_model,
    wait_until,
    workdir,
    write_config,
    write_frames,
)


@pytest.mark.parametrize("module, prog", [("edge.cli", "crystal-edge"),
                                          ("trainer.cli", "crystal-train")])
def test_version_prints_the_package_version_and_exits_0(module, prog):
    from importlib.metadata import version

    res = subprocess.run([sys.executable, "-m", module, "--version"], cwd=ROOT, check=False,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"{prog} {version('crystal-psd')}"


def test_run_log_level_parses_and_rejects_unknown_names(capsys):
    from edge.cli import COMMANDS
    from edge.clikit import build_parser

    parser = build_parser("crystal-edge", "", {"run": COMMANDS["run"]})
    args = parser.parse_args(["run", "-c", "x.toml", "--log-level", "DEBUG"])
    assert args.run_log_level == "DEBUG"
    assert parser.parse_args(["--log-level", "ERROR", "run", "-c", "x"]).log_level == "ERROR"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["run", "-c", "x.toml", "--log-level", "LOUD"])
    assert exc.value.code == 2 and "--log-level" in capsys.readouterr().err


def _mask(path: Path) -> None:
    img = np.zeros((240, 320), np.uint8)
    for i in range(4):
        cv2.circle(img, (40 + i * 70, 120), 12, 255, -1)
    assert cv2.imwrite(str(path), img)


@pytest.mark.parametrize("opt, name", [("--json", "r.json"), ("--csv", "r.csv"),
                                       ("--plot", "q3.png")])
def test_analyze_creates_the_folder_of_an_output_file(tmp_path, capsys, opt, name):
    _mask(tmp_path / "m.png")
    out = tmp_path / "new" / "deeper" / name
    rc = edge_main(["analyze", "--masks", str(tmp_path / "m.png"), "--px-size-um", "1.45",
                    opt, str(out)])
    assert rc == 0, capsys.readouterr().err
    assert out.is_file() and out.stat().st_size > 0


def test_opencv_source_names_its_uri_once(caplog):
    from edge.sources.opencv import OpenCVSource, OpenCVSourceConfig

    src = OpenCVSource(OpenCVSourceConfig(uri="rtsp://cam.local/stream"),
                       capture_factory=lambda *a: None)
    with caplog.at_level(logging.INFO, logger="edge.sources.opencv"):
        src.open()
        src.open()  # a restart of the source after a failure
    lines = [r.getMessage() for r in caplog.records if "rtsp://cam.local/stream" in
             r.getMessage()]
    assert len(lines) == 1 and "reading" in lines[0], lines


def test_service_logs_what_it_watches_and_each_rejected_frame_once(
        workdir, tiny_model, service_factory):  # noqa: F811 (fixtures of tests/faults)
    """[logging] level WARNING, ``run --log-level INFO``: the INFO lines appear, so the
    command line wins; the blank frame is named once with its reason and detail."""
    write_config(workdir / "config.toml", model=tiny_model, batch_frames=3,
                 extra='\n[logging]\nlevel = "WARNING"\nformat = "kv"\n')
    write_frames(workdir / "in", ["g0.png", "g1.png"])
    assert cv2.imwrite(str(workdir / "in" / "blank.png"), np.full((240, 320), 200, np.uint8))
    svc = service_factory(args=("--log-level", "INFO"))
    out = workdir / "out.jsonl"
    wait_until(lambda: jsonl_batches(out), 30, "the first batch")
    assert svc.stop() == 0
    batch = jsonl_batches(out)[0]["payload"]["frames"]
    assert {k: v for k, v in batch["rejected_by_reason"].items() if v} == {"blank": 1}, batch
    log = svc.log()
    rejected = [ln for ln in log.splitlines() if "frame rejected" in ln]
    assert len(rejected) == 1, rejected
    assert "blank.png: blank (grey std" in rejected[0] and "level=INFO" in rejected[0]
    watching = [ln for ln in log.splitlines() if "watching" in ln]
    assert len(watching) == 1, watching
    assert (f"watching {workdir / 'in'}" in watching[0] or "watching in" in watching[0])
    assert "recursive: no" in watching[0] and "processed files stay" in watching[0]
    assert "Traceback" not in log
