"""The study's Eq. 2: a log-normal cumulative volume distribution, and its fit.

``Q3(x) = 1/2 * (1 + erf(ln(x / x50_3) / (sqrt(2) * s_LND)))``

The fit is ordinary least squares on the cumulative points (scipy ``least_squares``,
parameters ``ln x50_3`` and ``ln s`` so both stay positive); the RMSE is over those
points in Q3 units (0..1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares
from scipy.special import erf

_SQRT2 = float(np.sqrt(2.0))


def lognormal_q3(x_um: np.ndarray | float, x50_um: float, s_lnd: float) -> np.ndarray:
    """Eq. 2 of the study: cumulative volume fraction below ``x_um``.

    Parameters
    ----------
    x_um : array_like
        Diameters (um); values <= 0 give 0.
    x50_um : float
        Volume median diameter x50,3 (um), > 0.
    s_lnd : float
        Standard deviation of ln x, > 0.

    Returns
    -------
    ndarray
        Q3 in [0, 1], same shape as ``x_um``.
    """
    x = np.asarray(x_um, dtype=np.float64)
    safe = np.where(x > 0, x, 1.0)
    z = np.log(safe / x50_um) / (_SQRT2 * s_lnd)
    return np.where(x > 0, 0.5 * (1.0 + erf(z)), 0.0)


@dataclass(frozen=True)
class LogNormalFit:
    """Result of fitting Eq. 2 to cumulative Q3 points."""

    x50_3_um: float
    s_lnd: float
    rmse: float
    n_points: int

    def to_payload(self) -> dict[str, Any]:
        return {"x50_3_um": self.x50_3_um, "s_lnd": self.s_lnd, "rmse": self.rmse,
                "n_points": self.n_points}


def fit_lognormal(x_um: np.ndarray, q3: np.ndarray, *, x50_guess: float | None = None,
                  s_guess: float | None = None) -> LogNormalFit | None:
    """Least-squares fit of Eq. 2 to points ``(x_um, q3)``.

    Parameters
    ----------
    x_um : ndarray, shape (K,)
        Abscissae (um); points with ``x <= 0`` are ignored.
    q3 : ndarray, shape (K,)
        Cumulative volume fractions in [0, 1].
    x50_guess, s_guess : float, optional
        Starting values (default: the point nearest Q3 = 0.5, and 0.3).

    Returns
    -------
    LogNormalFit or None
        ``None`` with fewer than 3 usable points (two points fit any narrow curve exactly)
        or when the optimiser fails.
    """
    x = np.asarray(x_um, dtype=np.float64)
    y = np.asarray(q3, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x of shape {x.shape} and q3 of shape {y.shape} must be equal 1-D")
    keep = (x > 0) & np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3:
        return None
    if x50_guess is None or not np.isfinite(x50_guess) or x50_guess <= 0:
        x50_guess = float(x[np.argmin(np.abs(y - 0.5))])
    if s_guess is None or not np.isfinite(s_guess) or s_guess <= 0.01:
        s_guess = 0.3
    lx = np.log(x)

    def resid(p: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + erf((lx - p[0]) / (_SQRT2 * np.exp(p[1])))) - y

    try:
        sol = least_squares(resid, x0=[np.log(x50_guess), np.log(s_guess)],
                            bounds=([-np.inf, np.log(1e-4)], [np.inf, np.log(10.0)]),
                            method="trf", x_scale="jac")
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not sol.success or not np.all(np.isfinite(sol.x)):
        return None
    rmse = float(np.sqrt(np.mean(sol.fun ** 2)))
    return LogNormalFit(x50_3_um=float(np.exp(sol.x[0])), s_lnd=float(np.exp(sol.x[1])),
                        rmse=rmse, n_points=int(x.size))
