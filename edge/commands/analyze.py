"""``crystal-edge analyze``: crystals and size distribution of a set of frames -> report.

Two modes plug in at :func:`collect_results`: ``--masks`` measures crystal masks made by
any segmenter (:mod:`edge.commands.analyze_masks`, which also says which mask files are
accepted), the image mode segments frames with a model
(:mod:`edge.commands.analyze_images`). Each mode yields one
:class:`edge.vision.result.FrameResult` per input (measured, or skipped with its reason:
``unreadable``, ``bad_mask``, a quality-gate reason), and everything after that (PSD,
JSON/CSV/plot, exit status) is shared. Finding and decoding the inputs is
:mod:`edge.commands.analyze_inputs`; every file (frame or mask) is read by
:mod:`edge.vision.decode`, the decoder of the service, with the same limits (defaults of
``[decode]``).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.commands.analyze_images import add_image_arguments, make_folder, results_from_images
from edge.commands.analyze_inputs import decode_config_from_args, validated
from edge.commands.analyze_masks import results_from_masks
from edge.errors import UserError

if TYPE_CHECKING:
    from edge.vision.result import FrameResult

HELP = ("measure crystals and the size distribution (Q3, x50,3, log-normal) of frames "
        "(segmented with a model) or of crystal masks; writes a JSON/CSV/PNG report")

log = logging.getLogger("edge.analyze")



def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_arguments(parser)  # positional frames + model/backend/overlay options
    g = parser.add_argument_group("input")
    g.add_argument("--masks", nargs="+", metavar="PATH",
                   help="crystal mask files or directories (png, tif, tiff, bmp, jpg; "
                        "directories are scanned, not recursively, in sorted order)")
    g.add_argument("--crystal-class", type=int, default=None, metavar="N",
                   help="masks are class maps; pixels equal to N are crystal "
                        "(default: binary masks, non-zero = crystal)")
    g.add_argument("--px-size-um", type=float, default=None, metavar="F",
                   help="pixel size in um (required with --masks; for frames: default the "
                        "pixel size of the frames the model was trained on, with a warning)")
    g.add_argument("--max-frame-pixels", type=int, default=None, metavar="N",
                   help="skip files whose header declares more pixels (default 50000000, "
                        "as the service's [decode] max_frame_pixels)")
    g.add_argument("--max-file-mb", type=float, default=None, metavar="MB",
                   help="skip files larger than MB megabytes (default 200, as the "
                        "service's [decode] max_file_mb)")

    m = parser.add_argument_group("measurement (defaults: edge.measure.MeasureConfig)")
    m.add_argument("--min-area-px", type=int, default=None, metavar="N",
                   help="reject objects smaller than N px2 (default 20)")
    m.add_argument("--closing-radius-px", type=int, default=None, metavar="R",
                   help="radius of the closing disc, 0 = none (default 2)")
    m.add_argument("--circularity-min", type=float, default=None, metavar="C",
                   help="reject crystals with circularity below C as agglomerates")
    m.add_argument("--circularity-max", type=float, default=None, metavar="C",
                   help="reject crystals with circularity above C")
    m.add_argument("--paper-circularity", action="store_true",
                   help="use the study's circularity window 0.85-0.95")
    m.add_argument("--no-clear-border", action="store_true",
                   help="keep crystals touching the border (no edge correction then)")
    m.add_argument("--no-split", action="store_true",
                   help="do not split touching crystals (no watershed)")
    m.add_argument("--no-fill-holes", action="store_true", help="do not fill holes")
    m.add_argument("--keep-bubbles", action="store_true",
                   help="image mode: do not reject round objects with a thick dark ring and a "
                        "bright centre as air bubbles ([measure] reject_bubbles = false)")

    p = parser.add_argument_group("size distribution (defaults: edge.psd.PsdConfig)")
    p.add_argument("--class-width-um", type=float, default=None, metavar="W",
                   help="width of the size classes in um (default 10)")
    p.add_argument("--class-min-um", type=float, default=None, metavar="X",
                   help="lower edge of the first size class in um (default 0)")
    p.add_argument("--class-max-um", type=float, default=None, metavar="X",
                   help="upper edge of the last regular size class in um; larger crystals "
                        "fall into one overflow class (default 1000)")
    p.add_argument("--fines-below-um", type=float, default=None, metavar="X",
                   help="crystals below this size count as fines (default 20)")
    p.add_argument("--no-edge-correction", action="store_true",
                   help="do not weight crystals against the border-clearing bias")
    p.add_argument("--bootstrap", type=int, default=None, metavar="N",
                   help="bootstrap resamples for the 95%% interval of x50,3 (0 = none; "
                        "default 1000)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="bootstrap seed (default 0)")
    p.add_argument("--no-fit", action="store_true", help="no log-normal fit")
    p.add_argument("--fit-points", choices=["upper_edge", "class_max"], default=None,
                   help="Q3 points the log-normal is fitted to (default upper_edge)")

    o = parser.add_argument_group("output")
    o.add_argument("--json", metavar="OUT", default=None,
                   help="write the JSON report to OUT ('-' = stdout instead of the summary)")
    o.add_argument("--csv", metavar="OUT", default=None,
                   help="write one CSV row per measured crystal, and the size classes "
                        "(ISO 9276-1 q0, q3, Q0, Q3) to OUT's stem + .classes.csv")
    o.add_argument("--plot", metavar="OUT.png", default=None,
                   help="write the Q3 plot with the log-normal fit (PNG)")


# ---------------------------------------------------------------- settings from arguments
def measure_config_from_args(args: argparse.Namespace) -> Any:
    """:class:`edge.measure.MeasureConfig` from the measurement options."""
    from edge.measure import PAPER_WINDOW, MeasureConfig

    fields: dict[str, Any] = {}
    if args.paper_circularity:
        fields.update(circularity_min=PAPER_WINDOW[0], circularity_max=PAPER_WINDOW[1])
    for name in ("min_area_px", "closing_radius_px", "circularity_min", "circularity_max"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    if args.no_clear_border:
        fields["clear_border"] = False
    if args.no_split:
        fields["split_touching"] = False
    if args.no_fill_holes:
        fields["fill_holes"] = False
    if args.keep_bubbles:
        fields["reject_bubbles"] = False
    options = {n: "--" + n.replace("_", "-") for n in fields}
    options["circularity_min"] = "--circularity-min/--circularity-max"
    return validated(MeasureConfig, fields, options)


def psd_config_from_args(args: argparse.Namespace) -> Any:
    """:class:`edge.psd.PsdConfig` from the size-distribution options."""
    from edge.psd import PsdConfig

    fields: dict[str, Any] = {}
    for name in ("class_width_um", "class_min_um", "class_max_um", "fines_below_um"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.no_edge_correction:
        fields["edge_correction"] = False
    if args.bootstrap is not None:
        fields["bootstrap_n"] = args.bootstrap
    if args.seed is not None:
        fields["bootstrap_seed"] = args.seed
    if args.no_fit:
        fields["lognormal_fit"] = False
    if args.fit_points is not None:
        fields["fit_points"] = args.fit_points
    options = {"class_width_um": "--class-width-um", "class_min_um": "--class-min-um",
               "class_max_um": "--class-max-um", "fines_below_um": "--fines-below-um",
               "bootstrap_n": "--bootstrap",
               "bootstrap_seed": "--seed", "fit_points": "--fit-points"}
    return validated(PsdConfig, fields, options)


def check_px_size(value: float | None, option: str = "--px-size-um") -> float:
    if value is None:
        raise UserError(f"{option}: required (pixel size of the masks in um, e.g. 1.45)")
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{option}: must be a positive number of um, got {value}")
    return float(value)


def check_output_paths(args: argparse.Namespace) -> None:
    """Before any work: create the missing folder of each output file (as ``--overlays``
    does) and fail on a path that cannot be a file."""
    for opt in ("json", "csv", "plot"):
        value = getattr(args, opt, None)
        if value is None or value == "-":
            continue
        if Path(value).expanduser().is_dir():
            raise UserError(f"--{opt} {value}: is a directory, expected a file name")
        make_folder(Path(value).expanduser().resolve().parent, f"--{opt} {value}")


def collect_results(args: argparse.Namespace, measure_config: Any,
                    ) -> tuple[str, list[FrameResult], float, dict[str, Any]]:
    """The mode's per-input results: ``(mode, results, px_size_um, extra settings)``.

    The image mode (positional inputs + ``--model``) is in
    :mod:`edge.commands.analyze_images`.
    """
    if args.masks and args.inputs:
        raise UserError("give either frames (IMAGES_OR_DIRS) or --masks, not both")
    if args.inputs:
        return results_from_images(args, measure_config)
    if args.masks:
        px = check_px_size(args.px_size_um)
        if args.crystal_class is not None and args.crystal_class < 0:
            raise UserError(f"--crystal-class: must be >= 0, got {args.crystal_class}")
        results = results_from_masks(args.masks, px_size_um=px,
                                     crystal_class=args.crystal_class,
                                     measure_config=measure_config,
                                     decode_config=decode_config_from_args(args))
        return "masks", results, px, {"crystal_class": args.crystal_class,
                                      "inputs": list(args.masks)}
    raise UserError("nothing to analyze: give frames (IMAGES_OR_DIRS) or --masks with "
                    "crystal mask files or directories")


# ---------------------------------------------------------------- output
def summary(report: Any) -> str:
    """A few human-readable lines about the report."""
    p = report.psd
    rej = ", ".join(f"{n} {r}" for r, n in report.n_rejected.items())
    lines = [f"images: {report.n_images_ok} of {report.n_images} measured; crystals kept: "
             f"{p.n} (rejected: {rej})"]
    if p.n:
        ci = p.x50_3_ci95_um
        ci_txt = f" (95% CI {ci[0]:.1f}-{ci[1]:.1f})" if ci else ""
        lines.append(f"x10,3 = {p.x10_3_um:.1f} um, x50,3 = {p.x50_3_um:.1f} um{ci_txt}, "
                     f"x90,3 = {p.x90_3_um:.1f} um, x50,0 = {p.x50_0_um:.1f} um, "
                     f"span = {p.span:.3f}, d32 = {p.d32_um:.1f} um")
        if p.lognormal is not None:
            f = p.lognormal
            lines.append(f"log-normal fit: x50,3 = {f.x50_3_um:.1f} um, s_LND = "
                         f"{f.s_lnd:.3f}, RMSE = {f.rmse:.4f}")
        lines.append(process_summary(report.process))
    if report.edge_correction_applied:
        lines.append("edge correction: on (Miles-Lantuejoul weights)")
    lines.extend(f"note: {n}" for n in report.notes())
    return "\n".join(lines)


def process_summary(pv: Any) -> str:
    """The process values (:class:`edge.psd.ProcessValues`) in one line."""
    def f(v: float | None, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    return (f"process: {f(pv.crystals_per_frame, '.1f')} crystals/frame, agglomerates "
            f"{f(pv.agglomerate_fraction_number, '.1%')} by number "
            f"{f(pv.agglomerate_fraction_volume, '.1%')} by volume, Feret x50 max/min "
            f"{f(pv.x50_feret_max_um, '.1f')}/{f(pv.x50_feret_min_um, '.1f')} um, aspect "
            f"{f(pv.median_aspect_ratio, '.2f')}, circularity {f(pv.median_circularity, '.2f')}, "
            f"fines < {pv.fines_below_um:g} um {f(pv.fines_fraction_number, '.1%')} by number "
            f"{f(pv.fines_fraction_volume, '.2%')} by volume")


def write_outputs(args: argparse.Namespace, report: Any) -> None:
    import json

    from edge.report import write_classes_csv, write_csv, write_json

    if args.json == "-":
        sys.stdout.write(json.dumps(report.to_payload(), indent=2, allow_nan=False) + "\n")
    else:
        print(summary(report))
        if args.json:
            write_json(report, args.json)
            log.info("JSON report: %s", args.json)
    if args.csv:
        write_csv(report, args.csv)
        classes = classes_csv_path(args.csv)
        write_classes_csv(report, classes)
        log.info("CSV: %s (crystals), %s (size classes)", args.csv, classes)
    if args.plot:
        from edge.plot import plot_q3

        plot_q3(report.psd, args.plot, title=f"Q3 distribution, {report.psd.n} crystals")
        log.info("plot: %s", args.plot)


def classes_csv_path(csv_path: str) -> str:
    """The classes CSV written beside ``--csv OUT``: ``OUT`` with ``.classes.csv``."""
    from pathlib import Path

    return str(Path(csv_path).with_suffix("")) + ".classes.csv"


def run(args: argparse.Namespace) -> int:
    from edge.report import build_report

    measure_config = measure_config_from_args(args)
    psd_config = psd_config_from_args(args)
    check_output_paths(args)
    mode, results, px, extra = collect_results(args, measure_config)
    report = build_report(results, mode=mode, px_size_um=px, measure_config=measure_config,
                          psd_config=psd_config, settings=extra)
    write_outputs(args, report)
    if report.n_images_ok == 0:
        print(f"crystal-edge: error: nothing could be measured ({report.n_images} input(s), "
              f"all skipped)", file=sys.stderr)
        return 1
    return 0
