"""Per-domain accuracy of a model: one generated test set per habit, crowding level,
illumination and pixel size, each measured through the appliance's chain.

For every domain in :data:`DOMAINS` the script renders ``--frames`` frames (times
:data:`FRAMES_FACTOR` where the domain has one) with the generator's presets
(:mod:`trainer.synth.presets`; 1024 x 768, seeds 3000 + i, never used for training),
runs :func:`trainer.evaluate.evaluate_model` on them (the chain of ``crystal-edge
analyze``: quality gate, ROI, crowding, measurement, contact channel when the model has
one) and reports

- crystal IoU at the network's scale (labels resized by majority share,
  :func:`edge.vision.preprocess.resize_label`);
- the x50,3 error against the true sizes of the crystals centred in the field (the
  population the edge-corrected distribution estimates, :mod:`trainer.evaltruth`), and
  the same measurement on the true label masks (the chain's own error);
- the Q3 Kolmogorov-Smirnov distance ``max_x |Q3_pred(x) - Q3_true(x)|`` (10 um grid);
- ``kept / label``: crystals kept from the model's masks over crystals kept from the true
  masks by the same chain (for needles: how many single needles survive the CNN).

Usage::

    .venv/bin/python scripts/domain_card.py --model models/crystal-seg.onnx \\
        --work /tmp/domain_sets --out bench-out/domain_card.json --frames 6

The JSON holds every number; ``--markdown`` prints the model card's table;
``--update-meta`` records the rows in the model's metadata (``metrics.domains``, which
``tests/trainer/test_model_card.py`` reproduces), ``--record CARD.json`` does so from an
earlier run of the same model.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

# name -> (presets, field overrides); the first two are today's model-card fractions
DOMAINS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "compact 90-125 um": (("compact",), {"fraction_um": (90.0, 125.0)}),
    "compact 125-180 um": (("compact",), {"fraction_um": (125.0, 180.0)}),
    "prisms": (("prisms",), {}),
    "needles (aspect 3-10)": (("needles",), {}),
    "plates": (("plates",), {}),
    "rhombs": (("rhombs",), {}),
    "twins": (("twins",), {}),
    "rounded": (("rounded",), {}),
    "isolated": (("isolated",), {}),
    "crowded": (("crowded",), {}),
    "agglomerate-rich": (("agglomerates",), {}),
    "dim light": (("dim",), {}),
    "bright light": (("bright",), {}),
    "uneven light": (("uneven",), {}),
    "field stop cuts": (("field_cut",), {}),
    "0.5 um/px": (("fine_pixels",), {}),
    "5 um/px": (("coarse_pixels",), {}),
}
#: Domains measured on more frames than ``--frames``: agglomerate-rich frames keep about
#: 6 crystals each (a compact set 14, needles 60), so 36 of them hold ~200 crystals and
#: their volume-weighted Q3 distance moves by +-0.03 from one set to the next.
FRAMES_FACTOR: dict[str, int] = {"agglomerate-rich": 3}
SIZE = {"width": 1024, "height": 768}
SEED0 = 3000


def make_set(work: Path, i: int, name: str, n: int, *, seed0: int = SEED0) -> Path:
    """The domain's test set (rendered once, then reused; ``work`` holds one seed's)."""
    from trainer.synth import SynthConfig, generate_dataset

    presets, extra = DOMAINS[name]
    out = work / f"{i:02d}_{'_'.join(presets)}"
    if not _rendered(out, n, seed0 + i):
        cfg = SynthConfig.from_presets(*presets, **{**SIZE, **extra})
        generate_dataset(out, n, cfg, seed=seed0 + i)
    return out


def _rendered(out: Path, n: int, seed: int) -> bool:
    """Whether ``out`` holds exactly this set (``n`` frames of ``seed``)."""
    try:
        seed_ok = json.loads((out / "truth.json").read_text()).get("seed") == seed
    except (OSError, ValueError):
        return False
    return seed_ok and len(list((out / "images").glob("*"))) == n


def chain_settings(config: Path | None) -> Any:
    """The chain's settings from a ``crystal-edge`` TOML (``[measure]``, ``[psd]``,
    ``[quality]``, ``[roi]``, ``[domain]``, ``[model] inference_scale``), or the defaults;
    the pixel size is always each domain's own."""
    from dataclasses import replace

    from trainer.evaluate import ChainSettings, settings_from_config

    if config is None:
        return ChainSettings()
    return replace(settings_from_config(config), px_size_um=None)


def measure(model: Path, data: Path, settings: Any = None) -> dict[str, Any]:
    """One domain's row: IoU, x50,3 errors, Q3 KS distances, kept crystals."""
    from trainer.evaluate import evaluate_model

    res = evaluate_model(model, data, settings=settings)
    m = res.measurement or {}
    kept, label = m.get("n_kept_pred"), m.get("n_kept_label")
    return {"frames": res.n_frames, "px_size_um": res.px_size_um,
            "pixel_accuracy": res.segmentation["pixel_accuracy"],
            "iou_crystal": res.segmentation["iou"].get("crystal"),
            "x50_3_rel_error": m.get("x50_3_rel_error"),
            "x50_3_label_rel_error": m.get("x50_3_label_rel_error"),
            "q3_ks": m.get("q3_max_abs_diff"), "q3_ks_label": m.get("q3_label_max_abs_diff"),
            "n_truth": m.get("n_truth_crystals"), "n_kept_pred": kept, "n_kept_label": label,
            "intervals": res.intervals,
            "kept_over_label": kept / label if kept is not None and label else None,
            "frames_rejected": m.get("n_frames_rejected"),
            "rejected_by_reason": {k: v for k, v in
                                   ((res.psd or {}).get("frames_rejected_by_reason") or {}).items()
                                   if v}}


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _ci(r: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
    """`` (lo .. hi)`` of one figure's 95 % interval over frames, or nothing."""
    iv = (r.get("intervals") or {}).get(key)
    if not iv:
        return ""
    return f" ({format(scale * iv['lo'], fmt)} .. {format(scale * iv['hi'], fmt)})"


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    """The model card's table; 95 % intervals over frames in brackets
    (:mod:`trainer.evalstats`)."""
    head = ("| domain | crystal IoU | x50,3 error | labels' x50,3 error | Q3 KS | labels' Q3 KS "
            "| kept / labels' |\n|---|---|---|---|---|---|---|")
    lines = [head]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {_f(r['iou_crystal'], '.3f')}{_ci(r, 'iou_crystal', '.3f')} "
            f"| {_f(_pc(r['x50_3_rel_error']), '+.1f')}"
            f"{_ci(r, 'x50_3_rel_error', '+.1f', 100)} % "
            f"| {_f(_pc(r['x50_3_label_rel_error']), '+.1f')}"
            f"{_ci(r, 'x50_3_label_rel_error', '+.1f', 100)} % | {_f(r['q3_ks'], '.3f')} "
            f"| {_f(r['q3_ks_label'], '.3f')} | {_f(_pc(r['kept_over_label']), '.0f')} % |")
    return "\n".join(lines)


def _pair(o: dict[str, Any], r: dict[str, Any], key: str, fmt: str, pct: bool = False) -> str:
    a, b = (_pc(o[key]), _pc(r[key])) if pct else (o[key], r[key])
    return f"{_f(a, fmt)} -> {_f(b, fmt)}" + (" %" if pct else "")


def compare(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> str:
    """The model card's before -> after table of two runs (same domains and frames)."""
    lines = ["| domain | crystal IoU | x50,3 error | Q3 KS | kept / labels' |",
             "|---|---|---|---|---|"]
    for name, r in new.items():
        o = old.get(name)
        if o is None:
            continue
        lines.append(f"| {name} | {_pair(o, r, 'iou_crystal', '.3f')} "
                     f"| {_pair(o, r, 'x50_3_rel_error', '+.1f', True)} "
                     f"| {_pair(o, r, 'q3_ks', '.3f')} "
                     f"| {_pair(o, r, 'kept_over_label', '.0f', True)} |")
    return "\n".join(lines)


def _pooled(docs: list[dict[str, Any]], name: str, key: str) -> Any:
    """:func:`trainer.evalstats.pool_estimates` of one figure of one domain over runs."""
    from trainer.evalstats import pool_estimates

    rows = [d["domains"][name] for d in docs]
    try:
        return pool_estimates([r[key] for r in rows],
                              [r["intervals"][key]["se"] for r in rows])
    except (ValueError, TypeError):  # a run whose frames all agree (se 0) or that has
        return None                   # no figure (nothing kept) cannot be weighed


def _pooled_cell(v: Any, fmt: str, scale: float = 1.0, ci: bool = False) -> str:
    if v is None:
        return "-"
    text = format(scale * v.value, fmt)
    return f"{text} ({format(scale * v.lo, fmt)} .. {format(scale * v.hi, fmt)})" if ci else text


def pooled_table(docs: list[dict[str, Any]]) -> str:
    """The model card's table of independent runs pooled (random-effects weights from the
    frame bootstrap's standard errors, :func:`trainer.evalstats.pool_estimates`); the
    domains every run measured, in the first's order. ``p`` is the heterogeneity test's
    (a small one: the runs disagree by more than their errors allow)."""
    lines = ["| domain | frames | crystal IoU | x50,3 error (95 %) | per run | p | "
             "labels' x50,3 error | Q3 KS, largest |", "|---|---|---|---|---|---|---|---|"]
    for name in docs[0]["domains"]:
        if not all(name in d["domains"] for d in docs):
            continue
        rows = [d["domains"][name] for d in docs]
        iou, x50 = _pooled(docs, name, "iou_crystal"), _pooled(docs, name, "x50_3_rel_error")
        floor = _pooled(docs, name, "x50_3_label_rel_error")
        per = " / ".join(_f(_pc(r["x50_3_rel_error"]), "+.1f") for r in rows)
        p = "-" if x50 is None or x50.p_heterogeneity is None else f"{x50.p_heterogeneity:.2f}"
        ks = max((r["q3_ks"] for r in rows if r["q3_ks"] is not None), default=None)
        lines.append(f"| {name} | {sum(r['frames'] for r in rows)} "
                     f"| {_pooled_cell(iou, '.3f')} | {_pooled_cell(x50, '+.1f', 100, True)} % "
                     f"| {per} % | {p} | {_pooled_cell(floor, '+.1f', 100)} % "
                     f"| {_f(ks, '.3f')} |")
    return "\n".join(lines)


def _pc(v: float | None) -> float | None:
    return None if v is None else 100 * v


def record_in_meta(model: Path, doc: dict[str, Any]) -> Path:
    """Write one whole run (every domain, the defaults) into ``model``'s metadata as
    ``metrics.domains``; raises :class:`edge.errors.UserError` for a partial or
    reconfigured run or one of another model file."""
    from edge.errors import UserError
    from edge.measure import MeasureConfig
    from edge.modelmeta import load_meta, write_meta

    rows = doc.get("domains") or {}
    if set(rows) != set(DOMAINS) or doc.get("config"):
        raise UserError("--update-meta/--record: the card needs every domain measured with "
                        "the defaults (no --only, no --config)")
    if Path(doc.get("model", "")).name != model.name:
        raise UserError(f"--record: the run measured {doc.get('model')}, not {model}")
    mc = MeasureConfig()
    settings = ("crystal-edge defaults: [measure] "
                f"contact_threshold {mc.contact_threshold:g}, contact_high {mc.contact_high:g}, "
                f"contact_splits_convex {str(mc.contact_splits_convex).lower()}, "
                f"contact_clears_concave {str(mc.contact_clears_concave).lower()}, "
                f"contact_share_max {mc.contact_share_max:g}")
    meta = load_meta(model)
    meta.metrics = dict(meta.metrics, domains={
        "script": "scripts/domain_card.py", "frames_per_domain": doc["frames_per_domain"],
        "size": [SIZE["width"], SIZE["height"]], "seed_base": doc["seed0"],
        "settings": settings, "truth_population": doc["truth_population"],
        "labels": "resized to the network's pixel size by majority share "
                  "(edge.vision.preprocess.resize_label)",
        "intervals": "95 % percentile intervals over frames: frame bootstrap, 1000 resamples, "
                     "seed 0 (trainer/evalstats.py)",
        "rows": rows})
    return write_meta(meta, model)


def _parser() -> argparse.ArgumentParser:
    """The command line (the module docstring describes it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/crystal-seg.onnx"))
    p.add_argument("--work", type=Path, default=Path("/tmp/domain_sets"),
                   help="where the test sets are rendered (reused when present)")
    p.add_argument("--frames", type=int, default=6,
                   help="frames per domain (times FRAMES_FACTOR where it has one)")
    p.add_argument("--seed0", type=int, default=SEED0,
                   help=f"domain i is rendered with seed SEED0 + i (default {SEED0}, the "
                        "model card's; another value gives an independent replicate)")
    p.add_argument("--config", type=Path, default=None, metavar="EDGE.toml",
                   help="measure with this crystal-edge configuration's settings (each "
                        "domain keeps its own pixel size)")
    p.add_argument("--only", default=None, help="comma-separated domain names (default all)")
    p.add_argument("--out", type=Path, default=Path("bench-out/domain_card.json"))
    p.add_argument("--markdown", action="store_true", help="print the model card's table")
    p.add_argument("--update-meta", action="store_true",
                   help="record the rows in the model's metadata (metrics.domains)")
    p.add_argument("--record", type=Path, default=None, metavar="CARD.json",
                   help="record an earlier run of --model in its metadata and stop")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("OLD.json", "NEW.json"),
                   help="print the before -> after table of two earlier runs and stop")
    p.add_argument("--pool", nargs="+", type=Path, metavar="RUN.json",
                   help="print the table of earlier runs of one model on independent sets "
                        "(--seed0) pooled, and stop")
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.compare:
        try:
            old, new = (json.loads(f.read_text())["domains"] for f in args.compare)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            p.error(f"--compare: not two domain_card.py runs: {exc}")
        print(compare(old, new))
        return 0
    if args.pool:
        try:
            table = pooled_table([json.loads(f.read_text()) for f in args.pool])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            p.error(f"--pool: not runs of domain_card.py with intervals: {exc}")
        print(table)
        return 0
    if args.record:
        from edge.errors import UserError
        try:
            doc = json.loads(args.record.read_text())
            print(record_in_meta(args.model, doc))
        except (OSError, ValueError) as exc:
            p.error(f"--record: {exc}")
        except UserError as exc:
            p.error(str(exc))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names = list(DOMAINS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in DOMAINS]
    if unknown:
        p.error(f"--only: unknown domain {unknown[0]!r}; choose from {', '.join(DOMAINS)}")
    rows: dict[str, dict[str, Any]] = {}
    settings = chain_settings(args.config)
    t0 = time.perf_counter()
    from edge.errors import UserError

    failed = 0
    for name in names:
        data = make_set(args.work, list(DOMAINS).index(name), name,
                        args.frames * FRAMES_FACTOR.get(name, 1), seed0=args.seed0)
        try:
            rows[name] = measure(args.model, data, settings)
        except UserError as exc:  # e.g. a configured scale that does not suit this domain
            print(f"{name}: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        print(f"{name:<24} IoU {_f(rows[name]['iou_crystal'], '.3f')}  x50,3 "
              f"{_f(_pc(rows[name]['x50_3_rel_error']), '+.1f')}"
              f"{_ci(rows[name], 'x50_3_rel_error', '+.1f', 100)} %  KS "
              f"{_f(rows[name]['q3_ks'], '.3f')}  kept/labels "
              f"{_f(_pc(rows[name]['kept_over_label']), '.0f')} %", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from trainer.evaltruth import TRUTH_POPULATION

    doc = {"model": str(args.model), "frames_per_domain": args.frames, "seed0": args.seed0,
           "config": None if args.config is None else str(args.config),
           "truth_population": TRUTH_POPULATION,
           "seconds": round(time.perf_counter() - t0, 1), "domains": rows}
    args.out.write_text(json.dumps(doc, indent=1))
    if args.markdown:
        print(markdown(rows))
    if args.update_meta and not failed:
        try:
            record_in_meta(args.model, doc)
        except UserError as exc:
            p.error(str(exc))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
