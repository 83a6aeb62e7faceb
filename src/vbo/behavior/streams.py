"""A session's streams as arrays: the lick rate, pupil series and traces, windowed means and plain masks.

The functions take the frames a session returns (``licks``, ``eye_tracking``, ``running_speed``,
``stimulus_presentations``) and return arrays, Series or frames; none reads a file or a session object. The
lick rate is defined in ``docs/analysis.md`` §5, the pupil preprocessing in §11.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LICK_RATE_BIN_FRAMES = 6
"""Triangular smoothing window of the lick rate, in stimulus frames (100 ms at 60 Hz)."""


def lick_rate(licks: pd.DataFrame, stimulus_timestamps: np.ndarray, bin_size: int = LICK_RATE_BIN_FRAMES,
              center: bool = False, per_second: bool = False) -> pd.DataFrame:
    """Smoothed lick rate on the stimulus-frame timebase (``docs/analysis.md`` §5).

    A 0/1 lick train (1 at each lick's ``frame``) is averaged over a triangular window of ``bin_size``
    frames (weights ``scipy.signal.windows.triang``, normalised to sum 1).

    Parameters
    ----------
    licks
        ``licks`` frame with a ``frame`` column (stimulus-frame index of each lick).
    stimulus_timestamps
        Time (s) of every stimulus frame (60 Hz).
    center
        ``False`` (reference): trailing window — the value at frame i covers frames i−bin_size+1 … i, and the
        first ``bin_size − 1`` values are NaN. ``True``: centred window (NaN at both ends).
    per_second
        ``False`` (reference): ``lick_rate`` is the weighted mean number of licks **per frame** in the
        window (≤ 1; the reference calls it licks per 100 ms). ``True``: licks per second (× frame rate).

    Returns
    -------
    pandas.DataFrame
        ``timestamps`` (s), ``licks`` (0/1 per frame, several licks in one frame count once), ``lick_rate``.
    """
    ts = np.asarray(stimulus_timestamps, float)
    train = np.zeros(len(ts))
    frames = np.asarray(licks["frame"], np.int64) if len(licks) else np.zeros(0, np.int64)
    frames = frames[(frames >= 0) & (frames < len(ts))]
    train[frames] = 1.0
    k = np.arange(1, bin_size + 1, dtype=float)  # scipy.signal.windows.triang(bin_size), closed form
    weights = 1.0 - np.abs(2.0 * k - (bin_size + 1)) / (bin_size + (bin_size % 2))
    weights /= weights.sum()
    rate = np.full(len(ts), np.nan)
    if len(ts) >= bin_size:
        smooth = np.convolve(train, weights[::-1], mode="valid")  # smooth[j] covers frames j … j+bin_size-1
        offset = bin_size - 1 if not center else bin_size // 2
        rate[offset:offset + len(smooth)] = smooth
    if per_second and len(ts) > 1:
        rate = rate / np.median(np.diff(ts))
    return pd.DataFrame({"timestamps": ts, "licks": train, "lick_rate": rate})



def plain_bool(values) -> np.ndarray:
    """Nullable booleans → plain bool, NA → False."""
    return pd.array(values, dtype="boolean").fillna(False).to_numpy(bool)

def window_mean(times: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mean of ``values`` (NaN skipped) with ``times`` in [lo, hi), for every window; NaN for empty windows.

    ``times`` must be sorted. Cumulative sums: O(n + windows), no per-window loop.
    """
    times = np.asarray(times, float)
    values = np.asarray(values, float)
    valid = ~np.isnan(values)
    total = np.concatenate([[0.0], np.cumsum(np.where(valid, values, 0.0))])
    count = np.concatenate([[0], np.cumsum(valid)])
    a = np.searchsorted(times, lo, side="left")
    b = np.searchsorted(times, hi, side="left")
    n = count[b] - count[a]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (total[b] - total[a]) / np.maximum(n, 1), np.nan)

DERIVED_PUPIL_SIZES = ("pupil_radius", "pupil_diameter")
"""Pupil sizes computed from ``pupil_area`` (px): radius √(area/π) and diameter 2·√(area/π)."""


def pupil_series(eye_tracking: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, values) of one pupil column with blink frames set to NaN (``docs/analysis.md`` §11 steps 1–2).

    ``pupil_radius`` = √(pupil_area/π) and ``pupil_diameter`` = 2·√(pupil_area/π) are derived from
    ``pupil_area``; times are ``eye_tracking.timestamps`` (never the frame index).
    """
    et = eye_tracking
    if column in DERIVED_PUPIL_SIZES:
        radius = np.sqrt(et["pupil_area"].to_numpy(float) / np.pi)
        values = radius * (2.0 if column == "pupil_diameter" else 1.0)
    else:
        values = et[column].to_numpy(float).copy()
    if "likely_blink" in et:
        values[plain_bool(et["likely_blink"])] = np.nan
    times = et["timestamps"].to_numpy(float)
    order = np.argsort(times, kind="stable")
    return times[order], values[order]


INITIAL_GRAY_SCREEN = "initial_gray_screen"


def gray_screen_interval(stimulus_presentations: pd.DataFrame,
                         block: str = INITIAL_GRAY_SCREEN) -> tuple[float, float]:
    """(start, end) in s of the gray-screen block whose ``stimulus_block_name`` contains ``block``.

    The pre-task gray screen (``initial_gray_screen_5min``) is the pupil-normalisation baseline of
    ``docs/analysis.md`` §11; ``block="post_behavior_gray_screen"`` gives the one after the task.
    """
    sp = stimulus_presentations
    if "stimulus_block_name" not in sp:
        raise KeyError("stimulus_presentations has no stimulus_block_name column (file older than v1.1.0)")
    rows = sp[sp["stimulus_block_name"].astype(str).str.contains(block, regex=False).to_numpy()]
    if rows.empty:
        raise KeyError(f"no stimulus block named like {block!r}; blocks: "
                       f"{sorted(set(sp['stimulus_block_name'].astype(str)))}")
    return float(rows["start_time"].min()), float(rows["end_time"].max())


def pupil_trace(eye_tracking: pd.DataFrame, column: str = "pupil_area", *, interpolate: bool = False,
                max_gap: float | None = None, baseline: tuple[float, float] | None = None, zscore: bool = False,
                ddof: int = 1, resample_to=None) -> pd.Series:
    """One pupil measure, preprocessed in the order of ``docs/analysis.md`` §11.

    Parameters
    ----------
    eye_tracking : pd.DataFrame
        ``session.eye_tracking`` (blinks already detected: ``likely_blink``).
    column : str
        An eye-tracking column (``pupil_area`` px², ``pupil_width`` px, …) or a derived size,
        ``pupil_radius`` = √(area/π) or ``pupil_diameter`` = 2·√(area/π) (px).
    interpolate : bool
        Fill blink and dropout gaps by linear interpolation in time (edges stay NaN).
    max_gap : float, optional
        With ``interpolate``: gaps longer than this (s, first to last missing sample) stay NaN.
    baseline : (float, float), optional
        Divide by the mean over this time interval (s), e.g. :func:`gray_screen_interval` of the session.
    zscore : bool
        Subtract the session mean and divide by the standard deviation (``ddof``), ignoring NaN.
    resample_to : array-like, optional
        Times (s; e.g. ``ophys_timestamps``) to resample to by linear interpolation; NaN outside the
        eye-tracking time range and next to a missing sample.

    Returns
    -------
    pd.Series
        Values indexed by time (``timestamps``, s, from the eye-tracking clock, never the frame index), named
        ``column``; ``attrs`` records every step applied (``baseline_interval``, ``baseline_mean``, ``zscore_mean``,
        ``zscore_std``, ``zscore_ddof``, ``interpolated``, ``max_gap``, ``resampled``).
    """
    times, values = pupil_series(eye_tracking, column)
    steps: dict = {"blinks": "NaN", "interpolated": bool(interpolate), "max_gap": max_gap}
    if interpolate:
        values = _fill_gaps(times, values, max_gap)
    if baseline is not None:
        start, end = (float(v) for v in baseline)
        inside = (times >= start) & (times <= end)
        mean = float(np.nanmean(values[inside])) if np.isfinite(values[inside]).any() else np.nan
        if not np.isfinite(mean) or mean == 0:
            raise ValueError(f"no usable {column} samples in the baseline interval [{start}, {end}] s")
        values = values / mean
        steps.update(baseline_interval=(start, end), baseline_mean=mean)
    if zscore:
        mean, std = float(np.nanmean(values)), float(np.nanstd(values, ddof=ddof))
        values = (values - mean) / std
        steps.update(zscore_mean=mean, zscore_std=std, zscore_ddof=ddof)
    if resample_to is not None:
        target = np.asarray(resample_to, dtype=float)
        values = np.interp(target, times, values, left=np.nan, right=np.nan) if len(times) else \
            np.full(len(target), np.nan)
        times = target
    steps["resampled"] = resample_to is not None
    trace = pd.Series(values, index=pd.Index(times, name="timestamps"), name=column)
    trace.attrs.update(steps)
    return trace


def _fill_gaps(times: np.ndarray, values: np.ndarray, max_gap: float | None) -> np.ndarray:
    """Linear interpolation in time over interior NaN runs; runs longer than ``max_gap`` s are left NaN."""
    missing = np.isnan(values)
    if not missing.any() or missing.all():
        return values
    known = np.flatnonzero(~missing)
    filled = values.copy()
    inner = missing.copy()
    inner[:known[0]] = inner[known[-1] + 1:] = False  # edges are not interpolated
    filled[inner] = np.interp(times[inner], times[known], values[known])
    if max_gap is not None and inner.any():
        starts = inner & ~np.r_[False, inner[:-1]]
        ends = inner & ~np.r_[inner[1:], False]
        too_long = (times[ends] - times[starts]) > max_gap  # one entry per run of missing samples
        run = np.cumsum(starts) - 1
        filled[inner & too_long[np.maximum(run, 0)]] = np.nan
    return filled
