"""`crystal-edge analyze --workers N`: the decode / inference / post-processing pipeline
(edge/vision/parallel.py) gives the serial path's report; progress lines without a terminal.
Real PNG frames, the real tiny ONNX, the real CLI."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import main
from edge.vision.analyzer import FrameAnalyzer
from edge.vision.parallel import ProgressLine, analyze_ordered
from tests.fixtures.tiny_model import build_tiny_model, synth_frame

PX = 1.45


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model"), px_size_um=PX)


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(3)
    for k in range(11):
        crystals = [(rng.uniform(80, 560), rng.uniform(80, 400), rng.uniform(6, 22))
                    for _ in range(14)]
        cv2.imwrite(str(d / f"f{k:02d}.png"), synth_frame(480, 640, crystals=crystals, seed=k))
    cv2.imwrite(str(d / "f05_blank.png"), np.full((480, 640), 128, np.uint8))
    (d / "f07_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    # the same file name twice: overlay stems are given in input order
    other = tmp_path_factory.mktemp("other") / "f01.png"
    cv2.imwrite(str(other), synth_frame(480, 640, crystals=[(300, 240, 15)], seed=99))
    return [str(d), str(other)]


def _strip(doc):
    """The report without wall-clock times (they differ from run to run)."""
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items()
                if k not in {"throughput", "wall_s", "created"} and not k.endswith("_ms")}
    if isinstance(doc, list):
        return [_strip(v) for v in doc]
    return doc


def _analyze(model, frames, out: Path, *extra) -> dict:
    rc = main(["analyze", *frames, "--model", str(model), "--px-size-um", str(PX),
               "--json", str(out / "r.json"), "--csv", str(out / "r.csv"),
               "--overlays", str(out / "ov"), "--bootstrap", "0", *extra])
    assert rc == 0
    return json.loads((out / "r.json").read_text())


def test_two_workers_give_the_serial_report(model, frames, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    serial = _analyze(model, frames, tmp_path / "a", "--workers", "1", "--batch", "3")
    err_serial = capsys.readouterr().err
    parallel = _analyze(model, frames, tmp_path / "b", "--workers", "2", "--batch", "3")
    err_parallel = capsys.readouterr().err
    assert serial["n_images"] == 14 and serial["n_images_ok"] == 12
    assert serial["n_crystals"] > 100
    # compared as text: NaN fields (no crystals in a class) are equal there
    assert json.dumps(_strip(parallel)) == json.dumps(_strip(serial))
    assert (tmp_path / "a" / "r.csv").read_text() == (tmp_path / "b" / "r.csv").read_text()
    names = sorted(p.name for p in (tmp_path / "a" / "ov").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b" / "ov").iterdir())
    assert "f01-1.overlay.png" in names
    for name in names:
        a = cv2.imread(str(tmp_path / "a" / "ov" / name))
        b = cv2.imread(str(tmp_path / "b" / "ov" / name))
        assert np.array_equal(a, b), name

    def skipped(err):
        return [ln for ln in err.splitlines() if "rejected:" in ln]

    assert skipped(err_parallel) == skipped(err_serial) and len(skipped(err_serial)) == 2


def test_progress_lines_without_a_terminal(model, frames, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edge.analyze")
    _analyze(model, frames, tmp_path, "--workers", "2", "--progress-every", "5")
    lines = [r.getMessage() for r in caplog.records if "frames/s, eta" in r.getMessage()]
    assert [ln.split(",")[0] for ln in lines] == [
        "analyze: 5/14 frames", "analyze: 10/14 frames", "analyze: 14/14 frames"]


@pytest.mark.parametrize("option", ["--workers", "--progress-every"])
def test_counts_below_one_are_one_line_errors(model, frames, option, capsys):
    rc = main(["analyze", *frames, "--model", str(model), option, "0"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{option}: must be >= 1, got 0" in err and "Traceback" not in err


def test_progress_line_text():
    now = [0.0]
    p = ProgressLine(2000, 500, logging.getLogger("t"), clock=lambda: now[0])
    now[0] = 40.0
    p.update(500)
    assert p.line() == "analyze: 500/2000 frames, 12.5 frames/s, eta 2 min"
    now[0] = 5000.0
    assert p.line().endswith("0.1 frames/s, eta 4.2 h")  # 1500 frames at 0.1 frames/s


def test_the_pipeline_is_bounded_and_ordered(model):
    """At most ``window`` inputs are decoded ahead of what the caller has taken."""
    analyzer = FrameAnalyzer(model, px_size_um=PX)
    frame = synth_frame(240, 320, crystals=[(160, 120, 12)], seed=1)
    decoded, lock = [0], threading.Lock()

    def decode(i):
        with lock:
            decoded[0] += 1
        return f"f{i}", frame

    ahead = []
    out = []
    for a in analyze_ordered(analyzer, list(range(40)), decode, workers=2, chunk=2, window=4):
        with lock:
            ahead.append(decoded[0] - len(out))
        out.append(a.entry)
    analyzer.close()
    assert out == list(range(40))
    # the decode window (4) plus the frames pending in post-processing (4) plus one chunk
    assert max(ahead) <= 4 + 4 + 2
