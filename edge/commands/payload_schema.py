"""``crystal-edge payload-schema``: the JSON Schemas of the MQTT payloads."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.errors import UserError

HELP = "print or write the JSON Schemas of the MQTT payloads (psd, status, health, command)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", type=Path, default=None,
                        help="write <name>.schema.json files into DIR instead of printing")
    parser.add_argument("--name", choices=["psd", "status", "health", "command"],
                        action="append", default=None,
                        help="only this payload (repeatable; default: all)")


def render_all(names: list[str] | None = None) -> dict[str, str]:
    """``{name: schema file text}``; exactly what ``edge/schemas/`` ships."""
    from edge.mqtt.payloads import PAYLOAD_MODELS, json_schema
    selected = names or list(PAYLOAD_MODELS)
    return {n: json.dumps(json_schema(PAYLOAD_MODELS[n]), indent=2) + "\n" for n in selected}


def run(args: argparse.Namespace) -> int:
    texts = render_all(args.name)
    if args.out is None:
        if len(texts) == 1:
            sys.stdout.write(next(iter(texts.values())))
        else:
            merged = {n: json.loads(t) for n, t in texts.items()}
            sys.stdout.write(json.dumps(merged, indent=2) + "\n")
        return 0
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            path = out / f"{name}.schema.json"
            path.write_text(text)
            print(path)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write the schemas: {exc.strerror or exc}") \
            from None
    return 0
