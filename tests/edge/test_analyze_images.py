"""`crystal-edge analyze IMAGES...`: real PNG frames, the real tiny ONNX, the real CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import main
from tests.fixtures.tiny_model import build_tiny_model, synth_frame

PX = 1.45
RADII = (8.0, 11.0, 14.0, 17.0, 20.0, 23.0)


def _crystals(k):
    # two rows of discs, well inside the lit field, shifted per frame
    return [(70 + i * 95 + 3 * k, y, r) for i, r in enumerate(RADII) for y in (140, 330)]


def _run(args, capsys):
    rc = main(["analyze", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model"), px_size_um=PX)


@pytest.fixture()
def frames(tmp_path) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    for k in range(3):
        cv2.imwrite(str(d / f"f{k}.png"), synth_frame(480, 640, crystals=_crystals(k), seed=k))
    cv2.imwrite(str(d / "z_blank.png"), np.full((480, 640), 128, np.uint8))
    (d / "z_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return d


def test_frames_to_report_overlays_and_class_maps(model, frames, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    rc, stdout, err = _run([frames, "--model", model, "--px-size-um", PX, "--json",
                            out / "r.json", "--csv", out / "r.csv", "--overlays", out / "ov",
                            "--masks-out", out / "cm", "--bootstrap", 0], capsys)
    assert "images: 3 of 5 measured; crystals kept: 36" in stdout
    assert rc == 0, err
    rep = json.loads((out / "r.json").read_text())
    assert rep["mode"] == "images"
    assert (rep["n_images"], rep["n_images_ok"], rep["n_crystals"]) == (5, 3, 36)
    by_file = {Path(e["file"]).name: e for e in rep["images"]}
    assert by_file["z_blank.png"]["status"] == "error"
    assert by_file["z_blank.png"]["reject_reason"] == "blank"
    assert "PNG without an IHDR chunk" in by_file["z_broken.png"]["error"]
    good = by_file["f0.png"]
    assert good["n_kept"] == 12 and good["roi"]["kind"] == "circle"
    assert {"quality_ms", "inference_ms", "postprocess_ms"} <= set(good["timings_ms"])
    assert good["quality"]["focus"] > 50
    assert rep["settings"]["frames_rejected"] == {"blank": 1, "unreadable": 1}
    model_info = rep["settings"]["model"]
    assert model_info["backend"] == "onnxruntime" and model_info["name"] == "tiny-seg"
    assert rep["settings"]["px_size_um"] == PX
    # one stderr line per skipped input, no traceback
    assert "z_broken.png: rejected: unreadable (PNG without an IHDR chunk" in err
    assert "z_blank.png: rejected: blank" in err
    assert "Traceback" not in err

    with (out / "r.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    d = np.sort([float(r["diameter_um"]) for r in rows if Path(r["file"]).name == "f1.png"])
    truth = np.sort(np.repeat(np.array(RADII) * 2 * PX, 2))
    np.testing.assert_allclose(d, truth, atol=1.5 * PX)

    ov = sorted(p.name for p in (out / "ov").iterdir())
    assert ov == ["f0.overlay.png", "f1.overlay.png", "f2.overlay.png", "z_blank.overlay.png"]
    from edge.vision.overlay import header_height

    ov_img = cv2.imread(str(out / "ov" / "f0.overlay.png"))
    assert ov_img.shape == (480 + header_height(640, 480), 640, 3)
    cm = cv2.imread(str(out / "cm" / "f2.classes.png"), cv2.IMREAD_UNCHANGED)
    assert cm.dtype == np.uint8 and cm.shape == (480, 640)
    assert set(np.unique(cm)) == {0, 1, 2}
    assert cm[140, 70 + 5 * 95 + 6] == 2 and cm[240, 320] == 1 and cm[0, 0] == 0


def test_class_maps_round_trip_through_masks_mode(model, frames, tmp_path, capsys):
    rc, _, err = _run([frames / "f0.png", frames / "f1.png", "--model", model, "--json",
                       tmp_path / "a.json", "--masks-out", tmp_path / "cm", "--bootstrap", 0],
                      capsys)
    assert rc == 0, err
    rc, _, err = _run(["--masks", tmp_path / "cm", "--crystal-class", 2, "--px-size-um", PX,
                       "--json", tmp_path / "b.json", "--bootstrap", 0], capsys)
    assert rc == 0, err
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["n_crystals"] == b["n_crystals"] == 24
    assert a["x50_3_um"] == pytest.approx(b["x50_3_um"], rel=0.02)


def test_inference_scale_keeps_diameters(model, frames, tmp_path, capsys):
    res = {}
    for s in ("1", "0.5"):
        rc, _, err = _run([frames / "f0.png", "--model", model, "--inference-scale", s,
                           "--json", tmp_path / f"{s}.json", "--bootstrap", 0], capsys)
        assert rc == 0, err
        res[s] = json.loads((tmp_path / f"{s}.json").read_text())
    assert res["0.5"]["settings"]["px_size_um"] == pytest.approx(2 * PX)
    assert res["0.5"]["n_crystals"] == res["1"]["n_crystals"] == 12
    assert res["0.5"]["x50_3_um"] == pytest.approx(res["1"]["x50_3_um"], rel=0.05)


def test_nothing_measurable_exits_1(model, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((100, 100), np.uint8))
    rc, _, err = _run([blank, "--model", model], capsys)
    assert rc == 1
    assert "rejected: blank" in err and "nothing could be measured" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "nope/missing.onnx"], "--model nope/missing.onnx: model file not found"),
    (["--inference-scale", "big"], "--inference-scale: expected a number or 'auto'"),
    (["--masks", "x"], "give either frames (IMAGES_OR_DIRS) or --masks, not both"),
    (["--px-size-um", "-1"], "--px-size-um: must be a positive number"),
])
def test_user_errors_are_one_line_exit_2(model, frames, args, message, capsys):
    argv = [frames / "f0.png", *args]
    if "--model" not in args:
        argv += ["--model", model]
    rc, _, err = _run(argv, capsys)
    assert rc == 2
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_a_backend_that_cannot_load_is_one_line_exit_1(model, frames, capsys):
    """Not the user's mistake for certain (a GPU not ready yet looks the same): exit 1."""
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT installed here")
    except ImportError:
        pass
    rc, _, err = _run([frames / "f0.png", "--model", model, "--backend", "tensorrt"], capsys)
    assert rc == 1
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "backend.name = 'tensorrt': cannot load" in lines[0], err
    assert "Traceback" not in err


def test_not_an_onnx_model_is_a_user_error(frames, tmp_path, capsys):
    fake = tmp_path / "fake.onnx"
    fake.write_text("hello")
    rc, _, err = _run([frames / "f0.png", "--model", fake], capsys)
    assert rc == 2 and "fake.onnx: not an ONNX model" in err


def test_odd_frames_are_skipped_with_reasons_not_tracebacks(model, frames, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "tiny.png"), np.full((5, 5), 200, np.uint8))
    cv2.imwrite(str(tmp_path / "f32.tiff"), np.full((64, 64), 3.5, np.float32))
    grey16 = cv2.cvtColor(cv2.imread(str(frames / "f0.png")), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "g16.tif"), grey16.astype(np.uint16) * 257)
    rc, _, err = _run([tmp_path / "tiny.png", tmp_path / "f32.tiff", tmp_path / "g16.tif",
                       frames / "f0.png", "--model", model, "--json", tmp_path / "r.json",
                       "--overlays", tmp_path / "ov", "--bootstrap", 0], capsys)
    assert rc == 0, err
    assert "Traceback" not in err
    assert "tiny.png: rejected: bad_shape (5x5 px is smaller than 32 px)" in err
    assert "f32.tiff: rejected: unreadable (float image must be in [0, 1]" in err
    rep = json.loads((tmp_path / "r.json").read_text())
    entries = {Path(e["file"]).name: e for e in rep["images"]}
    assert entries["g16.tif"]["n_kept"] == entries["f0.png"]["n_kept"] == 12
    assert not (tmp_path / "ov" / "f32.overlay.png").exists()


def test_masks_out_enlarges_the_logits_to_the_frame(model, frames, tmp_path, capsys):
    """Segmented at half size, the written mask comes from the class logits enlarged to
    the frame: closer to the drawn discs than the half-size class map enlarged as a label
    (outlines on a 2-pixel grid)."""
    from edge.vision.analyzer import FrameAnalyzer
    from edge.vision.preprocess import upsample_class_map
    from tests.fixtures.tiny_model import cv2_circle

    rc, _, err = _run([frames / "f1.png", "--model", model, "--px-size-um", PX,
                       "--inference-scale", "0.5", "--masks-out", tmp_path / "cm",
                       "--json", tmp_path / "r.json", "--bootstrap", 0], capsys)
    assert rc == 0, err
    written = cv2.imread(str(tmp_path / "cm" / "f1.classes.png"), cv2.IMREAD_UNCHANGED) == 2
    truth = np.zeros((480, 640), np.uint8)
    for cx, cy, r in _crystals(1):
        cv2_circle(truth, (cx, cy), r)
    truth = truth > 0
    with FrameAnalyzer(model, px_size_um=PX, inference_scale=0.5) as fa:
        half = fa.segment([cv2.imread(str(frames / "f1.png"))])[0]
    as_label = upsample_class_map(np.asarray(half), (480, 640)) == 2

    def iou(a):
        return (a & truth).sum() / (a | truth).sum()

    assert iou(written) > iou(as_label) + 0.01, (iou(written), iou(as_label))
