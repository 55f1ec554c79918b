"""Plots of a size distribution (matplotlib Agg canvas: no screen, no pyplot state).

:func:`plot_q3` draws the study's Fig. 6: cumulative Q3 points per size class with the
fitted log-normal (Eq. 2) as a line, plus the class fractions as bars.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.psd import PSDResult, lognormal_q3


def plot_q3(psd: PSDResult, path: str | Path, *, title: str | None = None,
            dpi: int = 120) -> Path:
    """Write a PNG of the cumulative volume distribution Q3 and its log-normal fit.

    Parameters
    ----------
    psd : PSDResult
        Distribution to draw (an empty one gives a labelled, empty plot).
    path : str or Path
        Output PNG file; its folder must exist.
    title : str, optional
        Plot title (default: "Q3 distribution").
    dpi : int
        Resolution.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    UserError
        When the file cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(7.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlabel("area-equivalent diameter x / µm")
    ax.set_ylabel("Q3 (cumulative volume fraction)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "Q3 distribution")
    if psd.n == 0:
        ax.text(0.5, 0.5, "no crystals measured", ha="center", va="center",
                transform=ax.transAxes)
    else:
        # the occupied span of the fixed grid (the overflow class drawn one width wide)
        width = psd.config.class_width_um
        nz = np.flatnonzero(psd.counts > 0)
        lo_k, hi_k = int(nz[0]), int(nz[-1])
        edges = psd.edges_um[lo_k:hi_k + 2].copy()
        if not np.isfinite(edges[-1]):
            edges[-1] = edges[-2] + width
        ax.bar(edges[:-1], psd.q3[lo_k:hi_k + 1], width=np.diff(edges), align="edge",
               color="0.85", edgecolor="0.6", label="q3 per class (volume fraction)")
        px, py = psd.fit_points()
        ax.plot(px, py, "o", color="tab:blue", label="Q3 at class upper edge"
                if psd.config.fit_points == "upper_edge" else "Q3, largest crystal per class")
        lo = max(edges[0] - width, 1e-3)
        xs = np.linspace(lo, edges[-1] + width, 400)
        fit = psd.lognormal
        if fit is not None:
            ax.plot(xs, lognormal_q3(xs, fit.x50_3_um, fit.s_lnd), "-", color="tab:red",
                    label=f"log-normal fit: x50,3 = {fit.x50_3_um:.1f} µm, "
                          f"s = {fit.s_lnd:.3f}")
        ax.set_xlim(lo, edges[-1] + width)
        ci = psd.x50_3_ci95_um
        ci_txt = f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""
        ax.text(0.98, 0.45, f"N = {psd.n}\nx50,3 = {psd.x50_3_um:.1f} µm{ci_txt}",
                ha="right", va="center", transform=ax.transAxes, fontsize=9)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=dpi, format="png")
    except OSError as exc:
        raise UserError(f"{path}: cannot write plot: {exc.strerror or exc}") from None
    return path
