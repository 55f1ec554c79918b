"""Deploy security on the real sshd: releases are root's whatever the workstation's uid,
the previous release is made root's before a rollback runs it, bad names never connect."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from deploy.remote_scripts import ROLLBACK
from tests.deploy.conftest import REPO

WORKSTATION_UID = 1000  # a typical first user; on a Jetson uid 1000 is its default user
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _not_root_owned(top: Path) -> list[str]:
    """Paths under ``top`` (itself included) not owned by root:root or writable by
    group/others (symbolic links: owner only)."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(top):
        for p in [Path(dirpath)] + [Path(dirpath) / n for n in dirnames + filenames]:
            st = p.lstat()
            writable = not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o022
            if st.st_uid != 0 or st.st_gid != 0 or writable:
                bad.append(f"{p.relative_to(top)} uid={st.st_uid} mode={oct(st.st_mode)}")
    return sorted(set(bad))


@pytest.fixture
def user_home():
    """A directory the workstation user owns (pytest's tmp_path is root's, mode 0700)."""
    d = Path(tempfile.mkdtemp(prefix="cdep-user-"))
    os.chown(d, WORKSTATION_UID, WORKSTATION_UID)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_release_is_root_owned_when_deployed_from_a_user_account(sshd, target_root, wheel,
                                                                 user_home):
    if shutil.which("setpriv") is None or not SYSTEM_PYTHON.is_file():
        pytest.skip("needs setpriv (util-linux) and /usr/bin/python3 to deploy as a user")
    for src, name in ((sshd.key, "id"), (wheel, wheel.name)):
        shutil.copy(src, user_home / name)
        os.chown(user_home / name, WORKSTATION_UID, WORKSTATION_UID)
    (user_home / "id").chmod(0o600)
    cmd = [str(SYSTEM_PYTHON), "-m", "deploy", "--hosts", "127.0.0.1", "--ssh-user", "root",
           "--ssh-port", str(sshd.port), "--identity", str(user_home / "id"),
           "--ssh-option", "StrictHostKeyChecking=no",
           "--ssh-option", f"UserKnownHostsFile={user_home / 'known_hosts'}",
           "--remote-python", str(Path(sys.base_prefix) / "bin" / "python3"),
           "--pip-mode", "no-deps", "--allow-missing-tensorrt", "--settle", "0.3",
           "--poll", "0.2", "--start-timeout", "60", "--target-root", str(target_root),
           "--no-restart", "--wheel", str(user_home / wheel.name)]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(user_home),
           "TMPDIR": str(user_home), "GIT_CONFIG_COUNT": "1",
           "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}
    # umask 002 (Ubuntu's user private groups): the staged tree is group-writable
    r = subprocess.run(["setpriv", f"--reuid={WORKSTATION_UID}", f"--regid={WORKSTATION_UID}",
                        "--clear-groups", "sh", "-c", 'umask 002; exec "$@"', "sh", *cmd],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    base = target_root / "opt/crystal-psd"
    (release,) = (base / "releases").iterdir()
    assert _not_root_owned(release) == []
    for d in (base, base / "releases"):
        assert d.stat().st_uid == 0 and not d.stat().st_mode & 0o022
    # what root runs later: the unit, the command on the PATH (through `current`)
    unit = target_root / "etc/systemd/system/crystal-edge.service"
    assert unit.stat().st_uid == 0 and stat.S_IMODE(unit.stat().st_mode) == 0o644
    link = os.readlink(target_root / "usr/local/bin/crystal-edge")
    exe = (target_root / link.lstrip("/")).resolve()
    assert exe.is_relative_to(release) and exe.stat().st_uid == 0


def test_rollback_makes_the_previous_release_root_owned_first(tmp_path):
    base = tmp_path / "opt/crystal-psd"
    old, new = base / "releases/0.1.0-1", base / "releases/0.1.0-2"
    for rel in (old, new):
        (rel / "systemd").mkdir(parents=True)
        (rel / "systemd/crystal-edge.service").write_text(f"[Unit]\n# {rel.name}\n")
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    (base / "current").symlink_to("releases/0.1.0-2")
    # left by an older deploy: the workstation's uid, writable by everyone
    for dirpath, dirnames, filenames in os.walk(old):
        for p in [Path(dirpath)] + [Path(dirpath) / n for n in dirnames + filenames]:
            os.chown(p, WORKSTATION_UID, WORKSTATION_UID)
            p.chmod(0o777 if p.is_dir() else 0o666)
    out = subprocess.run(["bash", "-c", ROLLBACK, "rollback", str(tmp_path), new.name,
                          old.name, "", "0"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert f"current={old.name}" in out
    assert _not_root_owned(old) == []
    unit = tmp_path / "etc/systemd/system/crystal-edge.service"
    assert unit.read_text().endswith("0.1.0-1\n") and unit.stat().st_uid == 0


def test_bad_host_or_release_name_never_connects(sshd, target_root, tmp_path, wheel):
    marker = tmp_path / "pwned"
    before = sorted(p.name for p in target_root.rglob("*"))
    r = sshd.deploy(f"--hosts=127.0.0.1 -oProxyCommand=touch{marker}", "--wheel", str(wheel),
                    root=target_root)
    assert r.returncode == 2 and "deploy: error: --hosts '-oProxyCommand" in r.stderr
    r = sshd.deploy("--release-name=../x", "--wheel", str(wheel), root=target_root)
    assert r.returncode == 2 and "deploy: error: --release-name '../x'" in r.stderr
    assert not marker.exists() and sshd.calls() == []
    assert sorted(p.name for p in target_root.rglob("*")) == before
    assert not (target_root / "opt/crystal-psd/x").exists()


@pytest.mark.parametrize("text, expected", [
    ("jetson-01", (None, "jetson-01")),
    ("ubuntu@jetson-01.plant.local.", ("ubuntu", "jetson-01.plant.local.")),
    ("10.0.0.5", (None, "10.0.0.5")), ("root@::1", ("root", "::1")),
    ("[fe80::1%eth0]", (None, "fe80::1%eth0")), ("skid_7", (None, "skid_7")),
])
def test_host_names_accepted(text, expected):
    from deploy.names import check_host

    assert check_host(text) == expected


@pytest.mark.parametrize("text", [
    "-oProxyCommand=x", "a@-b", "-a@b", "host name", "h;id", "h/x", "[h]", "::g", "a..b",
    "-", "", "x@", "h:22", "$(id)", "fe80::1%-o",
])
def test_host_names_refused(text):
    from deploy.names import BadName, check_host

    with pytest.raises(BadName, match=r"^--hosts '"):
        check_host(text)
