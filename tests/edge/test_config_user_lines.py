"""What a person sees from `check-config` for mistakes that cross parts: the page's
access rule and token file, the class grid's ordering (one line each, no pydantic prefix),
and `--check-files` catching what `run` would refuse only after loading the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import UserError
from edge.service.config import check_files, load_config

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "crystal-seg.onnx"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, key", [
    ('[web]\nenabled = true\nhost = "0.0.0.0"\n', "web:"),
    ("[psd]\nclass_min_um = 500\nclass_max_um = 100\n", "psd.class_max_um:"),
])
def test_model_level_checks_read_without_pydantic_prefix(tmp_path, text, key):
    with pytest.raises(UserError) as exc:
        load_config(_write(tmp_path, text))
    line = str(exc.value)
    assert key in line and "\n" not in line
    assert "Value error" not in line


@pytest.mark.skipif(not MODEL.exists(), reason="bundled model absent")
def test_check_files_reads_the_page_token(tmp_path):
    text = (f'[model]\npath = "{MODEL}"\n[source]\ntype = "synthetic"\n'
            '[web]\nenabled = true\nhost = "0.0.0.0"\ntoken_file = "missing-token"\n')
    cfg = load_config(_write(tmp_path, text))
    with pytest.raises(UserError, match=r"\[web\] token_file .*missing-token"):
        check_files(cfg)
    (tmp_path / "missing-token").write_text("short\n")
    with pytest.raises(UserError, match="at least 8 characters"):
        check_files(cfg)
    (tmp_path / "missing-token").write_text("a-long-enough-token\n")
    check_files(cfg)
