"""``make demo``: synthetic frames of both sieve fractions -> ``crystal-edge analyze`` -> summary.

Renders a small deterministic set of frames per sieve fraction of the study (90-125 um
and 125-180 um) with the trainer's generator (``crystal-train synth``), analyses each set
with the bundled model on the CPU (``crystal-edge analyze``: segmentation, measurement,
edge-corrected Q3, log-normal fit, plot, overlays) and prints the measured
characteristic sizes next to the generator's truth. Everything goes to ``demo-out/``.

Without the bundled model (``models/crystal-seg.onnx`` + its metadata) it says so and
exits with status 1: it never pretends.

Run ``python scripts/demo.py --help`` for the options (model, frame count and size).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(ROOT))

FRACTIONS = [("90-125", 1), ("125-180", 2)]  # (sieve fraction in um, seed)
#: Camera pixel size of the demo frames (the study's set-up); the frames are rendered at it and
#: analysed with it, never taken from the model.
PX_SIZE_UM = 1.45


def _say(text: str = "") -> None:
    print(text, flush=True)


def _cli(prog: str, argv: list[str]) -> int:
    """Run a crystal-edge / crystal-train command in this process; echo it first."""
    _say(f"$ {prog} {' '.join(shlex.quote(a) for a in argv)}")
    if prog == "crystal-edge":
        from edge.cli import main
    else:
        from trainer.cli import main
    return int(main(argv) or 0)


def check_model(model: Path) -> str | None:
    """Why the model cannot be used, or None."""
    if not model.is_file():
        return (f"the bundled model {model} is missing. It is trained and exported by "
                "`make train-default` (see docs/training.md); the demo does not fake "
                "results without it.")
    if not model.with_suffix(".json").is_file():
        return f"{model.with_suffix('.json')} (the model's metadata) is missing."
    return None


def truth_summary(truth: dict[str, Any]) -> dict[str, Any]:
    """Truth of a rendered set: the crystals centred in the field (their true
    area-equivalent diameters; :func:`trainer.synth.select_records`), as the volume
    statistics and log-normal fit of edge.psd."""
    from edge.psd import PsdConfig, compute_psd
    from trainer.synth import select_records

    hw = (int(truth["config"]["height"]), int(truth["config"]["width"]))
    d = [c["diameter_um"] for fr in truth["frames"] for c in select_records(fr, "centred", hw)]
    psd = compute_psd(d, config=PsdConfig(bootstrap_n=0))
    return _row(len(d), psd.to_payload())


def process_line(process: dict[str, Any]) -> str:
    """The report's process values in one line (what a plant would trend per batch)."""
    def num(key: str, fmt: str) -> str:
        v = process.get(key)
        return "n/a" if v is None else format(v, fmt)

    return (f"process: {num('crystals_per_frame', '.1f')} crystals/frame, Feret max/min "
            f"x50 {num('x50_feret_max_um', '.1f')}/{num('x50_feret_min_um', '.1f')} um, "
            f"agglomerates {num('agglomerate_fraction_number', '.1%')} by number, fines "
            f"< {num('fines_below_um', 'g')} um {num('fines_fraction_volume', '.2%')} by volume")


def _row(n: int, p: dict[str, Any]) -> dict[str, Any]:
    ln = p.get("lognormal") or {}
    return {"n": n, "x10_3_um": p.get("x10_3_um"), "x50_3_um": p.get("x50_3_um"),
            "x90_3_um": p.get("x90_3_um"), "ln_x50_3_um": ln.get("x50_3_um"),
            "s_lnd": ln.get("s_lnd")}


def _fmt(v: Any, spec: str) -> str:
    width = int(spec.split(".", maxsplit=1)[0])
    return f"{'-':>{width}s}" if v is None else format(v, spec)


def print_table(name: str, measured: dict[str, Any], truth: dict[str, Any]) -> None:
    _say(f"  {'':10s} {'N':>6s} {'x10,3':>8s} {'x50,3':>8s} {'x90,3':>8s} "
         f"{'x50 (LN)':>9s} {'s_LND':>6s}")
    for label, r in (("measured", measured), ("truth", truth)):
        _say(f"  {label:10s} {r['n']:6d} {_fmt(r['x10_3_um'], '8.1f')} "
             f"{_fmt(r['x50_3_um'], '8.1f')} {_fmt(r['x90_3_um'], '8.1f')} "
             f"{_fmt(r['ln_x50_3_um'], '9.1f')} {_fmt(r['s_lnd'], '6.3f')}")
    if measured["x50_3_um"] and truth["x50_3_um"]:
        dev = 100.0 * (measured["x50_3_um"] / truth["x50_3_um"] - 1.0)
        _say(f"  x50,3 deviation from truth: {dev:+.1f} %   (lengths in um)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "demo-out", help="output folder")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "crystal-seg.onnx",
                    help="segmentation model (default: the bundled models/crystal-seg.onnx)")
    ap.add_argument("--frames", type=int, default=10, help="frames per fraction (default 10)")
    ap.add_argument("--size", default="1024x768", help="frame size WxH (default 1024x768)")
    ap.add_argument("--threads", type=int, default=0,
                    help="ONNX Runtime CPU threads (default 0: one per core)")
    args = ap.parse_args(argv)

    why = check_model(args.model)
    if why:
        _say(f"make demo: cannot run: {why}")
        return 1
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    summary: dict[str, Any] = {"model": str(args.model), "fractions": {}}
    for fraction, seed in FRACTIONS:
        frames_dir = out / "frames" / fraction
        res_dir = out / fraction
        res_dir.mkdir(parents=True, exist_ok=True)
        _say(f"\n== sieve fraction {fraction} um: {args.frames} synthetic frames "
             f"{args.size}, seed {seed}")
        rc = _cli("crystal-train", ["synth", "--out", str(frames_dir), "--n", str(args.frames),
                                    "--fraction", fraction, "--size", args.size,
                                    "--px-size-um", str(PX_SIZE_UM), "--seed", str(seed)])
        if rc:
            _say(f"make demo: generating the {fraction} frames failed (exit {rc})")
            return 1
        report = res_dir / "report.json"
        analyze = ["analyze", str(frames_dir / "images"), "--model", str(args.model),
                   "--backend", "onnxruntime", "--px-size-um", str(PX_SIZE_UM),
                   "--inference-scale", "auto", "--json", str(report),
                   "--csv", str(res_dir / "crystals.csv"), "--plot", str(res_dir / "q3.png"),
                   "--overlays", str(res_dir / "overlays")]
        if args.threads:
            analyze += ["--threads", str(args.threads)]
        rc = _cli("crystal-edge", analyze)
        if rc or not report.is_file():
            _say(f"make demo: analysing the {fraction} frames failed (exit {rc})")
            return 1
        rep = json.loads(report.read_text())
        truth = json.loads((frames_dir / "truth.json").read_text())
        summary["fractions"][fraction] = {
            "measured": _row(int(rep["n_crystals"]), rep),
            "truth": truth_summary(truth),
            "frames": {"analysed": rep["n_images_ok"], "total": rep["n_images"]},
            "process": rep["process"],
            "report": str(report), "plot": str(res_dir / "q3.png"),
            "overlays": str(res_dir / "overlays"),
        }
        summary["agglomerate_rule"] = rep["settings"]["measure"]["agglomerate_rule"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    _say("\n" + "=" * 72)
    _say(f"crystal-psd demo: model {args.model.name}, ONNX Runtime on the CPU, "
         f"{time.monotonic() - t_start:.0f} s")
    _say("measured: crystals kept after border clearing and the agglomerate rule "
         f"({summary['agglomerate_rule']}), edge-corrected Q3;")
    _say("truth: the true area-equivalent diameter of every generated crystal centred in "
         "the field.")
    for fraction, s in summary["fractions"].items():
        _say(f"\nsieve fraction {fraction} um ({s['frames']['analysed']}/"
             f"{s['frames']['total']} frames analysed)")
        print_table(fraction, s["measured"], s["truth"])
        _say("  " + process_line(s["process"]))
        _say(f"  plot: {s['plot']}\n  overlays: {s['overlays']}/\n  report: {s['report']}")
    _say(f"\nsummary (JSON): {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
