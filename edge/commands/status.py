"""``crystal-edge status``: service state, last batch, backlog, backend, engine cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "show the running service's state (systemd, status.json, MQTT outbox, engine cache)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, default=None,
        help="the service's state directory (default: $CRYSTAL_EDGE_STATE_DIR, "
             "$STATE_DIRECTORY, /var/lib/crystal-edge if it exists, else "
             "~/.local/state/crystal-edge)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--stale-after", type=float, default=None, metavar="SECONDS",
        help="status.json older than this is stale (default 30)")
    parser.add_argument(
        "--check", action="store_true",
        help="exit 1 unless the service is active, status.json is fresh and healthy "
             "(for monitoring scripts); without it the exit code is 0 whenever the "
             "report could be made")


def run(args: argparse.Namespace) -> int:
    from edge.errors import UserError
    from edge.status import DEFAULT_STALE_AFTER_S, collect_status, default_state_dir

    stale = DEFAULT_STALE_AFTER_S if args.stale_after is None else args.stale_after
    if stale <= 0:
        raise UserError(f"--stale-after: must be > 0 seconds, got {stale}")
    state_dir = args.state_dir if args.state_dir is not None else default_state_dir()
    report = collect_status(state_dir, stale_after_s=stale)
    if args.json:
        print(json.dumps(report.to_payload(), indent=2, sort_keys=True))
    else:
        print(report.to_text())
    return 1 if args.check and not report.ok else 0
