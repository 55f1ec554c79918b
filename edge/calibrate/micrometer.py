"""Pixel size from a stage micrometer: the period of a ruled line pattern.

The frame is flat-fielded (:func:`edge.calibrate.image.flat_field`), then

1. **orientation**: the highest peak of the Hann-windowed 2-D amplitude spectrum
   (periods between 2.5 px and a third of the frame) gives the lines' normal ``phi``;
   ``phi`` is refined by maximising the variance of the projection below, since a
   projection along the true line direction is the sharpest one;
2. **projection**: every pixel's intensity is splatted (linear weights) into bins of
   0.5 px of ``u = (x - w/2) cos phi + (y - h/2) sin phi``, the coordinate across
   the lines; the mean per bin is a profile whose slow trend is removed;
3. **period**: the first autocorrelation peak of the profile of at least half the
   highest one (index lines every 5 or 10 divisions make higher peaks at 5 or 10
   periods; the first one is the division), refined by a parabola; when blur leaves
   the index lines' period the stronger one, the spectrum shows the division's own
   frequency standing out (:func:`_division`); the profile's amplitude
   at the division's frequency over the median amplitude of its spectrum is the *peak
   contrast* (a frame without lines gives about 1-3);
4. **line centres**: around each predicted centre, the centroid of the part of the line
   above its half height, ``c = sum u w / sum w``, ``w = max(0, s - (base + top) / 2)``;
5. **fit**: ``c_n = c_0 + n P`` by least squares over the line index ``n``, dropping
   lines whose residual exceeds 4 robust sigmas (dust, a scratch), then again.

``px_size_um = spacing_um / P``; its relative standard uncertainty is the standard error
of the slope, ``SE(P) = sqrt(sum r^2 / (N - 2) / sum (n - mean n)^2)``, over ``P``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage, optimize

from edge.calibrate.image import flat_field, grey_float
from edge.calibrate.result import Calibration, CalibrationError

BIN_PX = 0.5
MIN_PERIOD_PX = 2.5
#: amplitude of the line frequency over the spectrum's median that counts as a pattern
MIN_CONTRAST = 8.0
MIN_LINES = 5


def measure_micrometer(image: np.ndarray, *, spacing_um: float,
                       min_contrast: float = MIN_CONTRAST, min_lines: int = MIN_LINES
                       ) -> Calibration:
    """Measure the pixel size on a frame of a stage micrometer (see the module).

    Parameters
    ----------
    image : np.ndarray
        The decoded frame (grey or colour, 8 or 16 bit).
    spacing_um : float
        Distance between neighbouring lines (one division) in micrometres.

    Raises
    ------
    CalibrationError
        No periodic line pattern, too fine a period, or too few lines.
    """
    if not spacing_um > 0:
        raise ValueError(f"spacing_um must be > 0, got {spacing_um}")
    f = flat_field(grey_float(image))
    phi0, dphi = _orientation(f)
    # the angle is refined on at most a million pixels; the profile uses them all
    phi = _refine_angle(_Projector(f, max_pixels=1_000_000), phi0, dphi)
    u, prof = _Projector(f).profile(phi)
    period, contrast = _period(prof)
    if contrast < min_contrast:
        raise CalibrationError(f"no periodic line pattern found (peak contrast "
                               f"{contrast:.1f}, need >= {min_contrast:g})")
    polarity = -1.0 if _skew(prof) < 0 else 1.0
    if period < MIN_PERIOD_PX:
        raise CalibrationError(f"the line period is {period:.2f} px, too fine to measure "
                               f"(need >= {MIN_PERIOD_PX} px): use a coarser division")
    # the lines' indices are counted with this period: the autocorrelation's is not
    # good enough for that over a whole frame
    period = _refine_period(u, polarity * prof, period)
    fit = None
    for _ in range(2):  # the second pass predicts the centres from the first fit
        centres = _line_centres(u, polarity * prof, period,
                                None if fit is None else (fit[0], fit[1]))
        if len(centres) < min_lines:
            raise CalibrationError(f"found {len(centres)} lines, need >= {min_lines} "
                                   f"(period {period:.1f} px)")
        fit = _fit_centres(centres, period)
        period = fit[0]
    return _result(spacing_um, fit, centres, phi=phi, contrast=contrast,
                   polarity=polarity, shape=f.shape)


def _result(spacing_um: float, fit: tuple[float, float, float, np.ndarray, np.ndarray],
            centres: np.ndarray, *, phi: float, contrast: float, polarity: float,
            shape: tuple[int, ...]) -> Calibration:
    slope, intercept, se, index, keep = fit
    n_used = int(keep.sum())
    resid = centres[keep] - (intercept + slope * index[keep])
    notes = []
    if n_used < 10:
        notes.append(f"only {n_used} lines measured: the uncertainty is itself uncertain; "
                     f"a frame with more divisions is better")
    return Calibration(
        px_size_um=spacing_um / slope,
        uncertainty_pct=100.0 * se / slope,
        method="micrometer",
        reference_um=spacing_um,
        found={"lines": n_used, "lines_rejected": int((~keep).sum()),
               "period_px": slope,
               "angle_deg": math.degrees(phi - math.pi / 2) % 180.0,
               "peak_contrast": contrast,
               "lines_polarity": "dark" if polarity < 0 else "bright",
               "residual_rms_px": float(np.sqrt(np.mean(resid ** 2)))},
        notes=notes,
        drawing={"phi": phi, "centres": centres, "keep": keep, "shape": shape[:2]},
    )


def _orientation(f: np.ndarray) -> tuple[float, float]:
    """The lines' normal ``phi`` (rad, [0, pi)) from the 2-D spectrum's highest peak, and
    the half-width of the angle range to refine it over."""
    h, w = f.shape
    ch, cw = min(h, 1024), min(w, 1024)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = f[y0:y0 + ch, x0:x0 + cw]
    win = np.outer(np.hanning(ch), np.hanning(cw))
    amp = np.abs(np.fft.rfft2((crop - crop.mean()) * win))
    fy = np.fft.fftfreq(ch)[:, None]
    fx = np.fft.rfftfreq(cw)[None, :]
    r = np.hypot(fx, fy)
    band = (r >= 3.0 / min(ch, cw)) & (r <= 1.0 / MIN_PERIOD_PX)
    amp = np.where(band, amp, 0.0)
    iy, ix = np.unravel_index(int(np.argmax(amp)), amp.shape)
    ky, kx = float(fy[iy, 0]), float(fx[0, ix])
    phi = math.atan2(ky, kx) % math.pi
    # the peak's bin is 1/size wide: the angle is known to about 1 / (|k| size)
    dphi = min(0.2, max(0.01, 2.0 / (math.hypot(kx, ky) * min(ch, cw))))
    return phi, dphi


class _Projector:
    """Profiles of one frame across lines of any normal direction."""

    def __init__(self, f: np.ndarray, *, max_pixels: int | None = None) -> None:
        h, w = f.shape
        # a stride of a prime number of pixels samples a large frame evenly, off its rows
        step = 1 if max_pixels is None or f.size <= max_pixels else _odd_prime_above(
            f.size / max_pixels)
        idx = np.arange(0, f.size, step)
        self.f = f.astype(np.float64).ravel()[idx]
        self.x = (idx % w) - w / 2.0
        self.y = (idx // w) - h / 2.0
        self.umax = 0.5 * math.hypot(h, w) + 2.0

    def profile(self, phi: float) -> tuple[np.ndarray, np.ndarray]:
        """Bin centres ``u`` (px) and the detrended mean profile over the well-covered
        bins (those with at least half the most pixels)."""
        pos = (self.x * math.cos(phi) + self.y * math.sin(phi) + self.umax) / BIN_PX
        i0 = np.floor(pos).astype(np.int64)
        frac = pos - i0
        n = int(2 * self.umax / BIN_PX) + 3
        wsum = (np.bincount(i0, 1 - frac, n) + np.bincount(i0 + 1, frac, n))
        vsum = (np.bincount(i0, self.f * (1 - frac), n)
                + np.bincount(i0 + 1, self.f * frac, n))
        ok = wsum >= 0.5 * wsum.max()
        good = np.flatnonzero(ok)
        lo, hi = good[0], good[-1] + 1
        prof = vsum[lo:hi] / np.maximum(wsum[lo:hi], 1e-12)
        # lines along the pixel rows or columns put every pixel near a whole-pixel
        # position: the bins between hold a few pixels from the frame's ends (or none)
        # and are read from their neighbours instead
        inner = ok[lo:hi]
        if not inner.all():
            at = np.arange(hi - lo)
            prof = np.interp(at, at[inner], prof[inner])
        trend = ndimage.gaussian_filter1d(prof, 0.1 * len(prof), mode="nearest")
        u = np.arange(lo, hi) * BIN_PX - self.umax
        return u, prof - trend


def _odd_prime_above(x: float) -> int:
    n = max(3, math.ceil(x)) | 1
    while any(n % d == 0 for d in range(3, math.isqrt(n) + 1, 2)):
        n += 2
    return n


def _refine_angle(proj: _Projector, phi0: float, dphi: float) -> float:
    """``phi`` in ``phi0 +- dphi`` whose profile has the largest variance."""
    res = optimize.minimize_scalar(lambda p: -float(np.var(proj.profile(p)[1])),
                                   bounds=(phi0 - dphi, phi0 + dphi), method="bounded",
                                   options={"xatol": 1e-5})
    return float(res.x) % math.pi


def _period(prof: np.ndarray) -> tuple[float, float]:
    """The division's period (px) from the autocorrelation and :func:`_division`, and
    the peak contrast."""
    p = prof - prof.mean()
    n = len(p)
    spec = np.fft.rfft(p, 2 * n)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:n]
    if ac[0] <= 0:
        return 0.0, 0.0
    ac = ac / ac[0]
    lo, hi = int(MIN_PERIOD_PX / BIN_PX), max(int(MIN_PERIOD_PX / BIN_PX) + 3, n // 3)
    seg = ac[lo:hi]
    peaks = np.flatnonzero((seg[1:-1] > seg[:-2]) & (seg[1:-1] >= seg[2:])) + 1
    if len(peaks) == 0:
        return 0.0, 0.0
    top = seg[peaks].max()
    k = lo + int(peaks[np.flatnonzero(seg[peaks] >= 0.5 * top)[0]])
    a, b, c = ac[k - 1], ac[k], ac[k + 1]
    den = a - 2 * b + c
    lag = k + (0.5 * (a - c) / den if den < 0 else 0.0)
    period = lag * BIN_PX
    amp = np.abs(np.fft.rfft(p * np.hanning(n)))
    freq = np.fft.rfftfreq(n, BIN_PX)
    band = (freq >= 3.0 / (n * BIN_PX)) & (freq <= 1.0 / MIN_PERIOD_PX)
    floor = float(np.median(amp[band])) if band.any() else 0.0
    if floor <= 0:
        return period, 0.0

    def at(fq: float) -> float:
        near = np.abs(freq - fq) <= 1.5 / (n * BIN_PX)
        return float(amp[near].max()) if near.any() else 0.0

    period = _division(period, at, floor)
    return period, at(1.0 / period) / floor


#: how many divisions index lines group (a longer line every 2, 5 or 10 divisions)
INDEX_GROUPS = (10, 5, 2)


def _division(period: float, at: Callable[[float], float], floor: float) -> float:
    """``period / m`` when the spectrum shows that ``period`` groups ``m`` divisions
    (blur can leave the index lines' period the stronger one).

    Index lines every ``m`` divisions put peaks at every ``k / (m P)``; the division's
    own frequency ``m / (m P)`` stands out from its neighbours ``(m +- 1) / (m P)``,
    which only the index lines' extra length feeds: by 3 times and above the noise.
    It must also carry at least a tenth of the strongest lower peak: a side lobe of a
    single line's profile, which can stand out where a neighbour falls on a zero of the
    envelope, carries about a hundredth. A division that stands out but is weaker than
    that is blurred nearly away, and no division is measured.

    Raises
    ------
    CalibrationError
        The divisions are too blurred to be told apart from the index lines.
    """
    for m in INDEX_GROUPS:
        if period / m < MIN_PERIOD_PX:
            continue
        a = at(m / period)
        side = 0.5 * (at((m - 1) / period) + at((m + 1) / period))
        if a < MIN_CONTRAST * floor or a < 3.0 * side:
            continue
        lower = max(at(k / period) for k in range(1, m))
        if a >= 0.1 * lower:
            return period / m
        if a >= 0.03 * lower:
            raise CalibrationError(
                f"the divisions ({period / m:.1f} px) are blurred nearly away beside "
                f"the index lines ({period:.1f} px): focus the micrometer")
    return period


def _noise(s: np.ndarray) -> float:
    """Robust sigma of a profile's sample noise (from its first differences)."""
    d = np.diff(s)
    return 1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2)


def _skew(p: np.ndarray) -> float:
    d = p - p.mean()
    s = d.std()
    return float(np.mean(d ** 3) / s ** 3) if s > 0 else 0.0


def _refine_period(u: np.ndarray, s: np.ndarray, period: float) -> float:
    """The period whose Fourier amplitude ``|sum s exp(-2 pi i u / P)|`` is largest near
    ``period`` (the autocorrelation's parabola is good to about a bin; this to a small
    part of one period over the profile's length, so predicted centres do not drift).

    The autocorrelation's error (a bin, more for lines along the pixel rows or columns,
    whose profile is sampled at whole pixels) is larger than the spectral peak's
    half-width ``1 / span``: the peak is first found on a grid of a quarter of that
    half-width over ``period +- max(BIN_PX, 2 %)`` (the index lines' side peaks lie 10 %
    and more away), then refined.
    """
    span = float(u[-1] - u[0])
    df = 1.0 / span  # the spectral peak's half-width

    def amp(fq: np.ndarray | float) -> np.ndarray:
        return np.abs(np.exp(-2j * np.pi * np.multiply.outer(fq, u)) @ s)

    dp = max(BIN_PX, 0.02 * period)
    grid = np.arange(1.0 / (period + dp), 1.0 / max(period - dp, MIN_PERIOD_PX) + df / 4,
                     df / 4)
    # in chunks: a fine period on a large frame is a few thousand frequencies
    scores = np.concatenate([amp(grid[i:i + 128]) for i in range(0, len(grid), 128)])
    best = float(grid[int(np.argmax(scores))])
    res = optimize.minimize_scalar(
        lambda fq: -float(amp(fq)), bounds=(best - df / 4, best + df / 4),
        method="bounded", options={"xatol": 1e-4 * df})
    return 1.0 / float(res.x)


def _line_centres(u: np.ndarray, s: np.ndarray, period: float,
                  fit: tuple[float, float] | None) -> np.ndarray:
    """Sub-pixel centres (px of ``u``) of the lines (the maxima of ``s``)."""
    if fit is None:  # phase of the fundamental: s ~ cos(2 pi (u - u0) / P)
        period = _refine_period(u, s, period)
        c = np.sum(s * np.exp(-2j * np.pi * u / period))
        u0 = -np.angle(c) * period / (2 * np.pi)
    else:
        period, u0 = fit
    noise = _noise(s)
    half = period / 2.0
    first = math.ceil((u[0] + half - u0) / period)
    last = math.floor((u[-1] - half - u0) / period)
    out = []
    for n in range(first, last + 1):
        c = _centroid(u, s, u0 + n * period, half, noise)
        if c is not None and abs(c - (u0 + n * period)) < 0.5 * half:
            out.append(c)
    return np.array(out)


def _centroid(u: np.ndarray, s: np.ndarray, guess: float, half: float,
              noise: float) -> float | None:
    """Centroid of the line's top half in ``guess +- half`` (twice, recentred); None
    when no line stands 4 noise sigmas above its surroundings there."""
    c = guess
    for _ in range(2):
        wide = np.abs(u - c) <= 2 * half
        win = np.abs(u - c) <= half
        if win.sum() < 3:
            return None
        base, top = float(np.percentile(s[wide], 20)), float(s[win].max())
        if top - base < 4 * noise:
            return None
        wgt = np.maximum(0.0, s[win] - 0.5 * (base + top))
        c = float(np.sum(u[win] * wgt) / np.sum(wgt))
    return c


def _fit_centres(centres: np.ndarray, period: float
                 ) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    """Robust least-squares ``c = c0 + n P``: (P, c0, SE(P), index n, kept mask)."""
    index = np.round((centres - centres[0]) / period)
    keep = np.ones(len(centres), bool)
    for _ in range(3):
        slope, intercept = np.polyfit(index[keep], centres[keep], 1)
        resid = centres - (intercept + slope * index)
        sigma = 1.4826 * float(np.median(np.abs(resid[keep])))
        new = np.abs(resid) <= max(4 * sigma, 0.02)
        if new.sum() < 3 or np.array_equal(new, keep):
            break
        keep = new
    slope, intercept = np.polyfit(index[keep], centres[keep], 1)
    resid = centres[keep] - (intercept + slope * index[keep])
    dof = max(1, int(keep.sum()) - 2)
    sxx = float(np.sum((index[keep] - index[keep].mean()) ** 2))
    se = math.sqrt(float(np.sum(resid ** 2)) / dof / sxx) if sxx > 0 else math.inf
    return float(slope), float(intercept), se, index, keep
