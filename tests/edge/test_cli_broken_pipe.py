"""`crystal-edge trend ... | head`: the reader closes the pipe early; the command stops
quietly (exit 141, as a shell reports SIGPIPE) instead of printing a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

from tests.edge.web.test_history_trend import NOW, payload
from tests.faults.conftest import ROOT


def test_trend_into_a_closed_pipe_is_quiet(tmp_path):
    jsonl = tmp_path / "batches.jsonl"
    with jsonl.open("w") as f:
        for i in range(3000):  # more CSV than a pipe buffer holds
            p = payload(i + 1, NOW - timedelta(seconds=3000 - i), 100.0 + i % 7)
            f.write(json.dumps({"type": "psd", "batch_id": i + 1, "payload": p}) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "trend", "--jsonl", str(jsonl)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"batch_id,")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
