"""``crystal-edge calibrate IMAGE``: the pixel size from a frame of a reference.

``--micrometer SPACING_UM`` for a stage micrometer (line spacing of one division),
``--beads DIAMETER_UM`` for certified round reference particles (see
:mod:`edge.calibrate`). Prints one result line; ``--json OUT`` (``-``: stdout) writes
the result, ``--check PNG`` what was measured drawn on the frame, ``--write-config FILE``
sets ``[optics] px_size_um`` (with ``calibrated_at`` and ``calibration``) in a
configuration file, keeping its comments. A frame that cannot give a result is one
error line naming the file, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

from edge.errors import UserError

HELP = ("measure the pixel size on a frame of a stage micrometer (--micrometer) or of "
        "reference beads (--beads); optionally write it into a configuration")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE",
                   help="frame of the reference (png, tif, tiff, bmp, jpg; 8 or 16 bit)")
    ref = p.add_mutually_exclusive_group(required=True)
    ref.add_argument("--micrometer", type=float, metavar="SPACING_UM",
                     help="the frame shows a stage micrometer whose divisions are "
                          "SPACING_UM apart (e.g. 10 for a 1 mm / 100 scale)")
    ref.add_argument("--beads", type=float, metavar="DIAMETER_UM",
                     help="the frame shows round reference beads of certified diameter "
                          "DIAMETER_UM")
    p.add_argument("--check", metavar="PNG", default=None,
                   help="write a check image: what was measured, drawn on the frame")
    p.add_argument("--json", metavar="OUT", default=None,
                   help="write the result as JSON to OUT ('-': stdout)")
    p.add_argument("--write-config", metavar="FILE", default=None,
                   help="set [optics] px_size_um, calibrated_at and calibration in the "
                        "TOML configuration FILE (comments kept; created when missing)")


def _reference(args: argparse.Namespace) -> tuple[str, float]:
    option, value = (("--micrometer", args.micrometer) if args.micrometer is not None
                     else ("--beads", args.beads))
    if not (math.isfinite(value) and 0 < value <= 100_000):
        raise UserError(f"{option}: must be a length in micrometres > 0, got {value:g}")
    return option.lstrip("-"), value


def run(args: argparse.Namespace) -> int:
    from edge.calibrate import CalibrationError, measure_beads, measure_micrometer
    from edge.commands.analyze_inputs import decode_image

    method, value = _reference(args)
    image = decode_image(args.image)
    try:
        cal = (measure_micrometer(image, spacing_um=value) if method == "micrometer"
               else measure_beads(image, diameter_um=value))
    except CalibrationError as exc:
        raise UserError(f"{args.image}: {exc}") from None
    now = datetime.now(timezone.utc).replace(microsecond=0)
    before = _configured_px_size(args.write_config) if args.write_config else None
    _outputs(args, image, cal, now)
    out = sys.stderr if args.json == "-" else sys.stdout
    print(f"{args.image}: {cal.summary()}", file=out)
    change = _large_change(args.write_config, before, cal.px_size_um) if before else None
    for note in [*cal.notes, *([change] if change else [])]:
        print(f"crystal-edge: note: {note}", file=sys.stderr)
    return 0


def _outputs(args: argparse.Namespace, image: object, cal: object, now: datetime) -> None:
    """The check image, the JSON and the configuration edit that were asked for."""
    from edge.calibrate import render_check, write_config

    if args.check:
        import cv2

        ok = False
        try:
            ok = cv2.imwrite(args.check, render_check(image, cal))
        except cv2.error:
            ok = False
        if not ok:
            raise UserError(f"{args.check}: cannot write the check image (a .png path in "
                            f"an existing directory?)")
    if args.json:
        payload = cal.to_payload(image=Path(args.image).name,
                                 time=now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        text = json.dumps(payload, indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            try:
                Path(args.json).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise UserError(f"{args.json}: cannot write: {exc.strerror or exc}") from None
    if args.write_config:
        what = (f"stage micrometer {cal.reference_um:g} um divisions"
                if cal.method == "micrometer" else f"beads {cal.reference_um:g} um")
        text = (f"{what}, {Path(args.image).name}, +-{cal.uncertainty_pct:.2g} % "
                f"(1 sigma)")
        write_config(args.write_config, cal.px_size_um, text, now=now)


def _large_change(path: str, before: float | None, px_size_um: float) -> str | None:
    """A note when the written pixel size is more than 10 % from the configured one: the
    same optics recalibrated move by a fraction of a per cent; a factor of 2, 5 or 10 is
    the signature of index lines taken for the division."""
    if not before or 0.9 < px_size_um / before < 1.1:
        return None
    return (f"{path}: px_size_um {before:g} -> {px_size_um:.4g} (x{px_size_um / before:.2g}); "
            f"unless the objective or the camera changed, check the --check image: the "
            f"lines marked must be single divisions")


def _configured_px_size(path: str) -> float | None:
    """``[optics] px_size_um`` as the file sets it now (None: unset or unreadable)."""
    import tomllib

    try:
        value = tomllib.loads(Path(path).read_text(encoding="utf-8")).get(
            "optics", {}).get("px_size_um")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None
