"""``crystal-edge calibrate`` end to end: real image files through the one decoder, the
result line, --json -, --check, --write-config, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge.calibrate.synthetic import bead_frame, micrometer_frame
from edge.cli import main
from edge.service.config import load_config


@pytest.fixture
def micrometer_tif(tmp_path):
    """A 12-bit camera's frame in a 16-bit TIFF."""
    img = micrometer_frame((360, 480), spacing_um=10, px_size_um=0.8, angle_deg=45,
                           blur_px=1.2, noise=0.02, uneven=0.4, bits=16, seed=1) >> 4
    path = tmp_path / "micrometer.tif"
    assert cv2.imwrite(str(path), img.astype(np.uint16))
    return path


def test_micrometer_json_check_and_config(tmp_path, micrometer_tif, capsys):
    config = tmp_path / "edge.toml"
    config.write_text("# skid 4\n[optics]\npx_size_um = 1.45  # vendor value\n")
    check = tmp_path / "check.png"
    rc = main(["calibrate", str(micrometer_tif), "--micrometer", "10", "--json", "-",
               "--check", str(check), "--write-config", str(config)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    payload = json.loads(out)
    assert payload["method"] == "micrometer" and payload["image"] == "micrometer.tif"
    assert payload["px_size_um"] == pytest.approx(0.8, rel=0.005)
    assert 0 < payload["uncertainty_pct"] < 0.5
    assert payload["found"]["lines"] >= 20
    assert payload["time"].endswith("Z")
    # the result line goes to stderr with --json -
    assert re.match(r".*micrometer\.tif: px_size_um = 0\.(79|80)\d* \+- [\d.e-]+ % "
                    r"\(micrometer", err)
    frame = cv2.imread(str(check))
    assert frame.shape[0] > 360 and frame.shape[1] == 480  # the frame under a text band
    cfg = load_config(config)
    assert cfg.optics.px_size_um == pytest.approx(payload["px_size_um"], rel=1e-5)
    assert cfg.optics.calibrated_at is not None
    assert "stage micrometer 10 um" in cfg.optics.calibration
    text = config.read_text()
    assert text.startswith("# skid 4\n[optics]\n")
    assert "  # vendor value\n" in text


def test_beads_json_file(tmp_path, capsys):
    path = tmp_path / "beads.png"
    cv2.imwrite(str(path), bead_frame((400, 520), diameter_um=20, px_size_um=0.7,
                                      n_beads=25, seed=3))
    out_json = tmp_path / "cal.json"
    assert main(["calibrate", str(path), "--beads", "20", "--json", str(out_json)]) == 0
    out, _ = capsys.readouterr()
    assert re.match(rf"{re.escape(str(path))}: px_size_um = 0\.(69|70)\d* \+- ", out)
    payload = json.loads(out_json.read_text())
    assert payload["px_size_um"] == pytest.approx(0.7, rel=0.005)
    assert payload["found"]["beads"] >= 20


@pytest.mark.parametrize("frame, option, message", [
    (np.full((200, 300), 90, np.uint8), "--micrometer", "blank frame"),
    (None, "--micrometer", "no periodic line pattern found (peak contrast"),
    (bead_frame((300, 400), diameter_um=30, px_size_um=1.0, n_beads=2, n_touching=0),
     "--beads", "found 2 beads, need >= 5"),
])
def test_frames_that_cannot_give_a_result(tmp_path, capsys, frame, option, message):
    if frame is None:
        frame = np.random.default_rng(0).integers(0, 255, (200, 300), dtype=np.uint8)
    path = tmp_path / "f.png"
    cv2.imwrite(str(path), frame)
    assert main(["calibrate", str(path), option, "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"crystal-edge: error: {path}: {message}")
    assert err.count("\n") == 1


def test_user_mistakes_are_one_line(tmp_path, capsys):
    assert main(["calibrate", str(tmp_path / "missing.png"), "--beads", "20"]) == 2
    assert "missing.png: cannot read" in capsys.readouterr().err
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), micrometer_frame((200, 300)))
    assert main(["calibrate", str(path), "--micrometer", "-3"]) == 2
    assert "--micrometer: must be a length" in capsys.readouterr().err
    assert main(["calibrate", str(path), "--micrometer", "10", "--check",
                 str(tmp_path / "no" / "c.png")]) == 2
    assert "cannot write the check image" in capsys.readouterr().err


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    path = tmp_path / "blank.png"
    cv2.imwrite(str(path), np.zeros((100, 100), np.uint8))
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "calibrate", str(path),
                           "--beads", "20"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"crystal-edge: error: {path}: blank frame (all black)"]
