"""Figures of behavior: each function takes frames of sessions/trials and returns a matplotlib Figure."""

from __future__ import annotations

import numpy as np
import pandas as pd

from vbo.plots._style import pyplot


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
    plt = pyplot()
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
    plt = pyplot()
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
