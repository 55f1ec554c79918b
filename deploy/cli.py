"""``python -m deploy``: arguments, the release build, hosts in parallel, the summary table.

Exit status: 0 every host deployed (or dry-run checked), 1 at least one host failed or
was rolled back, 2 wrong arguments or the release could not be built.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deploy.host import HostResult, Options, deploy_host
from deploy.names import BadName, check_host, check_release_name, check_user
from deploy.release import ReleaseError, build_release
from deploy.remote import Target

REPO = Path(__file__).resolve().parents[1]


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deploy", description="Deploy crystal-psd to Jetsons over SSH (make deploy).")
    p.add_argument("--hosts", default="",
                   help="target hosts ([user@]name, IPv4 or IPv6 address), separated by "
                        "spaces or commas")
    p.add_argument("--ssh-user", default=None, help="SSH user (default: ssh's own default); "
                   "a non-root user needs passwordless sudo")
    p.add_argument("--ssh-port", type=int, default=None, help="SSH port")
    p.add_argument("--identity", default=None, help="SSH private key file")
    p.add_argument("--ssh-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra ssh -o option (repeatable)")
    p.add_argument("--config", type=Path, default=None,
                   help="config.toml to install as /etc/crystal-edge/config.toml; a host's "
                        "differing config is kept unless --force")
    p.add_argument("--force", action="store_true",
                   help="replace a host's differing config (the old one is kept as "
                        "config.toml.bak-<timestamp>)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the hosts and show what would change (files, unit, config "
                        "diff); change nothing")
    p.add_argument("--target-root", default="/",
                   help="install under this root on the target (default /; another root is "
                        "for tests and image staging and implies --no-restart)")
    restart = p.add_mutually_exclusive_group()
    restart.add_argument("--restart", dest="restart", action="store_true", default=None,
                         help="restart the service and verify it (default when root is /)")
    restart.add_argument("--no-restart", dest="restart", action="store_false",
                         help="install and switch only")
    p.add_argument("--remote-python", default="python3",
                   help="Python on the target used to create the venv (default python3)")
    p.add_argument("--pip-mode", choices=["auto", "wheelhouse", "index", "no-deps"],
                   default="auto",
                   help="how dependencies reach the new release's venv: 'wheelhouse' "
                        "(offline, from /opt/crystal-psd/wheelhouse on the target, filled "
                        "from --wheelhouse), 'index' (the target's pip index), 'no-deps' "
                        "(all already in the system site-packages), 'auto' (default: "
                        "wheelhouse if the target has one, else index)")
    p.add_argument("--wheelhouse", type=Path, default=None,
                   help="local directory of wheels (aarch64, cp310) synced to the target's "
                        "/opt/crystal-psd/wheelhouse before installing")
    p.add_argument("--extras", default=None,
                   help="package extras installed with the dependencies (default 'cpu': "
                        "ONNX Runtime, the fallback backend; '' for none)")
    p.add_argument("--start-timeout", type=float, default=1800.0, metavar="S",
                   help="wait this long for the service to become active (default 1800: a "
                        "first TensorRT engine build on an Orin Nano takes 15-20 min)")
    p.add_argument("--settle", type=float, default=10.0, metavar="S",
                   help="the service must stay active this long after start (default 10)")
    p.add_argument("--wait-mqtt", action="store_true",
                   help="after 'active', also wait until the new process reports its MQTT "
                        "connection (status.json via crystal-edge status); roll back if not")
    p.add_argument("--mqtt-timeout", type=float, default=120.0, metavar="S",
                   help="how long --wait-mqtt waits (default 120)")
    p.add_argument("--state-dir", default="/var/lib/crystal-edge",
                   help="the service's state directory on the target, for --wait-mqtt "
                        "(default /var/lib/crystal-edge)")
    p.add_argument("--poll", type=float, default=2.0, metavar="S", help=argparse.SUPPRESS)
    p.add_argument("--keep", type=int, default=3, help="releases kept per host (default 3)")
    p.add_argument("--min-free-mb", type=int, default=1024,
                   help="free space required under /opt (default 1024 MB)")
    p.add_argument("--allow-non-jetson", action="store_true",
                   help="accept a target without /etc/nv_tegra_release (a CPU box)")
    p.add_argument("--allow-missing-tensorrt", action="store_true",
                   help="accept a target whose Python cannot import tensorrt (CPU backend)")
    p.add_argument("--parallel", type=int, default=8, help="hosts deployed at once")
    p.add_argument("--wheel", type=Path, default=None,
                   help="use this crystal_psd wheel instead of building one (e.g. from CI)")
    p.add_argument("--release-name", default=None, help=argparse.SUPPRESS)
    p.add_argument("--repo", type=Path, default=REPO, help=argparse.SUPPRESS)
    return p


def parse_hosts(text: str, ssh_user: str | None) -> list[tuple[str | None, str]]:
    """``--hosts`` -> ``[(user, host)]``, every name checked before anything connects
    (a user in ``user@host`` wins over ``--ssh-user``)."""
    try:
        if ssh_user is not None:
            check_user(ssh_user)
        return [(user or ssh_user, host) for user, host in
                (check_host(h) for h in text.replace(",", " ").split() if h)]
    except BadName as exc:
        raise UsageError(str(exc)) from None


def _options(args: argparse.Namespace) -> Options:
    if args.release_name is not None:
        try:
            check_release_name(args.release_name)
        except BadName as exc:
            raise UsageError(str(exc)) from None
    if args.config is not None and not args.config.is_file():
        raise UsageError(f"--config {args.config}: no such file")
    if args.wheel is not None and not (args.wheel.is_file() and args.wheel.suffix == ".whl"):
        raise UsageError(f"--wheel {args.wheel}: not a .whl file")
    if args.wheelhouse is not None and not args.wheelhouse.is_dir():
        raise UsageError(f"--wheelhouse {args.wheelhouse}: no such directory")
    pip_mode = args.pip_mode
    if pip_mode in ("index", "no-deps") and args.wheelhouse is not None:
        raise UsageError(f"--wheelhouse is not used with --pip-mode {pip_mode}")
    if not args.target_root.startswith("/"):
        raise UsageError(f"--target-root {args.target_root}: must be an absolute path")
    extras = args.extras if args.extras is not None else ("" if pip_mode == "no-deps" else "cpu")
    extras = ",".join(e.strip() for e in extras.split(",") if e.strip())
    restart = args.restart if args.restart is not None else args.target_root.rstrip("/") == ""
    for name in ("keep", "parallel"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name}: must be >= 1")
    return Options(
        target_root=args.target_root, remote_python=args.remote_python, pip_mode=pip_mode,
        extras=extras, wheelhouse=args.wheelhouse, config_given=args.config is not None,
        force=args.force, dry_run=args.dry_run, restart=restart,
        start_timeout_s=args.start_timeout, settle_s=args.settle, poll_s=args.poll,
        keep=args.keep, min_free_mb=args.min_free_mb, allow_non_jetson=args.allow_non_jetson,
        require_tensorrt=not args.allow_missing_tensorrt, wait_mqtt=args.wait_mqtt,
        mqtt_timeout_s=args.mqtt_timeout, state_dir=args.state_dir)


def summary_table(results: Sequence[HostResult]) -> str:
    """Fixed-width table: HOST RESULT RELEASE PREVIOUS L4T DETAIL."""
    head = ("HOST", "RESULT", "RELEASE", "PREVIOUS", "L4T", "DETAIL")
    rows = [(r.host, r.result, r.release, r.previous or "-", r.l4t or "-", r.detail)
            for r in results]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    widths[-1] = 0  # last column unpadded
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head).rstrip(), "  ".join("-" * max(w, 6) for w in widths)]
    lines += [fmt.format(*row).rstrip() for row in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        hosts = parse_hosts(args.hosts, args.ssh_user)
        if not hosts:
            raise UsageError("no hosts: make deploy HOSTS=\"jetson-01 jetson-02\"")
        opts = _options(args)
    except UsageError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return 2

    print_lock = threading.Lock()

    def say(msg: str) -> None:
        with print_lock:
            print(msg, flush=True)

    with tempfile.TemporaryDirectory(prefix="cdep-") as tmp:
        tmp_path = Path(tmp)
        try:
            release = build_release(args.repo, tmp_path / "release", config=args.config,
                                    name=args.release_name, wheel=args.wheel)
        except (ReleaseError, OSError) as exc:
            print(f"deploy: error: release: {exc}", file=sys.stderr)
            return 2
        say(f"release {release.name}: {len(release.files)} files, commit {release.commit}"
            f"{' (dirty tree)' if release.dirty else ''}"
            f"{', DRY RUN' if opts.dry_run else ''}")
        ctl = tmp_path / "ssh"
        ctl.mkdir()

        def one(user_host: tuple[str | None, str]) -> HostResult:
            user, host = user_host
            target = Target(host=host, user=user, port=args.ssh_port,
                            identity=args.identity, options=list(args.ssh_option),
                            control_dir=str(ctl))
            try:
                return deploy_host(target, release, opts,
                                   lambda m: say(f"[{host}] {m}"))
            finally:
                target.close()

        with ThreadPoolExecutor(max_workers=min(args.parallel, len(hosts))) as pool:
            results = list(pool.map(one, hosts))
        shutil.rmtree(tmp_path / "release", ignore_errors=True)

    say("")
    say(summary_table(results))
    failed = [r for r in results if not r.ok]
    if failed:
        say(f"{len(failed)} of {len(results)} host(s) failed")
        return 1
    return 0
