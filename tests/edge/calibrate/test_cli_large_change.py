"""`calibrate --write-config` over a configured pixel size: a result that differs by more
than 10 % (index lines taken for the division give 2, 5 or 10 times the period) is
written, and a note on stderr says so and points at the check image; a recalibration of
the same optics says nothing more than the result line."""

from __future__ import annotations

import cv2

from edge.calibrate.synthetic import micrometer_frame
from edge.cli import main


def _frame(tmp_path, px):
    path = tmp_path / "micrometer.png"
    img = micrometer_frame((360, 480), spacing_um=10, px_size_um=px, angle_deg=30, seed=2)
    assert cv2.imwrite(str(path), img)
    return path


def test_a_large_change_of_the_configured_pixel_size_is_noted(tmp_path, capsys):
    config = tmp_path / "site.toml"
    config.write_text("[optics]\npx_size_um = 7.25\n")
    assert main(["calibrate", str(_frame(tmp_path, 1.45)), "--micrometer", "10",
                 "--write-config", str(config)]) == 0
    err = capsys.readouterr().err
    assert "note:" in err and "px_size_um 7.25 -> 1.45" in err and "(x0.2)" in err, err
    assert "--check image" in err


def test_a_recalibration_of_the_same_optics_is_quiet(tmp_path, capsys):
    config = tmp_path / "site.toml"
    config.write_text("[optics]\npx_size_um = 1.46\n")
    assert main(["calibrate", str(_frame(tmp_path, 1.45)), "--micrometer", "10",
                 "--write-config", str(config)]) == 0
    assert "note:" not in capsys.readouterr().err
