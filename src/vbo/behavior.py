"""Behavior performance: reward rate, rolling hit/false-alarm rates, d′ and the per-session metrics dict.

Formulas are those of ``spec/analysis.md`` §1 (identical to AllenSDK 2.16.2). Every function takes a
``trials`` frame (``api.md`` §4.2) and returns arrays or frames; nothing here reads files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SLIDING_WINDOW = 100
"""Trailing window (non-aborted trials) for rolling hit and false-alarm rates."""
DPRIME_LIMITS = (0.01, 0.99)
REWARD_WINDOW_S = 0.75
REWARD_RATE_TRIAL_WINDOW = 25
REWARD_RATE_INITIAL_TRIALS = 10
ENGAGEMENT_THRESHOLD = 2.0
"""A trial (or flash) is engaged when its reward rate is above this many rewards/min (``analysis.md`` §1.7)."""
PERFORMANCE_METRIC_KEYS = (
    "trial_count", "go_trial_count", "catch_trial_count", "hit_trial_count", "miss_trial_count",
    "false_alarm_trial_count", "correct_reject_trial_count", "auto_reward_count", "earned_reward_count",
    "total_reward_count", "total_reward_volume", "maximum_reward_rate", "engaged_trial_count", "mean_hit_rate",
    "mean_hit_rate_uncorrected", "mean_hit_rate_engaged", "mean_false_alarm_rate",
    "mean_false_alarm_rate_uncorrected", "mean_false_alarm_rate_engaged", "mean_dprime", "mean_dprime_engaged",
    "max_dprime", "max_dprime_engaged",
)
"""Keys of :func:`performance_metrics`, in AllenSDK's order."""
ROLLING_COLUMNS = ("reward_rate", "hit_rate_raw", "hit_rate", "false_alarm_rate_raw", "false_alarm_rate",
                   "rolling_dprime")


def reward_rate_latency(trials: pd.DataFrame, response_window_start: float = 0.15) -> np.ndarray:
    """Per trial, the first lick later than ``response_window_start`` after the change, minus the change time (s).

    ``inf`` when there is no such lick or no change time.
    """
    counts = trials["lick_times"].map(len).to_numpy(np.int64)
    licks = np.concatenate([np.asarray(x, float) for x in trials["lick_times"]]) if counts.sum() else np.zeros(0)
    owner = np.repeat(np.arange(len(trials)), counts)
    change = trials["change_time"].to_numpy(float)
    with np.errstate(invalid="ignore"):
        delta = licks - change[owner]
    valid = delta > response_window_start
    latency = np.full(len(trials), np.inf)
    # the licks are in time order within a trial: the first valid one is the minimum valid delta
    np.minimum.at(latency, owner[valid], delta[valid])
    return latency


def reward_rate(trials: pd.DataFrame, response_window_start: float = 0.15) -> np.ndarray:
    """Rolling rewards per minute over a centred window of up to 50 trials; NaN for the first 10 trials.

    A trial counts as rewarded when its reward-rate latency is below 0.75 s, whatever its type.
    """
    n = len(trials)
    latency = reward_rate_latency(trials, response_window_start)
    start = trials["start_time"].to_numpy(float)
    rewarded = np.concatenate([[0], np.cumsum(latency < REWARD_WINDOW_S)])
    t = np.arange(n)
    lo = np.maximum(0, t - REWARD_RATE_TRIAL_WINDOW)
    hi = np.minimum(t + REWARD_RATE_TRIAL_WINDOW, n)
    correct = rewarded[hi] - rewarded[lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = correct / (start[hi - 1] - start[lo]) * 60.0
    rate[~np.isfinite(rate)] = np.nan
    rate[t < REWARD_RATE_INITIAL_TRIALS] = np.nan
    return rate


def _responses(positive: pd.Series, negative: pd.Series, aborted: pd.Series) -> pd.Series:
    """1 where ``positive``, 0 where ``negative``, NaN otherwise, over the non-aborted trials."""
    keep = ~aborted.to_numpy(bool)
    values = np.full(int(keep.sum()), np.nan)
    values[positive.to_numpy(bool)[keep]] = 1.0
    values[negative.to_numpy(bool)[keep]] = 0.0
    return pd.Series(values)


def _rolling_rate(responses: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(raw rate, trial-count corrected rate) over the trailing ``SLIDING_WINDOW`` responses."""
    window = responses.rolling(window=SLIDING_WINDOW, min_periods=0)
    raw = window.mean().to_numpy(float)
    count = window.count().to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = 1.0 / (2.0 * count)
        corrected = np.clip(raw, lo, 1.0 - lo)
    corrected[count == 0] = np.nan
    return raw, corrected


def rolling_dprime(hit_rate: np.ndarray, false_alarm_rate: np.ndarray,
                   limits: tuple[float, float] = DPRIME_LIMITS) -> np.ndarray:
    """d′ = Φ⁻¹(H) − Φ⁻¹(F) with both rates clipped to ``limits``; NaN where either rate is NaN."""
    from scipy.special import ndtri  # Φ⁻¹; imported on use: keeps opening a file fast

    h = np.clip(np.asarray(hit_rate, float), *limits)
    f = np.clip(np.asarray(false_alarm_rate, float), *limits)
    return ndtri(h) - ndtri(f)


def is_passive(trials: pd.DataFrame) -> bool:
    """True when no trial has a reward and no trial has a lick (passive viewing)."""
    return bool((trials["reward_volume"] == 0).all() and (trials["lick_times"].map(len) == 0).all())


def rolling_performance(trials: pd.DataFrame, response_window_start: float = 0.15) -> pd.DataFrame:
    """Trial-by-trial performance (``get_rolling_performance_df``).

    Returns
    -------
    pandas.DataFrame
        Indexed like ``trials`` (``trials_id``); columns ``reward_rate`` (rewards/min), ``hit_rate_raw``,
        ``hit_rate``, ``false_alarm_rate_raw``, ``false_alarm_rate`` (0-1, trailing 100 non-aborted trials;
        the non-raw rates are clipped to [1/2N, 1-1/2N]) and ``rolling_dprime``. Aborted rows are NaN
        except ``reward_rate``; passive sessions have ``rolling_dprime`` 0.
    """
    aborted = trials["aborted"]
    hit_raw, hit = _rolling_rate(_responses(trials["hit"], trials["miss"], aborted))
    fa_raw, fa = _rolling_rate(_responses(trials["false_alarm"], trials["correct_reject"], aborted))
    dprime = np.zeros(len(hit)) if is_passive(trials) else rolling_dprime(hit, fa)
    out = pd.DataFrame(index=trials.index)
    out["reward_rate"] = reward_rate(trials, response_window_start)
    kept = ~aborted.to_numpy(bool)
    for name, values in zip(ROLLING_COLUMNS[1:], (hit_raw, hit, fa_raw, fa, dprime)):
        column = np.full(len(trials), np.nan)
        column[kept] = values
        out[name] = column
    return out


def performance_metrics(trials: pd.DataFrame, rewards: pd.DataFrame, response_window_start: float = 0.15,
                        engaged_trial_reward_rate_threshold: float = ENGAGEMENT_THRESHOLD, *,
                        rolling: pd.DataFrame | None = None) -> dict:
    """The 23-key ``get_performance_metrics`` dict (``analysis.md`` §1.6), in the SDK's key order.

    Parameters
    ----------
    trials, rewards
        A session's ``trials`` and ``rewards`` frames (``rewards.volume`` in mL).
    response_window_start
        Start of the response window (s after the change; ``task_parameters['response_window_sec'][0]``),
        used by the reward rate.
    engaged_trial_reward_rate_threshold
        Engaged trials have ``reward_rate`` above this (rewards/min); means and maxima skip NaN.
    rolling
        The :func:`rolling_performance` frame when already computed (skips recomputing it). For compatibility
        the third positional argument may also be that frame.
    """
    if isinstance(response_window_start, pd.DataFrame):  # older call: (trials, rewards, rolling, threshold)
        rolling, response_window_start = response_window_start, 0.15
    if rolling is None:
        rolling = rolling_performance(trials, response_window_start)
    engaged = (rolling["reward_rate"] > engaged_trial_reward_rate_threshold).to_numpy()

    # AllenSDK takes pandas' mean / max (a Python float NaN when nothing is left) and numpy's nanmax for
    # the reward rate (a numpy NaN)
    def mean(name: str, rows=slice(None)):
        return _nan_reduce(np.nanmean, rolling[name].to_numpy(float)[rows], empty=float("nan"))

    def maximum(name: str, rows=slice(None), empty: float = float("nan")):
        return _nan_reduce(np.nanmax, rolling[name].to_numpy(float)[rows], empty=empty)

    return {
        "trial_count": len(trials),
        "go_trial_count": trials["go"].sum(),
        "catch_trial_count": trials["catch"].sum(),
        "hit_trial_count": trials["hit"].sum(),
        "miss_trial_count": trials["miss"].sum(),
        "false_alarm_trial_count": trials["false_alarm"].sum(),
        "correct_reject_trial_count": trials["correct_reject"].sum(),
        "auto_reward_count": trials["auto_rewarded"].sum(),
        "earned_reward_count": trials["hit"].sum(),
        "total_reward_count": len(rewards),
        "total_reward_volume": rewards["volume"].sum(),
        "maximum_reward_rate": maximum("reward_rate", empty=np.float64(np.nan)),
        "engaged_trial_count": engaged.sum(),
        "mean_hit_rate": mean("hit_rate"),
        "mean_hit_rate_uncorrected": mean("hit_rate_raw"),
        "mean_hit_rate_engaged": mean("hit_rate", engaged),
        "mean_false_alarm_rate": mean("false_alarm_rate"),
        "mean_false_alarm_rate_uncorrected": mean("false_alarm_rate_raw"),
        "mean_false_alarm_rate_engaged": mean("false_alarm_rate", engaged),
        "mean_dprime": mean("rolling_dprime"),
        "mean_dprime_engaged": mean("rolling_dprime", engaged),
        "max_dprime": maximum("rolling_dprime"),
        "max_dprime_engaged": maximum("rolling_dprime", engaged),
    }


def _nan_reduce(func, values: np.ndarray, empty: float = np.float64(np.nan)) -> float:
    """``func`` (nanmean / nanmax) that returns ``empty`` (NaN), silently, for empty or all-NaN input."""
    if values.size == 0 or np.isnan(values).all():
        return empty
    return func(values)


# --- d′ ----------------------------------------------------------------------------------------------


def _ppf(p):
    from scipy.special import ndtri  # Φ⁻¹; imported on use: keeps opening a file fast

    return ndtri(p)


def _trial_rate(trials) -> tuple[np.ndarray, int]:
    """Mean of a vector of trial outcomes (booleans or 0/1, NaN ignored) and its number of trials."""
    values = np.asarray(trials, dtype=float).ravel()
    values = values[~np.isnan(values)]
    return (values.mean() if values.size else np.nan), int(values.size)


def dprime(hit_rate=None, false_alarm_rate=None, go_trials=None, catch_trials=None, limits=False, *,
           fa_rate=None):
    """d′ = Φ⁻¹(H) − Φ⁻¹(F), with the reference helpers' clipping rules (``analysis.md`` §1.5).

    Parameters
    ----------
    hit_rate, false_alarm_rate
        Rates in [0, 1] (scalars or arrays, computed elementwise) — or, with ``limits=True``, the go and catch
        trial vectors themselves (booleans/0-1; the reference helper's positional use). ``fa_rate`` is an
        alias of ``false_alarm_rate``.
    go_trials, catch_trials
        Trial outcome vectors (True = lick): H = mean(go_trials), F = mean(catch_trials).
    limits
        ``False``: clip H and F to [0.01, 0.99] (the cap of the rolling d′; max d′ 4.6526957480816815).
        ``True``: trial-count limit — clip each rate to [1/(2N), 1 − 1/(2N)] with N its number of trials
        (needs trial vectors). ``(lo, hi)``: clip both to these bounds.

    Returns
    -------
    float or numpy.ndarray
        NaN where a rate is NaN (or a trial vector is empty); a scalar for scalar input.
    """
    if fa_rate is not None:
        if false_alarm_rate is not None:
            raise TypeError("give false_alarm_rate or fa_rate, not both")
        false_alarm_rate = fa_rate
    if (limits is True and go_trials is None and catch_trials is None
            and np.ndim(hit_rate) > 0 and np.ndim(false_alarm_rate) > 0):
        go_trials, catch_trials = hit_rate, false_alarm_rate  # dprime(go, catch, limits=True)
        hit_rate = false_alarm_rate = None
    counts = None
    if go_trials is not None or catch_trials is not None:
        if go_trials is None or catch_trials is None or hit_rate is not None or false_alarm_rate is not None:
            raise TypeError("give both go_trials and catch_trials (and no rates)")
        (hit_rate, n_go), (false_alarm_rate, n_catch) = _trial_rate(go_trials), _trial_rate(catch_trials)
        counts = (n_go, n_catch)
    if hit_rate is None or false_alarm_rate is None:
        raise TypeError("dprime needs a hit rate and a false-alarm rate (or go and catch trial vectors)")
    h = np.asarray(hit_rate, dtype=float)
    f = np.asarray(false_alarm_rate, dtype=float)
    if limits is True:
        if counts is None:
            raise ValueError("limits=True (trial-count limits) needs the go and catch trial vectors")
        h_lo = 1.0 / (2.0 * counts[0]) if counts[0] else np.nan  # no trials: the rate is NaN anyway
        f_lo = 1.0 / (2.0 * counts[1]) if counts[1] else np.nan
        h = np.clip(h, h_lo, 1.0 - h_lo)
        f = np.clip(f, f_lo, 1.0 - f_lo)
    else:
        lo, hi = DPRIME_LIMITS if limits is False or limits is None else limits
        h, f = np.clip(h, lo, hi), np.clip(f, lo, hi)
    out = _ppf(h) - _ppf(f)
    return out.item() if np.ndim(out) == 0 else out


MAX_DPRIME = 4.6526957480816815
"""Largest rolling d′: Φ⁻¹(0.99) − Φ⁻¹(0.01)."""


def is_engaged(rate: np.ndarray, threshold: float = ENGAGEMENT_THRESHOLD) -> np.ndarray:
    """Reward rate (rewards/min) above ``threshold``; NaN and ±inf are never engaged (defect D14)."""
    rate = np.asarray(rate, float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(rate) & (rate > threshold)


def engaged(trials: pd.DataFrame, response_window_start: float = 0.15,
            threshold: float = ENGAGEMENT_THRESHOLD) -> np.ndarray:
    """Per trial: reward rate above ``threshold`` rewards/min (NaN — the first 10 trials — is not engaged)."""
    return is_engaged(reward_rate(trials, response_window_start), threshold)


# --- trial and reward selections ---------------------------------------------------------------------

GO_CATCH_TYPES = ("go", "catch")
"""What a trial offered: a change (go) or a sham change (catch) — the ``trials`` boolean columns."""
TRIAL_OUTCOMES = ("hit", "miss", "false_alarm", "correct_reject")
"""How the mouse answered a go/catch trial — the ``trials`` boolean columns; the one outcome vocabulary of vbo
(:data:`vbo.responses.TRIAL_TYPES` and :data:`vbo.plots.behavior.TRIAL_TYPES` are this tuple)."""
TRIAL_TYPES = ("all",) + GO_CATCH_TYPES
"""``trial_type`` choices of :func:`select_trials`."""
RESPONSE_TYPES = ("all",) + TRIAL_OUTCOMES
"""``response_type`` choices of :func:`select_trials`."""


def select_trials(trials: pd.DataFrame, trial_type: str = "all", response_type: str = "all",
                  include_aborted_trials: bool = False) -> pd.DataFrame:
    """Trials of one type (``all``/``go``/``catch``) and outcome (``all``/``hit``/``miss``/``false_alarm``/
    ``correct_reject``); aborted trials only when ``include_aborted_trials`` (and ``trial_type='all'``)."""
    if trial_type not in TRIAL_TYPES or response_type not in RESPONSE_TYPES:
        raise ValueError(f"trial_type must be one of {TRIAL_TYPES} and response_type one of {RESPONSE_TYPES}")
    keep = np.ones(len(trials), bool)
    if not include_aborted_trials:
        keep &= ~trials["aborted"].to_numpy(bool)
    if trial_type != "all":
        keep &= trials[trial_type].to_numpy(bool)
    if response_type != "all":
        keep &= trials[response_type].to_numpy(bool)
    return trials[keep]


def reward_times(rewards: pd.DataFrame, reward_type: str = "all") -> np.ndarray:
    """Reward timestamps (s): ``all``, ``auto`` (``auto_rewarded`` True) or ``earned`` (False)."""
    times = rewards["timestamps"].to_numpy(float)
    if reward_type == "all":
        return times
    if reward_type not in ("auto", "earned"):
        raise ValueError("reward_type must be 'all', 'auto' or 'earned'")
    auto = rewards["auto_rewarded"].to_numpy(bool)
    return times[auto if reward_type == "auto" else ~auto]


# --- lick rate -----------------------------------------------------------------------------------------

LICK_RATE_BIN_FRAMES = 6
"""Triangular smoothing window of the lick rate, in stimulus frames (100 ms at 60 Hz)."""


def lick_rate(licks: pd.DataFrame, stimulus_timestamps: np.ndarray, bin_size: int = LICK_RATE_BIN_FRAMES,
              center: bool = False, per_second: bool = False) -> pd.DataFrame:
    """Smoothed lick rate on the stimulus-frame timebase (``analysis.md`` §6).

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


# --- per-flash annotation ------------------------------------------------------------------------------

CHANGE_DETECTION = "change_detection"
TRIAL_COLUMNS = ("go", "catch", "aborted", "auto_rewarded", "change_time", "hit", "miss", "false_alarm",
                 "correct_reject", "response_time", "reward_time", "reward_volume")
OUTCOMES = TRIAL_OUTCOMES + ("auto_rewarded",)
NO_EVENT = -1


def change_detection_flashes(stimulus_presentations: pd.DataFrame) -> pd.DataFrame:
    """The rows of the change-detection block (active or passive); all rows for tables without blocks."""
    sp = stimulus_presentations
    if "stimulus_block_name" in sp:
        keep = sp["stimulus_block_name"].astype(str).str.contains(CHANGE_DETECTION, regex=False).to_numpy()
        return sp[keep]
    return sp


def _plain_bool(values) -> np.ndarray:
    """Nullable booleans → plain bool, NA → False."""
    return pd.array(values, dtype="boolean").fillna(False).to_numpy(bool)


def _sorted(values) -> np.ndarray:
    out = np.asarray(values, float)
    out = out[~np.isnan(out)]
    return np.sort(out)


def _count_in(events: np.ndarray, lo: np.ndarray, hi: np.ndarray, open_left: bool = True,
              open_right: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(first index, count) of sorted ``events`` in the intervals (lo, hi) / [lo, hi) etc."""
    a = np.searchsorted(events, lo, side="right" if open_left else "left")
    b = np.searchsorted(events, hi, side="left" if open_right else "right")
    return a, np.maximum(b - a, 0)


def _first_in(events: np.ndarray, first: np.ndarray, count: np.ndarray) -> np.ndarray:
    out = np.full(len(first), np.nan)
    has = count > 0
    out[has] = events[first[has]]
    return out


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


def _time_since(events: np.ndarray, t: np.ndarray) -> np.ndarray:
    """t − the latest event ≤ t (NaN before the first event). ``events`` sorted."""
    i = np.searchsorted(events, t, side="right") - 1
    out = np.full(len(t), np.nan)
    ok = i >= 0
    out[ok] = t[ok] - events[i[ok]]
    return out


def _since_last(flag: np.ndarray) -> np.ndarray:
    """Rows since the last row where ``flag`` is True (0 on it); −1 before the first."""
    pos = np.arange(len(flag))
    last = np.maximum.accumulate(np.where(flag, pos, -1)) if len(flag) else pos
    return np.where(last >= 0, pos - last, NO_EVENT)


def _until_next(flag: np.ndarray) -> np.ndarray:
    """Rows until the next row where ``flag`` is True (0 on it); −1 after the last."""
    return _since_last(flag[::-1])[::-1]


def _shift(values: np.ndarray, by: int, fill) -> np.ndarray:
    out = np.empty_like(values)
    if by > 0:
        out[:by], out[by:] = fill, values[:-by]
    else:
        out[by:], out[:by] = fill, values[-by:]
    return out if len(values) > abs(by) else np.full_like(values, fill)


DERIVED_PUPIL_SIZES = ("pupil_radius", "pupil_diameter")
"""Pupil sizes computed from ``pupil_area`` (px): radius √(area/π) and diameter 2·√(area/π)."""


def pupil_series(eye_tracking: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, values) of one pupil column with blink frames set to NaN (``analysis.md`` §7 steps 2-3, 5).

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
        values[_plain_bool(et["likely_blink"])] = np.nan
    times = et["timestamps"].to_numpy(float)
    order = np.argsort(times, kind="stable")
    return times[order], values[order]


INITIAL_GRAY_SCREEN = "initial_gray_screen"


def gray_screen_interval(stimulus_presentations: pd.DataFrame,
                         block: str = INITIAL_GRAY_SCREEN) -> tuple[float, float]:
    """(start, end) in s of the gray-screen block whose ``stimulus_block_name`` contains ``block``.

    The pre-task gray screen (``initial_gray_screen_5min``) is the pupil-normalisation baseline of
    ``analysis.md`` §7; ``block="post_behavior_gray_screen"`` gives the one after the task.
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
    """One pupil measure, preprocessed in the order of ``analysis.md`` §7.

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


def annotate_flashes(stimulus_presentations: pd.DataFrame, trials: pd.DataFrame,
                     licks: pd.DataFrame | None = None, rewards: pd.DataFrame | None = None,
                     running_speed: pd.DataFrame | None = None, eye_tracking: pd.DataFrame | None = None, *,
                     response_window_start: float = 0.15, lick_window: tuple[float, float] = (0.0, 0.75),
                     reward_window: tuple[float, float] = (0.0, 3.0),
                     running_window: tuple[float, float] = (0.0, 0.75),
                     pupil_window: tuple[float, float] = (0.0, 0.75),
                     pupil_columns: tuple[str, ...] = ("pupil_width",),
                     engagement_threshold: float = ENGAGEMENT_THRESHOLD, epoch_duration_mins: float = 10.0,
                     change_match_s: float = 0.5) -> pd.DataFrame:
    """Per-flash behavioral annotation of the change-detection block (``analysis.md`` §4), vectorised.

    All windows are relative to each flash's ``start_time`` (s). Returns the block's rows of
    ``stimulus_presentations`` (same index) with these columns added:

    - ``n_licks``, ``first_lick_time``, ``lick_latency``, ``licked``: licks strictly inside
      ``(start + lick_window[0], start + lick_window[1])``; ``n_rewards``, ``rewarded``: rewards strictly inside
      the ``reward_window``.
    - ``response_lick`` (a lick in ``[start, next start)``), ``response_lick_latency`` (first such lick − start).
      Lick times per flash are not stored as per-row arrays; use ``n_licks``/``first_lick_time``.
    - ``mean_running_speed`` (cm/s over ``[start + w0, start + w1)``), ``mean_<pupil column>`` (eye-tracking
      timestamps, blinks removed; ``pupil_diameter`` = 2√(area/π)).
    - ``time_from_last_change`` / ``_omitted`` / ``_lick`` / ``_reward``: start − the latest event time **≤**
      start (a change flash has ``time_from_last_change`` 0); NaN before the first event.
    - ``stimulus_count_from_last_change`` / ``_omitted`` / ``_lick`` (``licked``) / ``_reward`` (``rewarded``):
      flashes since the last flash with that flag (0 on it); −1 before the first.
    - ``n_after_change``, ``n_before_change``, ``n_after_omission``: flashes since the latest change, until the
      next change, since the latest omission (0 on the event itself); −1 where there is no such event.
    - ``stimulus_count_within_trial``: **0-based** position of the flash among the flashes of its
      ``trials_id``; ``previous_image_name``, ``next_start_time``.
    - ``previous_response_on_trial``, ``previous_change_on_trial`` (an earlier flash of the same trial had a
      ``response_lick`` / a change or sham change); ``could_change`` = count ≥ 4 (0-based, i.e. at least the
      fifth flash, the earliest a change is scheduled) and no earlier lick or change on the trial and neither
      this nor the previous flash omitted.
    - ``pre_change``, ``lick_on_next_flash``, ``pre_omitted``, ``post_omitted``: next flash is a change / has
      ``licked`` / is omitted; previous flash omitted.
    - ``change_trials_id``: the trial whose ``change_time`` is within ±``change_match_s`` (unique match; −1
      otherwise) and, on those flashes only, the trial columns ``go``, ``catch``, ``aborted``,
      ``auto_rewarded``, ``change_time``, ``hit``, ``miss``, ``false_alarm``, ``correct_reject``,
      ``response_time``, ``reward_time``, ``reward_volume`` and ``outcome`` (hit/miss/false_alarm/
      correct_reject/auto_rewarded; NA elsewhere). Booleans are False on the other flashes.
    - ``reward_rate`` (rewards/min): that of the next non-aborted trial by change time (start time where a
      trial has no change time), the tail taking the last trial's; ``engaged`` (``reward_rate`` above
      ``engagement_threshold``, NaN not engaged), ``engagement_state`` (``engaged``/``disengaged``);
      ``epoch`` (``epoch_duration_mins`` bins from the first flash).

    ``omitted`` and ``is_image_novel`` become plain bool (NA → False).
    """
    out = change_detection_flashes(stimulus_presentations).copy()
    n = len(out)
    start = out["start_time"].to_numpy(float)
    omitted = _plain_bool(out["omitted"]) if "omitted" in out else np.zeros(n, bool)
    out["omitted"] = omitted
    if "is_image_novel" in out:
        out["is_image_novel"] = _plain_bool(out["is_image_novel"])
    is_change = out["is_change"].to_numpy(bool) if "is_change" in out else np.zeros(n, bool)
    sham = out["is_sham_change"].to_numpy(bool) if "is_sham_change" in out else np.zeros(n, bool)
    next_start = np.append(start[1:], out["end_time"].to_numpy(float)[-1:] if n else [])

    # licks and rewards in windows
    lick_t = _sorted(licks["timestamps"]) if licks is not None and len(licks) else np.zeros(0)
    first, count = _count_in(lick_t, start + lick_window[0], start + lick_window[1])
    out["n_licks"] = count
    out["first_lick_time"] = _first_in(lick_t, first, count)
    out["lick_latency"] = out["first_lick_time"].to_numpy() - start
    licked = count > 0
    out["licked"] = licked
    rfirst, rcount = _count_in(lick_t, start, next_start, open_left=False)
    response_lick = rcount > 0
    out["response_lick"] = response_lick
    out["response_lick_latency"] = _first_in(lick_t, rfirst, rcount) - start
    reward_t = _sorted(rewards["timestamps"]) if rewards is not None and len(rewards) else np.zeros(0)
    _, wcount = _count_in(reward_t, start + reward_window[0], start + reward_window[1])
    out["n_rewards"] = wcount
    rewarded = wcount > 0
    out["rewarded"] = rewarded

    # running and pupil
    if running_speed is not None:
        rt = (running_speed["timestamps"] if "timestamps" in running_speed else running_speed.index).to_numpy(float)
        out["mean_running_speed"] = window_mean(rt, running_speed["speed"].to_numpy(float),
                                                start + running_window[0], start + running_window[1])
    if eye_tracking is not None and len(eye_tracking):
        for column in pupil_columns:
            et, ev = pupil_series(eye_tracking, column)
            out[f"mean_{column}"] = window_mean(et, ev, start + pupil_window[0], start + pupil_window[1])

    # time and flashes since events
    out["time_from_last_change"] = _time_since(start[is_change], start)
    out["time_from_last_omitted"] = _time_since(start[omitted], start)
    out["time_from_last_lick"] = _time_since(lick_t, start)
    out["time_from_last_reward"] = _time_since(reward_t, start)
    out["stimulus_count_from_last_change"] = _since_last(is_change)
    out["stimulus_count_from_last_omitted"] = _since_last(omitted)
    out["stimulus_count_from_last_lick"] = _since_last(licked)
    out["stimulus_count_from_last_reward"] = _since_last(rewarded)
    out["n_after_change"] = _since_last(is_change)
    out["n_before_change"] = _until_next(is_change)
    out["n_after_omission"] = _since_last(omitted)

    # position within the trial, previous/next flash
    trial_of = out["trials_id"].to_numpy(np.int64) if "trials_id" in out else np.zeros(n, np.int64)
    new_run = np.ones(n, bool)
    new_run[1:] = trial_of[1:] != trial_of[:-1]
    run = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    pos = np.arange(n)
    out["stimulus_count_within_trial"] = pos - run_start[run] if n else pos
    names = out["image_name"].to_numpy(object) if "image_name" in out else np.full(n, None, object)
    out["previous_image_name"] = _shift(names, 1, np.nan)
    out["next_start_time"] = next_start

    def earlier_in_trial(flag: np.ndarray) -> np.ndarray:
        before = np.concatenate([[0], np.cumsum(flag)])[:-1]  # flags strictly before each row
        return (before - before[run_start[run]]) > 0 if n else flag

    previous_response = earlier_in_trial(response_lick)
    previous_change = earlier_in_trial(is_change | sham)
    post_omitted = _shift(omitted, 1, False)
    out["previous_response_on_trial"] = previous_response
    out["previous_change_on_trial"] = previous_change
    out["could_change"] = ((out["stimulus_count_within_trial"].to_numpy() >= 4) & ~previous_response
                           & ~previous_change & ~omitted & ~post_omitted)
    out["pre_change"] = _shift(is_change, -1, False)
    out["lick_on_next_flash"] = _shift(licked, -1, False)
    out["pre_omitted"] = _shift(omitted, -1, False)
    out["post_omitted"] = post_omitted

    # trial data on change (and sham-change) flashes
    change_time = trials["change_time"].to_numpy(float)
    has_change = ~np.isnan(change_time)
    order = np.argsort(change_time[has_change], kind="stable")
    keys = change_time[has_change][order]
    ids = trials.index.to_numpy()[has_change][order]
    first, count = _count_in(keys, start - change_match_s, start + change_match_s,
                             open_left=False, open_right=False)
    matched = count == 1
    change_trial = np.full(n, NO_EVENT, np.int64)
    change_trial[matched] = ids[first[matched]]
    out["change_trials_id"] = change_trial
    rows = trials.index.get_indexer(change_trial)
    hit_rows = rows >= 0
    for column in TRIAL_COLUMNS:
        if column not in trials:
            continue
        source = trials[column].to_numpy()
        if source.dtype == bool:
            values = np.zeros(n, bool)
        else:
            values = np.full(n, np.nan)
        values[hit_rows] = source[rows[hit_rows]]
        out[column] = values
    outcome = np.full(n, None, object)
    for name in OUTCOMES[::-1]:
        if name in out:
            outcome[out[name].to_numpy(bool)] = name
    out["outcome"] = pd.Series(outcome, index=out.index, dtype="string")

    # reward rate by as-of lookup, engagement, epochs
    rate = reward_rate(trials, response_window_start)
    kept = ~trials["aborted"].to_numpy(bool)
    key = np.where(np.isnan(change_time), trials["start_time"].to_numpy(float), change_time)[kept]
    order = np.argsort(key, kind="stable")
    key, kept_rate = key[order], rate[kept][order]
    stimulus_rate = np.full(n, np.nan)
    if len(key):
        stimulus_rate = kept_rate[np.minimum(np.searchsorted(key, start, side="left"), len(key) - 1)]
    out["reward_rate"] = stimulus_rate
    engaged_flash = is_engaged(stimulus_rate, engagement_threshold)
    out["engaged"] = engaged_flash
    out["engagement_state"] = np.where(engaged_flash, "engaged", "disengaged")
    out["epoch"] = (np.floor((start - start[0]) / (epoch_duration_mins * 60.0)).astype(np.int64) if n
                    else np.zeros(0, np.int64))
    return out


def annotate_session(session, **kwargs) -> pd.DataFrame:
    """:func:`annotate_flashes` on a session or experiment object (its presentations, trials, licks, rewards,
    running speed and — when it has any — eye tracking); keyword arguments are passed on."""
    import warnings

    kwargs.setdefault("response_window_start", session.task_parameters["response_window_sec"][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no eye tracking: an empty frame and a warning
        eye = session.eye_tracking
    return annotate_flashes(session.stimulus_presentations, session.trials, session.licks, session.rewards,
                            session.running_speed, eye if len(eye) else None, **kwargs)


# --- response-probability and d′ matrices ----------------------------------------------------------------


def response_probability_matrix(annotated: pd.DataFrame, engaged_only: bool = True, aggfunc="mean",
                                sort: bool = False, value: str = "response_lick") -> pd.DataFrame:
    """Lick probability per image transition (``analysis.md`` §5): rows ``previous_image_name``, columns
    ``image_name``.

    Uses the flashes of :func:`annotate_flashes` that could be a change, are not auto-rewarded, follow and are
    not omissions, and (``engaged_only``) are engaged. Off-diagonal cells are hit probabilities of that
    change; the diagonal is the response probability on non-change flashes. ``aggfunc`` is any pandas
    aggregation (default mean of ``value``); ``sort`` orders rows and columns by decreasing column mean.
    """
    a = annotated
    keep = (a["could_change"].to_numpy(bool) & ~a["auto_rewarded"].to_numpy(bool)
            & ~a["omitted"].to_numpy(bool) & ~a["post_omitted"].to_numpy(bool))
    if engaged_only:
        keep &= a["engaged"].to_numpy(bool)
    rows = a[keep]
    rows = rows[rows["previous_image_name"].notna() & (rows["previous_image_name"] != "omitted")]
    names = sorted(set(a.loc[~a["omitted"].to_numpy(bool), "image_name"].dropna()))
    values = rows[value].astype(float)
    matrix = values.groupby([rows["previous_image_name"], rows["image_name"]]).agg(aggfunc).unstack()
    matrix = matrix.reindex(index=names, columns=names)
    matrix.index.name, matrix.columns.name = "previous_image_name", "image_name"
    if sort:
        order = matrix.mean(axis=0).sort_values(ascending=False).index
        matrix = matrix.reindex(index=order, columns=order)
    return matrix


def dprime_matrix(probability: pd.DataFrame, limits: tuple[float, float] = DPRIME_LIMITS) -> pd.DataFrame:
    """d′ per transition: Φ⁻¹(P[r, c]) − Φ⁻¹(P[c, c]) with both clipped to ``limits``; diagonal NaN."""
    p = probability.to_numpy(float)
    diagonal = np.diag(probability.reindex(index=probability.columns).to_numpy(float))
    d = dprime(p, np.broadcast_to(diagonal, p.shape), limits=limits)
    d = np.array(d, float)
    same = probability.index.to_numpy()[:, None] == probability.columns.to_numpy()[None, :]
    d[same] = np.nan
    return pd.DataFrame(d, index=probability.index, columns=probability.columns)
