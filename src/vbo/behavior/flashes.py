"""Per-flash behavior of the change-detection block, and the image-transition matrices built on it.

:func:`annotate_flashes` works on a session's frames (presentations, trials, licks, rewards, running speed,
eye tracking); :func:`annotate_session` is the same on a session or experiment object, whose members it reads
(opening no file of its own). :func:`response_probability_matrix` and :func:`dprime_matrix` take the annotated
frame. Definitions: ``docs/analysis.md`` §9 (annotation) and §10 (matrices).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from vbo.behavior.performance import (DPRIME_LIMITS, ENGAGEMENT_THRESHOLD, TRIAL_OUTCOMES, dprime, is_engaged,
                                      reward_rate)
from vbo.behavior.streams import plain_bool, pupil_series, window_mean

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
    """Per-flash behavioral annotation of the change-detection block (``docs/analysis.md`` §9), vectorised.

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
    omitted = plain_bool(out["omitted"]) if "omitted" in out else np.zeros(n, bool)
    out["omitted"] = omitted
    if "is_image_novel" in out:
        out["is_image_novel"] = plain_bool(out["is_image_novel"])
    is_change = out["is_change"].to_numpy(bool) if "is_change" in out else np.zeros(n, bool)
    sham = out["is_sham_change"].to_numpy(bool) if "is_sham_change" in out else np.zeros(n, bool)
    next_start = np.append(start[1:], out["end_time"].to_numpy(float)[-1:] if n else [])

    lick_t = _sorted(licks["timestamps"]) if licks is not None and len(licks) else np.zeros(0)
    reward_t = _sorted(rewards["timestamps"]) if rewards is not None and len(rewards) else np.zeros(0)
    licked, response_lick, rewarded = _add_licks_and_rewards(out, start, next_start, lick_t, reward_t,
                                                             lick_window, reward_window)
    _add_running_and_pupil(out, start, running_speed, eye_tracking, running_window, pupil_window, pupil_columns)
    events = {"change": is_change, "omitted": omitted, "lick": licked, "reward": rewarded}
    _add_time_since_events(out, start, events, lick_t, reward_t)
    _add_trial_position(out, next_start, is_change, sham, omitted, licked, response_lick)
    _add_change_trials(out, trials, start, change_match_s)
    _add_engagement(out, trials, start, response_window_start, engagement_threshold, epoch_duration_mins)
    return out


def _add_licks_and_rewards(out: pd.DataFrame, start: np.ndarray, next_start: np.ndarray, lick_t: np.ndarray,
                           reward_t: np.ndarray, lick_window: tuple[float, float],
                           reward_window: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Licks and rewards in each flash's windows (sorted event times, s); returns (licked, response_lick,
    rewarded)."""
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
    _, wcount = _count_in(reward_t, start + reward_window[0], start + reward_window[1])
    out["n_rewards"] = wcount
    rewarded = wcount > 0
    out["rewarded"] = rewarded
    return licked, response_lick, rewarded


def _add_running_and_pupil(out: pd.DataFrame, start: np.ndarray, running_speed: pd.DataFrame | None,
                           eye_tracking: pd.DataFrame | None, running_window: tuple[float, float],
                           pupil_window: tuple[float, float], pupil_columns: tuple[str, ...]) -> None:
    """Mean running speed (cm/s) and mean pupil columns (blinks removed) in each flash's window."""
    if running_speed is not None:
        rt = (running_speed["timestamps"] if "timestamps" in running_speed else running_speed.index).to_numpy(float)
        out["mean_running_speed"] = window_mean(rt, running_speed["speed"].to_numpy(float),
                                                start + running_window[0], start + running_window[1])
    if eye_tracking is not None and len(eye_tracking):
        for column in pupil_columns:
            et, ev = pupil_series(eye_tracking, column)
            out[f"mean_{column}"] = window_mean(et, ev, start + pupil_window[0], start + pupil_window[1])


def _add_time_since_events(out: pd.DataFrame, start: np.ndarray, flags: dict[str, np.ndarray],
                           lick_t: np.ndarray, reward_t: np.ndarray) -> None:
    """Time (s) and flashes since the last change, omission, lick and reward; flashes around changes and
    omissions. ``flags``: per-flash ``change``, ``omitted``, ``lick`` (licked) and ``reward`` (rewarded)."""
    is_change, omitted = flags["change"], flags["omitted"]
    out["time_from_last_change"] = _time_since(start[is_change], start)
    out["time_from_last_omitted"] = _time_since(start[omitted], start)
    out["time_from_last_lick"] = _time_since(lick_t, start)
    out["time_from_last_reward"] = _time_since(reward_t, start)
    for name in ("change", "omitted", "lick", "reward"):
        out[f"stimulus_count_from_last_{name}"] = _since_last(flags[name])
    out["n_after_change"] = _since_last(is_change)
    out["n_before_change"] = _until_next(is_change)
    out["n_after_omission"] = _since_last(omitted)


def _add_trial_position(out: pd.DataFrame, next_start: np.ndarray, is_change: np.ndarray, sham: np.ndarray,
                        omitted: np.ndarray, licked: np.ndarray, response_lick: np.ndarray) -> None:
    """Position within the trial, the previous/next flash, and ``could_change``."""
    n = len(out)
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


def _add_change_trials(out: pd.DataFrame, trials: pd.DataFrame, start: np.ndarray, change_match_s: float) -> None:
    """``change_trials_id`` (the trial whose change time is within ±``change_match_s`` s) and, on those
    flashes, the trial's columns and ``outcome``."""
    n = len(out)
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


def _add_engagement(out: pd.DataFrame, trials: pd.DataFrame, start: np.ndarray, response_window_start: float,
                    engagement_threshold: float, epoch_duration_mins: float) -> None:
    """Each flash's reward rate (as-of lookup of the next non-aborted trial), engagement and epoch."""
    n = len(out)
    change_time = trials["change_time"].to_numpy(float)
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


def annotate_session(session, **kwargs) -> pd.DataFrame:
    """:func:`annotate_flashes` on a session or experiment object: reads its presentations, trials, licks,
    rewards, running speed and — when it has any — eye tracking; keyword arguments are passed on."""
    kwargs.setdefault("response_window_start", session.task_parameters["response_window_sec"][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no eye tracking: an empty frame and a warning
        eye = session.eye_tracking
    return annotate_flashes(session.stimulus_presentations, session.trials, session.licks, session.rewards,
                            session.running_speed, eye if len(eye) else None, **kwargs)


# --- response-probability and d′ matrices ----------------------------------------------------------------


def response_probability_matrix(annotated: pd.DataFrame, engaged_only: bool = True, aggfunc="mean",
                                sort: bool = False, value: str = "response_lick") -> pd.DataFrame:
    """Lick probability per image transition (``docs/analysis.md`` §10): rows ``previous_image_name``, columns
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
