"""Run every benchmark ``bench/bench_*.py`` (``make bench``); JSON on stdout and in a folder.

    .venv/bin/python bench/run_all.py [--out bench-out] [--only pipeline backend]
        [--timeout 1800]

Each benchmark runs in its own process (``python bench/bench_NAME.py`` with its default
arguments) and must print one JSON object on stdout. Its result goes to
``<out>/NAME.json``; the combined document ``{"benchmarks": {NAME: result, ...},
"failed": {NAME: reason, ...}, ...}`` goes to ``<out>/all.json`` and to stdout. Progress
and the benchmarks' stderr go to stderr. Exit status 1 when any benchmark failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


def discover(only: list[str] | None = None, bench_dir: Path = BENCH_DIR) -> dict[str, Path]:
    """``NAME -> path`` of ``bench_NAME.py`` files, sorted by name (optionally filtered)."""
    found = {p.stem[len("bench_"):]: p for p in sorted(bench_dir.glob("bench_*.py"))}
    if only:
        unknown = sorted(set(only) - set(found))
        if unknown:
            raise SystemExit(f"run_all: unknown benchmark(s) {', '.join(unknown)}; "
                             f"available: {', '.join(found)}")
        found = {k: v for k, v in found.items() if k in only}
    return found


def run_one(name: str, path: Path, timeout: float) -> tuple[dict | None, str | None, float]:
    """Run one benchmark; ``(result, None, seconds)`` or ``(None, reason, seconds)``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH", "")])])}
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env, timeout=timeout,
                              capture_output=True, text=True,
                              check=False)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s", time.monotonic() - t0
    dt = time.monotonic() - t0
    if proc.stderr:
        sys.stderr.write(proc.stderr if proc.stderr.endswith("\n") else proc.stderr + "\n")
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return None, f"exit status {proc.returncode}: {tail}", dt
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        return None, "did not print one JSON object on stdout", dt
    if not isinstance(result, dict):
        return None, "printed JSON that is not an object", dt
    return result, None, dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out", help="output folder")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="run only these (NAME of bench_NAME.py)")
    ap.add_argument("--timeout", type=float, default=1800.0,
                    help="seconds one benchmark may take (default 1800)")
    ap.add_argument("--bench-dir", type=Path, default=BENCH_DIR, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    benches = discover(args.only, args.bench_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    doc: dict = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                 "python": platform.python_version(), "node": platform.node()},
        "benchmarks": {}, "failed": {}, "seconds": {},
    }
    for name, path in benches.items():
        print(f"run_all: {name} ...", file=sys.stderr, flush=True)
        result, reason, dt = run_one(name, path, args.timeout)
        doc["seconds"][name] = round(dt, 1)
        if reason is not None:
            doc["failed"][name] = reason
            print(f"run_all: {name} FAILED ({reason})", file=sys.stderr, flush=True)
            continue
        doc["benchmarks"][name] = result
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"run_all: {name} done in {dt:.1f} s", file=sys.stderr, flush=True)
    (args.out / "all.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 1 if doc["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
