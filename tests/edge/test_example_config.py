"""examples/config.toml is generated from the configuration model and cannot drift."""

from __future__ import annotations

import sys
from pathlib import Path

from edge.measure import MeasureConfig
from edge.service.config import EdgeConfig, load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import example_config  # noqa: E402


def test_example_is_the_generators_output():
    """Fails when a model's default or description changed without regenerating the file:
    run `python scripts/example_config.py`."""
    assert example_config.EXAMPLE.read_text(encoding="utf-8") == example_config.render()
    assert example_config.main(["--check"]) == 0


def test_example_shows_every_key_with_its_default():
    data = tomllib.loads(example_config.EXAMPLE.read_text(encoding="utf-8"))
    measure = MeasureConfig()
    assert data["measure"]["h_rel"] == measure.h_rel
    assert data["measure"]["circularity_min"] == measure.circularity_min
    defaults = EdgeConfig().model_dump(mode="json")
    text = example_config.EXAMPLE.read_text(encoding="utf-8")
    for section, keys in defaults.items():
        tables = keys.items() if section == "sinks" else [(None, keys)]
        for sub, sub_keys in tables:
            name = f"{section}.{sub}" if sub else section
            file_keys = data[section][sub] if sub else data[section]
            for key, value in sub_keys.items():
                if (name, key) in example_config.EXAMPLES:
                    continue
                if value is None:
                    assert f"# {key} = (unset)" in text, f"{name}.{key}"
                else:
                    assert file_keys[key] == value, f"{name}.{key}"


def test_example_loads_without_warnings(caplog):
    with caplog.at_level("WARNING"):
        cfg = load_config(example_config.EXAMPLE)
    assert cfg.source.type == "folder" and cfg.sinks.mqtt.enabled is False
    assert not caplog.records
