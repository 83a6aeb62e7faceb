"""Behavior figures: each returns a Figure with the catalogue's labels (docs/analysis.md §12) and renders to PNG."""

from __future__ import annotations

import warnings

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from vbo import behavior, history, plots  # noqa: E402


@pytest.fixture(scope="module")
def cache(tiny_cache):
    return tiny_cache


@pytest.fixture(scope="module")
def experiment(cache):
    table = cache.get_ophys_experiment_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj = cache.get_behavior_ophys_experiment(int(table[~table["passive"]].index.min()))
    yield obj
    obj.close()


@pytest.fixture(scope="module")
def training_session(cache):
    table = cache.get_behavior_session_table()
    session_id = table.index[table["session_type"].str.startswith("TRAINING_3")][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj = cache.get_behavior_session(session_id)
    yield obj
    obj.close()


def _png(fig, tmp_path, name) -> bytes:
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=60)
    data = path.read_bytes()
    assert data[:4] == b"\x89PNG" and len(data) > 5_000
    import matplotlib.pyplot as plt

    plt.close(fig)
    return data


def test_training_history_figure(cache, tmp_path):
    mouse = cache.get_ophys_experiment_table()["mouse_id"].iloc[0]
    h = history.training_history(cache, mouse, cache_path=tmp_path / "perf.parquet", workers=1)
    fig = plots.training_history(h)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "dprime" and ax.get_xlabel() == "session type"
    assert ax.get_title() == f"Max of rolling d' for every session for mouse {mouse}"
    assert [t.get_text() for t in ax.get_xticklabels()] == h["session_type"].tolist()
    _png(fig, tmp_path, "history")
    # the demo's call (a plain frame and a title) still works
    _png(plots.training_history(h.reset_index()[["session_type", "max_dprime"]], "title"), tmp_path, "plain")


def test_rolling_performance_figure(experiment, tmp_path):
    rolling = experiment.get_rolling_performance_df()
    fig = plots.rolling_performance(rolling, start_time=experiment.trials)
    top, bottom = fig.axes
    assert top.get_ylabel() == "response rate" and bottom.get_xlabel() == "trial start time (minutes)"
    colors = [line.get_color() for line in top.get_lines()] + [bottom.get_lines()[0].get_color()]
    assert colors == ["darkgreen", "darkred", "black"]
    _png(fig, tmp_path, "rolling")
    _png(plots.rolling_performance(rolling, "experiment"), tmp_path, "rolling_trials")


def test_behavior_window_figure(experiment, training_session, tmp_path):
    flashes = behavior.change_detection_flashes(experiment.stimulus_presentations)
    omitted = flashes[flashes["omitted"].fillna(False).astype(bool)]
    assert len(omitted)
    t = float(omitted["start_time"].iloc[0])
    fig = plots.behavior_window(experiment, t - 10, t + 10)
    assert len(fig.axes) == 3  # running, licks/rewards, pupil
    assert fig.axes[0].get_ylabel() == "running speed (cm/s)"
    assert fig.axes[-1].get_xlabel() == "time in session (s)"
    dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"
              and abs(line.get_xdata()[0] - t) < 1e-9]
    assert dashed, "the omitted flash is marked"
    _png(fig, tmp_path, "window")
    # a behavior-only session has no eye tracking: two panels
    start = float(behavior.change_detection_flashes(training_session.stimulus_presentations)["start_time"].iloc[0])
    fig = plots.behavior_window(training_session, start, start + 30)
    assert len(fig.axes) == 2
    _png(fig, tmp_path, "window_training")


def test_trial_type_panels(experiment, training_session, tmp_path):
    fig = plots.trial_type_panels(experiment)
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert [t.split(" (")[0] for t in titles] == ["hit", "miss", "false alarm", "correct reject"]
    assert fig.axes[0].get_ylabel() == "speed (cm/s)"
    _png(fig, tmp_path, "trial_types")
    picked = plots.behavior.pick_trials(training_session.trials, random_state=1)
    _png(plots.trial_type_panels(training_session, picked), tmp_path, "trial_types_training")


def test_matrix_figures(experiment, tmp_path):
    annotated = behavior.annotate_session(experiment)
    p = behavior.response_probability_matrix(annotated, engaged_only=False)
    fig = plots.response_probability_matrix(p)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "image name" and ax.get_ylabel() == "previous image name"
    assert ax.images[0].get_cmap().name == "viridis" and ax.images[0].get_clim() == (0.0, 1.0)
    assert fig.axes[1].get_ylabel() == "response probability"
    _png(fig, tmp_path, "rpm")
    fig = plots.dprime_matrix(behavior.dprime_matrix(p))
    assert fig.axes[0].images[0].get_cmap().name == "magma" and fig.axes[0].images[0].get_clim() == (0.0, 1.5)
    _png(fig, tmp_path, "dpm")
    # an empty matrix (no engaged flashes) still draws
    _png(plots.response_probability_matrix(pd.DataFrame([[float("nan")]], index=["a"], columns=["a"])), tmp_path,
         "empty")


def test_session_summary(experiment, training_session, tmp_path):
    _png(plots.session_summary(experiment), tmp_path, "summary")
    _png(plots.session_summary(training_session), tmp_path, "summary_training")
