"""``crystal-edge status``: service state, last batch, backlog, backend, engine cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = ("show the running service's state and problems (systemd, status.json, MQTT outbox, "
        "engine cache); --check for monitoring")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, default=None,
        help="the service's state directory (default: $CRYSTAL_EDGE_STATE_DIR, "
             "$STATE_DIRECTORY, /var/lib/crystal-edge if it exists, else "
             "~/.local/state/crystal-edge)")
    parser.add_argument(
        "--config", type=Path, default=None, metavar="FILE",
        help="the service's configuration: its [state] dir (instead of --state-dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--stale-after", type=float, default=None, metavar="SECONDS",
        help="status.json older than this means the service is hung or gone (default: "
             "3x the health interval it records, at least 10 s; 30 s if it records none)")
    parser.add_argument(
        "--outbox-max-reports", type=int, default=100, metavar="N",
        help="more MQTT reports than this waiting: the outbox grows (default 100)")
    parser.add_argument(
        "--outbox-max-age", type=float, default=600.0, metavar="SECONDS",
        help="the oldest waiting MQTT report older than this: the outbox grows (default 600)")
    parser.add_argument(
        "--check", action="store_true",
        help="print one line (OK, or DEGRADED/DOWN: every problem) and exit 1 unless OK "
             "(for monitoring scripts); without it the full report is printed and the exit "
             "code is 0 whenever the report could be made")


def state_dir_from(state_dir: Path | None, config: Path | None) -> Path:
    """The state directory a command reads: ``--state-dir``, else ``--config``'s
    ``[state] dir``, else where the running service keeps it (``resolve_state_dir``)."""
    from edge.service.state import resolve_state_dir

    if state_dir is not None:
        return state_dir
    configured = None
    if config is not None:
        from edge.service.config import load_config

        configured = load_config(config).state.dir
    return resolve_state_dir(configured, find_service=configured is None)


def run(args: argparse.Namespace) -> int:
    from edge.errors import UserError
    from edge.service.status import StatusLimits, collect_status

    if args.stale_after is not None and args.stale_after <= 0:
        raise UserError(f"--stale-after: must be > 0 seconds, got {args.stale_after}")
    if args.outbox_max_reports < 0:
        raise UserError(f"--outbox-max-reports: must be >= 0, got {args.outbox_max_reports}")
    if args.outbox_max_age <= 0:
        raise UserError(f"--outbox-max-age: must be > 0 seconds, got {args.outbox_max_age}")
    limits = StatusLimits(stale_after_s=args.stale_after,
                          outbox_max_reports=args.outbox_max_reports,
                          outbox_max_age_s=args.outbox_max_age)
    if args.state_dir is not None and args.config is not None:
        raise UserError("--state-dir and --config: give one of them")
    state_dir = state_dir_from(args.state_dir, args.config)
    report = collect_status(state_dir, limits=limits)
    if args.json:
        print(json.dumps(report.to_payload(), indent=2, sort_keys=True))
    elif args.check:
        print(report.summary())
    else:
        print(report.to_text())
    return 1 if args.check and not report.ok else 0
