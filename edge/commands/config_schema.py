"""``crystal-edge config-schema``: the JSON Schema of the configuration file."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "print the JSON Schema of the configuration file (every key, type, default, meaning)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", metavar="FILE",
                   help="write the schema to FILE instead of standard output")


def run(args: argparse.Namespace) -> int:
    from edge.errors import UserError
    from edge.service.config import config_schema

    text = json.dumps(config_schema(), indent=2) + "\n"
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise UserError(f"--output {args.output}: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(text)
    return 0
