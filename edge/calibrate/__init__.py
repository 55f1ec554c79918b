"""Pixel-size calibration from a frame of a reference: a stage micrometer or beads.

:func:`measure_micrometer` finds the period of a ruled line pattern (any angle) and
:func:`measure_beads` the median diameter of certified reference particles; both return
a :class:`Calibration` (``px_size_um`` with its relative standard uncertainty) or raise
:class:`CalibrationError` with a one-line reason. :func:`render_check` draws what was
measured; :func:`set_optics` / :func:`write_config` put the result into a configuration
file, keeping its comments. :mod:`edge.calibrate.synthetic` makes test frames of known
pixel size. The command is ``crystal-edge calibrate`` (:mod:`edge.commands.calibrate`).
"""

from edge.calibrate.beads import measure_beads
from edge.calibrate.check import render_check
from edge.calibrate.micrometer import measure_micrometer
from edge.calibrate.result import Calibration, CalibrationError
from edge.calibrate.tomledit import set_optics, write_config

__all__ = ["Calibration", "CalibrationError", "measure_beads", "measure_micrometer",
           "render_check", "set_optics", "write_config"]
