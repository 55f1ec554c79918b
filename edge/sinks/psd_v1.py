"""Version-1 ``psd`` payloads in the version-2 layout.

Reports stored in the MQTT outbox before an upgrade are version 1 (``docs/mqtt.md``,
"Schema versions"). The JSON mode sends them as stored (the consumer branches on
``schema_version``); Sparkplug metrics have one layout only, so :func:`upgrade_v1` turns
such a report into version 2 before it is encoded instead of dropping it:

* the classes move onto the default grid of their class width (``class_min_um`` 0,
  ``class_max_um`` 1000, :func:`edge.psd.class_edges`): version-1 class ``k`` (upper edge
  ``u_k``) adds its count and its fractions ``q_k = Q_k - Q_{k-1}`` to the grid class
  holding ``u_k - width / 2``; ``Q0``/``Q3`` are the cumulative sums again;
* ``frames.rejected_by_reason`` is mapped onto the closed list;
* ``process`` holds ``crystals_per_frame`` (measured / used frames) and nulls (version 1
  did not collect the rest); ``confidence`` is null.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from edge.psd import ProcessValues, PsdConfig, class_edges
from edge.psd.process import frames_rejected_closed


def upgrade_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` in the version-2 layout (unchanged when it is not version 1).

    Raises ``ValueError`` (or ``KeyError``/``TypeError``) for a payload that is not a
    well-formed version-1 report; the outbox then removes it as a poison entry.
    """
    if payload.get("schema_version") != 1:
        return payload
    p = copy.deepcopy(payload)
    cfg = PsdConfig(class_width_um=float(p["class_width_um"]))
    p["classes"] = _classes(p["classes"], cfg)
    p.update(schema_version=2, class_min_um=cfg.class_min_um, class_max_um=cfg.class_max_um,
             confidence=None)
    frames = p["frames"]
    frames["rejected_by_reason"] = frames_rejected_closed(frames.get("rejected_by_reason", {}))
    used, measured = int(frames["used"]), int(p["crystals"]["measured"])
    process = ProcessValues(crystals_per_frame=measured / used if used else None,
                            fines_below_um=cfg.fines_below_um).to_payload()
    process.pop("frames_rejected_by_reason")
    p["process"] = process
    return p


def _classes(old: dict[str, Any], cfg: PsdConfig) -> dict[str, Any]:
    edges = class_edges(cfg)
    k = edges.size - 1
    upper = np.asarray(old["upper_edges_um"], dtype=np.float64)
    idx = np.clip(np.searchsorted(edges, upper - cfg.class_width_um / 2, side="right") - 1,
                  0, k - 1)
    out: dict[str, Any] = {"lower_edges_um": edges[:-1].tolist(),
                           "upper_edges_um": [*edges[1:-1].tolist(), None]}
    counts = np.zeros(k)
    np.add.at(counts, idx, np.asarray(old["counts"], dtype=np.float64))
    out["counts"] = counts.tolist()
    for name in ("q0", "q3"):  # version 1: cumulative
        frac = np.zeros(k)
        np.add.at(frac, idx, np.diff(np.concatenate([[0.0], np.asarray(old[name], float)])))
        cum = np.minimum(np.cumsum(frac), 1.0)
        if counts.sum() > 0:
            cum[-1] = 1.0
        out[name] = frac.tolist()
        out[name.upper()] = cum.tolist()
    return out
