"""vbo.responses: event-locked tensors, response tables, significance, summaries and recovery of planted truth."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from vbo import population
from vbo import responses as R

# --- time bases (docs/analysis.md §6) -------------------------------------------------------------------------


def test_relative_timebase_reference_values():
    tb = R.relative_timebase((-3, 3), 11)
    assert len(tb) == 67 and tb[0] == -3.0 and tb[-1] == pytest.approx(3.0)
    tb = R.relative_timebase((-0.5, 0.75), 30)
    assert len(tb) == 38 and tb[-1] == pytest.approx(-0.5 + 37 / 30)


def test_shift_offsets_reference_values():
    t = np.arange(0, 600, 1 / 10.95)  # a native ≈ 11 Hz trace
    offsets = R.shift_offsets((-3, 3), R.empirical_rate(t))
    assert (offsets[0], offsets[-1] + 1, len(offsets)) == (-32, 34, 66)


def test_empirical_rate_is_one_over_mean_step():
    t = np.cumsum(np.full(1000, 1 / 10.73))
    assert R.empirical_rate(t) == pytest.approx(10.73)
    with pytest.raises(ValueError):
        R.empirical_rate([1.0])


def test_response_window_samples_multiplies_by_the_rate_once():
    assert R.response_window_samples(0.5, 31.0) == 16
    assert R.response_window_samples(0.5, 10.73) == 5
    assert R.response_window_samples(0.5, 11.0) == 6


def test_nearest_sample_ties_go_to_the_earlier_sample():
    t = np.array([0.0, 1.0, 2.0])
    assert R.nearest_sample(t, np.array([0.5, 0.51, 1.49, -5.0, 9.0])).tolist() == [0, 1, 1, 0, 2]


# --- event_locked -------------------------------------------------------------------------------------------


@pytest.fixture
def ramp():
    """Three cells whose values are known functions of time: t, 2t and −t (100 Hz, 0…10 s)."""
    t = np.arange(0, 1001) / 100.0
    return np.vstack([t, 2 * t, -t]), t


def test_event_locked_interpolates_linearly(ramp):
    traces, t = ramp
    events = np.array([2.003, 5.0, 7.5555])
    da = R.event_locked(traces, t, events, window=(-1.0, 2.0), rate=30.0)
    assert isinstance(da, xr.DataArray)
    assert da.dims == ("cell", "event", "time")
    assert da.shape == (3, 3, 91)
    expected = events[:, None] + da["time"].to_numpy()[None, :]
    np.testing.assert_allclose(da.to_numpy()[0], expected, atol=1e-12)
    np.testing.assert_allclose(da.to_numpy()[1], 2 * expected, atol=1e-12)
    np.testing.assert_allclose(da.to_numpy()[2], -expected, atol=1e-12)
    np.testing.assert_allclose(da["event_time"], events)
    assert da.attrs["rate"] == 30.0 and da.attrs["interpolate"] is True


def test_tidy_and_wide_exports(ramp):
    traces, t = ramp
    events = pd.Series([2.0, 5.0], index=pd.Index([11, 17], name="stimulus_presentations_id"))
    da = R.event_locked(pd.DataFrame({"dff": list(traces)}, index=pd.Index([7, 8, 9], name="cell_roi_id")),
                        t, events, window=(-0.5, 0.5), rate=10.0)
    tidy = R.to_tidy(da)
    assert list(tidy.columns) == ["cell_roi_id", "time", "dff", "event_number", "stimulus_presentations_id",
                                  "event_time"]
    assert len(tidy) == 3 * 2 * 11
    row = tidy[(tidy["cell_roi_id"] == 8) & (tidy["event_number"] == 1)]
    np.testing.assert_allclose(row["dff"], 2 * (5.0 + row["time"]), atol=1e-12)
    assert set(row["stimulus_presentations_id"]) == {17} and set(row["event_time"]) == {5.0}
    one = R.to_tidy(da.isel(cell=[2]))
    assert list(one.columns) == ["time", "dff", "event_number", "stimulus_presentations_id", "event_time"]
    np.testing.assert_allclose(one["dff"], -(one["event_time"] + one["time"]), atol=1e-12)

    wide = R.to_wide(da, cell=9)
    assert list(wide.columns) == ["event_0_t=2.0", "event_1_t=5.0"] and wide.index.name == "time"
    np.testing.assert_allclose(wide["event_1_t=5.0"], -(5.0 + wide.index.to_numpy()), atol=1e-12)
    pd.testing.assert_frame_equal(R.to_wide(da.isel(cell=[0])), R.to_wide(da, cell=7))
    with pytest.raises(ValueError, match="3 cells"):
        R.to_wide(da)
    with pytest.raises(KeyError, match="cell 1 is not in the tensor's cell_roi_id"):
        R.to_wide(da, cell=1)


def test_event_locked_default_rate_is_empirical(ramp):
    traces, t = ramp
    da = R.event_locked(traces, t, [5.0], window=(-0.5, 0.5))
    assert da.attrs["rate"] == pytest.approx(100.0)
    assert da.sizes["time"] == 101


def test_event_locked_is_nan_outside_the_recording_never_wrapped_or_held(ramp):
    traces, t = ramp
    da = R.event_locked(traces, t, [0.3, 9.5, 20.0, -5.0], window=(-1.0, 2.0), rate=100.0)
    tau = da["time"].to_numpy()
    first = da.to_numpy()[0, 0]
    assert np.isnan(first[tau < -0.3 - 1e-9]).all()  # before the start: NaN, not the end of the trace
    np.testing.assert_allclose(first[tau >= -0.3 + 1e-9], 0.3 + tau[tau >= -0.3 + 1e-9], atol=1e-12)
    late = da.to_numpy()[0, 1]
    assert np.isnan(late[tau > 0.5 + 1e-9]).all()  # past the end: NaN, not the last value held
    assert np.isfinite(late[tau < 0.5 - 1e-9]).all()
    assert np.isnan(da.to_numpy()[:, 2:]).all()  # events outside the recording: all NaN, no exception


def test_event_locked_shift_mode_pads_with_nan(ramp):
    traces, t = ramp
    da = R.event_locked(traces, t, [0.3, 9.9, 50.0], window=(-1.0, 1.0), interpolate=False)
    offsets = R.shift_offsets((-1.0, 1.0), 100.0)
    np.testing.assert_allclose(da["time"], offsets / da.attrs["rate"])
    row = da.to_numpy()[0, 0]
    valid = offsets >= -30
    np.testing.assert_allclose(row[valid], (30 + offsets[valid]) / 100.0, atol=1e-12)
    assert np.isnan(row[~valid]).all()
    assert np.isnan(da.to_numpy()[0, 1][offsets > 10]).all()
    assert np.isnan(da.to_numpy()[:, 2]).all()


def test_event_locked_nan_samples_propagate(ramp):
    traces, t = ramp
    traces = traces.copy()
    traces[0, 500] = np.nan
    da = R.event_locked(traces, t, [5.0], window=(-0.05, 0.05), rate=200.0)
    values = da.to_numpy()[0, 0]
    tau = da["time"].to_numpy()
    assert np.isnan(values[np.abs(tau) < 0.01 - 1e-9]).all()
    assert np.isfinite(da.to_numpy()[1, 0]).all()


def test_event_locked_matches_a_per_event_loop():
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.uniform(0.03, 0.036, 3000))
    traces = rng.standard_normal((7, len(t)))
    events = np.sort(rng.uniform(t[0] - 2, t[-1] + 2, 60))
    da = R.event_locked(traces, t, events, window=(-1.0, 2.0))
    tau = da["time"].to_numpy()
    for e, event in enumerate(events):
        for c in range(len(traces)):
            expected = np.interp(event + tau, t, traces[c], left=np.nan, right=np.nan)
            np.testing.assert_allclose(da.to_numpy()[c, e], expected, atol=1e-12, equal_nan=True)


def test_event_locked_keeps_series_index_and_checks_shapes(ramp):
    traces, t = ramp
    events = pd.Series([2.0, 3.0], index=pd.Index([17, 25], name="stimulus_presentations_id"))
    da = R.event_locked(traces, t, events, cell_ids=[10, 11, 12])
    assert da["event"].to_numpy().tolist() == [17, 25]
    assert da.attrs["event_id"] == "stimulus_presentations_id"
    assert da["cell"].to_numpy().tolist() == [10, 11, 12]
    with pytest.raises(ValueError, match="cells × samples"):
        R.event_locked(traces.T, t, events)
    one = R.event_locked(traces[0], t, events)
    assert one.shape[0] == 1


def test_event_locked_accepts_an_experiment_traces_frame(experiment_nwb):
    from vbo import BehaviorOphysExperiment

    with BehaviorOphysExperiment.from_nwb_path(experiment_nwb) as experiment:
        dff = experiment.dff_traces
        events = experiment.stimulus_presentations["start_time"].iloc[:50]
        da = R.event_locked(dff, experiment.ophys_timestamps, events)
        assert da.shape[:2] == (len(dff), 50)
        assert da["cell"].to_numpy().tolist() == dff["cell_roi_id"].tolist()
        assert da["cell_specimen_id"].to_numpy().tolist() == dff.index.tolist()
        assert da.name == "dff"
        ev = R.event_locked(experiment.events, experiment.ophys_timestamps, events, column="filtered_events")
        assert ev.name == "filtered_events"


# --- significance -------------------------------------------------------------------------------------------


def test_shuffled_p_values_are_seeded_and_ordered():
    rng = np.random.default_rng(0)
    t = np.arange(0, 200, 1 / 31.0)
    traces = rng.standard_normal((2, len(t))) * 0.1
    spont = t < 100
    events = np.array([120.0, 150.0, 170.0])
    for e, amplitude in zip(events, (5.0, -5.0, 0.0)):
        traces[:, (t >= e) & (t < e + 0.5)] += amplitude
    p1 = R.shuffled_p_values(traces, t, events, spont, 0.5, 2000, seed=3)
    p2 = R.shuffled_p_values(traces, t, events, spont, 0.5, 2000, seed=3)
    np.testing.assert_array_equal(p1, p2)
    assert (p1[:, 0] == 0.0).all() and (p1[:, 1] == 1.0).all()
    assert (0.0 < p1[:, 2]).all() and (p1[:, 2] < 1.0).all()
    with pytest.raises(ValueError, match="spontaneous"):
        R.shuffled_p_values(traces, t, events, np.zeros(len(t), bool), 0.5, 10, seed=0)


# --- stimulus responses of an experiment ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_experiment(experiment_nwb):
    from vbo import BehaviorOphysExperiment

    experiment = BehaviorOphysExperiment.from_nwb_path(experiment_nwb)
    yield experiment
    experiment.close()


def test_stimulus_responses_table_and_tensor(shared_experiment):
    e = shared_experiment
    result = R.stimulus_responses(e, "changes", n_shuffles=2000)
    tensor, table = result
    block = e.stimulus_presentations
    block = block[block["stimulus_block_name"].str.contains("change_detection")]
    n_changes = int(block["is_change"].sum())
    n_cells = len(e.dff_traces)
    assert tensor.shape[:2] == (n_cells, n_changes)
    assert len(table) == n_cells * n_changes  # spec §2.12: n_events × n_cells rows
    assert tensor["time"].to_numpy()[0] == -3.0 and tensor["time"].to_numpy()[-1] <= 3.0
    for column in ("cell_specimen_id", "cell_roi_id", "stimulus_presentations_id", "mean_response",
                   "baseline_response", "p_value_gray_screen", "image_name", "is_change", "start_time", "data_type",
                   "event_type", "interpolate", "output_sampling_rate", "response_window_duration", "stimulus_block"):
        assert column in table, column
    assert table["stimulus_block"].eq("change_detection").all()
    assert table["is_change"].all()
    # half-open windows: response [0, 0.5), baseline [−0.5, 0)
    tau = tensor["time"].to_numpy()
    data = tensor.to_numpy()
    tol = R.WINDOW_TOLERANCE_S
    mean = data[:, :, (tau >= -tol) & (tau < 0.5 - tol)].mean(axis=2).ravel()
    base = data[:, :, (tau >= -0.5 - tol) & (tau < -tol)].mean(axis=2).ravel()
    assert ((tau >= -tol) & (tau < 0.5 - tol)).sum() == 16  # 0.5 s at 31 Hz, t = 0 counted once
    np.testing.assert_allclose(table["mean_response"], mean)
    np.testing.assert_allclose(table["baseline_response"], base)
    p = table["p_value_gray_screen"]
    assert p.between(0, 1).all() and p.nunique() > 10  # never one p-value of 0 for everything (defect D3)
    again = R.stimulus_responses(e, "changes", n_shuffles=2000)
    np.testing.assert_array_equal(again.table["p_value_gray_screen"], p)
    other_seed = R.stimulus_responses(e, "changes", n_shuffles=2000, seed=99)
    assert not np.array_equal(other_seed.table["p_value_gray_screen"], p)
    legacy = R.stimulus_responses(e, "changes", p_value=False, closed_windows=True)
    assert not np.allclose(legacy.table["baseline_response"], table["baseline_response"])  # t = 0 counted twice
    assert legacy.table["p_value_gray_screen"].isna().all()


def test_legacy_anova_p_values(shared_experiment):
    from scipy import stats

    result = R.stimulus_responses(shared_experiment, "changes", window=(-1.0, 1.0), p_value=False, anova=True)
    table, tensor = result.table, result.tensor
    p = table["p_value_anova"].to_numpy()
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all() and len(np.unique(p)) > 10
    tau = tensor["time"].to_numpy()
    tol = R.WINDOW_TOLERANCE_S
    response, baseline = (tau >= -tol) & (tau < 0.5 - tol), (tau >= -0.5 - tol) & (tau < -tol)
    cell, event = 3, 2
    trace = tensor.to_numpy()[cell, event]
    # two groups: the one-way ANOVA is the equal-variance two-sample t-test
    expected = stats.ttest_ind(trace[response], trace[baseline]).pvalue
    assert p[cell * tensor.sizes["event"] + event] == pytest.approx(expected, rel=1e-9)
    assert "p_value_anova" not in R.stimulus_responses(shared_experiment, "changes", window=(-1.0, 1.0),
                                                       p_value=False).table
    with pytest.raises(ValueError, match="at least 2 samples"):
        R.anova_p_values(tensor, response_window_duration=0.04)


def test_event_selection(shared_experiment):
    e = shared_experiment
    sp = e.stimulus_presentations
    block = sp[sp["stimulus_block_name"].str.contains("change_detection")]
    omissions = R.select_events(sp, "omissions")
    assert len(omissions) == int(block["omitted"].fillna(False).sum()) and omissions["omitted"].all()
    images = R.select_events(sp, "images")
    assert len(images) == len(block) - len(omissions)
    assert len(R.select_events(sp, "all", stimulus_block=None)) == len(sp)
    assert len(R.select_events(sp, "is_sham_change")) == int(block["is_sham_change"].sum())
    hits = R.select_events(sp, "hit", trials=e.trials)
    assert len(hits) == int(e.trials["hit"].sum())
    np.testing.assert_allclose(hits["event_time"], e.trials.loc[e.trials["hit"], "change_time"])
    with pytest.raises(ValueError, match="unknown event_type"):
        R.select_events(sp, "no_such_column")
    # the gray screen block gives one event; the default is the change-detection block (defect D7)
    assert len(R.select_events(sp, "all", stimulus_block=0)) == 1


def test_behavioral_data_types(shared_experiment):
    e = shared_experiment
    running = R.stimulus_responses(e, "changes", "running_speed", n_shuffles=500)
    assert running.tensor.shape[0] == 1 and running.table["trace_id"].eq(0).all()
    assert running.tensor.attrs["rate"] == pytest.approx(R.empirical_rate(e.running_speed["timestamps"]))
    diameter = R.trace_data(e, "pupil_diameter")[0][0]
    area = e.eye_tracking["pupil_area"].to_numpy()
    blink = e.eye_tracking["likely_blink"].to_numpy(bool)
    np.testing.assert_allclose(diameter[~blink], 2 * np.sqrt(area[~blink] / np.pi))
    assert np.isnan(diameter[blink]).all()
    licks = R.lick_rate(e)
    assert licks["licks"].sum() == len(e.licks)
    result = R.stimulus_responses(e, "hit", "lick_rate", n_shuffles=500)
    assert result.table["mean_response"].mean() > result.table["baseline_response"].mean()


def test_summaries(shared_experiment):
    result = R.stimulus_responses(shared_experiment, "images", window=(-0.5, 0.75), n_shuffles=500)
    summary = R.condition_summary(result)
    assert summary.index.names == ["cell_roi_id", "image_name"]
    assert summary.groupby(level=0)["pref_stim"].sum().eq(1).all()
    pref = R.preferred_image(result)
    flagged = summary[summary["pref_stim"]].reset_index().set_index("cell_roi_id")["image_name"]
    assert (pref.sort_index() == flagged.sort_index()).all()
    group = result.table[(result.table["cell_roi_id"] == pref.index[0]) & (result.table["image_name"] == pref.iloc[0])]
    row = summary.loc[(pref.index[0], pref.iloc[0])]
    assert row["sem_response"] == pytest.approx(group["mean_response"].std(ddof=1) / np.sqrt(len(group)))
    assert row["fraction_significant_responses"] == pytest.approx((group["p_value_gray_screen"] < 0.05).mean())
    fraction = R.fraction_significant(result)
    assert fraction.between(0, 1).all()
    ls = R.lifetime_sparseness(result)
    assert len(ls) == len(pref) and ls.dropna().between(0, 1).all()
    traces = R.condition_traces(result)
    assert set(traces.data_vars) == {"mean", "sem", "n_events"} and traces.sizes["condition"] == 8
    population = R.population_average(result, "image_name")
    assert population["mean"].dims == ("condition", "time")
    whole = R.population_trace(shared_experiment)
    assert len(whole) == len(shared_experiment.ophys_timestamps)


def test_lifetime_sparseness_formula():
    table = pd.DataFrame({"cell_roi_id": [1] * 4 + [2] * 4 + [3] * 4,
                          "image_name": ["a", "b", "c", "omitted"] * 3,
                          "mean_response": [1.0, 0, 0, 9, 1, 1, 1, 9, 2, 1, -1, 0]})
    ls = R.lifetime_sparseness(table)
    assert ls[1] == pytest.approx(1.0)  # one image only (omitted excluded)
    assert ls[2] == pytest.approx(0.0)  # equal responses
    r = np.array([2.0, 1.0, 0.0])  # negative clipped to 0
    assert ls[3] == pytest.approx((1 - r.sum() ** 2 / (3 * (r ** 2).sum())) / (1 - 1 / 3))


def test_trial_type_comparison(shared_experiment):
    result = R.trial_type_responses(shared_experiment, window=(-1, 2), p_value=False)
    trials = shared_experiment.trials
    assert set(result.events["trial_type"]) <= set(R.TRIAL_TYPES)
    assert len(result.events) == int(trials[list(R.TRIAL_TYPES)].any(axis=1).sum())
    compared = R.compare_trial_types(result)
    population = compared[compared["cell_roi_id"] == "population"]
    assert set(population["trial_type"]) == set(result.events["trial_type"])


# --- recovery of planted truth on the tiny synthetic release -------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_release, tiny_cache):
    cache = tiny_cache
    truth = json.loads((tiny_release.root / "ground_truth" / "truth.json").read_text())
    rois = {int(r): dict(v) for b in truth.values() for x in b["experiments"].values() for r, v in x["rois"].items()}
    return cache, rois


@pytest.fixture(scope="module")
def tiny_responses(tiny):
    """Per-cell flash, change/repeat and omission responses of every experiment of the tiny release."""
    cache, rois = tiny
    table = cache.get_ophys_experiment_table()
    preferred, change, omission = [], [], []
    for experiment_id in table.index:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            experiment = cache.get_behavior_ophys_experiment(int(experiment_id))
        with experiment:
            flashes = R.stimulus_responses(experiment, "images", window=(-1, 1.5), p_value=False)
            for roi, image in R.preferred_image(flashes).items():
                preferred.append({"class": rois[roi]["class"], "planted": rois[roi]["preferred_image_name"],
                                  "found": image})
            t = flashes.table
            t = t.assign(above=t["mean_response"] - t["baseline_response"])
            for roi, cell in t.groupby("cell_roi_id"):
                planted = rois[roi]["preferred_image_name"]
                if planted is None:
                    continue
                pref = cell[cell["image_name"] == planted]
                if pref["is_change"].any() and (~pref["is_change"]).any():
                    change.append({"class": rois[roi]["class"], "indicator": table.loc[experiment_id, "indicator"],
                                   "change": pref.loc[pref["is_change"], "mean_response"].mean(),
                                   "repeat": pref.loc[~pref["is_change"], "mean_response"].mean(),
                                   "change_above": pref.loc[pref["is_change"], "above"].mean(),
                                   "repeat_above": pref.loc[~pref["is_change"], "above"].mean()})
            omitted = R.stimulus_responses(experiment, "omissions", window=(-1, 1.5), p_value=False,
                                           response_window_duration=0.75)
            for roi, cell in omitted.table.groupby("cell_roi_id"):
                omission.append({"class": rois[roi]["class"], "planted": rois[roi]["omission_ramp"],
                                 "response": (cell["mean_response"] - cell["baseline_response"]).mean()})
    return pd.DataFrame(preferred), pd.DataFrame(change), pd.DataFrame(omission)


def test_recovers_planted_preferred_images(tiny_responses):
    preferred, _, _ = tiny_responses
    correct = preferred["planted"] == preferred["found"]
    selective = preferred["class"] == "image_selective"
    assert selective.sum() >= 100
    # tolerance: ≥ 75 % of the Slc17a7 image-selective cells (seed 7: 84 %; chance 12.5 %)
    assert correct[selective].mean() >= 0.75
    # Sst cells are broadly tuned: still well above chance (seed 7: 50 %)
    assert correct[preferred["class"] == "image_responsive"].mean() >= 0.25


def test_recovers_vip_omission_responses(tiny_responses):
    from scipy import stats

    _, _, omission = tiny_responses
    ramping = omission[omission["class"] == "omission_ramping"]
    others = omission[omission["class"] != "omission_ramping"]
    assert len(ramping) >= 50
    # tolerance: ≥ 90 % of the Vip ramping cells respond above baseline in [0, 0.75) s (seed 7: 99.5 %)
    assert (ramping["response"] > 0).mean() >= 0.9
    # and by ≥ 0.1 dF/F more than every other class (seed 7: medians 0.20 vs ≤ 0)
    assert ramping["response"].median() >= 0.1
    assert ramping["response"].median() - others.groupby("class")["response"].median().max() >= 0.1
    # the measured response grows with the planted ramp amplitude
    assert stats.spearmanr(ramping["response"], ramping["planted"]).statistic > 0.3


def test_recovers_change_greater_than_repeat(tiny_responses):
    _, change, _ = tiny_responses
    selective = change[change["class"] == "image_selective"]
    assert len(selective) >= 100
    # tolerance: change response above baseline exceeds the repeat's in ≥ 75 % of the cells (seed 7: 88 %)
    assert (selective["change_above"] > selective["repeat_above"]).mean() >= 0.75
    # raw response ratio (planted change factor 1.6–2.8; repeats carry the previous flash): median ≥ 1.2 (1.54),
    # in GCaMP6f cells (GCaMP6s decays for ~1 s and carries more of the previous flash into the repeat's window)
    fast = selective[selective["indicator"] == "GCaMP6f"]
    assert len(fast) >= 50 and (fast["change"] / fast["repeat"]).median() >= 1.2


def test_recovers_novelty_effect_in_matched_cells(tiny):
    cache, rois = tiny
    by_specimen = {v["cell_specimen_id"]: v for v in rois.values() if v["cell_specimen_id"] is not None}
    table = cache.get_ophys_experiment_table()
    rows = []
    for container in table["ophys_container_id"].unique():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summaries = population.container_responses(cache, int(container))
        assert summaries["cell_specimen_id"].notna().any()
        compared = R.novelty_comparison(summaries)
        compared["class"] = [by_specimen[int(c)]["class"] for c in compared.index]
        rows.append(compared)
    compared = pd.concat(rows)
    responsive = compared[compared["class"].isin(["image_selective", "image_responsive"])]
    unresponsive = compared[compared["class"] == "unresponsive"]
    assert len(responsive) >= 20
    # planted gain on Novel 1 sessions: 1.6–2.5. Tolerance: median novel/familiar ratio in [1.3, 3.0]
    # (seed 7: 1.9), ≥ 80 % of the responsive cells up (seed 7: 95 %), and well above unresponsive cells (50 %)
    assert 1.3 <= responsive["ratio"].median() <= 3.0
    up = (responsive["difference"] > 0).mean()
    assert up >= 0.8
    # unresponsive cells carry no planted gain: their share going up is a coin flip (exact binomial, 99.9 %)
    # and stays below the responsive cells' (each session's own population state moves their background)
    from scipy.stats import binomtest

    k_up = int((unresponsive["difference"] > 0).sum())
    assert binomtest(k_up, len(unresponsive), 0.5).pvalue > 1e-3
    assert up - k_up / len(unresponsive) >= 0.15
