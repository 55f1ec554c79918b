"""`crystal-edge analyze --masks`: real image files, the real CLI, numbers in the report."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import main

PX = 1.45
SHAPE = (240, 320)  # H, W
RADII = (6, 9, 12, 15, 18)


def _disc_area(r: int) -> int:
    img = np.zeros((2 * r + 5, 2 * r + 5), np.uint8)
    cv2.circle(img, (r + 2, r + 2), r, 1, -1)
    return int(img.sum())


def _disc_mask(radii=RADII, shape=SHAPE, value=255, dtype=np.uint8) -> np.ndarray:
    """Discs on a row at y = 60 and on a row at y = 170, well apart and off the border."""
    img = np.zeros(shape, dtype)
    for i, r in enumerate(radii):
        cv2.circle(img, (35 + i * 60, 60), r, value, -1)
        cv2.circle(img, (35 + i * 60, 170), r, value, -1)
    return img


def _midpoint_quantile(x, w, q):
    """Independent implementation of the documented quantile rule."""
    o = np.argsort(x)
    x, w = np.asarray(x)[o], np.asarray(w)[o]
    f = (np.cumsum(w) - w / 2) / w.sum()
    return float(np.interp(q, f, x))


def _run(args, capsys):
    rc = main(["analyze", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture()
def mask_dir(tmp_path: Path) -> Path:
    d = tmp_path / "masks"
    d.mkdir()
    for k in range(3):
        cv2.imwrite(str(d / f"m{k}.png"), _disc_mask())
    (d / "readme.txt").write_text("not scanned")
    return d


def test_discs_of_known_size_json_csv_plot(mask_dir, tmp_path, capsys):
    j, c, p = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "q3.png"
    rc, out, err = _run(["--masks", mask_dir, "--px-size-um", PX, "--json", j, "--csv", c,
                         "--plot", p, "--bootstrap", 300], capsys)
    assert rc == 0, err
    rep = json.loads(j.read_text())
    assert rep["n_images"] == 3 and rep["n_images_ok"] == 3
    n = 3 * 2 * len(RADII)
    assert rep["n_crystals"] == n
    assert rep["n_rejected"] == {"too_small": 0, "agglomerate": 0, "border": 0, "bubble": 0}
    # analytic: area-equivalent diameters of the drawn discs, Miles-Lantuejoul weights
    areas = np.array([_disc_area(r) for r in RADII] * 6, float)
    d = 2 * np.sqrt(areas / np.pi) * PX
    side = np.array([2 * r + 1 for r in RADII] * 6, float)
    h, w = SHAPE
    weights = (w * h) / ((w - side) * (h - side))
    x50_3 = _midpoint_quantile(d, weights * d**3, 0.5)
    assert rep["x50_3_um"] == pytest.approx(x50_3, rel=1e-9)
    assert rep["x50_0_um"] == pytest.approx(_midpoint_quantile(d, weights, 0.5), rel=1e-9)
    assert rep["x90_3_um"] == pytest.approx(_midpoint_quantile(d, weights * d**3, 0.9), rel=1e-9)
    assert rep["d32_um"] == pytest.approx((weights * d**3).sum() / (weights * d**2).sum())
    assert rep["span"] == pytest.approx((rep["x90_3_um"] - rep["x10_3_um"]) / rep["x50_3_um"])
    lo, hi = rep["x50_3_ci95_um"]
    assert lo <= rep["x50_3_um"] <= hi
    assert rep["lognormal"]["x50_3_um"] > 0 and rep["lognormal"]["s_lnd"] > 0
    assert sum(b["count"] for b in rep["bins"]) == n
    assert {"lower_um", "upper_um", "count", "q0", "q3"} <= set(rep["bins"][0])
    assert rep["settings"]["px_size_um"] == PX
    assert rep["settings"]["psd"]["bootstrap_n"] == 300
    assert rep["settings"]["edge_correction_applied"] is True
    assert rep["software"]["version"]
    assert [im["file"] for im in rep["images"]] == [str(mask_dir / f"m{k}.png") for k in range(3)]
    assert all(im["n_kept"] == 10 for im in rep["images"])
    # CSV: one row per crystal, areas as drawn, weights as above
    rows = list(csv.DictReader(c.read_text().splitlines()))
    assert len(rows) == n
    assert sorted(int(r["area_px"]) for r in rows) == sorted(areas.astype(int))
    got_w = sorted(float(r["weight"]) for r in rows)
    assert got_w == pytest.approx(sorted(weights))
    assert {"file", "id", "kept", "reason", "diameter_um", "circularity",
            "bbox_w_frame_px"} <= set(rows[0])
    # plot: a real PNG
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(p))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 300
    assert "x50,3" in out
    assert rep["notes"] and "only 30 crystals" in rep["notes"][0] and "note: only 30" in out
    # process values: ten separate discs per frame, none an agglomerate
    assert rep["process"]["crystals_per_frame"] == 10.0
    assert rep["process"]["agglomerate_fraction_number"] == 0.0
    assert "process: 10.0 crystals/frame, agglomerates 0.0% by number" in out
    # the size classes beside the crystals' CSV, with ISO 9276-1 columns
    classes = list(csv.DictReader((tmp_path / "r.classes.csv").read_text().splitlines()))
    assert list(classes[0]) == ["lower_um", "upper_um", "count", "q0", "q3", "Q0", "Q3",
                                "q3_density_per_um", "max_um"]
    assert [float(r["Q3"]) for r in classes] == pytest.approx([b["Q3"] for b in rep["bins"]])


def test_no_edge_correction_uniform_size(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), _disc_mask(radii=(12,) * 5))
    j = tmp_path / "r.json"
    rc, _out, err = _run(["--masks", tmp_path / "a.png", "--px-size-um", PX, "--json", j,
                          "--no-edge-correction", "--class-width-um", 5], capsys)
    assert rc == 0, err
    rep = json.loads(j.read_text())
    dia = 2 * np.sqrt(_disc_area(12) / np.pi) * PX
    for key in ("x10_3_um", "x50_3_um", "x90_3_um", "x50_0_um", "d32_um"):
        assert rep[key] == pytest.approx(dia, rel=1e-9), key
    assert rep["span"] == 0.0
    assert rep["weighted"] is False and rep["settings"]["edge_correction_applied"] is False
    assert rep["lognormal"] is None  # one class: nothing to fit
    assert rep["bins"][0]["upper_um"] - rep["bins"][0]["lower_um"] == 5.0


def test_rejections_border_and_small(tmp_path, capsys):
    img = _disc_mask(radii=(12, 12))
    cv2.circle(img, (0, 120), 15, 255, -1)        # cut by the left edge -> border
    cv2.rectangle(img, (250, 120), (252, 122), 255, -1)  # 9 px -> too small
    cv2.imwrite(str(tmp_path / "a.png"), img)
    j = tmp_path / "r.json"
    rc, _out, err = _run(["--masks", tmp_path / "a.png", "--px-size-um", PX, "--json", j,
                          "--bootstrap", 0], capsys)
    assert rc == 0, err
    rep = json.loads(j.read_text())
    assert rep["n_crystals"] == 4
    assert rep["n_rejected"]["border"] == 1 and rep["n_rejected"]["too_small"] == 1
    assert rep["x50_3_ci95_um"] is None
    # without border clearing the cut disc is kept and there is no edge correction
    rc, _out, err = _run(["--masks", tmp_path / "a.png", "--px-size-um", PX, "--json", j,
                          "--no-clear-border", "--min-area-px", 30], capsys)
    rep = json.loads(j.read_text())
    assert rc == 0 and rep["n_crystals"] == 5 and rep["n_rejected"]["border"] == 0
    assert rep["n_rejected"]["too_small"] == 1
    assert rep["settings"]["measure"]["min_area_px"] == 30
    assert rep["settings"]["edge_correction_applied"] is False


def test_mask_formats_accepted(tmp_path, capsys):
    base = _disc_mask(radii=(10, 14))
    cv2.imwrite(str(tmp_path / "grey_rgb.png"), cv2.merge([base, base, base]))
    cv2.imwrite(str(tmp_path / "bin16.png"), base.astype(np.uint16) * 257)
    cls = np.where(base > 0, 2, 1).astype(np.uint16)
    cls[:5] = 0
    cv2.imwrite(str(tmp_path / "classes16.tif"), cls)
    cv2.imwrite(str(tmp_path / "lossy.jpg"), base, [cv2.IMWRITE_JPEG_QUALITY, 70])
    j = tmp_path / "r.json"
    rc, _o, err = _run(["--masks", tmp_path / "grey_rgb.png", tmp_path / "bin16.png",
                        tmp_path / "lossy.jpg", "--px-size-um", PX, "--json", j], capsys)
    assert rc == 0, err
    rep = json.loads(j.read_text())
    assert [im["n_kept"] for im in rep["images"]] == [4, 4, 4]
    rc, _o, err = _run(["--masks", tmp_path / "classes16.tif", "--crystal-class", 2,
                        "--px-size-um", PX, "--json", j], capsys)
    assert rc == 0, err
    rep = json.loads(j.read_text())
    assert rep["n_crystals"] == 4 and rep["settings"]["crystal_class"] == 2


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = _disc_mask(radii=(10,))
    _ok, buf = cv2.imencode(".png", good)
    files = {
        "empty": (tmp_path / "empty.png", "empty file"),
        "text": (tmp_path / "notes.png", "not an image file"),
        "truncated": (tmp_path / "trunc.png", "truncated PNG"),
        "tiny": (tmp_path / "tiny.png", "smaller than 32 px"),
        "float": (tmp_path / "float.tiff", "float32"),
        "colour": (tmp_path / "colour.png", "differing channels"),
        "classmap": (tmp_path / "classes.png", "--crystal-class"),
        "emptydir": (tmp_path / "nothing_here", "no image files"),
        "missing": (tmp_path / "missing.png", "no such file"),
    }
    files["empty"][0].write_bytes(b"")
    files["text"][0].write_text("this is not an image\n")
    files["truncated"][0].write_bytes(buf.tobytes()[: len(buf) // 2])
    cv2.imwrite(str(files["tiny"][0]), np.full((1, 1), 255, np.uint8))
    cv2.imwrite(str(files["float"][0]), good.astype(np.float32))
    colour = cv2.merge([good, np.zeros_like(good), good])
    cv2.imwrite(str(files["colour"][0]), colour)
    cv2.imwrite(str(files["classmap"][0]), np.where(good > 0, 2, 1).astype(np.uint8))
    files["emptydir"][0].mkdir()
    (files["emptydir"][0] / "x.txt").write_text("no images")
    return files


def test_bad_inputs_are_skipped_with_one_line_each(tmp_path, capsys):
    files = _bad_files(tmp_path)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), _disc_mask(radii=(10, 16)))
    j = tmp_path / "r.json"
    args = ["--masks", good, *[p for p, _ in files.values()], "--px-size-um", PX, "--json", j]
    rc, _out, err = _run(args, capsys)
    assert rc == 0  # the good file was measured
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(lines) == len(files)
    for path, reason in files.values():
        hits = [ln for ln in lines if str(path) in ln]
        assert len(hits) == 1 and reason in hits[0], (path, reason, lines)
    assert "Traceback" not in err
    rep = json.loads(j.read_text())
    assert rep["n_images"] == 1 + len(files) and rep["n_images_ok"] == 1
    assert rep["n_crystals"] == 4
    errors = {im["file"]: im["error"] for im in rep["images"] if im["status"] == "error"}
    for path, reason in files.values():
        assert reason in errors[str(path)]


def test_nothing_measured_exits_1_and_still_reports(tmp_path, capsys):
    files = _bad_files(tmp_path)
    j = tmp_path / "r.json"
    rc, _out, err = _run(["--masks", files["empty"][0], files["text"][0], "--px-size-um", PX,
                          "--json", j], capsys)
    assert rc == 1
    assert "nothing could be measured" in err
    rep = json.loads(j.read_text())
    assert rep["n_images_ok"] == 0 and rep["x50_3_um"] is None


def test_no_crystals_is_not_an_error(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "blank.png"), np.zeros(SHAPE, np.uint8))
    j, p = tmp_path / "r.json", tmp_path / "q3.png"
    rc, _out, _err = _run(["--masks", tmp_path / "blank.png", "--px-size-um", PX, "--json", j,
                           "--plot", p, "--csv", tmp_path / "r.csv"], capsys)
    assert rc == 0
    rep = json.loads(j.read_text())
    assert rep["n_crystals"] == 0 and rep["x50_3_um"] is None
    assert len(rep["bins"]) == 101 and not any(b["count"] for b in rep["bins"])  # fixed grid
    assert "no crystal was kept" in rep["notes"][0]
    assert cv2.imread(str(p)) is not None
    header = (tmp_path / "r.csv").read_text().splitlines()
    assert len(header) == 1 and header[0].startswith("file,")


@pytest.mark.parametrize("extra, message", [
    (["--px-size-um", "0"], "--px-size-um: must be a positive number"),
    (["--px-size-um", "-1.45"], "--px-size-um: must be a positive number"),
    (["--px-size-um", "nan"], "--px-size-um: must be a positive number"),
    ([], "--px-size-um: required"),
    (["--px-size-um", "1.45", "--class-width-um", "0"], "--class-width-um"),
    (["--px-size-um", "1.45", "--circularity-min", "0.9", "--circularity-max", "0.8"],
     "circularity"),
    (["--px-size-um", "1.45", "--crystal-class", "-1"], "--crystal-class"),
    # a missing folder is created; one that cannot be (a file in the way) is an error
    (["--px-size-um", "1.45", "--json", "{mask_dir}/m0.png/r.json"], "--json"),
])
def test_argument_errors_exit_2(mask_dir, capsys, extra, message):
    extra = [a.format(mask_dir=mask_dir) for a in extra]
    rc, _out, err = _run(["--masks", mask_dir, *extra], capsys)
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--masks", "x.png", "--px-size-um", "abc"])
    assert exc.value.code == 2
    rc, _out, err = _run([], capsys)
    assert rc == 2 and "--masks" in err


def test_json_to_stdout(mask_dir, capsys):
    rc, out, _err = _run(["--masks", mask_dir / "m0.png", "--px-size-um", PX, "--json", "-",
                          "--bootstrap", 0], capsys)
    assert rc == 0
    rep = json.loads(out)
    assert rep["n_crystals"] == 10 and rep["mode"] == "masks"


def test_subprocess_cli(mask_dir, tmp_path):
    j = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "analyze", "--masks", str(mask_dir),
         str(tmp_path / "missing.png"), "--px-size-um", str(PX), "--json", str(j),
         "--bootstrap", "100"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "missing.png: rejected: unreadable (no such file or directory)" in proc.stderr
    assert "Traceback" not in proc.stderr
    rep = json.loads(j.read_text())
    assert rep["n_crystals"] == 30 and rep["n_images_failed"] == 1
    bad = subprocess.run(
        [sys.executable, "-m", "edge.cli", "analyze", "--masks", str(mask_dir),
         "--px-size-um", "-2"], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("crystal-edge: error: --px-size-um: must be a positive "
                                  "number of um, got -2.0")


def test_absurd_pixel_size_is_a_user_error(mask_dir, capsys):
    rc, _out, err = _run(["--masks", mask_dir, "--px-size-um", "1e6", "--class-width-um",
                          "0.001", "--bootstrap", 0], capsys)
    assert rc == 2 and "class_width_um" in err and "classes" in err
