"""``crystal-edge run --config FILE``: the appliance as a service."""

from __future__ import annotations

import argparse

HELP = ("run the appliance: capture -> segmentation -> batches -> sinks, until SIGTERM "
        "(or --max-frames / --max-batches)")


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, metavar="FILE",
                   help="configuration file (TOML); see examples/config.toml")
    p.add_argument("--max-frames", type=_positive, default=None, metavar="N",
                   help="stop after N frames from the source (the open batch is closed)")
    p.add_argument("--max-batches", type=_positive, default=None, metavar="N",
                   help="stop after N closed batches (frames taken after the N-th are not "
                        "acknowledged: a folder source reads them again next start)")


def run(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.logsetup import setup_logging
    from edge.pipeline.app import Service

    cfg = load_config(args.config)
    setup_logging(cfg.logging)
    return Service(cfg, max_frames=args.max_frames, max_batches=args.max_batches,
                   config_path=args.config).run()
