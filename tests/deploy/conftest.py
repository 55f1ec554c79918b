"""A real sshd on a free loopback port, deploying into a temporary root on this machine.

Only `systemctl` is a stub (systemd is not PID 1 here): it is first on the PATH of the
SSH sessions (authorized_keys ``environment=``), records its calls and answers
``is-active`` as the test says (``stub/mode``: active | failed | fail-new, where
fail-new answers ``failed`` unless `current` points at the release named in
``stub/good``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SSHD = Path("/usr/sbin/sshd")

STUB = r"""#!/bin/sh
S="{stub}"
echo "$*" >> "$S/calls"
case "$1" in
  is-active)
    mode="$(cat "$S/mode" 2>/dev/null || echo active)"
    if [ "$mode" = fail-new ]; then
      cur="$(basename "$(readlink "$(cat "$S/root")/opt/crystal-psd/current")")"
      if [ "$cur" = "$(cat "$S/good")" ]; then mode=active; else mode=failed; fi
    fi
    echo "$mode"
    [ "$mode" = active ] && exit 0
    exit 3 ;;
  show)
    # InvocationID changes with every restart (the deploy waits for a new one)
    case "$*" in *InvocationID*) cat "$S/invocation" 2>/dev/null || echo 0 ;; esac ;;
  restart)
    echo $(( $(cat "$S/invocation" 2>/dev/null || echo 0) + 1 )) > "$S/invocation"
    # the "service" starts: it writes status.json from the test's template, if any
    if [ -f "$S/status.template" ]; then
      sd="$(cat "$S/root")/var/lib/crystal-edge"
      mkdir -p "$sd"
      sed "s/@STARTED@/$(date -u +%Y-%m-%dT%H:%M:%S+00:00)/" "$S/status.template" \
        > "$sd/status.json"
    fi ;;
esac
exit 0
"""

L4T = ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
       "DATE: Wed Jan  8 01:49:37 UTC 2025\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    port: int
    key: Path
    stub: Path
    known_hosts: Path

    def calls(self) -> list[str]:
        p = self.stub / "calls"
        return p.read_text().splitlines() if p.exists() else []

    def set_mode(self, mode: str, good: str = "") -> None:
        (self.stub / "mode").write_text(mode)
        (self.stub / "good").write_text(good)

    def use_root(self, root: Path) -> None:
        (self.stub / "root").write_text(str(root))
        (self.stub / "calls").unlink(missing_ok=True)
        (self.stub / "status.template").unlink(missing_ok=True)
        self.set_mode("active")

    def status_on_restart(self, template: str) -> None:
        """status.json the stub writes at each restart (@STARTED@ = now)."""
        (self.stub / "status.template").write_text(template)

    def deploy(self, *args: str, hosts: str = "127.0.0.1", root: Path | None = None,
               restart: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "deploy", "--hosts", hosts, "--ssh-user", "root",
               "--ssh-port", str(self.port), "--identity", str(self.key),
               "--ssh-option", "StrictHostKeyChecking=no",
               "--ssh-option", f"UserKnownHostsFile={self.known_hosts}",
               "--remote-python", str(Path(sys.base_prefix) / "bin" / "python3"),
               # dependencies: from this interpreter's site-packages (the test venv is
               # made with --system-site-packages from it), nothing downloaded
               "--pip-mode", "no-deps",
               "--allow-missing-tensorrt", "--settle", "0.3", "--poll", "0.2",
               "--start-timeout", "60"]
        if root is not None:
            cmd += ["--target-root", str(root), "--restart" if restart else "--no-restart"]
        return subprocess.run([*cmd, *args], cwd=REPO, capture_output=True, text=True,
                              timeout=300, check=False)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    for tool in ("ssh", "ssh-keygen", "rsync"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (make system-deps installs openssh/rsync)")
    if not SSHD.exists():
        pytest.skip("/usr/sbin/sshd missing (Debian package openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("the sshd fixture logs in as root into a temporary root: run as root")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("hostkey", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True, timeout=30)
    stub = d / "stub"
    stub.mkdir()
    (stub / "systemctl").write_text(STUB.format(stub=stub))
    (stub / "systemctl").chmod(0o755)
    path = f"{stub}:/usr/local/bin:/usr/bin:/bin"
    (d / "authorized_keys").write_text(
        f'environment="PATH={path}" {(d / "client.pub").read_text()}')
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'hostkey'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitUserEnvironment yes\n"
        f"PidFile {d / 'sshd.pid'}\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    log = open(d / "sshd.log", "w")  # closed at teardown
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.close()
                pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.1)
    yield Sshd(port=port, key=d / "client", stub=stub, known_hosts=d / "known_hosts")
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="session")
def staged_release(tmp_path_factory):
    """The release of this checkout, staged and with its wheel built (once per session)."""
    from deploy.release import build_release

    d = tmp_path_factory.mktemp("release")
    cfg = d / "site.toml"
    cfg.write_text("[logging]\n")
    rel = build_release(REPO, d / "stage", config=cfg, name="9.9.9-test")
    rel.ensure_wheel()
    return rel


@pytest.fixture(scope="session")
def wheel(staged_release) -> Path:
    """A built crystal_psd wheel (saves a build per deploy; the build itself is tested
    in test_release_and_make)."""
    return staged_release.path / "wheels" / staged_release.wheel


@pytest.fixture
def target_root(tmp_path, sshd):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "nv_tegra_release").write_text(L4T)
    sshd.use_root(root)
    return root
