"""Trial-level performance of one session: reward rate, rolling hit and false-alarm rates, d′, engagement,
the 23-key performance metrics, and trial/reward selections.

Every function takes a session's ``trials`` (and ``rewards``) frame and returns arrays, frames or a dict; none
reads a file or a session object. The formulas match AllenSDK 2.16.2 and are written out in
``docs/analysis.md`` §1–§4.
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
"""A trial (or flash) is engaged when its reward rate is above this many rewards/min (``docs/analysis.md`` §4)."""
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
    h = np.clip(np.asarray(hit_rate, float), *limits)
    f = np.clip(np.asarray(false_alarm_rate, float), *limits)
    return _ppf(h) - _ppf(f)


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
    """The 23-key ``get_performance_metrics`` dict (``docs/analysis.md`` §4), in the SDK's key order.

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
    """Φ⁻¹, the standard-normal quantile function."""
    from scipy.special import ndtri  # Φ⁻¹; imported on use: keeps opening a file fast

    return ndtri(p)


def _trial_rate(trials) -> tuple[np.ndarray, int]:
    """Mean of a vector of trial outcomes (booleans or 0/1, NaN ignored) and its number of trials."""
    values = np.asarray(trials, dtype=float).ravel()
    values = values[~np.isnan(values)]
    return (values.mean() if values.size else np.nan), int(values.size)


def dprime(hit_rate=None, false_alarm_rate=None, go_trials=None, catch_trials=None, limits=False, *,
           fa_rate=None):
    """d′ = Φ⁻¹(H) − Φ⁻¹(F), with the reference helpers' clipping rules (``docs/analysis.md`` §3).

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
    """Reward rate (rewards/min) above ``threshold``; NaN and ±inf are never engaged (``docs/analysis.md`` §4)."""
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
