"""The sink registry: ``[sinks.<name>]`` sections, build order, ``required``, and the old
top-level ``[mqtt]`` section (read with one deprecation warning)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge.cli import main
from edge.errors import UserError
from edge.mqtt.config import MqttConfig
from edge.service.config import load_config
from edge.sinks import SINKS, SinksConfig, build_sinks, required_sinks
from edge.sinks.jsonl import JsonlSink, JsonlSinkConfig

MQTT = '\nenabled = true\nhost = "127.0.0.1"\nport = 1\ndevice_id = "dev9"\n'


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_every_registered_sink_has_a_section_with_enabled_and_required():
    assert list(SINKS) == ["jsonl", "mqtt", "history"]
    assert set(SinksConfig.model_fields) == set(SINKS)
    assert SINKS["jsonl"].config is JsonlSinkConfig and SINKS["mqtt"].config is MqttConfig
    for name, entry in SINKS.items():
        field = SinksConfig.model_fields[name]
        assert field.annotation is entry.config and field.description
        assert entry.config.model_config.get("extra") == "forbid"
        assert {"enabled", "required"} <= set(entry.config.model_fields)
        for key, f in entry.config.model_fields.items():
            assert f.description, f"sinks.{name}.{key} has no description"


def test_required_defaults_and_build_order(tmp_path):
    default = SinksConfig()
    assert default.jsonl.enabled and default.jsonl.required
    assert not default.mqtt.enabled and default.mqtt.required
    assert required_sinks(default) == {"jsonl"}

    both = SinksConfig(mqtt={"enabled": True, "device_id": "d", "port": 1})
    sinks = build_sinks(both, state_dir=tmp_path, ident={"name": "m", "sha256": "ab"})
    assert [s.name for s in sinks] == ["jsonl", "mqtt"]  # registry order: not opened
    assert isinstance(sinks[0], JsonlSink)
    assert sinks[1].health()["connection"] == "disconnected"
    assert required_sinks(both) == {"jsonl", "mqtt"}
    optional = SinksConfig(mqtt={"enabled": True, "required": False})
    assert required_sinks(optional) == {"jsonl"}
    only_mqtt = SinksConfig(jsonl={"enabled": False}, mqtt={"enabled": True, "port": 1})
    assert [s.name for s in build_sinks(only_mqtt, state_dir=tmp_path)] == ["mqtt"]
    with pytest.raises(UserError, match=r"^sinks: no sink enabled"):
        build_sinks(SinksConfig(jsonl={"enabled": False}), state_dir=tmp_path)


def test_unknown_sink_is_a_one_line_error_naming_it(tmp_path, capsys):
    p = _write(tmp_path, "[sinks.kafka]\nenabled = true\n")
    assert main(["check-config", str(p)]) == 2
    err = capsys.readouterr().err
    assert err == (f"crystal-edge: error: {p}: sinks.kafka: unknown sink; "
                   "one of jsonl, mqtt, history\n")


def test_new_section_is_read_without_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        cfg = load_config(_write(tmp_path, "[sinks.mqtt]" + MQTT))
    assert cfg.sinks.mqtt.enabled and cfg.sinks.mqtt.device_id == "dev9"
    assert cfg.device_id() == "dev9"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_old_mqtt_section_is_read_with_one_deprecation_warning(tmp_path, caplog):
    p = _write(tmp_path, '[sinks.jsonl]\npath = "out.jsonl"\n\n[mqtt]' + MQTT
               + 'ca_file = "ca.pem"\n')
    with caplog.at_level(logging.WARNING):
        cfg = load_config(p)
    assert cfg.sinks.mqtt.enabled and cfg.sinks.mqtt.port == 1
    assert cfg.sinks.mqtt.ca_file == str(tmp_path / "ca.pem")  # relative to the file
    assert cfg.sinks.jsonl.path == str(tmp_path / "out.jsonl")
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [f"{p}: section [mqtt] is deprecated, read as [sinks.mqtt]; rename it "
                      "to [sinks.mqtt]"]


def test_old_mqtt_section_errors_name_its_keys(tmp_path):
    with pytest.raises(UserError, match=r"config\.toml: mqtt\.hots: unknown key"):
        load_config(_write(tmp_path, '[mqtt]\nhots = "x"\n'))


def test_old_and_new_mqtt_sections_together_are_a_one_line_error(tmp_path, capsys):
    p = _write(tmp_path, "[mqtt]" + MQTT + "\n[sinks.mqtt]" + MQTT)
    assert main(["check-config", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err == (f"crystal-edge: error: {p}: [mqtt] and [sinks.mqtt] are both given; "
                   "[mqtt] is the old name of [sinks.mqtt]: keep only [sinks.mqtt]\n")


def test_effective_config_and_schema_show_the_new_section(tmp_path, capsys):
    p = _write(tmp_path, "[mqtt]" + MQTT)
    assert main(["check-config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "[sinks.mqtt]" in out and "\n[mqtt]" not in out
    assert main(["config-schema"]) == 0
    schema = capsys.readouterr().out
    assert '"SinksConfig"' in schema and '"MqttConfig"' in schema
