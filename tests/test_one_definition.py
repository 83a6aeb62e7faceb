"""Each preprocessing step has one definition, and every consumer of it gets the same numbers (issue 12)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from vbo import behavior, derive, history
from vbo import responses as R
from vbo.nwb import layout
from vbo.plots import behavior as plots_behavior
from vbo.simulate import task as sim


@pytest.fixture(scope="module")
def experiment(experiment_nwb):
    from vbo import BehaviorOphysExperiment

    e = BehaviorOphysExperiment.from_nwb_path(experiment_nwb)
    yield e
    e.close()


# --- lick rate --------------------------------------------------------------------------------------


def _lick_rate_consumers(source) -> dict[str, pd.DataFrame]:
    """Every way vbo offers the lick rate of ``source`` (has ``licks`` and ``stimulus_timestamps``)."""
    values, t, _ = R.trace_data(source, "lick_rate")
    return {"behavior.lick_rate": behavior.lick_rate(source.licks, source.stimulus_timestamps),
            "responses.lick_rate": R.lick_rate(source),
            "responses.trace_data": pd.DataFrame({"timestamps": t, "lick_rate": values[0]})}


def test_lick_rate_is_the_spec_window_for_every_consumer():
    """docs/analysis.md §5: a 0/1 train smoothed by a trailing triangular window of 6 frames, (1,3,5,5,3,1)/18."""
    ts = np.arange(40) / 60.0
    source = SimpleNamespace(licks=pd.DataFrame({"frame": [10, 10, 10]}), stimulus_timestamps=ts)  # 3 licks, 1 frame
    expected = np.zeros(40)
    expected[10:16] = np.array([1, 3, 5, 5, 3, 1]) / 18.0
    expected[:5] = np.nan  # the trailing window is incomplete before frame 5
    for name, frame in _lick_rate_consumers(source).items():
        np.testing.assert_allclose(frame["lick_rate"], expected, atol=1e-12, equal_nan=True, err_msg=name)
        np.testing.assert_array_equal(frame["timestamps"], ts, err_msg=name)
    assert R.lick_rate(source)["licks"].max() == 1.0  # licks in one frame count once


def test_lick_rate_consumers_agree_on_a_real_session(experiment):
    frames = _lick_rate_consumers(experiment)
    reference = frames.pop("behavior.lick_rate")
    assert reference["licks"].sum() > 0 and np.nanmax(reference["lick_rate"]) <= 1.0  # licks per frame
    for name, frame in frames.items():
        np.testing.assert_array_equal(frame["lick_rate"], reference["lick_rate"], err_msg=name)
        np.testing.assert_array_equal(frame["timestamps"], reference["timestamps"], err_msg=name)
    assert R.LICK_RATE_BIN_FRAMES == behavior.LICK_RATE_BIN_FRAMES == 6


# --- pupil ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["pupil_area", "pupil_width", "pupil_diameter", "pupil_radius"])
def test_pupil_series_is_shared(experiment, column):
    times, values = behavior.pupil_series(experiment.eye_tracking, column)
    matrix, t, _ = R.trace_data(experiment, column)
    np.testing.assert_array_equal(t, times)
    np.testing.assert_array_equal(matrix[0], values)
    eye = experiment.eye_tracking
    order = np.argsort(eye["timestamps"].to_numpy(float), kind="stable")
    blink = eye["likely_blink"].to_numpy(bool)[order]
    assert blink.any() and np.isnan(values[blink]).all() and not np.isnan(values[~blink]).all()
    if column == "pupil_diameter":
        area = eye["pupil_area"].to_numpy(float)[order]
        np.testing.assert_allclose(values[~blink], 2 * np.sqrt(area[~blink] / np.pi))


def test_plots_draw_the_shared_pupil_series(experiment):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vbo import plots

    fig = plots.behavior_neural_window(experiment, 330, 360, cell=0)
    line = next(ln for ln in fig.axes[1].get_lines() if ln.get_label() == "pupil width")
    times, width = behavior.pupil_series(experiment.eye_tracking, "pupil_width")
    inside = (times >= 330) & (times <= 360)
    np.testing.assert_array_equal(line.get_xdata(), times[inside])
    np.testing.assert_allclose(line.get_ydata(), width[inside] / np.nanmax(np.abs(width[inside])), equal_nan=True)
    fig = plots.behavior_window(experiment, 330, 360, pupil_column="pupil_area")
    times, area = behavior.pupil_series(experiment.eye_tracking, "pupil_area")
    drawn = [ln for ax in fig.axes for ln in ax.get_lines() if len(ln.get_xdata()) and
             np.isin(np.asarray(ln.get_xdata(), float), times).all() and len(ln.get_xdata()) > 10]
    assert drawn, "behavior_window draws the pupil series"
    for ln in drawn:
        x = np.asarray(ln.get_xdata(), float)
        np.testing.assert_array_equal(np.asarray(ln.get_ydata(), float), area[np.searchsorted(times, x)])
    plt.close("all")


def test_unknown_pupil_column_is_refused(experiment):
    with pytest.raises(ValueError, match="pupil_nonsense"):
        R.trace_data(experiment, "pupil_nonsense")


# --- engagement -------------------------------------------------------------------------------------


def test_one_engagement_threshold(experiment):
    assert behavior.ENGAGEMENT_THRESHOLD == 2.0
    trials, rewards = experiment.trials, experiment.rewards
    per_trial = behavior.engaged(trials)
    rate = behavior.reward_rate(trials)
    np.testing.assert_array_equal(per_trial, behavior.is_engaged(rate))
    assert per_trial.sum() == behavior.performance_metrics(trials, rewards)["engaged_trial_count"]
    # moving the threshold moves every consumer the same way
    assert behavior.engaged(trials, threshold=0.5).sum() == \
        behavior.performance_metrics(trials, rewards, 0.15, 0.5)["engaged_trial_count"]
    assert behavior.is_engaged(np.array([np.nan, np.inf, 2.0, 2.5])).tolist() == [False, False, False, True]


def test_threshold_defaults_follow_the_constant():
    import inspect

    defaults = [inspect.signature(behavior.engaged).parameters["threshold"].default,
                inspect.signature(behavior.performance_metrics).parameters[
                    "engaged_trial_reward_rate_threshold"].default,
                inspect.signature(behavior.annotate_flashes).parameters["engagement_threshold"].default,
                inspect.signature(history.session_metrics).parameters["engaged_trial_reward_rate_threshold"].default,
                inspect.signature(history.performance_table).parameters[
                    "engaged_trial_reward_rate_threshold"].default]
    assert all(d is behavior.ENGAGEMENT_THRESHOLD for d in defaults)


# --- vocabularies, sentinels, flashes_since_change -------------------------------------------------


def test_trial_vocabularies(experiment):
    assert R.TRIAL_TYPES is behavior.TRIAL_OUTCOMES and plots_behavior.TRIAL_TYPES is behavior.TRIAL_OUTCOMES
    assert behavior.RESPONSE_TYPES == ("all",) + behavior.TRIAL_OUTCOMES
    assert behavior.TRIAL_TYPES == ("all",) + behavior.GO_CATCH_TYPES
    assert behavior.OUTCOMES[:4] == behavior.TRIAL_OUTCOMES
    for name in behavior.TRIAL_OUTCOMES + behavior.GO_CATCH_TYPES:
        assert name in experiment.trials  # every word of the vocabularies is a trials column


def test_sentinel_and_flash_count_are_shared():
    assert sim.INT_NA is layout.INT_NA
    assert sim.flashes_since_change is derive.flashes_since_change
    is_change = np.array([False, False, True, False, False, False, True, False])
    omitted = np.array([False, False, False, False, True, False, False, False])
    np.testing.assert_array_equal(derive.flashes_since_change(is_change, omitted), [0, 1, 0, 1, 1, 2, 0, 1])
    assert derive.flashes_since_change(np.zeros(0, bool), np.zeros(0, bool)).dtype == np.int64

