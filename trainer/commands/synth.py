"""``crystal-train synth``: render a synthetic labelled dataset with known crystal sizes."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "render synthetic flow-cell frames with exact labels and true crystal sizes (truth.json)"


def _pair(text: str, sep: str, what: str) -> tuple[float, float]:
    from edge.errors import UserError
    try:
        a, b = (float(v) for v in text.split(sep))
    except ValueError:
        raise UserError(f"{what}: expected two numbers as A{sep}B, got {text!r}") from None
    return a, b


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output folder (images/, labels/, classes.json, truth.json)")
    p.add_argument("--n", type=int, required=True, metavar="N", help="number of frames")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--fraction", default=None, metavar="A-B",
                      help="sieve fraction in um, e.g. 125-180 (default) or 90-125")
    size.add_argument("--lognormal", default=None, metavar="X50,S",
                      help="log-normal sizes instead: Q3 median x50,3 (um) and s_LND, "
                           "e.g. 150,0.25")
    p.add_argument("--size", default="1024x768", metavar="WxH", help="frame size (px)")
    p.add_argument("--px-size-um", type=float, default=None,
                   help="pixel size (um; default the preset's, else 1.45)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--agglomerate-rate", type=float, default=None, metavar="R",
                   help="fraction of crystals in agglomerates (default 0.10)")
    p.add_argument("--density", type=float, default=None, metavar="K",
                   help="fraction of the illuminated field covered by crystals (default 0.15)")
    p.add_argument("--preset", default=None, metavar="NAME[,NAME...]",
                   help="named generator settings, combined in order (habits: compact, "
                        "prisms, needles, plates, rhombs, twins, rounded; crowding: isolated, "
                        "crowded, agglomerates; light: dim, bright, uneven; field_cut, "
                        "fine_pixels, coarse_pixels); --config and the options override them")
    p.add_argument("--config", type=Path, default=None, metavar="JSON",
                   help="SynthConfig fields as JSON (command-line options override it)")


def run(args: argparse.Namespace) -> int:
    import json

    from pydantic import ValidationError
    from tqdm import tqdm

    from edge.errors import UserError
    from trainer.synth import POPULATIONS, SynthConfig, generate_dataset

    if args.n < 1:
        raise UserError(f"--n: need at least 1 frame, got {args.n}")
    fields: dict = {}
    if args.preset:
        from trainer.synth.presets import preset_fields
        try:
            fields.update(preset_fields(*(n.strip() for n in args.preset.split(","))))
        except ValueError as exc:
            raise UserError(f"--preset: {exc}") from None
    if args.config is not None:
        try:
            fields.update(json.loads(args.config.read_text()))
        except (OSError, ValueError) as exc:
            raise UserError(f"{args.config}: cannot read JSON: {exc}") from None
    w, h = _pair(args.size.lower(), "x", "--size")
    fields.update(width=int(w), height=int(h))
    if args.px_size_um is not None:  # else the preset's or config's, else SynthConfig's
        fields["px_size_um"] = args.px_size_um
    if args.fraction is not None:
        fields.update(size_mode="sieve", fraction_um=_pair(args.fraction, "-", "--fraction"))
    if args.lognormal is not None:
        x50, s = _pair(args.lognormal, ",", "--lognormal")
        fields.update(size_mode="lognormal", lognormal_x50_um=x50, lognormal_s=s)
    if args.agglomerate_rate is not None:
        fields["agglomerate_rate"] = args.agglomerate_rate
    if args.density is not None:
        fields["density"] = args.density
    try:
        cfg = SynthConfig(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "config"
        raise UserError(f"synth setting '{loc}': {first['msg']}") from None
    bar = tqdm(total=args.n, unit="frame", disable=None, leave=False)
    try:
        doc = generate_dataset(args.out, args.n, cfg, args.seed,
                               progress=lambda i, n: bar.update(1))
    except OSError as exc:
        raise UserError(f"{args.out}: cannot write: {exc}") from None
    finally:
        bar.close()
    st = doc["statistics"]
    print(f"wrote {args.n} frames to {args.out}")
    for pop in POPULATIONS:
        s = st[pop]
        if s["n"]:
            print(f"  {pop:<15} N={s['n']:<6d} x10,3={s['x10_3_um']:.1f}  "
                  f"x50,3={s['x50_3_um']:.1f}  x90,3={s['x90_3_um']:.1f} um")
    fr = st["fractions"]
    print(f"  touching another {fr['touching_other']:.1%}, frame border "
          f"{fr['touching_border']:.1%}, cut by the field edge {fr['cut_by_field']:.1%}")
    return 0
