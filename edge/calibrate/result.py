"""The result of a calibration and the error raised when a frame cannot give one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


class CalibrationError(ValueError):
    """The frame does not show what the method needs; the message is one line without
    the file name (the caller names the file)."""


@dataclass
class Calibration:
    """A pixel size measured on a reference frame.

    Attributes
    ----------
    px_size_um : float
        Micrometres per pixel: ``reference_um / measured_px``.
    uncertainty_pct : float
        Relative standard uncertainty (1 sigma) of ``px_size_um`` in per cent, from the
        scatter of the measurement itself (fit residuals, bead-to-bead spread); the
        reference's own certificate tolerance is not included.
    method : {"micrometer", "beads"}
        What the frame shows.
    reference_um : float
        Line spacing or bead diameter of the reference in micrometres.
    found : dict
        What was measured (plain JSON values): counts, period or median diameter in px,
        angle, contrast, ...
    notes : list of str
        Warnings for people (few beads, few lines, ...).
    drawing : dict
        Geometry for the check image (arrays; not part of the JSON payload).
    """

    px_size_um: float
    uncertainty_pct: float
    method: Literal["micrometer", "beads"]
    reference_um: float
    found: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    drawing: dict[str, Any] = field(default_factory=dict, repr=False)

    def summary(self) -> str:
        """One line for people: value, uncertainty and what it came from."""
        ref = ("line spacing" if self.method == "micrometer" else "bead diameter")
        return (f"px_size_um = {self.px_size_um:.5g} +- {self.uncertainty_pct:.2g} % "
                f"({self.method}, {ref} {self.reference_um:g} um)")

    def to_payload(self, *, image: str, time: str) -> dict[str, Any]:
        """The ``--json`` object."""
        return {
            "image": image,
            "time": time,
            "method": self.method,
            "reference_um": self.reference_um,
            "px_size_um": self.px_size_um,
            "uncertainty_pct": self.uncertainty_pct,
            "found": _plain(self.found),
            "notes": list(self.notes),
        }


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
