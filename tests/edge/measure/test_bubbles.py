"""Air bubbles the network takes for crystals are rejected as 'bubble' by their radial
brightness (a thick dark ring round a bright centre); crystals are not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.measure import BUBBLE, MeasureConfig, measure_crystals, radial_contrast

BG = 200.0


def _bubble(grey, mask, cx, cy, r, *, ring=0.3, inner=0.9, core=1.2):
    """A bubble as the generator and a microscope show it: dark from ~0.72 R to R."""
    cv2.circle(grey, (cx, cy), r, BG * ring, -1)
    cv2.circle(grey, (cx, cy), int(r * 0.72), BG * inner, -1)
    cv2.circle(grey, (cx, cy), int(r * 0.3), min(255.0, BG * core), -1)
    cv2.circle(mask, (cx, cy), r, 1, -1)


def _frame():
    """Background 200; a bubble, a transparent hexagon (thin dark rim, centre 0.92 of the
    background), an opaque disc, a transparent disc with a thick rim and a centre as bright
    as the background, each also in the crystal mask."""
    grey = np.full((240, 420), BG, np.float32)
    mask = np.zeros(grey.shape, np.uint8)
    _bubble(grey, mask, 60, 60, 40)
    hexagon = np.array([[200 + 38 * np.cos(a), 60 + 38 * np.sin(a)]
                        for a in np.arange(6) * np.pi / 3], np.int32)
    cv2.fillPoly(grey, [hexagon], BG * 0.3)
    cv2.fillPoly(mask, [hexagon], 1)
    inner = ((hexagon - [200, 60]) * 0.85 + [200, 60]).astype(np.int32)
    cv2.fillPoly(grey, [inner], BG * 0.92)
    cv2.circle(grey, (340, 60), 38, BG * 0.35, -1)
    cv2.circle(mask, (340, 60), 38, 1, -1)
    cv2.circle(grey, (120, 170), 40, BG * 0.4, -1)      # a rounded transparent crystal:
    cv2.circle(grey, (120, 170), 34, BG * 1.0, -1)      # rim 0.15 R, centre = background
    cv2.circle(mask, (120, 170), 40, 1, -1)
    grey = cv2.GaussianBlur(grey, (0, 0), 1.0)
    return np.clip(grey, 0, 255).astype(np.uint8), mask


def _reasons(c):
    return {(round(float(x) / 20), round(float(y) / 20)): str(r)
            for (x, y), r in zip(c.centroid, c.reason, strict=True)}


def test_a_bubble_is_rejected_and_the_crystals_are_kept():
    grey, mask = _frame()
    c = measure_crystals(mask, px_size_um=1.0, grey=grey)
    by_place = _reasons(c)
    assert by_place[(3, 3)] == BUBBLE
    assert by_place[(10, 3)] == "" and by_place[(17, 3)] == "" and by_place[(6, 8)] == ""
    assert c.rejected_counts()[BUBBLE] == 1 and c.n_kept == 3


def test_without_the_frame_or_switched_off_nothing_is_a_bubble():
    grey, mask = _frame()
    assert measure_crystals(mask, px_size_um=1.0).n_kept == 4
    off = MeasureConfig(reject_bubbles=False)
    assert measure_crystals(mask, px_size_um=1.0, grey=grey, config=off).n_kept == 4


def test_the_thresholds_decide():
    """A core exactly as bright as the background fails a core_min of 1.02 (a saturated
    frame's bubble passes at 1.0); a ring of 0.6 fails ring_max 0.55."""
    grey = np.full((120, 120), BG, np.float32)
    mask = np.zeros(grey.shape, np.uint8)
    _bubble(grey, mask, 60, 60, 36, core=1.0)
    g = grey.astype(np.uint8)
    assert measure_crystals(mask, px_size_um=1.0, grey=g).n_kept == 1
    lenient = MeasureConfig(bubble_core_min=1.0)
    assert measure_crystals(mask, px_size_um=1.0, grey=g, config=lenient).n_kept == 0
    grey[:] = BG
    _bubble(grey, mask, 60, 60, 36, ring=0.6)
    assert measure_crystals(mask, px_size_um=1.0, grey=grey.astype(np.uint8)).n_kept == 1


def test_radial_contrast_and_its_limits():
    grey, mask = _frame()
    core, ring = radial_contrast(grey, mask == 0, (60, 60), 40)
    assert core == pytest.approx(1.2, abs=0.02) and ring == pytest.approx(0.3, abs=0.05)
    # no background around it (the whole crop is object): not judged
    assert radial_contrast(grey, np.zeros_like(mask, bool), (60, 60), 40) is None
    with pytest.raises(ValueError, match=r"\(240, 420\).*\(10, 10\)"):
        radial_contrast(grey, np.zeros((10, 10), bool), (60, 60), 40)
    with pytest.raises(ValueError, match="grey frame of shape"):
        measure_crystals(mask, px_size_um=1.0, grey=grey[:10])


def test_a_border_or_small_object_keeps_its_reason():
    grey = np.full((100, 100), BG, np.float32)
    mask = np.zeros(grey.shape, np.uint8)
    _bubble(grey, mask, 30, 50, 36)   # reaches the frame's left edge
    c = measure_crystals(mask, px_size_um=1.0, grey=grey.astype(np.uint8))
    assert list(c.reason) == ["border"]


@pytest.mark.parametrize("preset", ["rounded", "bright", "uneven", "fine_pixels"])
def test_no_true_crystal_of_the_generator_is_a_bubble(preset):
    """On the generator's exact crystal masks (which never hold a bubble) the test rejects
    nothing, in the domains whose crystals come closest: rounded habits, saturating and
    uneven light, 0.5 um/px."""
    from trainer.synth import SynthConfig
    from trainer.synth.dataset import frame_seed
    from trainer.synth.render import render_frame

    cfg = SynthConfig.from_presets(preset, width=1024, height=768)
    n_round = 0
    for i in range(6):
        f = render_frame(frame_seed(7100, i), cfg)
        grey = cv2.cvtColor(f.image, cv2.COLOR_RGB2GRAY)
        c = measure_crystals(f.label, px_size_um=cfg.px_size_um, crystal_class=2,
                             roi=f.label != 0, grey=grey)
        assert c.rejected_counts()[BUBBLE] == 0, (preset, i)
        n_round += int(np.count_nonzero(c.circularity >= 0.9))
    assert n_round >= 5, n_round


def test_the_generator_s_bubbles_are_found():
    """The generator's bubbles, put into the crystal mask as the network sometimes does,
    are rejected as bubbles (those at least 20 px across and away from the frame edge)."""
    from trainer.synth import SynthConfig
    from trainer.synth.dataset import frame_seed
    from trainer.synth.render import render_frame

    cfg = SynthConfig.from_presets("compact", width=512, height=384, bubbles_per_frame=4,
                                   density=0.05)
    found = total = 0
    for i in range(6):
        f = render_frame(frame_seed(7200, i), cfg)
        grey = cv2.cvtColor(f.image, cv2.COLOR_RGB2GRAY)
        mask = (f.label == 2).astype(np.uint8)
        for b in f.meta["bubbles"]:
            cv2.circle(mask, (round(b["cx"]), round(b["cy"])), round(b["r"]), 1, -1)
        c = measure_crystals(mask, px_size_um=cfg.px_size_um, roi=f.label != 0, grey=grey)
        for b in f.meta["bubbles"]:
            d = np.hypot(c.centroid[:, 0] - b["cx"], c.centroid[:, 1] - b["cy"])
            j = int(np.argmin(d)) if len(d) else -1
            if j < 0 or d[j] > 2 or c.reason[j] in ("border", "too_small") or b["r"] < 10:
                continue
            total += 1
            found += c.reason[j] == BUBBLE
    assert total >= 8 and found >= 0.9 * total, (found, total)
