"""Figures: one function per figure, each taking data (frames, sessions) and returning a matplotlib Figure."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg") and not _has_display():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _has_display() -> bool:
    import os

    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


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
    """Max d′ per session across a mouse's training, one dot per session coloured by stage.

    Parameters
    ----------
    history
        One row per session in date order, with columns ``session_type``, ``max_dprime`` and optionally
        ``experience_level``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(history))
    colors = [stage_color(t, e) for t, e in zip(history["session_type"],
                                                history.get("experience_level", [None] * len(history)))]
    ax.plot(x, history["max_dprime"], color="0.8", zorder=1)
    ax.scatter(x, history["max_dprime"], c=colors, zorder=2)
    ax.set_xticks(x, history["session_type"], rotation=90, fontsize=7)
    ax.set_ylabel("max d′")
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set_title(title or "training history")
    fig.tight_layout()
    return fig


def rolling_performance(rolling: pd.DataFrame, title: str = ""):
    """Hit and false-alarm rates (0-1) and d′ over trials of one session (aborted trials forward-filled)."""
    plt = _pyplot()
    filled = rolling.ffill()
    fig, (rates, dprime) = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True)
    rates.plot(filled.index, filled["hit_rate"], color="#1f78b4", label="hit rate")
    rates.plot(filled.index, filled["false_alarm_rate"], color="#e31a1c", label="false-alarm rate")
    rates.set_ylim(-0.02, 1.02)
    rates.set_ylabel("response probability")
    rates.legend(loc="lower left", fontsize=8)
    dprime.plot(filled.index, filled["rolling_dprime"], color="k")
    dprime.set_ylabel("d′")
    dprime.set_xlabel("trial")
    rates.set_title(title or "rolling performance")
    fig.tight_layout()
    return fig


def experiment_overview(experiment, n_cells: int = 6, window_s: float = 60.0):
    """Max projection and, for a time window of the task, the dF/F of a few cells over stimulus spans,
    licks, rewards and running speed.

    Parameters
    ----------
    experiment
        A :class:`vbo.BehaviorOphysExperiment`.
    n_cells
        Number of cells whose dF/F is drawn.
    window_s
        Length of the window (s), starting at the first change-detection flash.
    """
    plt = _pyplot()
    presentations = experiment.stimulus_presentations
    images = presentations[presentations["image_name"].notna()]
    t0 = float(images["start_time"].iloc[0]) if len(images) else float(experiment.ophys_timestamps[0])
    t1 = t0 + window_s
    fig = plt.figure(figsize=(11, 5))
    grid = fig.add_gridspec(3, 3)
    projection = fig.add_subplot(grid[:, 0])
    projection.imshow(experiment.max_projection, cmap="gray")
    projection.set_title(f"experiment {experiment.ophys_experiment_id}")
    projection.axis("off")
    traces = fig.add_subplot(grid[:2, 1:])
    behavior_ax = fig.add_subplot(grid[2, 1:], sharex=traces)
    in_window = images[(images["start_time"] < t1) & (images["end_time"] > t0)]
    names = sorted(n for n in in_window["image_name"].unique() if n != "omitted")
    palette = plt.get_cmap("tab10")
    for _, flash in in_window.iterrows():
        color = "r" if flash["image_name"] == "omitted" else palette(names.index(flash["image_name"]) % 10)
        for ax in (traces, behavior_ax):
            ax.axvspan(flash["start_time"], flash["end_time"], color=color, alpha=0.15 if color != "r" else 0.4, lw=0)
    timestamps = experiment.ophys_timestamps
    frames = (timestamps >= t0) & (timestamps <= t1)
    dff = experiment.dff_traces["dff"]
    for i, trace in enumerate(dff.iloc[:n_cells]):
        traces.plot(timestamps[frames], np.asarray(trace)[frames] + 2.0 * i, lw=0.8, color="k")
    traces.set_ylabel("dF/F (offset per cell)")
    running = experiment.running_speed
    shown = running[(running["timestamps"] >= t0) & (running["timestamps"] <= t1)]
    behavior_ax.plot(shown["timestamps"], shown["speed"], color="0.3", lw=0.8)
    licks = experiment.licks
    licks = licks[(licks["timestamps"] >= t0) & (licks["timestamps"] <= t1)]
    top = float(shown["speed"].max()) if len(shown) else 1.0
    behavior_ax.plot(licks["timestamps"], np.full(len(licks), top * 1.05), "|", color="m", label="licks")
    rewards = experiment.rewards
    rewards = rewards[(rewards["timestamps"] >= t0) & (rewards["timestamps"] <= t1)]
    behavior_ax.plot(rewards["timestamps"], np.full(len(rewards), top * 1.12), "v", color="b", label="rewards")
    behavior_ax.set_ylabel("running (cm/s)")
    behavior_ax.set_xlabel("time (s)")
    behavior_ax.set_xlim(t0, t1)
    fig.tight_layout()
    return fig
