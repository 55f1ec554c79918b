"""Through the whole image chain with the bundled model: a large air bubble that the
network reads as a crystal (0.5 um/px card set, frame 17: the one object behind that
domain's x50,3 error) is rejected as 'bubble', and every crystal stays as it was."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.measure import BUBBLE, MeasureConfig
from edge.vision.analyzer import FrameAnalyzer

MODEL = Path(__file__).resolve().parents[2] / "models" / "crystal-seg.onnx"


def test_the_card_s_bubble_is_rejected_and_nothing_else_changes() -> None:
    from trainer.synth import SynthConfig
    from trainer.synth.dataset import frame_seed
    from trainer.synth.render import render_frame

    cfg = SynthConfig.from_presets("fine_pixels", width=1024, height=768)
    frame = render_frame(frame_seed(3015, 17), cfg)
    (bubble,) = [b for b in frame.meta["bubbles"] if b["r"] > 100]
    bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
    results = {}
    for on in (True, False):
        with FrameAnalyzer(MODEL, px_size_um=0.5,
                           measure_config=MeasureConfig(reject_bubbles=on)) as fa:
            results[on] = fa.analyze("synth_00017", bgr)
    with_test, without = results[True].crystals, results[False].crystals
    scale = results[True].inference_scale
    changed = np.flatnonzero(with_test.reason != without.reason)
    assert len(changed) == 1 and with_test.reason[changed[0]] == BUBBLE
    assert without.reason[changed[0]] == ""
    x, y = with_test.centroid[changed[0]] / scale
    assert np.hypot(x - bubble["cx"], y - bubble["cy"]) < 5
    assert with_test.n_kept == without.n_kept - 1 >= 4


def test_analyze_counts_the_bubble_and_keep_bubbles_keeps_it(tmp_path: Path) -> None:
    import json

    from edge.cli import main as edge_cli
    from trainer.synth import SynthConfig
    from trainer.synth.dataset import frame_seed
    from trainer.synth.render import render_frame

    cfg = SynthConfig.from_presets("fine_pixels", width=1024, height=768)
    frame = render_frame(frame_seed(3015, 17), cfg)
    png = tmp_path / "synth_00017.png"
    cv2.imwrite(str(png), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    counts = {}
    for extra in ([], ["--keep-bubbles"]):
        out = tmp_path / f"r{len(extra)}.json"
        assert edge_cli(["analyze", str(png), "--model", str(MODEL), "--px-size-um", "0.5",
                         "--bootstrap", "0", "--json", str(out), *extra]) == 0
        counts[bool(extra)] = json.loads(out.read_text())["n_rejected"]
    assert counts[False][BUBBLE] == 1 and counts[True][BUBBLE] == 0
