"""Write ``examples/config.toml`` from the configuration model.

Every section of :class:`edge.service.config.EdgeConfig` and every key appears with its
default and its description as a comment, so the example cannot drift from the code
(``tests/edge/test_example_config.py`` compares the file with :func:`render`). A few keys
show an example value instead (:data:`EXAMPLES`, marked ``# example value``); keys
without a default (None) appear commented out. :data:`HEADER` and :data:`NOTES` are the
hand-written parts.

Run ``python scripts/example_config.py`` after changing a config model; ``--check``
only reports whether the file is current (exit status 1 when not).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(ROOT))

from edge.service.config import EdgeConfig, _toml_value  # noqa: E402

EXAMPLE = ROOT / "examples" / "config.toml"
WIDTH = 88

HEADER = """\
# crystal-edge configuration: a complete, commented example.
#
# Install as /etc/crystal-edge/config.toml (the systemd unit reads it from there).
# Check it with  `crystal-edge check-config /etc/crystal-edge/config.toml`  (prints the
# effective configuration, defaults filled in); every key, its type and meaning:
# `crystal-edge config-schema`. Unknown keys are errors, and so are values of the wrong
# type ("yes" for true, "1883" for 1883). Relative paths are relative to this file's
# directory. Every value below is the default unless its comment says "example value".
#
# Generated from the configuration model by scripts/example_config.py: edit the
# descriptions there (the models) or in that script, not here.
"""

NOTES: dict[str, str] = {
    "source": """\
Where frames come from. type = "folder" (below, the default): image files written by
the camera software. The other types, with their own keys (see `crystal-edge
config-schema`):
  type = "opencv"     uri = "0" (V4L2 /dev/video0) | "/path/clip.mp4" | "rtsp://..." |
                      a GStreamer pipeline ending in appsink, e.g. for a Jetson CSI camera
                      "nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1920,height=1080 !
                       nvvidconv ! video/x-raw,format=BGRx ! videoconvert !
                       video/x-raw,format=BGR ! appsink drop=true max-buffers=2";
                      api, width, height, fps, fourcc, max_fps, on_end,
                      reconnect_initial_s, reconnect_max_s, open_timeout_s
  type = "synthetic"  seed, width, height, count, rate_fps, fraction_um, px_size_um,
                      generator = { ... }  (demos and soak tests)""",
    "decode": "Every frame file (folder source, `crystal-edge analyze`) is checked before "
              "decoding.",
    "sinks.mqtt": "(the old top-level [mqtt] section is still read, with a deprecation "
                  "warning). A host without enabled = true publishes nothing (a warning "
                  "says so).",
}

#: (section, key) -> example value shown instead of the default.
EXAMPLES: dict[tuple[str, str], Any] = {
    ("device", "id"): "crystallizer-01",
    ("device", "description"): "KR-201 cooling crystallizer, flow cell 1",
    ("source", "path"): "/srv/crystal-edge/incoming",
    ("source", "after"): "move",
    ("source", "move_to"): "/srv/crystal-edge/processed",
    ("source", "failed_to"): "/srv/crystal-edge/failed",
    ("model", "path"): "/opt/crystal-psd/current/models/crystal-seg.onnx",
    ("backend", "input_height"): 768,
    ("backend", "input_width"): 1024,
    ("backend", "engine_cache_dir"): "/var/lib/crystal-edge/engines",
    ("state", "dir"): "/var/lib/crystal-edge",
    ("roi", "threshold"): 0.3,
    ("roi", "fixed_circle"): [512.0, 384.0, 400.0],
    ("roi", "fixed_rect"): [0, 0, 1024, 768],
    ("sinks.jsonl", "path"): "/var/lib/crystal-edge/batches.jsonl",
    ("sinks.mqtt", "host"): "mqtt.plant.example",
}


#: Keys without a default (None) whose example value is written active, not commented:
#: the example's ``after = "move"`` needs its ``move_to``.
ACTIVE: set[tuple[str, str]] = {("source", "move_to"), ("source", "failed_to")}


def _comment(text: str) -> list[str]:
    lines: list[str] = []
    for para in text.splitlines():
        if para.startswith(" "):  # hand-aligned lines stay as written
            lines.append(f"# {para}".rstrip())
        else:
            lines += textwrap.wrap(para, WIDTH, initial_indent="# ", subsequent_indent="# ",
                                   break_on_hyphens=False, break_long_words=False)
    return lines


def _key(section: str, key: str, default: Any, description: str) -> list[str]:
    lines = _comment(description)
    example = EXAMPLES.get((section, key))
    if example is None:
        lines.append(f"# {key} = (unset)" if default is None
                     else f"{key} = {_toml_value(default)}")
        return lines
    line = f"{key} = {_toml_value(example)}"
    if default is None and (section, key) not in ACTIVE:
        line = "# " + line
    note = "example value" + ("" if default is None else
                              f" (default {_toml_value(default)})")
    if len(line) + len(note) + 5 <= WIDTH:
        return [*lines, f"{line}   # {note}"]
    return [*lines, f"# {note}:", line]


def _section(name: str, model: BaseModel) -> list[str]:
    """``[name]`` and its keys, then one ``[name.sub]`` per nested model."""
    defaults = model.model_dump(mode="json")
    body = [f"[{name}]", *_comment(NOTES.get(name, ""))]
    subs: list[tuple[str, BaseModel]] = []
    for key, field in type(model).model_fields.items():
        value = getattr(model, key)
        if isinstance(value, BaseModel):
            subs.append((f"{name}.{key}", value))
        else:
            body += _key(name, key, defaults[key], field.description or "")
    out = body if len(body) > 1 or not subs else []
    for sub_name, sub in subs:
        out += ([""] if out else []) + _section(sub_name, sub)
    return out


def render() -> str:
    """The example configuration file's text."""
    cfg = EdgeConfig()
    lines = HEADER.rstrip("\n").splitlines()
    for name in EdgeConfig.model_fields:
        lines += ["", *_section(name, getattr(cfg, name))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true",
                   help="only check that examples/config.toml is current")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = EXAMPLE.read_text(encoding="utf-8") == text
        print(f"{EXAMPLE}: {'current' if current else 'out of date; run ' + sys.argv[0]}")
        return 0 if current else 1
    EXAMPLE.write_text(text, encoding="utf-8")
    print(f"wrote {EXAMPLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
