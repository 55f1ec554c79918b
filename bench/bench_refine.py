"""Cost of the outline refinement head at inference; one JSON object on stdout.

    .venv/bin/python bench/bench_refine.py [--backbone resnet50] [--repeats 15]
        [--height 384 --width 512] [--threads 0]

Builds the default model's architecture (DeepLabV3+ / ResNet-50, ASPP 6,12,18, the
``contact`` channel in a 3 x 3 final convolution) twice from the same seed, once as it is
and once with :class:`trainer.refine.RefineHead` of the default spec
(``crystal-train train --refine``: 4 convolutions of 16 channels at the network's input
resolution), exports both to ONNX (FP32; random weights: timing does not depend on them)
and times them on ONNX Runtime's CPU provider at the default inference size (1024 x 768
frames at inference scale 0.5 -> 512 x 384), batch 1, alternating as
``bench_contact.py`` does. The figures are medians:

* ``infer_ms``: ``session.run`` alone;
* ``segment_ms``: ``session.run`` plus the edge's class and contact maps;
* ``refine_cost_pct``: ``100 * (segment_ms with / segment_ms without - 1)``, against the
  10 % the issue allows an extra output; ``refine_cost_min_pct`` compares the best
  repeats. The head is 1.19 GMAC at 512 x 384 (6.0 k MAC per pixel), against 27.4 GMAC
  for the network (``docs/performance.md``), but it runs at full resolution on 16-channel
  planes, so its memory traffic weighs more than its arithmetic.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_contact import (  # noqa: E402
    N_CLASSES,
    run_pair,
)


def export_pair(directory: Path, backbone: str) -> dict[str, Path]:
    """The two ONNX files: ``without`` and ``with`` the refine head."""
    import torch

    from trainer.export import export_model
    from trainer.model import build_model
    from trainer.refine import DEFAULT_SPEC

    out = {}
    for key, refine in (("without", None), ("with", dict(DEFAULT_SPEC))):
        torch.manual_seed(0)
        model = build_model(backbone, n_classes=N_CLASSES, weights="none", n_aux=1,
                            head_kernel=3, refine=refine)
        out[key] = export_model(model, directory / f"{key}.onnx", sample_hw=(256, 256))
    return out


def main(argv: list[str] | None = None) -> dict:
    return run_pair("refine", export_pair, __doc__, argv, with_contact=("with", "without"))


if __name__ == "__main__":
    main()
