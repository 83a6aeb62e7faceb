"""Figures of behavior: each function takes frames of sessions/trials and returns a matplotlib Figure."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from vbo import behavior
from vbo.behavior import TRIAL_OUTCOMES, change_detection_flashes, plain_bool, pupil_series
from vbo.plots.style import pyplot

HIT_COLOR, FALSE_ALARM_COLOR, DPRIME_COLOR = "darkgreen", "darkred", "black"
REWARD_COLORS = {"earned": "#1f78b4", "auto": "#6a3d9a"}


STAGE_COLORS = {"TRAINING": "#9e9e9e", "OPHYS_0": "#6a3d9a", "Familiar": "#1f78b4", "Novel 1": "#e31a1c",
                "Novel >1": "#fb9a99", "passive": "#33a02c"}


def stage_color(session_type: str, experience_level: str | None = None) -> str:
    """Colour of a session in training-history plots: training grey, habituation purple, familiar blue, novel red."""
    if "passive" in session_type:
        return STAGE_COLORS["passive"]
    if session_type.startswith("TRAINING"):
        return STAGE_COLORS["TRAINING"]
    if session_type.startswith("OPHYS_0"):
        return STAGE_COLORS["OPHYS_0"]
    return STAGE_COLORS.get(experience_level or "", STAGE_COLORS["Familiar"])


def training_history(history: pd.DataFrame, title: str = ""):
    """Max d′ per session across a mouse's training (``docs/analysis.md`` §12.1), one marker per session coloured by
    stage; alternating grey bands mark the runs of one stage.

    Parameters
    ----------
    history
        One row per session in date order (e.g. :func:`vbo.history.training_history`), with columns
        ``session_type``, ``max_dprime`` and optionally ``experience_level`` and ``mouse_id``.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(history) + 2), 4))
    x = np.arange(len(history))
    types = history["session_type"].astype(str).tolist()
    levels = history["experience_level"].tolist() if "experience_level" in history else [None] * len(history)
    colors = [stage_color(t, e) for t, e in zip(types, levels)]
    stage = [t.split("_images")[0].split("_gratings")[0].split("_passive")[0] for t in types]
    band, shade = 0, False
    for i in range(1, len(stage) + 1):
        if i == len(stage) or stage[i] != stage[band]:
            if shade:
                ax.axvspan(band - 0.5, i - 0.5, color="0.9", zorder=0)
            band, shade = i, not shade
    values = history["max_dprime"].to_numpy(float)
    ax.plot(x, values, color="0.6", lw=1, zorder=1)
    ax.scatter(x, values, c=colors, zorder=2, edgecolors="k", linewidths=0.5)
    ax.set_xticks(x, types, rotation=30, ha="right", fontsize=7)
    ax.set_xlim(-0.5, len(history) - 0.5)
    ax.set_xlabel("session type")
    ax.set_ylabel("dprime")
    ax.axhline(0, color="0.5", lw=0.5)
    if not title and "mouse_id" in history and len(history):
        title = f"Max of rolling d' for every session for mouse {history['mouse_id'].iloc[0]}"
    ax.set_title(title or "training history")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=k) for k, c in STAGE_COLORS.items()
               if c in colors]
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def rolling_performance(rolling: pd.DataFrame, title: str = "", start_time=None):
    """Rolling hit and false-alarm rates (top) and d′ (bottom) over a session (``docs/analysis.md`` §12.2).

    Parameters
    ----------
    rolling
        :func:`vbo.behavior.rolling_performance` / ``get_rolling_performance_df()``; aborted rows are
        forward-filled.
    start_time
        Trial start times (s), aligned with ``rolling`` (a Series or array, or a ``trials`` frame); the x axis
        is then "trial start time (minutes)", otherwise the trial number. A ``start_time`` column of
        ``rolling`` is used the same way.
    """
    plt = pyplot()
    filled = rolling.ffill()
    if isinstance(start_time, pd.DataFrame):
        start_time = start_time["start_time"]
    if start_time is None and "start_time" in rolling:
        start_time = rolling["start_time"]
    if start_time is not None:
        x, xlabel = np.asarray(start_time, float) / 60.0, "trial start time (minutes)"
    else:
        x, xlabel = np.asarray(filled.index), "trial"
    fig, (rates, dprime) = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True)
    rates.plot(x, filled["hit_rate"], color=HIT_COLOR, label="hit rate")
    rates.plot(x, filled["false_alarm_rate"], color=FALSE_ALARM_COLOR, label="false-alarm rate")
    rates.set_ylim(-0.02, 1.02)
    rates.set_ylabel("response rate")
    rates.legend(loc="lower left", fontsize=8)
    dprime.plot(x, filled["rolling_dprime"], color=DPRIME_COLOR)
    dprime.set_ylabel("rolling d′")
    dprime.set_xlabel(xlabel)
    rates.set_title(title or "rolling performance")
    fig.tight_layout()
    return fig


def image_colors(image_names) -> dict:
    """One colour per sorted image name (``omitted`` white)."""
    from matplotlib import colormaps

    names = sorted({str(n) for n in image_names if isinstance(n, str) and n != "omitted"})
    cmap = colormaps["tab10" if len(names) <= 10 else "hsv"]
    colors = {n: cmap(i if len(names) <= 10 else i / len(names)) for i, n in enumerate(names)}
    colors["omitted"] = (1.0, 1.0, 1.0, 1.0)
    return colors


def _stimulus_spans(ax, presentations: pd.DataFrame, t0: float, t1: float, colors: dict, alpha: float = 0.25,
                    mark_omitted: bool = True) -> None:
    """Each flash overlapping [t0, t1] as an ``axvspan`` coloured by image; omitted flashes as dashed lines."""
    sp = change_detection_flashes(presentations)
    inside = (sp["end_time"].to_numpy(float) >= t0) & (sp["start_time"].to_numpy(float) <= t1)
    sp = sp[inside]
    omitted = plain_bool(sp["omitted"]) if "omitted" in sp else np.zeros(len(sp), bool)
    for (a, b, name, om) in zip(sp["start_time"], sp["end_time"], sp["image_name"], omitted):
        if om:
            if mark_omitted:
                ax.axvline(a, color="0.3", ls="--", lw=0.8, zorder=0)
            continue
        ax.axvspan(a, b, color=colors.get(name, "0.8"), alpha=alpha, lw=0, zorder=0)


def _eye(session) -> pd.DataFrame | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            eye = session.eye_tracking
        except (AttributeError, KeyError):
            return None
    return eye if eye is not None and len(eye) else None


def _running_frame(session) -> pd.DataFrame:
    running = session.running_speed
    return running if "timestamps" in running else running.reset_index()


def behavior_window(session, start: float, stop: float, title: str = "", pupil_column: str = "pupil_area"):
    """Running speed, licks, rewards and pupil over the time window [start, stop] (s) with the stimulus spans
    (``docs/analysis.md`` §12.3): every flash coloured by image, omitted flashes marked by dashed lines, changes by
    solid lines.

    Parameters
    ----------
    session
        A :class:`vbo.BehaviorSession` or :class:`vbo.BehaviorOphysExperiment` (anything with
        ``stimulus_presentations``, ``licks``, ``rewards``, ``running_speed`` and ``eye_tracking``).
    pupil_column
        Eye-tracking column of the pupil panel (blink frames removed; omitted when there is no eye tracking).
    """
    plt = pyplot()
    eye = _eye(session)
    n_rows = 3 if eye is not None else 2
    fig, axes = plt.subplots(n_rows, 1, figsize=(9, 1.8 * n_rows + 1), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1, 2][:n_rows]})
    sp = session.stimulus_presentations
    colors = image_colors(change_detection_flashes(sp)["image_name"])
    for ax in axes:
        _stimulus_spans(ax, sp, start, stop, colors)
    flashes = change_detection_flashes(sp)
    change_times = flashes.loc[flashes["is_change"].to_numpy(bool), "start_time"].to_numpy(float)
    for ax in axes:
        for t in change_times[(change_times >= start) & (change_times <= stop)]:
            ax.axvline(t, color="k", lw=1, zorder=1)

    running = _running_frame(session)
    t = running["timestamps"].to_numpy(float)
    keep = (t >= start) & (t <= stop)
    axes[0].plot(t[keep], running["speed"].to_numpy(float)[keep], color="0.3", ls="--", lw=1)
    axes[0].set_ylabel("running speed (cm/s)")

    licks = session.licks["timestamps"].to_numpy(float)
    licks = licks[(licks >= start) & (licks <= stop)]
    axes[1].vlines(licks, 0, 1, color="k", lw=0.8, label="licks")
    rewards = session.rewards
    rt = rewards["timestamps"].to_numpy(float)
    auto = rewards["auto_rewarded"].to_numpy(bool) if "auto_rewarded" in rewards else np.zeros(len(rt), bool)
    for kind, mask in (("earned", ~auto), ("auto", auto)):
        sel = mask & (rt >= start) & (rt <= stop)
        axes[1].plot(rt[sel], np.full(sel.sum(), 1.4), "d", color=REWARD_COLORS[kind], ms=7,
                     label=f"{kind} reward")
    axes[1].set_ylim(-0.2, 1.8)
    axes[1].set_yticks([])
    axes[1].set_ylabel("licks /\nrewards")
    axes[1].legend(loc="upper right", fontsize=7, ncol=3)
    if eye is not None:
        et, ev = pupil_series(eye, pupil_column)
        keep = (et >= start) & (et <= stop)
        axes[2].plot(et[keep], ev[keep], color="#1f78b4", lw=1)
        axes[2].set_ylabel("pupil area (pixels²)" if pupil_column == "pupil_area" else pupil_column)
    axes[-1].set_xlabel("time in session (s)")
    axes[-1].set_xlim(start, stop)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.5, label=n) for n, c in colors.items()
               if n != "omitted"]
    handles.append(plt.Line2D([], [], color="0.3", ls="--", label="omitted"))
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 9), fontsize=7, frameon=False)
    axes[0].set_title(title or f"behavior {start:.0f}–{stop:.0f} s", pad=22)
    fig.tight_layout()
    return fig


TRIAL_TYPES = TRIAL_OUTCOMES  # the one outcome vocabulary (vbo.behavior); name kept for old imports


def pick_trials(trials: pd.DataFrame, random_state: int | None = 0) -> dict:
    """One trial id per outcome (hit, miss, false_alarm, correct_reject), drawn with ``random_state``; outcomes
    without trials are left out."""
    rng = np.random.default_rng(random_state)
    picked = {}
    for outcome in TRIAL_TYPES:
        ids = trials.index[trials[outcome].to_numpy(bool)]
        if len(ids):
            picked[outcome] = ids[rng.integers(len(ids))]
    return picked


def trial_type_panels(session, trials_ids: dict | None = None, random_state: int | None = 0, title: str = ""):
    """One column per trial type — hit, miss, false alarm, correct reject — over [trial start, trial stop]
    (``docs/analysis.md`` §12.4): running speed, licks and rewards, pupil area and (for experiments) every cell's dF/F,
    with the stimulus spans (omitted flashes dashed) and the change time.

    Parameters
    ----------
    trials_ids
        ``{outcome: trials_id}``; by default one trial of each outcome drawn with ``random_state``.
    """
    plt = pyplot()
    trials = session.trials
    picked = trials_ids if trials_ids is not None else pick_trials(trials, random_state)
    eye = _eye(session)
    dff = getattr(session, "dff_traces", None) if hasattr(type(session), "dff_traces") else None
    rows = ["running", "licks"] + (["pupil"] if eye is not None else []) + (["dff"] if dff is not None else [])
    fig, axes = plt.subplots(len(rows), len(TRIAL_TYPES), figsize=(13, 1.8 * len(rows) + 1), squeeze=False,
                             gridspec_kw={"height_ratios": [{"running": 2, "licks": 1, "pupil": 2,
                                                             "dff": 3}[r] for r in rows]})
    sp = session.stimulus_presentations
    colors = image_colors(change_detection_flashes(sp)["image_name"])
    running = _running_frame(session)
    streams = {"running": (running["timestamps"].to_numpy(float), running["speed"].to_numpy(float)),
               "licks": session.licks["timestamps"].to_numpy(float),
               "rewards": session.rewards["timestamps"].to_numpy(float)}
    if eye is not None:
        streams["pupil"] = pupil_series(eye, "pupil_area")
    if dff is not None:
        streams["dff"] = (np.asarray(session.ophys_timestamps, float),
                          np.stack(dff["dff"].to_numpy()) if len(dff) else np.zeros((0, 0)))
    for col, outcome in enumerate(TRIAL_TYPES):
        column = axes[:, col]
        column[0].set_title(outcome.replace("_", " "))
        if outcome not in picked:
            for ax in column:
                ax.text(0.5, 0.5, "no trial", ha="center", va="center", transform=ax.transAxes)
            continue
        trial = trials.loc[picked[outcome]]
        t0, t1 = float(trial["start_time"]), float(trial["stop_time"])
        for ax in column:
            _stimulus_spans(ax, sp, t0, t1, colors)
            if np.isfinite(trial["change_time"]):
                ax.axvline(trial["change_time"], color="k", lw=1)
            ax.set_xlim(t0, t1)
        _trial_rows(column, rows, streams, t0, t1, labels=col == 0)
        column[-1].set_xlabel("time in session (seconds)")
        column[0].set_title(f"{outcome.replace('_', ' ')} (trial {picked[outcome]})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _trial_rows(column, rows: list[str], streams: dict, t0: float, t1: float, labels: bool) -> None:
    """Draw one trial's streams over [t0, t1] (s) in the axes of ``column``, one axis per name in ``rows``;
    ``labels``: also the y labels (first column)."""
    rt, rv = streams["running"]
    licks, rewards = streams["licks"], streams["rewards"]
    for ax, row in zip(column, rows):
        if row == "running":
            keep = (rt >= t0) & (rt <= t1)
            ax.plot(rt[keep], rv[keep], color="0.3")
            if labels:
                ax.set_ylabel("speed (cm/s)")
        elif row == "licks":
            sel = licks[(licks >= t0) & (licks <= t1)]
            ax.plot(sel, np.zeros(len(sel)), "o", color="k", ms=3)
            sel = rewards[(rewards >= t0) & (rewards <= t1)]
            ax.plot(sel, np.full(len(sel), 0.5), "d", color=REWARD_COLORS["earned"], ms=7)
            ax.set_ylim(-0.5, 1)
            ax.set_yticks([])
            if labels:
                ax.set_ylabel("licks /\nrewards")
        elif row == "pupil":
            et, ev = streams["pupil"]
            keep = (et >= t0) & (et <= t1)
            ax.plot(et[keep], ev[keep], color="#1f78b4")
            if labels:
                ax.set_ylabel("pupil area (pixels²)")
        elif row == "dff" and streams["dff"][1].size:
            ot, traces = streams["dff"]
            keep = (ot >= t0) & (ot <= t1)
            ax.plot(ot[keep], traces[:, keep].T, lw=0.6, alpha=0.7)
            if labels:
                ax.set_ylabel("dF/F")


def response_probability_matrix(matrix: pd.DataFrame, title: str = "", annotate: bool = True):
    """Lick probability per image transition (``docs/analysis.md`` §10, §12.5): viridis, 0–1, rows = previous image."""
    return _matrix(matrix, "viridis", (0.0, 1.0), "response probability", title or "response probability",
                   annotate)


def dprime_matrix(matrix: pd.DataFrame, title: str = "", annotate: bool = True):
    """d′ per image transition (``docs/analysis.md`` §10, §12.5): magma, 0–1.5, diagonal blank."""
    return _matrix(matrix, "magma", (0.0, 1.5), "d′", title or "d′ per image transition", annotate)


def _matrix(matrix: pd.DataFrame, cmap: str, limits: tuple[float, float], label: str, title: str,
            annotate: bool):
    plt = pyplot()
    values = matrix.to_numpy(float)
    size = 1.0 + 0.55 * max(values.shape + (4,))
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=limits[0], vmax=limits[1])
    ax.set_xticks(np.arange(values.shape[1]), [str(c) for c in matrix.columns], rotation=90)
    ax.set_yticks(np.arange(values.shape[0]), [str(i) for i in matrix.index])
    ax.set_xlabel("image name")
    ax.set_ylabel("previous image name")
    if annotate:
        for (r, c), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="w" if v < (limits[0] + limits[1]) / 2 else "k")
    fig.colorbar(image, ax=ax, label=label, shrink=0.8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def session_summary(session, window: tuple[float, float] | None = None, title: str = ""):
    """One session's behavior at a glance: rolling hit/false-alarm rate and d′ over time, the response-
    probability matrix of engaged flashes, and licks/rewards/running with the stimulus spans of ``window``
    (default: the first 60 s of the change-detection block)."""
    plt = pyplot()
    trials = session.trials
    rolling = session.get_rolling_performance_df().ffill()
    annotated = behavior.annotate_session(session)
    matrix = behavior.response_probability_matrix(annotated, engaged_only=False)
    flashes = change_detection_flashes(session.stimulus_presentations)
    if window is None:
        t0 = float(flashes["start_time"].iloc[0]) if len(flashes) else 0.0
        window = (t0, t0 + 60.0)
    fig = plt.figure(figsize=(12, 8))
    grid = fig.add_gridspec(3, 2, width_ratios=[2, 1], height_ratios=[1, 1, 1.2])
    minutes = trials["start_time"].to_numpy(float) / 60.0
    rates = fig.add_subplot(grid[0, 0])
    rates.plot(minutes, rolling["hit_rate"], color=HIT_COLOR, label="hit rate")
    rates.plot(minutes, rolling["false_alarm_rate"], color=FALSE_ALARM_COLOR, label="false-alarm rate")
    rates.set_ylim(-0.02, 1.02)
    rates.set_ylabel("response rate")
    rates.legend(fontsize=7, loc="lower left")
    dp = fig.add_subplot(grid[1, 0], sharex=rates)
    dp.plot(minutes, rolling["rolling_dprime"], color=DPRIME_COLOR)
    dp.set_ylabel("rolling d′")
    dp.set_xlabel("trial start time (minutes)")
    mat = fig.add_subplot(grid[0:2, 1])
    values = matrix.to_numpy(float)
    image = mat.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=1)
    mat.set_xticks(np.arange(values.shape[1]), [str(c) for c in matrix.columns], rotation=90, fontsize=7)
    mat.set_yticks(np.arange(values.shape[0]), [str(i) for i in matrix.index], fontsize=7)
    mat.set_xlabel("image name")
    mat.set_ylabel("previous image name")
    fig.colorbar(image, ax=mat, label="response probability", shrink=0.7)
    win = fig.add_subplot(grid[2, :])
    colors = image_colors(flashes["image_name"])
    _stimulus_spans(win, session.stimulus_presentations, *window, colors)
    running = _running_frame(session)
    t = running["timestamps"].to_numpy(float)
    keep = (t >= window[0]) & (t <= window[1])
    win.plot(t[keep], running["speed"].to_numpy(float)[keep], color="0.3", ls="--", lw=1)
    top = float(np.nanmax(running["speed"].to_numpy(float)[keep])) if keep.any() else 1.0
    licks = session.licks["timestamps"].to_numpy(float)
    licks = licks[(licks >= window[0]) & (licks <= window[1])]
    win.plot(licks, np.full(len(licks), top * 1.05), "|", color="k", ms=8, label="licks")
    rt = session.rewards["timestamps"].to_numpy(float)
    rt = rt[(rt >= window[0]) & (rt <= window[1])]
    win.plot(rt, np.full(len(rt), top * 1.12), "d", color=REWARD_COLORS["earned"], label="rewards")
    win.set_xlim(*window)
    win.set_xlabel("time in session (s)")
    win.set_ylabel("running speed (cm/s)")
    win.legend(fontsize=7, loc="upper right")
    metrics = session.get_performance_metrics()
    fig.suptitle(title or (f"behavior session {session.behavior_session_id}: {metrics['hit_trial_count']} hits, "
                           f"{metrics['false_alarm_trial_count']} false alarms, max d′ "
                           f"{metrics['max_dprime']:.2f}"))
    fig.tight_layout()
    return fig
