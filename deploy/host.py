"""One host's deployment: check, transfer, install, switch, restart, verify, roll back."""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deploy import remote, remote_scripts
from deploy.release import JETPACK_OF_L4T, Release, ReleaseError, parse_l4t
from deploy.remote import RemoteError, Target

MIN_PYTHON = (3, 10)


@dataclass
class Options:
    target_root: str = "/"
    remote_python: str = "python3"
    pip_mode: str = "auto"  # auto | wheelhouse | index | no-deps
    extras: str = ""
    wheelhouse: Path | None = None
    config_given: bool = False
    force: bool = False
    dry_run: bool = False
    restart: bool = True
    start_timeout_s: float = 1800.0
    settle_s: float = 10.0
    poll_s: float = 2.0
    keep: int = 3
    min_free_mb: int = 1024
    min_l4t: int = 36
    allow_non_jetson: bool = False
    require_tensorrt: bool = True
    wait_mqtt: bool = False
    mqtt_timeout_s: float = 120.0
    state_dir: str = "/var/lib/crystal-edge"

    @property
    def root(self) -> str:
        return self.target_root.rstrip("/")  # "" for "/"


@dataclass
class HostResult:
    host: str
    result: str = "failed"  # ok | rolled back | failed | dry-run
    release: str = ""
    previous: str = ""
    l4t: str = ""
    detail: str = ""
    changes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result in ("ok", "dry-run")


Log = Callable[[str], None]


def _check(target: Target, opts: Options, result: HostResult, log: Log) -> dict[str, str]:
    facts = remote.parse_kv(target.run(remote_scripts.CHECK, opts.target_root,
                                       opts.remote_python, timeout=120).stdout)
    if facts.get("uid", "0") != "0":
        target.sudo = True
        log("not root on the target: using sudo -n")
    problems = []
    l4t = parse_l4t(facts.get("nv_tegra_release", ""))
    if l4t is None:
        result.l4t = "none"
        if not opts.allow_non_jetson:
            problems.append(f"not a Jetson ({opts.root}/etc/nv_tegra_release missing or "
                            "unparsable); --allow-non-jetson for a CPU target")
    else:
        major, version = l4t
        jp = JETPACK_OF_L4T.get(major, "?")
        result.l4t = f"R{version} (JetPack {jp})"
        if major < opts.min_l4t:
            problems.append(f"L4T R{version} (JetPack {jp}) is too old: JetPack 6 "
                            f"(L4T R{opts.min_l4t}) or newer needed")
    py = facts.get("python", "")
    if not py:
        problems.append(f"{opts.remote_python} not found on the target")
    elif tuple(int(x) for x in py.split(".")[:2]) < MIN_PYTHON:
        problems.append(f"Python {py} too old (>= 3.10 needed; JetPack 6 has 3.10)")
    else:
        if facts.get("venv") != "yes":
            problems.append("Python venv module missing (apt install python3-venv)")
        if facts.get("pip") != "yes":
            problems.append("pip missing for the target Python (apt install python3-pip)")
    if opts.require_tensorrt and not facts.get("tensorrt"):
        problems.append("TensorRT not importable by the target Python (JetPack's "
                        "python3-libnvinfer); --allow-missing-tensorrt for a CPU-only target")
    if facts.get("has_rsync") != "yes":
        problems.append("rsync missing on the target (apt install rsync)")
    if opts.restart and facts.get("has_systemctl") != "yes":
        problems.append("systemctl missing on the target")
    free = int(facts.get("free_mb", "0") or 0)
    if free < opts.min_free_mb:
        problems.append(f"only {free} MB free under {opts.root}/opt "
                        f"(need {opts.min_free_mb} MB)")
    result.previous = facts.get("current", "")
    log(f"target: {result.l4t}, Python {py or '-'}, TensorRT "
        f"{facts.get('tensorrt') or '-'}, {free} MB free, current release "
        f"{result.previous or '-'}")
    if problems:
        raise RemoteError("; ".join(problems))
    return facts


def _config_action(release: Release, facts: dict[str, str], opts: Options) -> tuple[str, str]:
    """(action, note): install | unchanged | replace | keep."""
    remote_sha = facts.get("config_sha256")
    if opts.config_given:
        if remote_sha is None:
            return "install", "config installed"
        if remote_sha == release.config_sha256:
            return "unchanged", "config unchanged"
        if opts.force:
            return "replace", "config replaced (backup kept)"
        return "keep", "config differs: host's kept (FORCE=1 replaces it, with a backup)"
    if remote_sha is not None:
        return "keep", "host config kept"
    if release.config_in_release is None:
        raise RemoteError("the host has no /etc/crystal-edge/config.toml and none was given "
                          "(CONFIG=path)")
    return "install", f"example config {release.config_in_release} installed"


def _diff(old: str, new: str, name: str) -> list[str]:
    return list(difflib.unified_diff(old.splitlines(), new.splitlines(),
                                     f"host:{name}", f"release:{name}", lineterm=""))


def _dry_run(target: Target, release: Release, facts: dict[str, str], opts: Options, *,
             action: str, result: HostResult, log: Log) -> None:
    base = f"{opts.root}/opt/crystal-psd"
    against = f"{base}/current/" if facts.get("current") else f"{base}/releases/{release.name}/"
    out = target.rsync(f"{release.path}/", against, "--dry-run", "--itemize-changes",
                       "--checksum", "--exclude", "/RELEASE.json").stdout
    changed = [line for line in out.splitlines() if line.strip()]
    result.changes += [f"file {line}" for line in changed]
    for line in changed:
        log(f"  would transfer: {line}")
    unit_rel = "etc/systemd/system/crystal-edge.service"
    new_unit = (release.path / "systemd" / "crystal-edge.service").read_text()
    old_unit = target.run(remote_scripts.CAT, opts.target_root, unit_rel).stdout
    for line in _diff(old_unit, new_unit, "/" + unit_rel):
        log(f"  unit: {line}")
    if action in ("install", "replace", "keep") and release.config_in_release:
        new_cfg = (release.path / release.config_in_release).read_text()
        old_cfg = target.run(remote_scripts.CAT, opts.target_root,
                             "etc/crystal-edge/config.toml").stdout
        for line in _diff(old_cfg, new_cfg, "/etc/crystal-edge/config.toml"):
            log(f"  config: {line}")
    steps = [f"release {release.name} ({len(changed)} changed file(s) vs "
             f"{facts.get('current') or 'nothing'})",
             "venv + pip install " + (release.wheel or "<wheel>"),
             f"config: {action}",
             f"switch current -> {release.name}"]
    if opts.restart:
        steps.append("daemon-reload + restart crystal-edge")
    for s in steps:
        log(f"  would: {s}")
    result.result = "dry-run"
    result.detail = f"{len(changed)} file(s) would change; config {action}; nothing changed"


def _wait(target: Target, opts: Options, old_invocation: str = "") -> str:
    out = target.run(remote_scripts.WAIT, opts.target_root, str(int(opts.start_timeout_s)),
                     str(opts.settle_s), str(opts.poll_s), old_invocation,
                     timeout=opts.start_timeout_s + opts.settle_s + 120).stdout
    return remote.parse_kv(out).get("state", "unknown")


def deploy_host(target: Target, release: Release, opts: Options, log: Log) -> HostResult:
    """Deploy ``release`` to one host; never raises (the result says what happened)."""
    result = HostResult(host=target.host, release=release.name)
    t0 = time.monotonic()
    try:
        facts = _check(target, opts, result, log)
        if release.name in facts.get("releases", "").split():
            raise RemoteError(f"release {release.name} already exists on the host")
        action, config_note = _config_action(release, facts, opts)
        if opts.dry_run:
            _dry_run(target, release, facts, opts, action=action, result=result, log=log)
            return result
        _install_and_verify(target, release, facts, opts, action=action,
                            config_note=config_note, result=result, log=log)
    except RemoteError as exc:
        result.detail = str(exc)
        log(f"FAILED: {exc}")
    finally:
        log(f"done in {time.monotonic() - t0:.1f} s: {result.result}")
    return result


def _install_and_verify(target: Target, release: Release, facts: dict[str, str],
                        opts: Options, *, action: str, config_note: str,
                        result: HostResult, log: Log) -> None:
    base = f"{opts.root}/opt/crystal-psd"
    target.run(remote_scripts.MKDIRS, opts.target_root, timeout=120)
    if opts.wheelhouse is not None:
        log(f"wheelhouse: rsync {opts.wheelhouse} -> {base}/wheelhouse/")
        target.rsync(f"{opts.wheelhouse}/", f"{base}/wheelhouse/")
    try:
        release.ensure_wheel()
    except (ReleaseError, OSError) as exc:
        raise RemoteError(f"release: {exc}") from None
    link = [f"--link-dest={base}/current/"] if facts.get("current") else []
    log(f"rsync release {release.name} ({len(release.files)} files + wheel)")
    target.rsync(f"{release.path}/", f"{base}/releases/{release.name}/", *link)

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    extras = f"[{opts.extras}]" if opts.extras else ""
    proc = target.run(remote_scripts.INSTALL, opts.target_root, release.name, opts.remote_python,
                      opts.pip_mode, release.wheel or "", extras, action,
                      release.config_in_release or "", stamp, "1" if opts.restart else "0",
                      timeout=1800, check=False)
    out = remote.parse_kv(proc.stdout)
    if out.get("current") != release.name:
        steps = [ln[5:] for ln in proc.stderr.splitlines() if ln.startswith("step=")]
        last = [ln for ln in proc.stderr.splitlines() if ln.strip() and
                not ln.startswith("step=")]
        msg = last[-1].strip() if last else f"exit {proc.returncode}"
        try:
            target.run(remote_scripts.DISCARD, opts.target_root, release.name, timeout=120)
        except RemoteError:
            pass
        raise RemoteError(f"install failed at step '{steps[-1] if steps else '?'}': {msg}; "
                          "the running release was not touched")
    if proc.returncode != 0:  # switched, but daemon-reload/restart failed: roll back
        log(f"restart command failed: {proc.stderr.strip().splitlines()[-1:]}")
    backup = out.get("config_backup", "")
    log(f"installed {release.name}; {config_note}; previous release "
        f"{out.get('previous') or '-'}")
    result.previous = out.get("previous", "")

    if not opts.restart:
        result.result = "ok"
        result.detail = f"{config_note}; not restarted (--no-restart)"
        _prune(target, opts, result, log)
        return
    log(f"waiting for crystal-edge to become active (up to {opts.start_timeout_s:.0f} s)")
    state = (_wait(target, opts, out.get("old_invocation", "")) if proc.returncode == 0
             else "restart failed")
    mqtt_note = ""
    if state == "active" and opts.wait_mqtt:
        log(f"waiting for the service's MQTT connection (up to {opts.mqtt_timeout_s:.0f} s)")
        mqtt = remote.parse_kv(target.run(
            remote_scripts.WAIT_MQTT, opts.target_root, out.get("restarted_at", "0"),
            str(int(opts.mqtt_timeout_s)), str(opts.poll_s), opts.state_dir,
            timeout=opts.mqtt_timeout_s + 120).stdout).get("mqtt", "unknown")
        if mqtt == "connected":
            mqtt_note = "; MQTT connected"
        elif mqtt == "none":
            mqtt_note = "; no MQTT sink configured"
        else:
            state = f"active but MQTT {mqtt}"
    if state == "active":
        result.result = "ok"
        result.detail = f"active{mqtt_note}; {config_note}"
        _prune(target, opts, result, log)
        return

    log(f"service did not come up (state {state})")
    _journal_tail(target, opts, log)
    if not result.previous:
        result.detail = f"service state {state}; no previous release to roll back to"
        return
    log(f"rolling back to {result.previous}")
    rb = remote.parse_kv(target.run(remote_scripts.ROLLBACK, opts.target_root, release.name,
                                    result.previous, backup, "1", timeout=300).stdout)
    back = _wait(target, opts, rb.get("old_invocation", ""))
    result.result = "rolled back"
    result.detail = (f"{release.name} state {state}; back on {result.previous} "
                     f"(state {back})" + ("; config restored" if backup else ""))


def _journal_tail(target: Target, opts: Options, log: Log) -> None:
    if opts.root:  # not the real root: there is no journal of that service
        return
    proc = target.run("command -v journalctl >/dev/null && journalctl -u crystal-edge.service "
                      "-n 20 --no-pager -o cat || true", "/", timeout=60, check=False)
    for line in proc.stdout.splitlines():
        log(f"  journal: {line}")


def _prune(target: Target, opts: Options, result: HostResult, log: Log) -> None:
    try:
        out = target.run(remote_scripts.PRUNE, opts.target_root, str(opts.keep), result.previous,
                         timeout=300).stdout
    except RemoteError as exc:
        log(f"pruning old releases failed (not fatal): {exc}")
        return
    for name in remote.parse_kv_all(out, "pruned"):
        log(f"pruned old release {name}")
