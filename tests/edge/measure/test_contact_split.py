"""The learned contact channel: model contract, watershed markers, analyzer hand-over."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import UserError
from edge.measure import MeasureConfig, measure_crystals
from edge.measure.contact import contact_markers, split_object_contact
from edge.vision.analyzer import FrameAnalyzer
from edge.vision.contact import contact_maps, contact_of, sigmoid, with_contact
from edge.vision.preprocess import logits_to_class_maps
from tests.edge.measure.contact_model import build_contact_model, touching_pair
from tests.fixtures.tiny_model import build_tiny_model


def _pair_object(r: int = 20, d: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """A padded crop of two overlapping discs (one outline) and a contact map marking
    the 3-px chord between them."""
    h, w = 2 * r + 9, 2 * r + d + 9
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = h // 2, w // 2
    obj = (((xx - (cx - d / 2)) ** 2 + (yy - cy) ** 2 <= r * r)
           | ((xx - (cx + d / 2)) ** 2 + (yy - cy) ** 2 <= r * r)).astype(np.uint8)
    contact = np.where(obj.astype(bool) & (np.abs(xx - cx) <= 1), 0.9, 0.05).astype(np.float32)
    return obj, contact


def test_contact_markers_and_split_follow_the_line():
    obj, contact = _pair_object()
    markers, n = contact_markers(obj, contact, threshold=0.5)
    assert n == 2 and markers.max() == 2
    assert not markers[contact >= 0.5].any()  # no marker on the contact line
    lab, n = split_object_contact(obj, contact, threshold=0.5)
    assert n == 2
    inside = obj.astype(bool)
    assert np.array_equal(lab > 0, inside)  # no pixel lost, none added
    cx = obj.shape[1] // 2
    left, right = lab[:, :cx - 2][inside[:, :cx - 2]], lab[:, cx + 3:][inside[:, cx + 3:]]
    assert len(set(left.tolist())) == 1 and len(set(right.tolist())) == 1
    assert left[0] != right[0]
    # a threshold above every probability: no separating line, one crystal
    assert split_object_contact(obj, contact, threshold=0.95)[1] == 1
    # specks of low probability inside the line are noise, not crystals
    speck = contact.copy()
    speck[3:6, cx - 1:cx + 2] = 0.0
    assert contact_markers(obj, speck, threshold=0.5)[1] == 2


def test_a_weak_band_separates_only_when_it_reaches_the_high_threshold():
    obj, contact = _pair_object()
    weak = np.where(contact > 0.5, 0.55, contact).astype(np.float32)  # the line at 0.55
    assert split_object_contact(obj, weak, threshold=0.4, high=0.4)[1] == 2
    assert split_object_contact(obj, weak, threshold=0.4)[1] == 2  # no high: every band
    assert split_object_contact(obj, weak, threshold=0.4, high=0.7)[1] == 1
    cx = obj.shape[1] // 2
    ys = np.nonzero(obj[:, cx])[0]
    one = weak.copy()
    one[ys[len(ys) // 2], cx] = 0.8  # one confident pixel makes the whole band a contact
    assert split_object_contact(obj, one, threshold=0.4, high=0.7)[1] == 2
    # through measure_crystals and its configuration
    cfg = MeasureConfig(contact_threshold=0.4, contact_high=0.7)
    assert int(measure_crystals(obj, px_size_um=1.0, contact=weak, config=cfg).kept.sum()) == 1
    assert int(measure_crystals(obj, px_size_um=1.0, contact=one, config=cfg).kept.sum()) == 2
    low = MeasureConfig(contact_threshold=0.4, contact_high=0.2)  # below: no hysteresis
    assert int(measure_crystals(obj, px_size_um=1.0, contact=weak, config=low).kept.sum()) == 2


def test_measure_crystals_splits_at_the_contact_the_distance_map_cannot_see():
    obj, contact = _pair_object()
    plain = measure_crystals(obj, px_size_um=1.0)
    assert int(plain.kept.sum()) == 1  # one convex outline: whole under the default rule
    split = measure_crystals(obj, px_size_um=1.0, contact=contact)
    assert int(split.kept.sum()) == 2
    whole = measure_crystals(obj, px_size_um=1.0, contact=contact,
                             config=MeasureConfig(contact_splits_convex=False))
    assert int(whole.kept.sum()) == 1  # a convex outline stays one crystal, as without
    assert int(split.area_px.sum()) == int(plain.area_px.sum())
    with pytest.raises(ValueError, match="contact map of shape"):
        measure_crystals(obj, px_size_um=1.0, contact=contact[:-1])


def _cross(h: int = 61, arm: int = 9) -> np.ndarray:
    """An X of two crossing bars (a penetration twin): one concave outline."""
    yy, xx = np.mgrid[0:h, 0:h]
    c = h // 2
    obj = (np.abs(xx - yy) <= arm) | (np.abs(xx + yy - 2 * c) <= arm)
    obj &= (np.abs(xx - c) <= c - 6) & (np.abs(yy - c) <= c - 6)
    return obj.astype(np.uint8)


def test_an_object_without_a_learned_contact_is_one_crystal_whatever_its_outline():
    obj = _cross()
    calm = np.full(obj.shape, 0.05, np.float32)
    shape_only = measure_crystals(obj, px_size_um=1.0)
    assert shape_only.rejected_counts().get("agglomerate", 0) >= 1  # concave: an agglomerate
    assert int(shape_only.kept.sum()) == 0
    learned = measure_crystals(obj, px_size_um=1.0, contact=calm)
    assert int(learned.kept.sum()) == 1 and int(learned.area_px[0]) == int(obj.sum())
    off = measure_crystals(obj, px_size_um=1.0, contact=calm,
                           config=MeasureConfig(contact_clears_concave=False))
    assert int(off.kept.sum()) == 0
    # a learned contact that separates nothing (a patch at the crossing, as where a crystal
    # lies over another): the model saw two crystals, the outline decides again
    c = obj.shape[0] // 2
    over = calm.copy()
    over[c - 2:c + 3, c - 2:c + 3] = 0.9
    held = measure_crystals(obj, px_size_um=1.0, contact=over)
    assert len(held.kept) == 1 and held.rejected_counts().get("agglomerate", 0) == 1
    weak = np.where(over > 0.5, 0.5, calm).astype(np.float32)  # below contact_high: no band
    assert int(measure_crystals(obj, px_size_um=1.0, contact=weak).kept.sum()) == 1
    circ = MeasureConfig(agglomerate_rule="circularity")  # the study's window is explicit
    assert int(measure_crystals(obj, px_size_um=1.0, contact=calm, config=circ).kept.sum()) == 0


def test_argmax_and_contact_maps_read_their_own_channels():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 20, 24)).astype(np.float32)
    logits[:, 3] = 50.0  # a contact logit larger than every class logit
    sizes = [(17, 20), (20, 24)]
    maps = logits_to_class_maps(logits, sizes, n_classes=3)
    for m, (h, w), lg in zip(maps, sizes, logits, strict=True):
        assert m.shape == (h, w) and m.max() <= 2
        assert np.array_equal(m, lg[:3, :h, :w].argmax(0))
    probs = contact_maps(logits, sizes, 3)
    assert [p.shape for p in probs] == sizes and np.allclose(probs[0], 1.0)
    assert contact_maps(logits, sizes, None) == [None, None]
    assert np.allclose(sigmoid(np.array([-100.0, 0.0, 100.0])), [0.0, 0.5, 1.0])
    carried = with_contact(maps[0], probs[0])
    assert contact_of(carried) is probs[0] and contact_of(maps[0]) is None
    assert contact_of(carried == 2) is None  # derived arrays do not carry it
    assert np.array_equal(carried, maps[0])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("contact_models")
    return {"contact": build_contact_model(d), "plain": build_tiny_model(d),
            "undeclared": build_contact_model(d, name="undeclared", declare=False)}


def test_analyzer_splits_touching_crystals_with_the_contact_channel(models):
    image, union = touching_pair()
    with FrameAnalyzer(models["contact"], inference_scale=1.0) as fa:
        maps = fa.segment([image])
        res = fa.postprocess("pair", image, maps[0])
    with FrameAnalyzer(models["plain"], inference_scale=1.0) as fb:
        plain_map = fb.segment([image])[0]
        plain = fb.postprocess("pair", image, plain_map)
    # the fourth channel changes nothing in the class map
    assert np.array_equal(np.asarray(maps[0]), plain_map)
    contact = contact_of(maps[0])
    assert contact is not None and contact.shape == plain_map.shape
    assert contact[union].max() > 0.9 and np.median(contact[union]) < 0.1
    assert plain.crystals is not None and res.crystals is not None
    assert int(plain.crystals.kept.sum()) == 1
    assert int(res.crystals.kept.sum()) == 2
    assert int(res.crystals.area_px.sum()) == int(plain.crystals.area_px.sum())
    # a threshold no pixel reaches: the contact channel finds nothing to split at
    cfg = MeasureConfig(contact_threshold=1.0)
    with FrameAnalyzer(models["contact"], inference_scale=1.0, measure_config=cfg) as fc:
        assert int(fc.analyze("pair", image).crystals.kept.sum()) == 1


def test_undeclared_channel_is_one_line_naming_the_model(models):
    image, _ = touching_pair()
    with pytest.raises(UserError, match=r"undeclared.onnx: model outputs 4 classes but its "
                                        r"metadata lists 3"):
        with FrameAnalyzer(models["undeclared"], inference_scale=1.0) as fa:
            fa.segment([image])


def test_parts_of_a_contact_split_are_judged_one_by_one():
    # a disc touching a notched square (non-convex: an agglomerate by shape on its own)
    h, w = 50, 80
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (xx - 22) ** 2 + (yy - 25) ** 2 <= 14 ** 2
    square = (xx >= 34) & (xx < 66) & (yy >= 9) & (yy < 41)
    notch = (xx >= 66 - 16) & (np.abs(yy - 25) <= (xx - 50) * 0.7)
    obj = (disc | (square & ~notch)).astype(np.uint8)
    obj[24:27, 34:37] = 1  # the two touch along a short neck
    contact = np.where(obj.astype(bool) & (xx >= 33) & (xx <= 36), 0.9, 0.05).astype(np.float32)
    c = measure_crystals(obj, px_size_um=1.0, contact=contact)
    assert len(c.kept) == 2
    left = int(np.argmin(c.centroid[:, 0]))
    assert c.kept[left] and c.reason[1 - left] == "agglomerate"


def test_a_crystal_the_band_covers_whole_is_not_measured_as_part_of_its_neighbour():
    """Three squares in a column, the middle one all contact band (a dark crystal lying over
    two others, which the channel marks whole): the band leaves markers for the outer two
    only, and the watershed gives the middle one to its neighbours. With
    ``contact_share_max`` the parts that are mostly band are agglomerates; a part with a
    thin contact line stays a crystal."""
    obj = np.zeros((108, 44), np.uint8)
    obj[4:104, 8:36] = 1  # 30, 40 and 30 px tall crystals stacked into one convex object
    contact = np.full(obj.shape, 0.05, np.float32)
    contact[34:74, 8:36] = 0.95  # the middle crystal: band through and through
    off = measure_crystals(obj, px_size_um=1.0, contact=contact,
                           config=MeasureConfig(contact_share_max=1.0))
    assert int(off.kept.sum()) == 2 and int(off.area_px.sum()) == int(obj.sum())
    assert off.area_px.max() >= 28 * 30 * 1.5  # the middle crystal went into a neighbour
    on = measure_crystals(obj, px_size_um=1.0, contact=contact)  # the default, 0.35
    assert int(on.kept.sum()) == 0 and on.rejected_counts()["agglomerate"] == 2
    line = np.full(obj.shape, 0.05, np.float32)
    line[52:55, 8:36] = 0.95  # a thin contact between two crystals: split, both kept
    thin = measure_crystals(obj, px_size_um=1.0, contact=line,
                            config=MeasureConfig(contact_share_max=0.1))
    assert int(thin.kept.sum()) == 2
    with pytest.raises(ValueError, match="contact_share_max"):
        MeasureConfig(contact_share_max=0)
