"""``crystal-edge run --config FILE``: the appliance as a service.

The process never outlives systemd's stop timeout (``TimeoutStopSec=30`` in
``systemd/crystal-edge.service``): once a stop began (SIGTERM/SIGINT) or the pipeline
failed (a dead or stuck stage), a guard thread ends the process with
:func:`os._exit` after ``HARD_EXIT_S`` seconds if it has not exited by itself (a thread
hung in a driver call, a sink that does not close), flushing the logs first.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from typing import Any

from edge.clikit import LOG_LEVELS

HELP = ("run the appliance: capture -> segmentation -> batches -> sinks, until SIGTERM "
        "(or --max-frames / --max-batches)")

HARD_EXIT_S = 27.0
"""Seconds from SIGTERM (or a pipeline failure) to a forced exit: under the unit's
``TimeoutStopSec=30``; the pipeline's own drain deadline (20 s) comes first."""

log = logging.getLogger(__name__)


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
    p.add_argument("--log-level", dest="run_log_level", default=None, choices=LOG_LEVELS,
                   help="logging level; overrides [logging] level of the configuration")


def _stop_began(svc: Any) -> float | None:
    """Monotonic time the service began to stop for good (signal or failure), or None."""
    if svc.stopping_since is not None:
        return svc.stopping_since
    pipeline = svc.pipeline
    if pipeline is not None and pipeline.failed is not None:
        svc.stopping_since = time.monotonic()
        return svc.stopping_since
    return None


def _guard(svc: Any, limit_s: float, ended: threading.Event) -> None:
    """Thread body: force the exit ``limit_s`` after the stop began (module docstring);
    ends quietly when the service ended without a stop signal or failure."""
    while True:
        began = _stop_began(svc)
        if began is None and ended.is_set():
            return
        if began is not None and time.monotonic() - began > limit_s:
            break
        time.sleep(0.2)
    stuck = sorted(t.name for t in threading.enumerate()
                   if t.is_alive() and t is not threading.current_thread())
    log.critical("could not stop within %.0f s (threads still running: %s); exiting now "
                 "with status 1", limit_s, ", ".join(stuck) or "none")
    logging.shutdown()
    sys.stderr.flush()
    os._exit(1)


def run(args: argparse.Namespace) -> int:
    from edge.service.config import load_config
    from edge.service.logsetup import setup_logging
    from edge.service.pipeline.app import Service

    cfg = load_config(args.config)
    # The command line wins over [logging] level: `run --log-level` or `crystal-edge
    # --log-level ... run` (a dispatcher option the run command would otherwise ignore).
    setup_logging(cfg.logging, level=args.run_log_level or getattr(args, "log_level", None))
    svc = Service(cfg, max_frames=args.max_frames, max_batches=args.max_batches,
                  config_path=args.config)
    ended = threading.Event()
    threading.Thread(target=_guard, args=(svc, HARD_EXIT_S, ended), name="exit-guard",
                     daemon=True).start()
    try:
        return svc.run()
    finally:
        ended.set()  # after a stop signal or a failure the guard stays armed until exit
