"""``make demo`` and ``make bench`` plumbing: scripts/demo.py, bench/run_all.py,
bench/bench_pipeline.py (small sizes here; the real sizes run in ``make demo/bench``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.fixtures.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

import bench_pipeline  # noqa: E402
import demo  # noqa: E402
import run_all  # noqa: E402


def test_demo_without_model_says_so_and_fails(tmp_path, capsys):
    rc = demo.main(["--out", str(tmp_path / "out"), "--model", str(tmp_path / "none.onnx")])
    assert rc == 1
    out = capsys.readouterr().out
    assert "none.onnx is missing" in out and "does not fake results" in out
    assert not (tmp_path / "out").exists()


def test_demo_runs_both_fractions(tmp_path, capsys):
    model = build_tiny_model(tmp_path / "m")
    out = tmp_path / "demo-out"
    rc = demo.main(["--out", str(out), "--model", str(model), "--frames", "2",
                    "--size", "320x240", "--threads", "1"])
    text = capsys.readouterr().out
    assert rc == 0, text
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["fractions"]) == {"90-125", "125-180"}
    for fraction, lo, hi in (("90-125", 90, 125), ("125-180", 125, 180)):
        s = summary["fractions"][fraction]
        assert s["frames"]["total"] == 2
        # the truth is the generator's: its median lies in (or near) the sieve fraction
        assert lo * 0.9 < s["truth"]["x50_3_um"] < hi * 1.1
        assert Path(s["plot"]).is_file() and Path(s["report"]).is_file()
        assert (out / "frames" / fraction / "truth.json").is_file()
        assert f"sieve fraction {fraction} um" in text
        assert "crystals_per_frame" in s["process"]  # the report's process values
    assert "x50,3" in text and "measured" in text and "truth" in text
    # the summary names the rule that decided agglomerates, the report's
    assert summary["agglomerate_rule"] == "convexity"
    assert "agglomerate rule (convexity)" in text and "circularity window" not in text
    # the demo's own process line per fraction (analyze's summaries print one too)
    assert text.count("\n  process: ") == 2 and "crystals/frame" in text


def test_makefile_targets_use_the_scripts():
    mk = (ROOT / "Makefile").read_text()
    assert "demo: install\n\t$(BIN)/python scripts/demo.py --out demo-out" in mk
    assert "bench: install-dev\n\t$(BIN)/python bench/run_all.py --out bench-out" in mk


def test_run_all_collects_json_and_failures(tmp_path, capsys):
    bd = tmp_path / "bench"
    bd.mkdir()
    (bd / "bench_good.py").write_text(
        'import json\nprint(json.dumps({"benchmark": "good", "fps": 12.5}))\n')
    (bd / "bench_bad.py").write_text('import sys\nsys.exit("boom")\n')
    (bd / "helper.py").write_text("raise SystemExit(3)\n")  # not a benchmark
    rc = run_all.main(["--out", str(tmp_path / "out"), "--bench-dir", str(bd)])
    assert rc == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["benchmarks"] == {"good": {"benchmark": "good", "fps": 12.5}}
    assert set(doc["failed"]) == {"bad"} and "boom" in doc["failed"]["bad"]
    assert json.loads((tmp_path / "out" / "good.json").read_text())["fps"] == 12.5
    assert json.loads((tmp_path / "out" / "all.json").read_text())["failed"]
    with pytest.raises(SystemExit, match="unknown benchmark"):
        run_all.main(["--only", "nope", "--bench-dir", str(bd)])


def test_bench_pipeline_small(capsys):
    rc = bench_pipeline.main(["--frames", "4", "--width", "320", "--height", "240",
                              "--batch", "2", "--threads", "1"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["benchmark"] == "pipeline" and out["frames"] == 4
    assert out["backend_fps"] > 0 and out["pipeline_fps"] > 0
    assert out["ratio"] == pytest.approx(out["pipeline_fps"] / out["backend_fps"], rel=0.01)
    assert out["postprocess_ms_per_frame"] > 0
    assert out["pipeline"]["frames_used"] + sum(out["pipeline"]["frames_rejected"].values()) == 4
    assert max(out["pipeline"]["max_queue_depths"].values()) <= 4
