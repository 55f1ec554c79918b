"""The training-course plot (the study's Fig. 3): accuracy and loss over iterations."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_training(step_rows: list[dict[str, Any]], epoch_rows: list[dict[str, Any]],
                  path: str | Path) -> Path:
    """Write a two-panel PNG: pixel accuracy (top) and loss (bottom) per iteration,
    validation values per epoch as markers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    if step_rows:
        s = [r["step"] for r in step_rows]
        ax1.plot(s, [100 * r["accuracy"] for r in step_rows], lw=0.8, color="tab:blue",
                 label="training")
        ax2.plot(s, [r["loss"] for r in step_rows], lw=0.8, color="tab:orange", label="training")
    vs = [(r["step"], r.get("val_accuracy"), r.get("val_loss")) for r in epoch_rows
          if r.get("val_accuracy") is not None]
    if vs:
        ax1.plot([v[0] for v in vs], [100 * v[1] for v in vs], "k--o", ms=4, label="validation")
        ax2.plot([v[0] for v in vs], [v[2] for v in vs], "k--o", ms=4, label="validation")
    ax1.set_ylabel("pixel accuracy (%)")
    ax2.set_ylabel("loss")
    ax2.set_xlabel("iteration")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
