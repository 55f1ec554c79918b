"""The systemd units: `systemd-analyze verify` clean, and the directives the skid relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "crystal-edge.service"
SYSUSERS = REPO / "systemd" / "crystal-edge.sysusers.conf"
INSTALLED_BIN = "/opt/crystal-psd/current/venv/bin/crystal-edge"
INSTALLED_PY = "/opt/crystal-psd/current/venv/bin/python"
PRESTART = REPO / "systemd" / "prestart.py"


def _directives(path: Path) -> dict[str, dict[str, list[str]]]:
    """Parse a unit file: {section: {key: [values in order]}} (repeated keys kept)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"directive outside a section: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return _directives(UNIT)


def _local_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with the installed binary path pointed at this checkout's venv.

    `systemd-analyze verify` checks that every Exec binary exists; /opt/crystal-psd is
    not installed on a CI machine, so a copy with the one path rewritten is verified.
    """
    local_bin = Path(sys.executable).parent / "crystal-edge"
    assert local_bin.exists(), f"{local_bin} missing: install the package (make install-dev)"
    text = UNIT.read_text() if text is None else text
    out = tmp_path / UNIT.name
    out.write_text(text.replace(INSTALLED_BIN, str(local_bin))
                   .replace(INSTALLED_PY, sys.executable))
    return out


def _verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)],
        check=False, capture_output=True, text=True, timeout=60, cwd=path.parent,
    )


needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (Debian package 'systemd'); unit syntax unchecked")


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path):
    result = _verify(_local_copy(tmp_path))
    assert result.returncode == 0, result.stderr
    # verify exits 0 on unknown keys and unparsable values but prints them: none allowed.
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if UNIT.name in line]
    assert problems == []


@needs_analyze
def test_verify_catches_a_typo(tmp_path):
    # Guards the test above: a misspelt directive must be reported.
    bad = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilegs=yes")
    result = _verify(_local_copy(tmp_path, bad))
    assert "Unknown key 'NoNewPrivilegs'" in result.stdout + result.stderr


def test_notify_watchdog_and_restart_policy(unit):
    svc, u = unit["Service"], unit["Unit"]
    assert svc["Type"] == ["notify"]
    assert svc["NotifyAccess"] == ["main"]
    assert int(svc["WatchdogSec"][0]) >= 30
    assert svc["Restart"] == ["on-failure"]
    assert int(u["StartLimitBurst"][0]) >= 3 and int(u["StartLimitIntervalSec"][0]) >= 300
    assert svc["RestartPreventExitStatus"] == ["2"]  # UserError: restarting cannot help
    assert svc["TimeoutStartSec"] == ["30min"]  # first TensorRT build on an Orin Nano
    # systemctl reload -> SIGHUP -> Service.request_reload (tests/edge/test_run_reload.py)
    assert svc["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_account_directories_and_credentials(unit):
    svc = unit["Service"]
    assert svc["User"] == ["crystal-edge"] and svc["SupplementaryGroups"] == ["video"]
    assert svc["StateDirectory"] == ["crystal-edge"]
    assert svc["ConfigurationDirectory"] == ["crystal-edge"]
    assert svc["LoadCredential"] == [
        "mqtt-password:/etc/crystal-edge/credentials/mqtt-password"]
    sysusers = SYSUSERS.read_text()
    assert "u     crystal-edge" in sysusers and "m     crystal-edge  video" in sysusers


def test_exec_lines_validate_build_and_run(unit):
    svc = unit["Service"]
    cfg = "/etc/crystal-edge/config.toml"
    assert svc["ExecStartPre"] == [
        f"{INSTALLED_BIN} check-config --quiet --check-files {cfg}",
        f"{INSTALLED_PY} /opt/crystal-psd/current/systemd/prestart.py {cfg}",
    ]
    assert svc["ExecStart"] == [f"{INSTALLED_BIN} run --config {cfg}"]
    # the commands exist with these arguments (a renamed option would break every start)
    for argv in (["check-config", "--quiet", "--check-files", "X"],
                 ["run", "--config", "X"], ["build-engine", "--config", "X"]):
        parser = _edge_parser()
        parser.parse_args(argv)


def _edge_parser():
    from edge.cli import COMMANDS
    from edge.clikit import build_parser

    return build_parser("crystal-edge", "", COMMANDS)


def _prestart(cfg: Path, capsys) -> subprocess.CompletedProcess[str]:
    """Run systemd/prestart.py's main() in this process (as systemd would run the file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("crystal_edge_prestart", PRESTART)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    rc = module.main([str(cfg)])
    out = capsys.readouterr()
    return subprocess.CompletedProcess([str(PRESTART)], rc, out.out, out.err)


def test_prestart_skips_engine_build_unless_tensorrt_can_be_used(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[backend]\nname = "onnxruntime"\n')
    r = _prestart(cfg, capsys)
    assert r.returncode == 0 and "no TensorRT engine to build" in r.stdout

    cfg.write_text('[backend]\nname = "auto"\n')
    r = _prestart(cfg, capsys)
    assert r.returncode == 0
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        assert "TensorRT not installed" in r.stdout

    cfg.write_text('[backend]\nnme = "auto"\n')  # a typo: the start must stop
    r = _prestart(cfg, capsys)
    assert r.returncode == 2 and "backend.nme" in r.stderr


def test_prestart_with_tensorrt_backend_fails_without_tensorrt(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT installed: a real build would run (covered by gpu tests)")
    from tests.fixtures.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[model]\npath = "{model}"\n[backend]\nname = "tensorrt"\n'
                   "input_height = 64\ninput_width = 64\n")
    r = _prestart(cfg, capsys)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "TensorRT is not usable" in r.stderr


def test_hardening_and_device_policy(unit):
    svc = unit["Service"]
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "DevicePolicy": "closed", "CapabilityBoundingSet": "",
    }.items():
        assert svc[key] == [value], key
    allowed = {v.split()[0] for v in svc["DeviceAllow"]}
    assert {"/dev/nvmap", "/dev/nvhost-ctrl-gpu", "char-nvgpu*", "char-nvhost*",
            "char-video4linux", "char-nvidia*"} <= allowed
    # Deliberately absent (see the comments in the unit): they break CUDA or the devices.
    assert "MemoryDenyWriteExecute" not in svc
    assert "PrivateDevices" not in svc
    text = UNIT.read_text()
    assert "MemoryDenyWriteExecute=yes  breaks CUDA" in text


def _bytes(value: str) -> int:
    """systemd's size suffixes (K, M, G, T: base 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if value[-1:].upper() in units:
        return int(float(value[:-1]) * units[value[-1].upper()])
    return int(value)


def test_memory_file_handle_and_task_bounds(unit):
    # An Orin Nano has 8 GB shared by CPU and GPU: a leak must hit this unit's own limit
    # (OOM kill -> Restart=on-failure) well before the board runs out.
    svc = unit["Service"]
    high, top = _bytes(svc["MemoryHigh"][0]), _bytes(svc["MemoryMax"][0])
    assert 2 << 30 <= high < top <= 5 << 30
    # enough for SQLite, GPU nodes, MQTT and the capped metrics sockets; bounds a leak
    nofile = int(svc["LimitNOFILE"][0])
    assert 1024 <= nofile <= 65536
    assert 128 <= int(svc["TasksMax"][0]) <= 4096


@needs_analyze
def test_verify_catches_a_bad_memory_value(tmp_path):
    # Guards the clean-verify test for the resource lines: a bad value is reported.
    bad = UNIT.read_text().replace("MemoryMax=4G", "MemoryMax=4Gigs")
    result = _verify(_local_copy(tmp_path, bad))
    assert "Invalid memory limit '4Gigs'" in result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None,
                    reason="systemd-sysusers not installed (Debian package 'systemd')")
def test_sysusers_creates_account_in_video_group(tmp_path):
    (tmp_path / "etc").mkdir()
    result = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text().splitlines()
    (user,) = [p for p in passwd if p.startswith("crystal-edge:")]
    fields = user.split(":")
    assert fields[5] == "/var/lib/crystal-edge" and fields[6] == "/usr/sbin/nologin"
    groups = (tmp_path / "etc" / "group").read_text().splitlines()
    (video,) = [g for g in groups if g.startswith("video:")]
    assert video.split(":")[3] == "crystal-edge"
