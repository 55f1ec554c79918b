"""``crystal-edge check-config FILE``: validate a configuration, print the effective one."""

from __future__ import annotations

import argparse
import sys

HELP = "validate a configuration file and print the effective configuration (defaults filled in)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="FILE", help="configuration file (TOML)")
    p.add_argument("--format", choices=["toml", "json"], default="toml",
                   help="output format of the effective configuration (default toml)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print nothing when the file is valid (exit status only)")
    p.add_argument("--check-files", action="store_true",
                   help="also check that the model (with its metadata) and the folder "
                        "source's directory exist")


def run(args: argparse.Namespace) -> int:
    from edge.service.config import check_files, config_json, config_toml, load_config

    cfg = load_config(args.config)
    if args.check_files:
        check_files(cfg)
    if args.quiet:
        return 0
    sys.stdout.write(config_json(cfg) + "\n" if args.format == "json" else config_toml(cfg))
    print(f"{args.config}: OK", file=sys.stderr)
    return 0
