"""`make deploy` for real: sshd on loopback, rsync, venv + pip, units, config, rollback."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from deploy.remote_scripts import WAIT_MQTT
from tests.deploy.conftest import REPO

CFG_A = '[logging]\nlevel = "INFO"\n'
CFG_B = '[logging]\nlevel = "DEBUG"\n'
CFG_C = '[logging]\nlevel = "WARNING"\n'
CFG_HOST = '# edited on the skid by the operator\n[logging]\nlevel = "ERROR"\n'


def _current(root: Path) -> str:
    link = root / "opt/crystal-psd/current"
    target = os.readlink(link)
    assert target.startswith("releases/"), "current must be a relative link"
    return Path(target).name


def _tree(root: Path) -> dict[str, str]:
    """Every path under root with its content hash / link target / mode: a change detector."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            key = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[key] = "->" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                out[key] = f"{oct(st.st_mode)}:{st.st_mtime_ns}:" + hashlib.sha256(
                    p.read_bytes()).hexdigest()
            else:
                out[key] = oct(st.st_mode)
    return out


def _row(stdout: str, host: str) -> list[str]:
    rows = [line.split() for line in stdout.splitlines() if line.startswith(host + " ")]
    assert len(rows) == 1, stdout
    return rows[0]


def _check_release_contents(rel: Path, wheel: Path, tmp_path: Path) -> None:
    """The release holds the package, units, wheel and a venv that runs from the release."""
    assert (rel / "edge/service/status.py").is_file()
    assert (rel / "systemd/crystal-edge.service").is_file()
    for dev_only in ("tests", "bench", "docs", "deploy", ".ci"):
        assert not (rel / dev_only).exists(), dev_only
    (shipped,) = (rel / "wheels").glob("crystal_psd-*-py3-none-any.whl")
    assert shipped.read_bytes() == wheel.read_bytes()
    assert (rel / "RELEASE.json").is_file()
    # the venv runs the package from the release, not from this checkout
    venv_py = rel / "venv/bin/python"
    assert (rel / "venv/bin/crystal-edge").is_file()
    where = subprocess.run([str(venv_py), "-c", "import edge; print(edge.__file__)"],
                           capture_output=True, text=True, check=True, cwd="/").stdout
    assert where.startswith(str(rel / "venv")), where
    # and the installed command runs (status of an empty state directory)
    (tmp_path / "state").mkdir()
    st = subprocess.run([str(rel / "venv/bin/crystal-edge"), "status", "--json",
                         "--state-dir", str(tmp_path / "state")],
                        capture_output=True, text=True, check=False, cwd="/")
    assert st.returncode == 0, st.stderr
    assert '"status_error": "missing' in st.stdout


def _check_host_setup(root: Path, sshd) -> None:
    """Units, user, command link, config and credentials in place; the service restarted."""
    assert (root / "etc/systemd/system/crystal-edge.service").read_text() == \
        (REPO / "systemd/crystal-edge.service").read_text()
    assert (root / "etc/sysusers.d/crystal-edge.conf").is_file()
    assert os.readlink(root / "usr/local/bin/crystal-edge") == \
        "/opt/crystal-psd/current/venv/bin/crystal-edge"
    assert any(line.startswith("crystal-edge:") for line in
               (root / "etc/passwd").read_text().splitlines())
    assert (root / "etc/crystal-edge/config.toml").read_text() == CFG_A
    pw = root / "etc/crystal-edge/credentials/mqtt-password"
    assert pw.is_file() and stat.S_IMODE(pw.stat().st_mode) == 0o600
    calls = sshd.calls()
    # the InvocationID before the restart is read: the wait ignores that old instance
    assert calls[:4] == ["daemon-reload", "enable crystal-edge.service",
                         "show -p InvocationID --value crystal-edge.service",
                         "restart --no-block crystal-edge.service"]
    assert "is-active crystal-edge.service" in calls


def _step_first_install(sshd, root: Path, cfg: dict[str, Path], wheel: Path,
                        tmp_path: Path) -> str:
    """First install; a second, unreachable host fails without affecting the first."""
    r = sshd.deploy("--config", str(cfg["a"]), "--wheel", str(wheel), root=root,
                    hosts="127.0.0.1 no-such-host.invalid")
    assert r.returncode == 1, r.stdout + r.stderr
    assert _row(r.stdout, "127.0.0.1")[1] == "ok"
    bad = _row(r.stdout, "no-such-host.invalid")
    assert bad[1] == "failed" and "ssh:" in r.stdout.split("no-such-host.invalid  failed")[1]
    assert "1 of 2 host(s) failed" in r.stdout
    n1 = _current(root)
    _check_release_contents(root / "opt/crystal-psd/releases" / n1, wheel, tmp_path)
    _check_host_setup(root, sshd)
    return n1


def _step_dry_run(sshd, root: Path, cfg: dict[str, Path]) -> None:
    """Dry run against the installed host: shows the config diff, changes nothing."""
    before, n_calls = _tree(root), len(sshd.calls())
    r = sshd.deploy("--config", str(cfg["b"]), "--dry-run", root=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _row(r.stdout, "127.0.0.1")[1] == "dry-run"
    assert '[127.0.0.1]   config: -level = "INFO"' in r.stdout
    assert '[127.0.0.1]   config: +level = "DEBUG"' in r.stdout
    assert "would: switch current ->" in r.stdout
    assert _tree(root) == before
    assert len(sshd.calls()) == n_calls


def _step_update_keeps_host_config(sshd, root: Path, cfg: dict[str, Path], wheel: Path,
                                   n1: str) -> str:
    """The operator edited the config on the skid: an update without FORCE keeps it.
    --wait-mqtt: the new process must report its MQTT connection in status.json."""
    (root / "etc/crystal-edge/config.toml").write_text(CFG_HOST)
    sshd.status_on_restart(json.dumps({
        "state": "running", "started": "@STARTED@", "healthy": True,
        "sinks": {"mqtt": {"connection": "connected", "connected": True}}}))
    r = sshd.deploy("--config", str(cfg["a"]), "--wheel", str(wheel), "--wait-mqtt",
                    "--state-dir", "/var/lib/crystal-edge", root=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "active; MQTT connected" in r.stdout
    n2 = _current(root)
    assert n2 != n1 and _row(r.stdout, "127.0.0.1")[3] == n1  # PREVIOUS column
    assert "host's kept (FORCE=1" in r.stdout
    assert (root / "etc/crystal-edge/config.toml").read_text() == CFG_HOST
    assert not list((root / "etc/crystal-edge").glob("config.toml.bak-*"))
    return n2


def _step_force_replaces_config(sshd, root: Path, cfg: dict[str, Path], wheel: Path,
                                n2: str) -> str:
    """FORCE replaces it and keeps a backup; --keep 2 prunes the oldest release."""
    r = sshd.deploy("--config", str(cfg["b"]), "--force", "--keep", "2",
                    "--wheel", str(wheel), root=root)
    assert r.returncode == 0, r.stdout + r.stderr
    n3 = _current(root)
    assert (root / "etc/crystal-edge/config.toml").read_text() == CFG_B
    (backup,) = (root / "etc/crystal-edge").glob("config.toml.bak-*")
    assert backup.read_text() == CFG_HOST
    releases = sorted(p.name for p in (root / "opt/crystal-psd/releases").iterdir())
    assert releases == sorted([n2, n3])
    return n3


def _step_failed_release_rolls_back(sshd, root: Path, cfg: dict[str, Path], wheel: Path,
                                    n3: str) -> None:
    """The new release does not come up: roll back to n3, config restored."""
    sshd.set_mode("fail-new", good=n3)
    restarts_before = sshd.calls().count("restart --no-block crystal-edge.service")
    r = sshd.deploy("--config", str(cfg["c"]), "--force", "--wheel", str(wheel), root=root)
    assert r.returncode == 1, r.stdout + r.stderr
    row = _row(r.stdout, "127.0.0.1")
    assert row[1:3] == ["rolled", "back"]
    n4 = row[3]
    assert _current(root) == n3
    assert f"back on {n3} (state active)" in r.stdout and "config restored" in r.stdout
    assert (root / "etc/crystal-edge/config.toml").read_text() == CFG_B
    assert (root / "opt/crystal-psd/releases" / n4 / "DEPLOY_FAILED").is_file()
    assert sshd.calls().count("restart --no-block crystal-edge.service") == restarts_before + 2
    assert "1 of 1 host(s) failed" in r.stdout


def _step_wait_mqtt_probe(root: Path) -> None:
    """--wait-mqtt's probe on the installed release: a connecting or a previous
    process's status.json is not "up" (run locally: same script, same files)."""
    sd = root / "var/lib/crystal-edge"

    def probe(connection: str, started: str, since: float) -> str:
        (sd / "status.json").write_text(json.dumps(
            {"started": started, "sinks": {"mqtt": {"connection": connection}}}))
        out = subprocess.run(["bash", "-c", WAIT_MQTT, "probe", str(root), str(since), "1",
                              "0.2", "/var/lib/crystal-edge"], text=True,
                             capture_output=True, timeout=60, check=True).stdout
        return out.strip()

    now = "2026-11-30T00:00:00+00:00"
    assert probe("connected", now, 0) == "mqtt=connected"
    assert probe("connecting", now, 0) == "mqtt=timeout (connecting new)"
    assert probe("connected", now, 4e9) == "mqtt=timeout (connected old)"


def test_deploy_update_force_dryrun_rollback(sshd, target_root, tmp_path, wheel):
    root = target_root
    cfg = {}
    for name, text in {"a": CFG_A, "b": CFG_B, "c": CFG_C}.items():
        cfg[name] = tmp_path / f"{name}.toml"
        cfg[name].write_text(text)

    n1 = _step_first_install(sshd, root, cfg, wheel, tmp_path)  # 1. install; 1 of 2 hosts fails
    _step_dry_run(sshd, root, cfg)  # 2. dry run: config diff shown, nothing changed
    n2 = _step_update_keeps_host_config(sshd, root, cfg, wheel, n1)  # 3. no FORCE: host's kept
    n3 = _step_force_replaces_config(sshd, root, cfg, wheel, n2)  # 4. FORCE, --keep 2
    _step_failed_release_rolls_back(sshd, root, cfg, wheel, n3)  # 5. rollback to n3
    _step_wait_mqtt_probe(root)  # 6. --wait-mqtt's probe: old/connecting is not "up"


def test_target_checks_refuse_before_changing_anything(sshd, tmp_path):
    root = tmp_path / "plain"
    (root / "etc").mkdir(parents=True)  # no nv_tegra_release: not a Jetson
    sshd.use_root(root)
    before = _tree(root)
    r = sshd.deploy("--min-free-mb", str(10**9), root=root)
    assert r.returncode == 1
    detail = r.stdout.split("127.0.0.1  failed")[1]
    assert "not a Jetson" in detail and "MB free" in detail
    assert _tree(root) == before and sshd.calls() == []


def test_fresh_host_gets_the_example_config_and_no_restart(sshd, target_root, wheel):
    # no CONFIG=: a host without /etc/crystal-edge/config.toml gets examples/config.toml
    r = sshd.deploy("--wheel", str(wheel), root=target_root, restart=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "example config examples/config.toml installed" in r.stdout
    assert "not restarted (--no-restart)" in r.stdout
    assert (target_root / "etc/crystal-edge/config.toml").read_text() == \
        (REPO / "examples/config.toml").read_text()
    assert _current(target_root).startswith("0.")
    assert sshd.calls() == []  # --no-restart: systemctl never called


def test_usage_errors_exit_2(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "deploy", *args], cwd=REPO,
                              capture_output=True, text=True, check=False, timeout=60)

    r = run()
    assert r.returncode == 2 and "no hosts" in r.stderr
    r = run("--hosts", "h", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "missing.toml: no such file" in r.stderr
    r = run("--hosts", "h", "--target-root", "relative/root")
    assert r.returncode == 2 and "absolute path" in r.stderr
    r = run("--hosts", "h", "--pip-mode", "index", "--wheelhouse", str(tmp_path))
    assert r.returncode == 2 and "not used with --pip-mode index" in r.stderr
