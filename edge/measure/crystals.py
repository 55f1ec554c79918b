"""``Crystals``: the typed, columnar result of :func:`edge.measure.measure_crystals`.

One row per object left after cleaning and splitting (kept or rejected); numpy columns
like supervision's ``Detections``. Objects dropped in the cleaning step as too small
have no row; they are counted in ``dropped`` and in :meth:`Crystals.rejected_counts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Reject reason of an object that is not one crystal (two or more stuck together), under
#: either ``[measure] agglomerate_rule``; a stable name that counts agglomerates downstream.
AGGLOMERATE = "agglomerate"
#: Reject reason of an air bubble the network took for a crystal (``edge.measure.bubbles``).
BUBBLE = "bubble"
#: Reject reasons that mean "an agglomerate, not a single crystal".
AGGLOMERATE_REASONS: tuple[str, ...] = (AGGLOMERATE,)
#: Rejection reasons, in order of precedence (a too-small border crystal is 'too_small').
REASONS: tuple[str, ...] = ("too_small", "border", BUBBLE, AGGLOMERATE)

#: Per-crystal columns: name -> (dtype, trailing shape).
COLUMNS: dict[str, tuple[Any, tuple[int, ...]]] = {
    "frame": (np.int32, ()),
    "area_px": (np.int64, ()),
    "perimeter_px": (np.float64, ()),
    "circularity": (np.float64, ()),
    "diameter_um": (np.float64, ()),
    "feret_max_um": (np.float64, ()),
    "feret_min_um": (np.float64, ()),
    "aspect_ratio": (np.float64, ()),
    "solidity": (np.float64, ()),
    "concavity": (np.float64, ()),
    "n_concavities": (np.int32, ()),
    "bbox": (np.int32, (4,)),
    "centroid": (np.float64, (2,)),
    "touches_border": (np.bool_, ()),
    "kept": (np.bool_, ()),
    "reason": ("<U11", ()),
}


#: Columns a caller may leave out (zeros): the convexity descriptors.
_OPTIONAL = ("solidity", "concavity", "n_concavities")


def _empty_column(name: str, n: int = 0) -> np.ndarray:
    dtype, tail = COLUMNS[name]
    return np.zeros((n, *tail), dtype=dtype)


@dataclass
class Crystals:
    """Measured crystals of one frame (or of several, after :meth:`concatenate`).

    Attributes
    ----------
    frame : ndarray (n,) int32
        Frame index of each crystal (0 for a single frame).
    area_px : ndarray (n,) int64
        Area, pixel count.
    perimeter_px : ndarray (n,) float64
        Outline length (Vossepoel-Smeulders + half-pixel offset, see ``edge.measure.shape``).
    circularity : ndarray (n,) float64
        ``4 pi A / P**2`` (not its square root).
    diameter_um : ndarray (n,) float64
        Area-equivalent diameter ``2 sqrt(A / pi) * px_size_um``.
    feret_max_um, feret_min_um : ndarray (n,) float64
        Largest / smallest caliper width of the pixel set.
    aspect_ratio : ndarray (n,) float64
        ``feret_max / feret_min`` (>= 1).
    solidity : ndarray (n,) float64
        Pixel count / pixel count of the convex hull (1 for a digitised convex shape; see
        :mod:`edge.measure.convexity`).
    concavity : ndarray (n,) float64
        Depth of the deepest concavity of the outline relative to the area-equivalent
        diameter in px (0 for a convex outline).
    n_concavities : ndarray (n,) int32
        Concavities deeper than ``max(concavity_px, concavity_rel * D)`` (the settings of
        :class:`edge.measure.MeasureConfig`).
    bbox : ndarray (n, 4) int32
        ``x, y, w, h`` in px, frame coordinates.
    centroid : ndarray (n, 2) float64
        ``x, y`` in px (pixel centres at integer coordinates).
    touches_border : ndarray (n,) bool
        Has a pixel on the frame edge or the ROI boundary.
    kept : ndarray (n,) bool
        Counted in the size distribution.
    reason : ndarray (n,) str
        '' when kept, else one of :data:`REASONS`.
    contours : list of ndarray (m, 2) int32
        Outer boundary (pixel centres, x, y) per crystal, frame coordinates.
    frame_shape : (int, int)
        ``(H, W)`` of the frame(s).
    px_size_um : float
        Pixel size the lengths were converted with.
    roi_area_px : int
        Valid field area per frame (H*W without a ROI).
    n_frames : int
        Number of frames the rows come from.
    dropped : dict
        Objects without a row, by reason (``too_small`` from the cleaning step).
    small : ndarray (k, 6) int64
        ``frame, x, y, w, h, area_px`` of the objects dropped as too small (the reports'
        ``too_small`` rows); ``k <= dropped["too_small"]`` (speckle is only counted).
    """

    frame: np.ndarray
    area_px: np.ndarray
    perimeter_px: np.ndarray
    circularity: np.ndarray
    diameter_um: np.ndarray
    feret_max_um: np.ndarray
    feret_min_um: np.ndarray
    aspect_ratio: np.ndarray
    bbox: np.ndarray
    centroid: np.ndarray
    touches_border: np.ndarray
    kept: np.ndarray
    reason: np.ndarray
    contours: list[np.ndarray]
    frame_shape: tuple[int, int]
    px_size_um: float
    roi_area_px: int
    n_frames: int = 1
    dropped: dict[str, int] = field(default_factory=dict)
    solidity: np.ndarray = None  # type: ignore[assignment]  # None: filled with zeros
    concavity: np.ndarray = None  # type: ignore[assignment]
    n_concavities: np.ndarray = None  # type: ignore[assignment]
    small: np.ndarray = None  # type: ignore[assignment]  # None: no rows

    def __post_init__(self) -> None:
        n = len(self.area_px)
        for name in _OPTIONAL:
            if getattr(self, name) is None:
                setattr(self, name, _empty_column(name, n))
        for name, (dtype, tail) in COLUMNS.items():
            arr = np.asarray(getattr(self, name), dtype=dtype)
            if arr.shape != (n, *tail):
                raise ValueError(f"Crystals.{name} has shape {arr.shape}, expected {(n, *tail)}")
            setattr(self, name, arr)
        if len(self.contours) != n:
            raise ValueError(f"Crystals.contours has {len(self.contours)} entries, expected {n}")
        self.frame_shape = (int(self.frame_shape[0]), int(self.frame_shape[1]))
        self.px_size_um = float(self.px_size_um)
        self.roi_area_px = int(self.roi_area_px)
        self.n_frames = int(self.n_frames)
        self.dropped = {k: int(v) for k, v in self.dropped.items() if int(v)}
        small = np.zeros((0, 6), np.int64) if self.small is None else self.small
        self.small = np.asarray(small, dtype=np.int64).reshape(-1, 6)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def empty(cls, *, frame_shape: tuple[int, int], px_size_um: float,
              roi_area_px: int | None = None, dropped: dict[str, int] | None = None,
              small: np.ndarray | None = None) -> Crystals:
        """A result without rows (e.g. an empty frame)."""
        cols = {name: _empty_column(name) for name in COLUMNS}
        area = int(frame_shape[0]) * int(frame_shape[1]) if roi_area_px is None else roi_area_px
        return cls(**cols, contours=[], frame_shape=frame_shape, px_size_um=px_size_um,
                   roi_area_px=area, dropped=dict(dropped or {}), small=small)

    @classmethod
    def concatenate(cls, parts: Sequence[Crystals]) -> Crystals:
        """Stack results of several frames; frame indices continue across parts.

        All parts must share ``frame_shape`` and ``px_size_um``; ``roi_area_px`` is taken
        from the first part (the field of one frame).
        """
        if not parts:
            raise ValueError("concatenate needs at least one Crystals")
        first = parts[0]
        for p in parts[1:]:
            if p.frame_shape != first.frame_shape or not np.isclose(p.px_size_um,
                                                                    first.px_size_um):
                raise ValueError(
                    f"cannot concatenate frames of shape {p.frame_shape} at {p.px_size_um} um/px "
                    f"with {first.frame_shape} at {first.px_size_um} um/px")
        offsets = np.cumsum([0] + [p.n_frames for p in parts[:-1]])
        cols = {}
        for name in COLUMNS:
            arrays = [getattr(p, name) for p in parts]
            if name == "frame":
                arrays = [a + off for a, off in zip(arrays, offsets, strict=True)]
            cols[name] = np.concatenate(arrays)
        dropped: dict[str, int] = {}
        for p in parts:
            for k, v in p.dropped.items():
                dropped[k] = dropped.get(k, 0) + v
        contours = [c for p in parts for c in p.contours]
        small = np.concatenate([p.small + np.array([off, 0, 0, 0, 0, 0])
                                for p, off in zip(parts, offsets, strict=True)])
        return cls(**cols, contours=contours, frame_shape=first.frame_shape,
                   px_size_um=first.px_size_um, roi_area_px=first.roi_area_px,
                   n_frames=int(sum(p.n_frames for p in parts)), dropped=dropped, small=small)

    def filter(self, selection: np.ndarray) -> Crystals:
        """Rows selected by a boolean mask or an index array (``dropped`` is carried over)."""
        sel = np.asarray(selection)
        if sel.dtype == np.bool_:
            if sel.shape != (len(self),):
                raise ValueError(f"boolean selection of shape {sel.shape}, expected ({len(self)},)")
            idx = np.flatnonzero(sel)
        else:
            idx = sel.astype(np.int64).ravel()
        cols = {name: getattr(self, name)[idx] for name in COLUMNS}
        return Crystals(**cols, contours=[self.contours[i] for i in idx],
                        frame_shape=self.frame_shape, px_size_um=self.px_size_um,
                        roi_area_px=self.roi_area_px, n_frames=self.n_frames,
                        dropped=dict(self.dropped))

    # -- queries -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.area_px.shape[0])

    @property
    def n_kept(self) -> int:
        """Number of crystals counted in the size distribution."""
        return int(np.count_nonzero(self.kept))

    def rejected_counts(self) -> dict[str, int]:
        """``{reason: n}`` for every reason in :data:`REASONS` (rows + ``dropped``)."""
        out = {r: int(np.count_nonzero(self.reason == r)) for r in REASONS}
        for k, v in self.dropped.items():
            out[k] = out.get(k, 0) + v
        return out

    def diameters_um(self, kept_only: bool = True) -> np.ndarray:
        """Area-equivalent diameters (um) of the kept crystals (or of all rows)."""
        return self.diameter_um[self.kept] if kept_only else self.diameter_um.copy()

    # -- export --------------------------------------------------------------------------
    def to_rows(self) -> list[dict[str, Any]]:
        """One plain-JSON dict per crystal (one CSV row each; bbox/centroid spread out)."""
        rows = []
        for i in range(len(self)):
            x, y, w, h = (int(v) for v in self.bbox[i])
            rows.append({
                "frame": int(self.frame[i]),
                "id": i,
                "kept": bool(self.kept[i]),
                "reason": str(self.reason[i]),
                "area_px": int(self.area_px[i]),
                "perimeter_px": round(float(self.perimeter_px[i]), 3),
                "circularity": round(float(self.circularity[i]), 4),
                "diameter_um": round(float(self.diameter_um[i]), 3),
                "feret_max_um": round(float(self.feret_max_um[i]), 3),
                "feret_min_um": round(float(self.feret_min_um[i]), 3),
                "aspect_ratio": round(float(self.aspect_ratio[i]), 4),
                "solidity": round(float(self.solidity[i]), 4),
                "concavity": round(float(self.concavity[i]), 4),
                "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h,
                "centroid_x": round(float(self.centroid[i, 0]), 2),
                "centroid_y": round(float(self.centroid[i, 1]), 2),
                "touches_border": bool(self.touches_border[i]),
            })
        return rows

    def to_payload(self, *, include_rows: bool = True,
                   include_contours: bool = False) -> dict[str, Any]:
        """Plain-JSON summary (counts, shape, pixel size) with optional rows and contours."""
        out: dict[str, Any] = {
            "frame_shape": [self.frame_shape[0], self.frame_shape[1]],
            "px_size_um": self.px_size_um,
            "roi_area_px": self.roi_area_px,
            "n_frames": self.n_frames,
            "n_crystals": len(self),
            "n_kept": self.n_kept,
            "rejected": self.rejected_counts(),
        }
        if include_rows:
            out["crystals"] = self.to_rows()
        if include_contours:
            out["contours"] = [c.reshape(-1, 2).astype(int).tolist() for c in self.contours]
        return out
