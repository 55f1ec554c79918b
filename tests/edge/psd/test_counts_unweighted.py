"""``classes.counts`` in the psd payload are the measured crystals per class, unweighted;
the edge-correction weights act on q0/q3/Q0/Q3 only. A DCS reading ``counts`` as weighted
numbers (as the schema and docs/mqtt.md once said) would misread every class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.psd import compute_psd

SCHEMA = Path(__file__).resolve().parents[3] / "edge" / "schemas" / "psd.schema.json"


def test_counts_are_raw_while_q0_is_weighted():
    d = np.array([15.0, 15.0, 55.0, 95.0])
    w = np.array([1.0, 1.0, 1.0, 5.0])        # the large crystal's edge-correction weight
    r = compute_psd(d, weights=w)
    assert r.counts[1] == 2 and r.counts[5] == 1 and r.counts[9] == 1
    assert r.counts.sum() == d.size
    assert np.isclose(r.q0[9], 5.0 / 8.0) and not np.isclose(r.q0[9], r.counts[9] / d.size)


def test_schema_describes_counts_as_unweighted():
    schema = json.loads(SCHEMA.read_text())
    text = json.dumps(schema["$defs"]["PsdClasses"]["properties"]["counts"])
    assert "unweighted" in text and "weighted counts when" not in text
