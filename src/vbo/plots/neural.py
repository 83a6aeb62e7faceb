"""Figures of neural activity: each function takes an experiment or arrays and returns a matplotlib Figure."""

from __future__ import annotations

import numpy as np

from vbo.plots._style import pyplot


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
    plt = pyplot()
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
