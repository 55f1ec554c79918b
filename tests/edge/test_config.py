"""The configuration file: loading, one-line errors, effective config, schema, example."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest

from edge.cli import main
from edge.errors import UserError
from edge.service.config import EdgeConfig, config_schema, config_toml, load_config, parse_config
from edge.service.state import resolve_state_dir
from edge.sources.folder import FolderSourceConfig
from edge.sources.opencv import OpenCVSourceConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "config.toml"


def _load(tmp_path: Path, text: str) -> EdgeConfig:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return load_config(p)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(UserError) as ei:
        _load(tmp_path, text)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(str(tmp_path / "config.toml") + ": ")
    return msg


def test_defaults_and_sections(tmp_path):
    cfg = _load(tmp_path, "")
    assert isinstance(cfg.source, FolderSourceConfig)
    assert cfg.batch.frames == 100 and cfg.optics.px_size_um == 1.45
    assert cfg.backend.name == "auto" and cfg.sinks.mqtt.enabled is False
    assert cfg.metrics.enabled is False and cfg.logging.format == "auto"
    assert cfg.measure.min_area_px == 20 and cfg.psd.class_width_um == 10.0


def test_values_and_relative_paths(tmp_path):
    cfg = _load(tmp_path, """
[device]
id = "cryst-7"
[source]
type = "opencv"
uri = "rtsp://cam/stream"
max_fps = 2.5
[model]
path = "models/m.onnx"
inference_scale = "auto"
[batch]
frames = 50
seconds = 120
[state]
dir = "state"
[sinks.jsonl]
path = "out/batches.jsonl"
""")
    assert isinstance(cfg.source, OpenCVSourceConfig) and cfg.source.max_fps == 2.5
    assert cfg.model.path == tmp_path / "models" / "m.onnx"
    assert cfg.model.inference_scale == "auto"
    assert cfg.state.dir == tmp_path / "state"
    assert cfg.sinks.jsonl.path == str(tmp_path / "out" / "batches.jsonl")
    assert cfg.device_id() == "cryst-7"
    assert (cfg.batch.frames, cfg.batch.seconds) == (50, 120)
    # stdout stays stdout
    assert _load(tmp_path, '[sinks.jsonl]\npath = "-"\n').sinks.jsonl.path == "-"


def test_unknown_key(tmp_path):
    msg = _error(tmp_path, "[batch]\nframez = 3\n")
    assert "batch.framez: unknown key" in msg
    msg = _error(tmp_path, '[source]\ntype = "folder"\npol_s = 1\n')
    assert "source.pol_s: unknown key" in msg
    msg = _error(tmp_path, "[batchh]\nframes = 3\n")
    assert "batchh: unknown key" in msg


def test_wrong_type_and_range(tmp_path):
    msg = _error(tmp_path, '[batch]\nframes = "ten"\n')
    assert "batch.frames:" in msg and "integer" in msg and "'ten'" in msg
    msg = _error(tmp_path, "[optics]\npx_size_um = -1.0\n")
    assert "optics.px_size_um:" in msg and "greater than 0" in msg
    msg = _error(tmp_path, '[source]\ntype = "folder"\npoll_s = "fast"\n')
    assert "source.poll_s:" in msg
    msg = _error(tmp_path, '[source]\ntype = "webcam"\n')
    assert "source" in msg and "folder, opencv, synthetic" in msg
    msg = _error(tmp_path, '[source]\ntype = "folder"\nafter = "move"\n')
    assert "move_to" in msg
    msg = _error(tmp_path, "[batch]\nframes = 0\n[optics]\npx_size_um = 0\n")
    assert "(and 1 more problem)" in msg


def test_missing_file_and_syntax_error(tmp_path):
    with pytest.raises(UserError, match=r"nope\.toml: configuration file not found"):
        load_config(tmp_path / "nope.toml")
    msg = _error(tmp_path, "[batch]\nframes = 3\nseconds = = 4\n")
    assert "TOML syntax error" in msg and "line 3" in msg
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe[batch]")
    with pytest.raises(UserError, match=r"bin\.toml: not UTF-8"):
        load_config(tmp_path / "bin.toml")


def test_effective_config_round_trips_through_toml(tmp_path):
    cfg = _load(tmp_path, '[device]\nid = "x"\n[source]\ntype = "synthetic"\ncount = 5\n'
                          '[source.generator]\ndensity = 0.1\n[batch]\nseconds = 30.5\n')
    text = config_toml(cfg)
    again = parse_config(tomllib.loads(text))
    assert again.model_dump(mode="json") == cfg.model_dump(mode="json")
    assert "# dir = (unset)" in text  # None values are shown, commented


def test_state_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("CRYSTAL_EDGE_STATE_DIR", raising=False)
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/crystal-edge")
    assert resolve_state_dir(None) == Path("/var/lib/crystal-edge")
    assert resolve_state_dir(tmp_path / "cfg") == tmp_path / "cfg"
    monkeypatch.setenv("CRYSTAL_EDGE_STATE_DIR", str(tmp_path / "env"))
    assert resolve_state_dir(tmp_path / "cfg") == tmp_path / "env"
    monkeypatch.delenv("CRYSTAL_EDGE_STATE_DIR")
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_state_dir(None) == tmp_path / ".local" / "state" / "crystal-edge"


def test_schema_describes_every_key_and_accepts_the_example():
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    undocumented = []
    for name, node in [("EdgeConfig", schema), *schema.get("$defs", {}).items()]:
        for key, prop in node.get("properties", {}).items():
            if "description" not in prop:
                undocumented.append(f"{name}.{key}")
    assert undocumented == []
    data = tomllib.loads(EXAMPLE.read_text())
    jsonschema.validate(data, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"batch": {"framez": 1}}, schema)


def test_example_config_is_complete():
    """Every section of EdgeConfig appears in the example, and it loads."""
    data = tomllib.loads(EXAMPLE.read_text())
    assert set(data) == set(EdgeConfig.model_fields)
    cfg = load_config(EXAMPLE)
    assert cfg.device.id and cfg.source.type == "folder"


def test_cli_check_config_and_schema(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text('[batch]\nframes = 7\n')
    assert main(["check-config", str(p), "--format", "json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["batch"]["frames"] == 7
    assert out.err.strip().endswith(f"{p}: OK")
    assert main(["check-config", str(p)]) == 0
    assert tomllib.loads(capsys.readouterr().out)["batch"]["frames"] == 7
    p.write_text('[batch]\nframes = 7\n[sinks]\njsonl = { pathh = "x" }\n')
    assert main(["check-config", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"crystal-edge: error: {p}: sinks.jsonl.pathh: unknown key " \
                  "(misspelt? see examples/config.toml or `crystal-edge config-schema`)"
    assert main(["run", "--config", str(p)]) == 2
    assert "sinks.jsonl.pathh: unknown key" in capsys.readouterr().err
    assert main(["check-config", "-q", str(EXAMPLE)]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["config-schema"]) == 0
    assert "properties" in json.loads(capsys.readouterr().out)
    p.write_text('[model]\npath = "models/missing.onnx"\n')
    assert main(["check-config", "--check-files", str(p)]) == 2
    assert "model.path" in capsys.readouterr().err
    # the default model is found from anywhere; then the missing folder is the problem
    p.write_text("")
    assert main(["check-config", "--check-files", str(p)]) == 2
    assert "source.path" in capsys.readouterr().err


def test_source_without_type_is_the_folder(tmp_path):
    cfg = _load(tmp_path, '[source]\npath = "in"\n')
    assert isinstance(cfg.source, FolderSourceConfig)
    assert Path(cfg.source.path) == tmp_path / "in"


@pytest.mark.parametrize("section, key", [("sinks.mqtt", "sinks.mqtt"), ("mqtt", "mqtt")])
def test_mqtt_host_without_enabled_warns_once(tmp_path, caplog, section, key):
    p = tmp_path / "config.toml"
    p.write_text(f'[{section}]\nhost = "broker.plant"\n')
    want = f"{key}.host is set but {key}.enabled is false"
    # The start-up door (crystal-edge run loads the file with load_config) ...
    with caplog.at_level("WARNING"):
        assert load_config(p).sinks.mqtt.enabled is False
    assert sum(want in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    # ... and check-config.
    with caplog.at_level("WARNING"):
        assert main(["check-config", "-q", str(p)]) == 0
    assert sum(want in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    p.write_text(f'[{section}]\nhost = "broker.plant"\nenabled = false\n')
    with caplog.at_level("WARNING"):
        load_config(p)
    assert not any("host is set" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("text, key, kind", [
    ('[sinks.mqtt]\nenabled = "yes"\n', "sinks.mqtt.enabled", "boolean"),
    ('[mqtt]\nport = "1883"\n', "mqtt.port", "integer"),
    ("[batch]\nframes = 10.0\n", "batch.frames", "integer"),
    ('[optics]\npx_size_um = "1.45"\n', "optics.px_size_um", "number"),
    ("[measure]\nfill_holes = 1\n", "measure.fill_holes", "boolean"),
    ('[source]\nrecursive = "true"\n', "source.recursive", "boolean"),
    ('[metrics]\nport = "9464"\n', "metrics.port", "integer"),
])
def test_wrong_types_are_refused_not_coerced(tmp_path, text, key, kind):
    msg = _error(tmp_path, text)
    assert f": {key}: " in msg and kind in msg


def test_strict_types_keep_toml_forms(tmp_path):
    cfg = _load(tmp_path, '[optics]\npx_size_um = 2\n[roi]\nmode = "fixed"\n'
                          "fixed_circle = [512, 384, 400]\n[model]\npath = \"m.onnx\"\n")
    assert cfg.optics.px_size_um == 2.0 and cfg.roi.fixed_circle == (512.0, 384.0, 400.0)
    assert Path(cfg.model.path) == tmp_path / "m.onnx"
