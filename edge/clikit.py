"""Shared plumbing for the ``crystal-edge`` and ``crystal-train`` command dispatchers.

A command is a module with ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Dispatchers list their commands explicitly (name -> module path)
and import a command's module only when it is used, so a missing optional dependency
of one command (torch, onnxruntime) never breaks the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from edge.errors import UserError

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def package_version() -> str:
    """The installed version of the ``crystal-psd`` distribution (``unknown`` when the
    package runs from a source tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crystal-psd")
    except PackageNotFoundError:
        return "unknown"


def build_parser(prog: str, description: str, commands: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument(
        "--log-level", default=None, choices=LOG_LEVELS,
        help="logging level for messages on stderr (default INFO; for 'run' it overrides "
             "[logging] level of the configuration)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_path in commands.items():
        module = importlib.import_module(module_path)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def dispatch(prog: str, description: str, commands: dict[str, str],
             argv: Sequence[str] | None = None) -> int:
    parser = build_parser(prog, description, commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level or "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (`crystal-edge trend | head`): stop quietly, and
        # keep the interpreter's final flush from raising it again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
