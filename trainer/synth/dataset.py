"""Writing a synthetic dataset (images, labels, contacts, classes.json, truth.json) and its
statistics.

``contacts/<stem>.png`` (uint8 0/1) marks the crystal pixels where two crystals touch or
overlap (:func:`trainer.synth.contact_map` of the exact instance ids): the labels of the
learned contact channel (``crystal-train train --contact-weight``).

``truth.json`` holds every crystal of every frame (true area-equivalent diameter in um,
polygon, flags) and population statistics of the true diameters over the whole set:

* ``centred``: every crystal whose centroid lies inside the illuminated field and the
  frame, counted with its full true size (also those cut by the frame border or the
  field edge) -- the suspension's PSD in the measured window, which the appliance's
  edge-corrected distribution estimates (:func:`trainer.synth.render.centre_in_window`);
* ``all``: every crystal with any visible pixel -- larger crystals reach into the
  window from further out (the generator also places their centres further outside),
  so this population leans towards large crystals (x50,3 up to 1.9 % above ``centred``
  on the model card's per-domain sets, at most 0.4 % below it by chance);
* ``whole``: crystals entirely inside the frame and the illuminated field;
* ``isolated_whole``: ``whole`` and not touching another crystal -- what an ideal
  measurement that clears the border and rejects agglomerates keeps.

Volume quantiles x10,3, x50,3, x90,3 use the midpoint rule on the raw sample (the same
definition as :mod:`edge.psd.quantiles`): sorted by diameter with weights ``x^3``, item i
sits at ``F_i = (sum of weights before it + w_i/2) / W``; x_q interpolates x over F.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from trainer.synth.config import SynthConfig
from trainer.synth.instances import contact_map
from trainer.synth.render import (
    CLASS_NAMES,
    CRYSTAL,
    SynthCrystal,
    SynthFrame,
    centre_in_window,
    render_frame,
)

#: Colours used to show labels (the study's Fig. 2: dark blue, orange, yellow).
PALETTE: dict[str, tuple[int, int, int]] = {
    "black_background": (20, 30, 120),
    "light_background": (240, 150, 40),
    "crystal": (250, 230, 30),
}
POPULATIONS = ("centred", "all", "whole", "isolated_whole")


def weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    """Midpoint-rule weighted quantile (see the module docstring); NaN for no data."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    keep = w > 0
    x, w = x[keep], w[keep]
    if x.size == 0:
        return float("nan")
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    f = (np.cumsum(w) - 0.5 * w) / w.sum()
    return float(np.interp(q, f, x))


def population_stats(diameters_um) -> dict[str, Any]:
    """N, x10,3, x50,3, x90,3, x50,0 and the Sauter diameter d32 of true diameters (um)."""
    d = np.asarray(diameters_um, np.float64)
    if d.size == 0:
        return {"n": 0, "x10_3_um": None, "x50_3_um": None, "x90_3_um": None,
                "x50_0_um": None, "d32_um": None}
    v = d ** 3
    return {
        "n": int(d.size),
        "x10_3_um": round(weighted_quantile(d, v, 0.1), 4),
        "x50_3_um": round(weighted_quantile(d, v, 0.5), 4),
        "x90_3_um": round(weighted_quantile(d, v, 0.9), 4),
        "x50_0_um": round(weighted_quantile(d, np.ones_like(d), 0.5), 4),
        "d32_um": round(float(v.sum() / (d ** 2).sum()), 4),
    }


def in_population(flags: Mapping[str, Any], population: str) -> bool:
    """Whether a crystal with these flags (``centred``, ``touches_border``,
    ``cut_by_field``, ``touches_other``: a ``truth.json`` record or a
    :class:`SynthCrystal`'s fields) belongs to ``population`` (:data:`POPULATIONS`)."""
    if population not in POPULATIONS:
        raise ValueError(f"unknown population {population!r}; choose from {POPULATIONS}")
    whole = not (flags["touches_border"] or flags["cut_by_field"])
    return {"all": True, "centred": bool(flags["centred"]), "whole": whole,
            "isolated_whole": whole and not flags["touches_other"]}[population]


def select(crystals: list[SynthCrystal], population: str) -> list[SynthCrystal]:
    return [c for c in crystals if in_population(vars(c), population)]


def select_records(frame: dict[str, Any], population: str,
                   frame_hw: tuple[int, int]) -> list[dict[str, Any]]:
    """The crystal records of one ``truth.json`` frame in ``population``
    (:func:`in_population`); ``frame_hw`` is the set's frame size, for truth files written
    before the records carried ``centred`` (it is then computed from the centroid)."""
    f = frame["field"]
    field_xyr = (f["cx"], f["cy"], f["r"])
    return [c for c in frame["crystals"] if in_population(
        c if "centred" in c else
        {**c, "centred": centre_in_window(c["centroid_px"], field_xyr, frame_hw)}, population)]


def truth_statistics(crystals: list[SynthCrystal]) -> dict[str, Any]:
    out = {pop: population_stats([c.diameter_um for c in select(crystals, pop)])
           for pop in POPULATIONS}
    n = len(crystals)
    out["fractions"] = {
        "touching_other": round(sum(c.touches_other for c in crystals) / n, 4) if n else 0.0,
        "touching_border": round(sum(c.touches_border for c in crystals) / n, 4) if n else 0.0,
        "cut_by_field": round(sum(c.cut_by_field for c in crystals) / n, 4) if n else 0.0,
        "transparent": round(sum(c.kind == "transparent" for c in crystals) / n, 4) if n else 0.0,
        "defocused": round(sum(c.defocus_px > 0 for c in crystals) / n, 4) if n else 0.0,
    }
    return out


def colorize_label(label: np.ndarray) -> np.ndarray:
    """Class-id label -> RGB image in :data:`PALETTE` colours."""
    lut = np.zeros((256, 3), np.uint8)
    for i, name in enumerate(CLASS_NAMES):
        lut[i] = PALETTE[name]
    return lut[label]


def frame_seed(seed: int, index: int) -> np.random.Generator:
    """The generator of frame ``index`` of a set: independent of the other frames."""
    return np.random.default_rng([int(seed), int(index)])


def write_frame(out: Path, stem: str, frame: SynthFrame, *, png_compression: int = 1) -> None:
    # noisy camera frames: run-length zlib is ~2x faster than the default and smaller
    img_params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression),
                  cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    lab_params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
    img_path, lab_path = out / "images" / f"{stem}.png", out / "labels" / f"{stem}.png"
    if not cv2.imwrite(str(img_path), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR), img_params):
        raise OSError(f"{img_path}: cannot write")
    if not cv2.imwrite(str(lab_path), frame.label, lab_params):
        raise OSError(f"{lab_path}: cannot write")
    if frame.instances is not None:
        con_path = out / "contacts" / f"{stem}.png"
        con_path.parent.mkdir(exist_ok=True)
        if not cv2.imwrite(str(con_path), contact_map(frame.instances, frame.coverage),
                           lab_params):
            raise OSError(f"{con_path}: cannot write")


def generate_dataset(out: str | Path, n: int, cfg: SynthConfig | None = None, seed: int = 0,
                     *, progress: Callable[[int, int], None] | None = None,
                     png_compression: int = 1, writers: int = 2) -> dict[str, Any]:
    """Render ``n`` frames into ``out`` and write ``classes.json`` and ``truth.json``.

    Frame ``i`` is rendered with :func:`frame_seed` ``(seed, i)``, so a set is
    reproducible byte for byte and any frame can be re-rendered alone. ``writers``
    background threads encode the PNGs while the next frame renders. Returns the truth
    document (also written to ``out/truth.json``).
    """
    from trainer.data import write_classes

    cfg = cfg or SynthConfig()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "contacts").mkdir(parents=True, exist_ok=True)
    write_classes(out / "classes.json", CLASS_NAMES, crystal_class=CRYSTAL,
                  px_size_um=cfg.px_size_um, palette=PALETTE,
                  description="synthetic flow-cell frames (crystal-train synth)")
    frames: list[dict[str, Any]] = []
    every: list[SynthCrystal] = []
    width = max(5, len(str(n - 1)))
    # PNG encoding releases the GIL: write in background threads while the next frame
    # renders (the files and their bytes do not depend on the order of completion)
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=max(1, int(writers))) as pool:
        for i in range(n):
            if progress is not None:
                progress(i, n)
            frame = render_frame(frame_seed(seed, i), cfg)
            stem = f"synth_{i:0{width}d}"
            pending.append(pool.submit(write_frame, out, stem, frame,
                                       png_compression=png_compression))
            while len(pending) > 2 * max(1, int(writers)):
                pending.popleft().result()
            frames.append({"stem": stem, **frame.to_payload()})
            every.extend(frame.crystals)
        while pending:
            pending.popleft().result()
    doc = {
        "schema": "crystal-psd/synth-truth",
        "schema_version": 1,
        "seed": int(seed),
        "n_frames": int(n),
        "px_size_um": cfg.px_size_um,
        "config": cfg.model_dump(mode="json"),
        "definitions": {
            "diameter_um": "true area-equivalent diameter of the crystal's polygon: "
                           "2*sqrt(area/pi)*px_size_um, also for crystals partly outside "
                           "the frame or the field",
            "all": "every crystal with at least one visible pixel",
            "whole": "not touching the frame's outermost pixels and entirely inside the "
                     "illuminated field",
            "isolated_whole": "whole, and not touching or overlapping another crystal",
            "quantiles": "volume-weighted (x^3), midpoint rule on the raw sample, as "
                         "edge.psd.quantiles",
            "label": "0 black background (outside the field), 1 light background (incl. "
                     "bubbles, debris, dust), 2 crystal (only where inside the field)",
        },
        "statistics": truth_statistics(every),
        "frames": frames,
    }
    tmp = out / "truth.json.tmp"
    tmp.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    os.replace(tmp, out / "truth.json")
    return doc
