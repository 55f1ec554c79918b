"""``bench/soak_faults.py`` on a short schedule: the soak runs the real appliance, injects
faults, and prints its closing document (the real run is 30 minutes, by hand)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_soak_faults_short_schedule(tmp_path: Path) -> None:
    if not Path("/usr/sbin/mosquitto").exists() and shutil.which("mosquitto") is None:
        pytest.skip("mosquitto missing (make system-deps)")
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak_faults.py"), "--minutes", "0.5",
         "--first-fault-s", "5", "--fault-gap", "3", "5", "--faults", "bad_file", "kill9",
         "sighup", "--seed", "3", "--workdir", str(tmp_path / "work"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc == json.loads(out.read_text())
    assert doc["verdict"] in ("pass", "fail") and isinstance(doc["problems"], list)
    assert doc["frames"]["written_good"] >= 40
    assert doc["batches"]["delivered"] >= 1
    assert doc["faults"]["total"] >= 2
    assert set(doc["faults"]["by_kind"]) <= {"bad_file", "kill9", "sighup"}
    assert all(f["t_end"] >= f["t_start"] for f in doc["fault_log"])
    assert doc["service"]["starts"] >= 1 and doc["service"]["peak_memory_mb"] > 0
    assert doc["service"]["final"]["exit_code"] is not None
    assert not (tmp_path / "work" / "state" / "soak-filler.bin").exists()
