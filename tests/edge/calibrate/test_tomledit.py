"""``--write-config``'s edit: three keys of [optics] change, every other line stays, the
file still loads as a configuration, and a file that would not load is left alone."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from edge.calibrate import set_optics, write_config
from edge.errors import UserError
from edge.service.config import load_config

NOW = datetime(2026, 12, 1, 13, 45, 7, tzinfo=timezone.utc)

CONFIG = """\
# crystal-edge configuration of skid 4
[device]
id = "skid-4"   # the plant's tag

# the microscope
[optics]
# set from the vendor's sheet
px_size_um = 1.45  # um per pixel, see the commissioning report
calibration = "old # value"   # who knows

[psd]
# a comment after the optics table
"""


def test_existing_keys_are_rewritten_in_place_with_their_comments():
    out = set_optics(CONFIG, {"px_size_um": 1.2345, "calibrated_at": NOW,
                              "calibration": "beads 20 um"})
    lines = out.splitlines()
    assert "px_size_um = 1.2345  # um per pixel, see the commissioning report" in lines
    assert 'calibration = "beads 20 um"   # who knows' in lines
    i = lines.index("calibrated_at = 2026-12-01T13:45:07Z")
    assert lines[i - 1].startswith("px_size_um") or lines[i - 1].startswith("calibration")
    changed = {"px_size_um", "calibration", "calibrated_at"}
    kept = [ln for ln in lines if ln.split(" =")[0] not in changed]
    assert kept == [ln for ln in CONFIG.splitlines() if ln.split(" =")[0] not in changed]


def test_a_missing_table_is_added_at_the_end():
    out = set_optics('[device]\nid = "a"', {"px_size_um": 2.0})
    assert out == '[device]\nid = "a"\n\n[optics]\npx_size_um = 2.0\n'
    assert set_optics("", {"px_size_um": 2.0}) == "[optics]\npx_size_um = 2.0\n"


def test_written_file_loads_with_the_values(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text(CONFIG)
    path.chmod(0o640)
    write_config(path, 0.987654321, "stage micrometer 10 um, m.png, +-0.01 %", now=NOW)
    cfg = load_config(path)
    assert cfg.optics.px_size_um == 0.987654
    assert cfg.optics.calibrated_at == NOW
    assert cfg.optics.calibration == "stage micrometer 10 um, m.png, +-0.01 %"
    text = path.read_text()
    assert "# crystal-edge configuration of skid 4\n" in text
    assert "# a comment after the optics table\n" in text
    assert path.stat().st_mode & 0o777 == 0o640
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_a_new_file_is_created(tmp_path):
    path = tmp_path / "new.toml"
    write_config(path, 1.5, "beads 20 um", now=NOW)
    assert load_config(path).optics.px_size_um == 1.5


def test_a_file_that_would_not_load_is_left_unchanged(tmp_path):
    path = tmp_path / "bad.toml"
    bad = "[optics]\npx_size_um = 1.0\nnot_a_key = 3\n"
    path.write_text(bad)
    with pytest.raises(UserError, match=r"bad\.toml.*not_a_key.*left unchanged"):
        write_config(path, 1.5, "beads", now=NOW)
    assert path.read_text() == bad
    assert list(tmp_path.iterdir()) == [path]


def test_a_dotted_key_form_is_refused(tmp_path):
    path = tmp_path / "dotted.toml"
    path.write_text("optics.px_size_um = 1.0\n")
    with pytest.raises(UserError, match=r"dotted\.toml: .*by hand"):
        write_config(path, 1.5, "beads", now=NOW)
    assert path.read_text() == "optics.px_size_um = 1.0\n"
