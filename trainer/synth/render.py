"""Rendering one synthetic flow-cell frame: optics, crystals, artefacts, sensor, labels.

Image model: ``image = illumination(x, y) * tint * transmission(x, y) + black + noise``.
The transmission map starts at 1; crystals, bubbles and debris multiply their own
transmission into it (so overlaps darken like stacked absorbers), it is blurred along the
flow (motion blur) and by the optics' PSF, and out-of-focus dust on the optics multiplies
in afterwards. Labels are rendered from the same geometry at 1/16 px (``cv2.fillPoly``
with ``shift=4``), never from the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from trainer.synth.artefacts import draw_bubbles, draw_debris, draw_dust
from trainer.synth.config import SynthConfig
from trainer.synth.crystals import crystal_patch
from trainer.synth.geometry import area_equivalent_diameter, convex_sdf, polygon_area
from trainer.synth.placement import Placed, place_crystals

SHIFT = 4
ONE = 1 << SHIFT
BLACK_BACKGROUND, LIGHT_BACKGROUND, CRYSTAL = 0, 1, 2
CLASS_NAMES = ("black_background", "light_background", "crystal")


@dataclass
class SynthCrystal:
    """Ground truth of one crystal in a frame."""

    id: int
    polygon_px: np.ndarray           # (N, 2) float, frame coordinates
    area_px: float                   # polygon area (px2)
    diameter_um: float               # true area-equivalent diameter of the polygon (um)
    centroid_px: tuple[float, float]
    shape: str
    aspect: float
    kind: str                        # "opaque" | "transparent"
    defocus_px: float                # 0 = in focus
    agglomerate: int | None          # agglomerate id within the frame, None = single
    touches_other: bool
    touches_border: bool             # its pixels reach the frame's outermost rows/columns
    cut_by_field: bool               # part of it lies outside the illuminated field
    visible_fraction: float          # of its pixels inside the frame and the field
    centred: bool                    # its centroid lies inside the field and the frame
    parts_px: list[np.ndarray] | None = None  # convex parts of a twin (frame coordinates)

    @property
    def whole(self) -> bool:
        return not (self.touches_border or self.cut_by_field)

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "diameter_um": round(self.diameter_um, 4),
            "area_px": round(self.area_px, 3),
            "centroid_px": [round(self.centroid_px[0], 3), round(self.centroid_px[1], 3)],
            "polygon_px": np.round(self.polygon_px, 3).tolist(),
            "shape": self.shape, "aspect": round(self.aspect, 4), "kind": self.kind,
            "defocus_px": round(self.defocus_px, 3), "agglomerate": self.agglomerate,
            "touches_other": self.touches_other, "touches_border": self.touches_border,
            "cut_by_field": self.cut_by_field,
            "visible_fraction": round(self.visible_fraction, 4), "centred": self.centred,
            **({} if self.parts_px is None else
               {"parts_px": [np.round(q, 3).tolist() for q in self.parts_px]}),
        }


def centre_in_window(centroid_px: Any, field_xyr: tuple[float, float, float],
                     frame_hw: tuple[int, int]) -> bool:
    """Whether a crystal's centroid lies inside the illuminated field circle and the frame.

    The crystals so centred are the population an edge-corrected measurement estimates:
    the Miles-Lantuejoul weights (:mod:`edge.psd.edge_correction`) turn the crystals seen
    whole into the size distribution of the crystals whose reference point lies in the
    measured window. Every crystal with a visible pixel is a larger population, biased
    towards large crystals (a large crystal reaches into the window from further out).
    """
    x, y = float(centroid_px[0]), float(centroid_px[1])
    cx, cy, r = field_xyr
    h, w = frame_hw
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r and 0 <= x <= w - 1 and 0 <= y <= h - 1


@dataclass
class SynthFrame:
    """A rendered frame: RGB uint8 image, uint8 class-id label, crystals' truth."""

    image: np.ndarray                # (H, W, 3) uint8 RGB
    label: np.ndarray                # (H, W) uint8: 0 black bg, 1 light bg, 2 crystal
    crystals: list[SynthCrystal]
    field_xyr: tuple[float, float, float]   # illuminated field centre x, y and radius (px)
    meta: dict[str, Any] = field(default_factory=dict)
    #: (H, W) int32 instance ids: 0 none, ``k + 1`` = crystal ``crystals[k]`` (``id == k``);
    #: where crystals overlap, the one drawn last (on top); nonzero exactly where
    #: ``label == CRYSTAL``
    instances: np.ndarray | None = None
    #: (H, W) uint8 number of crystals covering each pixel inside the field (2+ = overlap)
    coverage: np.ndarray | None = None

    def to_payload(self) -> dict[str, Any]:
        cx, cy, r = self.field_xyr
        return {"field": {"cx": round(cx, 3), "cy": round(cy, 3), "r": round(r, 3)},
                **self.meta, "crystals": [c.to_payload() for c in self.crystals]}


@lru_cache(maxsize=1)
def _normal_lut() -> np.ndarray:
    """256 equally likely standard-normal values (inverse CDF at (k+0.5)/256), unit std.

    Sensor noise draws one byte per sample and looks it up here: ~6x faster than
    ``standard_normal`` and indistinguishable for 8-bit noise.
    """
    from statistics import NormalDist

    nd = NormalDist()
    v = np.array([nd.inv_cdf((k + 0.5) / 256) for k in range(256)], np.float32)
    return v / v.std()


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts, np.float64) * ONE).astype(np.int32).reshape(-1, 1, 2)


# ----------------------------------------------------------------------------- optics
def _sample_field(rng, cfg: SynthConfig) -> tuple[float, float, float]:
    w, h = cfg.width, cfg.height
    r = _u(rng, cfg.field_radius_frac) * 0.5 * math.hypot(w, h)
    j = cfg.field_jitter_frac
    cx = (w - 1) / 2 + rng.uniform(-j, j) * w
    cy = (h - 1) / 2 + rng.uniform(-j, j) * h
    return float(cx), float(cy), float(r)


def _illumination(rng, cfg: SynthConfig, fxyr) -> np.ndarray:
    """Light level (DN, before tint) with vignetting, gradient, texture and the field stop.

    Computed on a half-resolution grid (it is smooth; the field-stop edge is at least
    1.5 px soft) and resized to the frame with pixel centres aligned.
    """
    h, w = cfg.height, cfg.width
    hs, ws = (h + 1) // 2, (w + 1) // 2
    sx, sy = w / ws, h / hs
    cx, cy, r = fxyr
    # frame coordinates of the half-resolution pixel centres (cv2.resize's convention)
    dx = (((np.arange(ws, dtype=np.float32) + 0.5) * sx - 0.5 - cx) / r)[None, :]
    dy = (((np.arange(hs, dtype=np.float32) + 0.5) * sy - 0.5 - cy) / r)[:, None]
    rr2 = dx * dx + dy * dy
    vig = _u(rng, cfg.vignetting)
    g = _u(rng, cfg.illumination_gradient)
    th = rng.uniform(0, 2 * math.pi)
    light = (1 - vig * rr2 * (0.6 + 0.4 * rr2)) * (1 + g * (dx * math.cos(th) + dy * math.sin(th)))
    # low-frequency unevenness of the lamp / condenser
    tex = rng.normal(0, 1, (6, 8)).astype(np.float32)
    light *= 1 + cfg.illumination_texture * cv2.resize(tex, (ws, hs), interpolation=cv2.INTER_CUBIC)
    # field stop: soft edge at radius r
    edge = _u(rng, cfg.field_edge_px)
    dist = (np.sqrt(rr2) - 1) * (r / edge)
    light *= 1 / (1 + np.exp(np.clip(dist, -30, 30)))
    light *= _u(rng, cfg.brightness)
    return cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)


def _motion_kernel(length: float, angle_deg: float) -> np.ndarray | None:
    if length < 1.0:
        return None
    n = math.ceil(length) | 1
    k = np.ones(n, np.float32)
    edge = (length - (n - 2)) / 2 if n >= 3 else 1.0
    if n >= 3:
        k[0] = k[-1] = edge
    k /= k.sum()
    if abs(angle_deg) < 1e-6:
        return k.reshape(1, -1)
    s = n + 2
    ker = np.zeros((s, s), np.float32)
    ker[s // 2, 1:-1] = k
    rot = cv2.getRotationMatrix2D(((s - 1) / 2, (s - 1) / 2), angle_deg, 1.0)
    ker = cv2.warpAffine(ker, rot, (s, s), flags=cv2.INTER_LINEAR)
    return ker / ker.sum()


# ----------------------------------------------------------------------------- crystals
def _draw_crystal(rng, trans: np.ndarray, p: Placed, *, kind: str, defocus: float,
                  sdf: np.ndarray, org: tuple[int, int]) -> None:
    """Multiply one crystal's transmission into ``trans`` (full frame, clipped)."""
    h, w = trans.shape
    ph, pw = sdf.shape
    x0, y0 = org
    # pixel coverage from the signed distance: antialiased outline at the label's edge
    alpha = np.clip(sdf + 0.5, 0.0, 1.0).astype(np.float32)
    t = crystal_patch(rng, p, kind=kind, alpha=alpha, org=org)
    if defocus > 0:
        t = cv2.GaussianBlur(t, (0, 0), defocus)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + pw, w), min(y0 + ph, h)
    if fx1 > fx0 and fy1 > fy0:
        trans[fy0:fy1, fx0:fx1] *= t[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]


def _crystal_patch(p: Placed, margin: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The crystal's exact mask on a patch around it (uint8 0/1: pixel centre inside),
    its signed distance map (px, > 0 inside) and the patch origin."""
    x0 = math.floor(p.polygon[:, 0].min()) - margin
    y0 = math.floor(p.polygon[:, 1].min()) - margin
    x1 = math.ceil(p.polygon[:, 0].max()) + margin + 1
    y1 = math.ceil(p.polygon[:, 1].max()) + margin + 1
    if p.parts is None:
        sd = convex_sdf(p.polygon, (y1 - y0, x1 - x0), (x0, y0))
    else:  # a union of convex parts: inside any part
        sd = np.maximum.reduce([convex_sdf(q, (y1 - y0, x1 - x0), (x0, y0)) for q in p.parts])
    return (sd >= -1e-9).astype(np.uint8), sd, (x0, y0)


# ----------------------------------------------------------------------------- frame
def render_frame(rng: np.random.Generator, cfg: SynthConfig | None = None) -> SynthFrame:
    """Render one flow-cell frame with exact labels and the crystals' ground truth.

    Parameters
    ----------
    rng : numpy.random.Generator
        All randomness comes from here: the same generator state gives the same frame.
    cfg : SynthConfig, optional
        Generator settings (default ``SynthConfig()``: 1024x768, 125-180 um, 1.45 um/px).

    Returns
    -------
    SynthFrame
        ``image`` RGB uint8 ``(H, W, 3)``, ``label`` uint8 ``(H, W)`` (0 black background
        outside the illuminated field, 1 light background, 2 crystal), ``crystals``.

    Notes
    -----
    Crystal pixels are labelled only inside the illuminated field (outside it the camera
    sees black, so does a human labeller); a crystal is generated only when its centre is
    within the field enlarged by a third of its size, and dropped when none of its pixels
    is visible. Bubbles, debris and dust are labelled background; the bubbles' circles
    are listed in ``meta["bubbles"]`` (px), so that a test can find them.
    """
    cfg = cfg or SynthConfig()
    h, w = cfg.height, cfg.width
    fxyr = _sample_field(rng, cfg)
    cx, cy, r = fxyr
    xs = (np.arange(w, dtype=np.float64) - cx) ** 2
    ys = (np.arange(h, dtype=np.float64) - cy) ** 2
    in_field = (ys[:, None] + xs[None, :]) <= r * r
    label = in_field.astype(np.uint8)  # LIGHT_BACKGROUND inside, BLACK_BACKGROUND outside
    field_area = float(np.count_nonzero(in_field))
    placed = place_crystals(rng, cfg, fxyr, field_area)

    trans = np.ones((h, w), np.float32)
    crystal_mask = np.zeros((h, w), np.uint8)
    instances = np.zeros((h, w), np.int32)
    coverage = np.zeros((h, w), np.uint8)
    crystals, n_agglo = _draw_crystals(rng, cfg, placed, in_field=in_field, field_xyr=fxyr,
                                       trans=trans,
                                       crystal_mask=crystal_mask,
                                       instances=instances, coverage=coverage)
    bubbles = draw_bubbles(rng, cfg, trans, placed)
    draw_debris(rng, cfg, trans)
    ker = _motion_kernel(_u(rng, cfg.motion_blur_px), cfg.flow_angle_deg)
    if ker is not None:
        trans = cv2.filter2D(trans, -1, ker, borderType=cv2.BORDER_REPLICATE)
    trans = cv2.GaussianBlur(trans, (0, 0), _u(rng, cfg.psf_sigma_px))
    draw_dust(rng, cfg, trans)

    image = _camera(rng, cfg, trans, fxyr)

    label[(crystal_mask > 0) & in_field] = CRYSTAL
    meta = {"n_crystals": len(crystals), "n_agglomerates": n_agglo,
            "bubbles": [{"cx": round(x, 3), "cy": round(y, 3), "r": round(rb, 3)}
                        for x, y, rb in bubbles]}
    return SynthFrame(image=image, label=label, crystals=crystals, field_xyr=fxyr, meta=meta,
                      instances=instances, coverage=coverage)


def _draw_crystals(rng: np.random.Generator, cfg: SynthConfig, placed: list[Any], *,
                   in_field: np.ndarray, field_xyr: tuple[float, float, float],
                   trans: np.ndarray, crystal_mask: np.ndarray, instances: np.ndarray,
                   coverage: np.ndarray) -> tuple[list[SynthCrystal], int]:
    """Draw the placed crystals into ``trans``, ``crystal_mask``, ``instances`` (id + 1
    of the crystal on top, inside the field) and ``coverage`` (in place).

    Returns the ground truth of each crystal with at least one visible pixel, and the
    number of touching groups generated (the frame's ``n_agglomerates``).
    """
    h, w = in_field.shape
    crystals: list[SynthCrystal] = []
    groups: dict[int, int] = {}
    for p in placed:
        if p.group is not None:
            groups[p.group] = groups.get(p.group, 0) + 1
    for p in placed:
        defocus = _u(rng, cfg.defocus_sigma_px) if rng.random() < cfg.defocus_fraction else 0.0
        kind = "transparent" if rng.random() < cfg.transparent_fraction else "opaque"
        margin = math.ceil(3 * defocus) + 2
        pm, sd, (x0, y0) = _crystal_patch(p, margin)
        ph, pw = pm.shape
        fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + pw, w), min(y0 + ph, h)
        total = int(np.count_nonzero(pm))
        if fx1 <= fx0 or fy1 <= fy0 or total == 0:
            continue
        sub = pm[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
        inside = int(np.count_nonzero(sub))
        visible = int(np.count_nonzero(sub & in_field[fy0:fy1, fx0:fx1]))
        if visible == 0:
            continue
        touches_border = bool(
            inside < total
            or (fx0 == 0 and sub[:, 0].any()) or (fy0 == 0 and sub[0, :].any())
            or (fx1 == w and sub[:, -1].any()) or (fy1 == h and sub[-1, :].any()))
        crystal_mask[fy0:fy1, fx0:fx1] |= sub
        seen_here = sub & in_field[fy0:fy1, fx0:fx1]
        instances[fy0:fy1, fx0:fx1][seen_here > 0] = len(crystals) + 1
        coverage[fy0:fy1, fx0:fx1] += seen_here
        _draw_crystal(rng, trans, p, kind=kind, defocus=defocus, sdf=sd, org=(x0, y0))
        area = polygon_area(p.polygon)
        crystals.append(SynthCrystal(
            id=len(crystals), polygon_px=p.polygon, area_px=area,
            diameter_um=area_equivalent_diameter(area) * cfg.px_size_um,
            centroid_px=(float(p.centre[0]), float(p.centre[1])), shape=p.shape,
            aspect=p.aspect, kind=kind, defocus_px=defocus,
            agglomerate=p.group if p.group is not None and groups.get(p.group, 0) > 1 else None,
            touches_other=p.group is not None and groups.get(p.group, 0) > 1,
            touches_border=touches_border, cut_by_field=visible < inside,
            visible_fraction=visible / total,
            centred=centre_in_window(p.centre, field_xyr, (h, w)), parts_px=p.parts))
    # a member whose partners all turned out invisible is single after all
    seen = [c.agglomerate for c in crystals if c.agglomerate is not None]
    for c in crystals:
        if c.agglomerate is not None and seen.count(c.agglomerate) < 2:
            c.agglomerate, c.touches_other = None, False
    return crystals, len(set(seen))


def _camera(rng: np.random.Generator, cfg: SynthConfig, trans: np.ndarray,
            fxyr: tuple[float, float, float]) -> np.ndarray:
    """RGB uint8 frame of a transmission map: illumination, tint, aberration and noise."""
    h, w = trans.shape
    cx, cy, _r = fxyr
    light = _illumination(rng, cfg, fxyr) * trans
    blue = _u(rng, cfg.tint)
    tint = np.array([1.0, 1 - (1 - blue) / 2, blue], np.float32)
    black = _u(rng, cfg.black_level)
    img = light[:, :, None] * tint
    ca = _u(rng, cfg.chromatic_aberration)
    if ca > 0:  # lateral colour: red imaged slightly larger, blue smaller, about the axis
        for ch, m in ((0, 1 + ca), (2, 1 - ca)):
            warp = np.array([[m, 0, (1 - m) * cx], [0, m, (1 - m) * cy]], np.float32)
            img[:, :, ch] = cv2.warpAffine(np.ascontiguousarray(img[:, :, ch]), warp, (w, h),
                                           flags=cv2.INTER_LINEAR,
                                           borderMode=cv2.BORDER_REPLICATE)
    img += np.float32(black + 0.5)
    if cfg.noise > 0:  # shot + read noise: sigma^2 = 2.5 + 0.045 I (DN)
        sigma = cv2.sqrt(light * np.float32(0.045 * cfg.noise ** 2)
                         + np.float32(2.5 * cfg.noise ** 2))
        noise = _normal_lut()[rng.integers(0, 256, img.shape, dtype=np.uint8)]
        noise *= sigma[:, :, None]
        img += noise
    np.clip(img, 0, 255, out=img)
    image = img.astype(np.uint8)

    return image
