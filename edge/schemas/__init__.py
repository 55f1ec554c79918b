"""Shipped JSON Schemas of the MQTT payloads (generated from :mod:`edge.mqtt.payloads`
by ``crystal-edge payload-schema --out edge/schemas``; a test keeps them in sync)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

NAMES = ("psd", "status", "health", "command")


def load(name: str) -> dict[str, Any]:
    """The shipped schema ``<name>.schema.json`` as a dict (``name`` in :data:`NAMES`)."""
    if name not in NAMES:
        raise ValueError(f"unknown payload schema {name!r}; expected one of {NAMES}")
    text = resources.files(__package__).joinpath(f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)
