"""``crystal-edge trend``: x10,3 / x50,3 / x90,3 (with the 95 % interval of x50,3),
crystals per frame and agglomerate fraction over time, from the appliance's batch history
or a JSON-lines sink file, as a PNG and/or CSV (the page's trends, offline)."""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.errors import UserError

HELP = ("trends of x10,3/x50,3/x90,3, crystals per frame and agglomerate fraction from the "
        "batch history (or a JSON-lines file) as PNG and/or CSV")

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", default=None, metavar="AGE|ISO",
        help="only batches that ended since then: an age (90m, 6h, 2d) or an ISO 8601 time "
             "(UTC unless it has an offset); default: all")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--state-dir", type=Path, default=None,
                     help="the service's state directory holding batch_history.sqlite3 "
                          "(default: the config's [state] dir, else as `status` finds it)")
    src.add_argument("--jsonl", type=Path, default=None, metavar="FILE",
                     help="read the psd lines of a JSON-lines sink file instead")
    parser.add_argument("--config", type=Path, default=None,
                        help="the service's configuration (for its [state] dir)")
    parser.add_argument("--plot", type=Path, default=None, metavar="PNG",
                        help="write the trend plot here")
    parser.add_argument("--csv", type=Path, default=None, metavar="CSV",
                        help="write one row per batch here ('-' = stdout); without --plot "
                             "and --csv the CSV goes to stdout")


def parse_since(text: str, *, now: float | None = None) -> float:
    """UNIX time of ``--since``: an age ``<number><s|m|h|d>`` before ``now``, or ISO 8601.

    >>> parse_since("2h", now=10_000.0)
    2800.0
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if m:
        return (time.time() if now is None else now) - float(m[1]) * _UNITS[m[2]]
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--since {text!r}: not an age (90m, 6h, 2d) or an ISO 8601 "
                        "time") from None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def load_payloads(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """The psd payloads the options name, and where they came from."""
    from edge.sinks.history import HISTORY_FILE, read_history
    from edge.web.payloads import jsonl_payloads

    if args.jsonl is not None:
        try:
            return jsonl_payloads(args.jsonl), str(args.jsonl)
        except OSError as exc:
            raise UserError(f"--jsonl {args.jsonl}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise UserError(f"--jsonl {exc}") from None
    from edge.commands.status import state_dir_from

    path = Path(state_dir_from(args.state_dir, args.config)) / HISTORY_FILE
    if not path.is_file():
        raise UserError(f"{path}: no batch history there (the service keeps it with [web] "
                        "enabled or [sinks.history] enabled = true); or use --jsonl FILE")
    return read_history(path), str(path)


def trend_rows(payloads: list[dict[str, Any]], *, since: float | None = None
               ) -> list[dict[str, Any]]:
    """Trend rows (:data:`edge.web.payloads.TREND_COLUMNS`) of the payloads, by end time."""
    from edge.web.payloads import trend_row

    rows = [trend_row(p) for p in payloads]
    rows = [r for r in rows if r["t_end_s"] is not None
            and (since is None or r["t_end_s"] >= since)]
    return sorted(rows, key=lambda r: (r["t_end_s"], r["batch_id"] or 0))


def write_csv(rows: list[dict[str, Any]], path: Path | None) -> None:
    from edge.web.payloads import TREND_COLUMNS

    def emit(fh: Any) -> None:
        w = csv.DictWriter(fh, fieldnames=list(TREND_COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows({k: ("" if r[k] is None else r[k]) for k in TREND_COLUMNS} for r in rows)

    if path is None or str(path) == "-":
        emit(sys.stdout)
        return
    try:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            emit(fh)
    except OSError as exc:
        raise UserError(f"--csv {path}: cannot write: {exc.strerror or exc}") from None


def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float("nan") if r[key] is None else float(r[key]) for r in rows]


def plot_trend(rows: list[dict[str, Any]], path: Path, *, title: str = "", dpi: int = 110
               ) -> Path:
    """PNG: sizes with the x50,3 95 % band (top), crystals per frame and agglomerate
    fraction (bottom), against the batches' end time (UTC)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = [datetime.fromtimestamp(r["t_end_s"], timezone.utc) for r in rows]
    fig = Figure(figsize=(9.0, 6.0))
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(2, 1, sharex=True)
    ax.fill_between(t, _series(rows, "x50_3_ci95_low_um"), _series(rows, "x50_3_ci95_high_um"),
                    color="tab:blue", alpha=0.2, lw=0, label="x50,3 95 % interval")
    for key, colour, lw in (("x10_3_um", "tab:cyan", 1.2), ("x50_3_um", "tab:blue", 2.0),
                            ("x90_3_um", "tab:purple", 1.2)):
        ax.plot(t, _series(rows, key), "-", color=colour, lw=lw, marker=".",
                label=key.replace("_um", "").replace("_", ","))
    ax.set_ylabel("size / µm")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncols=4)
    ax.set_title(title or f"{len(rows)} batches")
    bx.plot(t, _series(rows, "crystals_per_frame"), "-", color="tab:green", marker=".")
    bx.set_ylabel("crystals / frame", color="tab:green")
    cx = bx.twinx()
    cx.plot(t, _series(rows, "agglomerate_fraction"), "-", color="tab:orange", marker=".")
    cx.set_ylabel("agglomerate fraction", color="tab:orange")
    cx.set_ylim(0, 1)
    bx.grid(True, alpha=0.3)
    bx.set_xlabel("batch end (UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=dpi, format="png")
    except OSError as exc:
        raise UserError(f"--plot {path}: cannot write: {exc.strerror or exc}") from None
    return path


def run(args: argparse.Namespace) -> int:
    since = None if args.since is None else parse_since(args.since)
    payloads, origin = load_payloads(args)
    rows = trend_rows(payloads, since=since)
    if not rows:
        raise UserError(f"{origin}: no batches{'' if since is None else ' since ' + args.since}")
    if args.plot is not None:
        plot_trend(rows, args.plot, title=f"{origin}: {len(rows)} batches")
        print(f"wrote {args.plot} ({len(rows)} batches)", file=sys.stderr)
    if args.csv is not None or args.plot is None:
        write_csv(rows, args.csv)
    return 0
