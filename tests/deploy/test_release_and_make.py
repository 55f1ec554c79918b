"""Release contents, L4T parsing, the summary table and the make targets' arguments."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile

import pytest

from deploy.cli import summary_table
from deploy.host import HostResult
from deploy.release import parse_l4t, release_files
from tests.deploy.conftest import REPO


def test_release_files_are_the_tracked_tree_minus_dev_only():
    files = release_files(REPO)
    assert "pyproject.toml" in files and "systemd/crystal-edge.service" in files
    assert "edge/service/systemd.py" in files
    assert not [f for f in files if f.startswith(("tests/", "bench/", "docs/", "deploy/",
                                                   ".ci/"))]
    tracked = set(subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True,
                                 text=True, check=True).stdout.split())
    assert set(files) <= tracked


def test_build_release_with_wheel(staged_release):
    rel = staged_release
    assert rel.path.name == "9.9.9-test" and rel.path.parent.name == "stage"
    assert (rel.path / ".deploy/config.toml").read_text() == "[logging]\n"
    assert rel.config_in_release == ".deploy/config.toml" and len(rel.config_sha256) == 64
    wheel = rel.ensure_wheel()
    assert wheel == rel.ensure_wheel()  # built once
    with zipfile.ZipFile(rel.path / "wheels" / wheel) as zf:
        names = zf.namelist()
    assert "edge/service/status.py" in names and "edge/service/systemd.py" in names
    assert not [n for n in names if n.startswith(("tests/", "deploy/"))]
    # in-tree build leftovers are removed: they must not reach the device
    assert not (rel.path / "build").exists() and not list(rel.path.glob("*.egg-info"))
    info = json.loads((rel.path / "RELEASE.json").read_text())
    assert info["name"] == "9.9.9-test" and info["wheel"] == wheel
    assert info["files"] == len(rel.files) and info["config"] == ".deploy/config.toml"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64",
         (36, "36.4.3")),
        ("# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref", (35, "35.5.0")),
        ("", None),
        ("Ubuntu 22.04", None),
    ],
)
def test_parse_l4t(line, expected):
    assert parse_l4t(line) == expected


def test_summary_table_columns():
    table = summary_table([
        HostResult("jetson-01", "ok", "0.1.0-1", "0.1.0-0", "R36.4.3 (JetPack 6)", "active"),
        HostResult("jetson-22", "rolled back", "0.1.0-1", "0.1.0-0", "R36.4.3 (JetPack 6)",
                   "state failed"),
    ])
    lines = table.splitlines()
    assert lines[0].split() == ["HOST", "RESULT", "RELEASE", "PREVIOUS", "L4T", "DETAIL"]
    assert lines[2].startswith("jetson-01  ok           0.1.0-1")
    assert lines[3].startswith("jetson-22  rolled back  0.1.0-1")
    assert lines[3].endswith("state failed")


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_targets_pass_variables():
    def dry(*args):
        return subprocess.run(["make", "-s", "-n", *args], cwd=REPO, capture_output=True,
                              text=True, check=True, timeout=30).stdout.split()

    out = dry("deploy", "HOSTS=a b", "SSH_USER=ubuntu", "CONFIG=site.toml", "FORCE=1")
    assert out[1:] == ["-m", "deploy", '--hosts="a', 'b"', '--ssh-user="ubuntu"',
                       "--config", '"site.toml"', "--force"]
    out = dry("deploy-dry-run", "HOSTS=x", "ROOT=/tmp/r", "DEPLOY_ARGS=--keep 5")
    assert out[1:] == ["-m", "deploy", "--dry-run", '--hosts="x"', "--target-root",
                       '"/tmp/r"', "--keep", "5"]


def test_prune_keeps_newest_by_timestamp_plus_current_and_previous(tmp_path):
    from deploy.remote_scripts import PRUNE

    rel = tmp_path / "opt/crystal-psd/releases"
    names = ["0.9.0-20261101T000000Z", "0.10.0-20261102T000000Z",
             "0.10.1-rc1-20261103T000000Z", "0.2.0-20261104T000000Z"]
    for n in names:
        (rel / n).mkdir(parents=True)
    (tmp_path / "opt/crystal-psd/current").symlink_to(f"releases/{names[3]}")
    out = subprocess.run(["bash", "-c", PRUNE, "prune", str(tmp_path), "2", names[0]],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    # by timestamp (not by version string): keep the 2 newest, and the previous one
    assert out.split() == [f"pruned={names[1]}"]
    assert sorted(p.name for p in rel.iterdir()) == sorted([names[0], names[2], names[3]])


WAIT_STUB = r"""#!/bin/sh
# systemctl for the WAIT script: the old instance answers 'active' for 2 polls (restart
# job not processed yet; list-jobs shows nothing), then the new one is 'activating' for 3
# polls (e.g. an engine build), then 'active'.
S="$(dirname "$0")"
c=$(cat "$S/c" 2>/dev/null || echo 0)
case "$1 $3" in
  "show InvocationID") c=$((c + 1)); echo $c > "$S/c"
    if [ $c -le 2 ]; then echo old; else echo new; fi ;;
  "is-active "*) if [ $c -le 2 ] || [ $c -ge 6 ]; then echo active; else echo activating; fi ;;
esac
exit 0
"""


def test_wait_ignores_the_old_instance_and_waits_through_activating(tmp_path):
    from deploy.remote_scripts import WAIT

    stub = tmp_path / "systemctl"
    stub.write_text(WAIT_STUB)
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", WAIT, "wait", "/", "30", "0", "0.05", "old"],
                         env=env, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "state=active"
    assert int((tmp_path / "c").read_text()) >= 6  # did not stop at the old instance
