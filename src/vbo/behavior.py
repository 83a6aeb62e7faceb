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


def performance_metrics(trials: pd.DataFrame, rewards: pd.DataFrame, rolling: pd.DataFrame,
                        engaged_trial_reward_rate_threshold: float = 2.0) -> dict:
    """The 23-key ``get_performance_metrics`` dict (``analysis.md`` §1.6), in the SDK's key order.

    Engaged trials have ``reward_rate`` above the threshold (rewards/min); means and maxima skip NaN.
    """
    engaged = (rolling["reward_rate"] > engaged_trial_reward_rate_threshold).to_numpy()

    def mean(name: str, rows=slice(None)):
        return _nan_reduce(np.nanmean, rolling[name].to_numpy(float)[rows])

    def maximum(name: str, rows=slice(None)):
        return _nan_reduce(np.nanmax, rolling[name].to_numpy(float)[rows])

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
        "maximum_reward_rate": maximum("reward_rate"),
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


def _nan_reduce(func, values: np.ndarray) -> float:
    """``func`` (nanmean / nanmax) that returns NaN, silently, for empty or all-NaN input."""
    if values.size == 0 or np.isnan(values).all():
        return np.float64(np.nan)
    return func(values)
