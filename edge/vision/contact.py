"""The learned contact channel: from the model's auxiliary logit to a probability map.

A model may append auxiliary channels after its class logits (``output.aux_channels`` in
:mod:`edge.modelmeta`); ``contact`` is the logit ``z`` of "this crystal pixel touches
another crystal". Its probability ``p = sigmoid(z) = (1 + tanh(z / 2)) / 2`` is cropped
like the class map (same inference resolution, same (h, w)) and travels *with* the class
map: :func:`with_contact` returns the class map as a :class:`SegmentedMap`, an ndarray
that carries ``contact`` as an attribute, so every caller of
:meth:`edge.vision.analyzer.FrameAnalyzer.segment` hands it on to ``postprocess``
unchanged (the service's threads, ``analyze --workers``, ``crystal-train evaluate``).
Arrays derived from it (slices, comparisons) do not carry it. Where class maps are kept
for frame-size masks (``analyze --masks-out``), it also carries the class logits
(:func:`with_class_logits`), which enlarge to outlines finer than the map's pixels. A
frame segmented a second time at a finer scale (:mod:`edge.vision.finescale`) carries
that scale (:func:`with_scale`), which its measurement and field use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.modelmeta import ModelMeta
from edge.vision.preprocess import logits_to_class_maps

#: Name of the contact channel in ``output.aux_channels``.
CONTACT = "contact"


class SegmentedMap(np.ndarray):
    """A uint8 class map with the frame's contact probability map (``contact``) attached."""

    contact: np.ndarray | None = None
    class_logits: np.ndarray | None = None
    scale: float | None = None


def contact_channel(meta: ModelMeta) -> int | None:
    """Index of the contact logit in the model's output, or None when it has none."""
    aux = list(meta.output.aux_channels)
    return meta.n_classes + aux.index(CONTACT) if CONTACT in aux else None


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` as float32, written with tanh (no overflow for large |z|)."""
    z = np.asarray(z, np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)


def contact_maps(logits: np.ndarray, sizes: Sequence[tuple[int, int]], channel: int | None
                 ) -> list[np.ndarray | None]:
    """Contact probability per image: ``sigmoid(logits[i, channel])`` cropped to (h, w).

    The crop is the one :func:`edge.vision.preprocess.logits_to_class_maps` applies, so
    each map lies exactly on its class map. ``channel`` None (a model without the
    channel): None per image.
    """
    if channel is None:
        return [None] * len(sizes)
    if logits.ndim != 4 or logits.shape[0] != len(sizes) or channel >= logits.shape[1]:
        raise ValueError(f"logits of shape {logits.shape} do not hold channel {channel} "
                         f"for {len(sizes)} images")
    return [np.ascontiguousarray(sigmoid(logits[i, channel, :h, :w]))
            for i, (h, w) in enumerate(sizes)]


def with_contact(class_map: np.ndarray, contact: np.ndarray | None) -> np.ndarray:
    """``class_map`` carrying ``contact`` (unchanged when ``contact`` is None)."""
    if contact is None:
        return class_map
    if contact.shape != class_map.shape:
        raise ValueError(f"contact map {contact.shape} and class map {class_map.shape} differ")
    out = class_map.view(SegmentedMap)
    out.contact = contact
    return out


def contact_of(class_map: np.ndarray) -> np.ndarray | None:
    """The contact probability map a class map carries, or None."""
    return getattr(class_map, "contact", None)


def with_class_logits(class_map: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """``class_map`` (and what it carries) carrying its class logits ``(k, h, w)``."""
    if logits.ndim != 3 or logits.shape[1:] != class_map.shape:
        raise ValueError(f"class logits {logits.shape} do not lie on the class map "
                         f"{class_map.shape}")
    out = class_map if isinstance(class_map, SegmentedMap) else class_map.view(SegmentedMap)
    out.class_logits = logits
    return out


def segmented_maps(logits: np.ndarray, sizes: Sequence[tuple[int, int]], meta: ModelMeta, *,
                   keep_logits: bool = False) -> list[np.ndarray]:
    """A batch's class maps (arg-max of the class logits, cropped to each image's (h, w)),
    each carrying its contact map where the model has the channel and, with
    ``keep_logits``, its class logits (frame-size masks are enlarged from those)."""
    k = meta.n_classes
    contacts = contact_maps(logits, sizes, contact_channel(meta))
    maps = [with_contact(cm, ct) for cm, ct in zip(
        logits_to_class_maps(logits, sizes, n_classes=k), contacts, strict=True)]
    if keep_logits:
        maps = [with_class_logits(m, logits[j, :k, :h, :w])
                for j, (m, (h, w)) in enumerate(zip(maps, sizes, strict=True))]
    return maps


def with_scale(class_map: np.ndarray, scale: float) -> np.ndarray:
    """``class_map`` (and what it carries) carrying the inference scale it was made at."""
    out = class_map if isinstance(class_map, SegmentedMap) else class_map.view(SegmentedMap)
    out.scale = float(scale)
    return out


def scale_of(class_map: np.ndarray, default: float) -> float:
    """The inference scale a class map carries, else ``default`` (the analyzer's)."""
    scale = getattr(class_map, "scale", None)
    return default if scale is None else float(scale)
