"""vbo on kinds of released files that the two AllenSDK-written reference files do not cover.

Each variant is built once per test session by ``nwb_variants`` (a copy of a reference file edited
with h5py into the exact Allen layout).  Expectations come from docs/format.md §7, §8, §10, §11 and
AllenSDK 2.16.2's behaviour (docs/quirks.md); where the SDK answer for the unedited part of a file is the same,
it is taken from the SDK truth shipped beside the reference files.
"""

from __future__ import annotations

import math
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest

import nwb_variants as nv
from vbo import BehaviorOphysExperiment, BehaviorSession
from vbo.errors import InvalidDataError

EXPERIMENT_TRUTH = "truth/behavior_ophys_experiment_1091765022"
SESSION_TRUTH = "truth/behavior_session_1089912433"

FIXED_PRESENTATION_COLUMNS = [
    "stimulus_block", "stimulus_block_name", "image_index", "image_name", "movie_frame_index", "duration",
    "start_time", "end_time", "start_frame", "end_frame", "is_change", "is_image_novel", "omitted",
    "movie_repeat", "flashes_since_change", "trials_id",
]
PRESENTATION_COLUMNS = FIXED_PRESENTATION_COLUMNS + ["active", "stimulus_name", "is_sham_change"]
TRIALS_COLUMNS = [
    "start_time", "stop_time", "initial_image_name", "change_image_name", "is_change", "change_time", "go",
    "catch", "lick_times", "response_time", "response_latency", "reward_time", "reward_volume", "hit",
    "false_alarm", "miss", "correct_reject", "aborted", "auto_rewarded", "change_frame", "trial_length",
]
EYE_TRACKING_COLUMNS = [
    "timestamps", "cr_area", "eye_area", "pupil_area", "likely_blink", "pupil_area_raw", "cr_area_raw",
    "eye_area_raw", "cr_center_x", "cr_center_y", "cr_width", "cr_height", "cr_phi", "eye_center_x",
    "eye_center_y", "eye_width", "eye_height", "eye_phi", "pupil_center_x", "pupil_center_y", "pupil_width",
    "pupil_height", "pupil_phi",
]
PER_CELL_MEMBERS = [
    "cell_specimen_table", "roi_masks", "dff_traces", "events", "corrected_fluorescence_traces",
    "demixed_traces", "neuropil_traces",
]


def _causal_halfnormal(trace: np.ndarray, frame_rate: float, scale_seconds: float = 2 / 31, n_steps: int = 20):
    """docs/format.md §8.8: half-normal kernel (σ = scale × rate frames), normalised, causal, same length."""
    sigma = scale_seconds * frame_rate
    k = np.arange(n_steps)
    w = np.exp(-0.5 * (k / sigma) ** 2)
    w /= w.sum()
    return np.convolve(trace, w)[: len(trace)]


def _stack(column) -> np.ndarray:
    return np.stack([np.asarray(v) for v in column])


# ------------------------------------------------------------------------------------------------
# fixtures: one file per variant and test session
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def variant_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("nwb_variants")


def _variant(base: str, make, *args, **kwargs):
    """A session fixture: the variant ``make(file of fixture base, variant_dir, *args, **kwargs)``, built once."""

    @pytest.fixture(scope="session")
    def variant(request, variant_dir):
        return make(request.getfixturevalue(base), variant_dir, *args, **kwargs)
    return variant


NULL_ROWS = (0, 7, 42)
EVENT_DROP_ROWS = (1, 5, 50, 119)
INVALID_ROW = 3

passive_experiment_nwb = _variant("experiment_nwb", nv.make_passive, "passive_experiment.nwb")
passive_session_nwb = _variant("session_nwb", nv.make_passive, "passive_session.nwb")
gratings_nwb = _variant("session_nwb", nv.make_gratings)
mesoscope_nwb = _variant("experiment_nwb", nv.make_mesoscope)
mesoscope_long_ts_nwb = _variant("mesoscope_nwb", nv.make_timestamp_mismatch, "mesoscope_long_ts.nwb", extra_frames=5)
mesoscope_short_ts_nwb = _variant("mesoscope_nwb", nv.make_timestamp_mismatch, "mesoscope_short_ts.nwb",
                                  extra_frames=-5)
single_long_ts_nwb = _variant("experiment_nwb", nv.make_timestamp_mismatch, "single_long_ts.nwb", extra_frames=7)
single_short_ts_nwb = _variant("experiment_nwb", nv.make_timestamp_mismatch, "single_short_ts.nwb", extra_frames=-7)
no_eye_tracking_nwb = _variant("experiment_nwb", nv.make_no_eye_tracking)
v1_0_nwb = _variant("experiment_nwb", nv.make_v1_0)
null_csid_nwb = _variant("experiment_nwb", nv.make_null_cell_specimen_ids, rows=NULL_ROWS)
events_subset_nwb = _variant("experiment_nwb", nv.make_events_roi_subset, drop_rows=EVENT_DROP_ROWS)
nonragged_nwb = _variant("session_nwb", nv.make_nonragged_lick_times)
invalid_roi_nwb = _variant("experiment_nwb", nv.make_invalid_roi, row=INVALID_ROW)


@pytest.fixture(scope="session")
def experiment_truth(load_truth, shared_data):
    return load_truth(shared_data / "sdk-files" / EXPERIMENT_TRUTH)


@pytest.fixture(scope="session")
def session_truth(load_truth, shared_data):
    return load_truth(shared_data / "sdk-files" / SESSION_TRUTH)


ALL_VARIANTS = [
    "passive_experiment_nwb", "passive_session_nwb", "gratings_nwb", "mesoscope_nwb", "mesoscope_long_ts_nwb",
    "mesoscope_short_ts_nwb", "single_long_ts_nwb", "single_short_ts_nwb", "no_eye_tracking_nwb", "v1_0_nwb",
    "null_csid_nwb", "events_subset_nwb", "nonragged_nwb", "invalid_roi_nwb",
]


# ------------------------------------------------------------------------------------------------
# 0. the builders keep a valid DynamicTable / RoiResponseSeries layout
# ------------------------------------------------------------------------------------------------


def _check_dynamic_table(table: h5py.Group) -> None:
    n = len(table["id"])
    for col in nv.colnames(table):
        assert col in table, f"{table.name}: colnames lists missing column {col}"
        if f"{col}_index" in table:
            idx = table[f"{col}_index"]
            assert len(idx) == n, f"{table.name}/{col}_index"
            end = int(idx[-1]) if n else 0
            # AllenSDK's writer stores a column without any value as one empty string (docs/format.md §7.6)
            empty_text = (h5py.check_string_dtype(table[col].dtype) is not None and table[col].shape == (1,)
                          and table[col].asstr()[0] == "")
            stored = 0 if end == 0 and empty_text else len(table[col])
            assert end == stored, f"{table.name}/{col}: index ends at {end}, data has {len(table[col])}"
            assert table.file[idx.attrs["target"]].name == table[col].name, f"{table.name}/{col}_index target"
            assert np.all(np.diff(idx[:].astype(np.int64)) >= 0)
        else:
            assert table[col].shape[0] == n, f"{table.name}/{col} has {table[col].shape[0]} rows, id has {n}"
    for name, obj in table.items():
        if isinstance(obj, h5py.Dataset) and name not in ("id",) and not name.endswith("_index"):
            assert name in nv.colnames(table), f"{table.name}: dataset {name} not in colnames"


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_variant_file_layout_is_consistent(variant, request):
    path = request.getfixturevalue(variant)
    with h5py.File(path, "r") as f:
        tables = [f["intervals"][k] for k in f["intervals"]]
        if nv.CELL_TABLE in f:
            tables.append(f[nv.CELL_TABLE])
        for table in tables:
            _check_dynamic_table(table)
        if nv.CELL_TABLE in f:
            n_roi = len(f[nv.CELL_TABLE]["id"])
            for series in nv.OPHYS_FRAME_SERIES[:5]:
                if series not in f:
                    continue
                g = f[series]
                rois = g["rois"][:]
                assert g["data"].shape[1] == len(rois)
                assert rois.min() >= 0 and rois.max() < n_roi
                assert f[g["rois"].attrs["table"]].name == "/" + nv.CELL_TABLE
            for name in ("lambdas", "noise_stds"):
                assert len(f[nv.EVENTS][name]) == len(f[nv.EVENTS]["rois"])
        for tpl in f["stimulus/templates"].values():
            n_img = tpl["data"].shape[0]
            assert len(tpl["control_description"]) == len(tpl["control"]) == tpl["unwarped"].shape[0] == n_img


def test_gratings_variant_is_valid_nwb(gratings_nwb, passive_experiment_nwb):
    """The most heavily edited files still pass pynwb's schema validation."""
    pynwb = pytest.importorskip("pynwb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in (gratings_nwb, passive_experiment_nwb):
            errors = pynwb.validate(path=str(path))
            assert list(errors) == [], f"{path}: {errors}"


# ------------------------------------------------------------------------------------------------
# 1. passive sessions
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", params=["experiment", "session"])
def passive(request, passive_experiment_nwb, passive_session_nwb):
    """(path, opener) of a passive file: the experiment one as an experiment, the behavior one as a session."""
    if request.param == "experiment":
        return passive_experiment_nwb, BehaviorOphysExperiment
    return passive_session_nwb, BehaviorSession


def _trial_outcomes(path):
    with h5py.File(path, "r") as f:
        t = f[nv.TRIALS]
        return {c: t[c][:] for c in ("go", "catch", "hit", "miss", "false_alarm", "correct_reject", "aborted",
                                     "auto_rewarded")}


def test_passive_licks_and_rewards_are_empty_float_frames(passive):
    path, cls = passive
    with cls.from_nwb_path(path) as s:
        licks, rewards = s.licks, s.rewards
    assert isinstance(licks, pd.DataFrame) and len(licks) == 0
    assert list(licks.columns) == ["timestamps", "frame"]
    assert list(licks.dtypes.astype(str)) == ["float64", "float64"]
    assert isinstance(rewards, pd.DataFrame) and len(rewards) == 0
    assert list(rewards.columns) == ["volume", "timestamps", "auto_rewarded"]
    assert list(rewards.dtypes.astype(str)) == ["float64", "float64", "float64"]


def test_passive_session_type_and_task_parameters(passive):
    path, cls = passive
    with cls.from_nwb_path(path) as s:
        md, tp = s.metadata, s.task_parameters
    assert md["session_type"] == "OPHYS_2_images_A_passive"
    assert tp["session_type"] == "OPHYS_2_images_A_passive"
    assert tp["image_set"] == "images_A"
    assert len(tp) == 13


def test_passive_trials_have_no_licks_and_no_rewards(passive):
    path, cls = passive
    with h5py.File(path, "r") as f:
        n = len(f[nv.TRIALS]["id"])
    with cls.from_nwb_path(path) as s:
        trials = s.trials
    assert list(trials.columns) == TRIALS_COLUMNS
    assert len(trials) == n and trials.index.name == "trials_id"
    assert trials["reward_volume"].dtype == np.float64 and (trials["reward_volume"] == 0.0).all()
    assert all(np.asarray(v).size == 0 for v in trials["lick_times"])
    assert not trials["hit"].any() and not trials["false_alarm"].any()
    assert trials["response_time"].isna().all()


def test_passive_rolling_performance_has_zero_dprime(passive):
    path, cls = passive
    with cls.from_nwb_path(path) as s:
        df = s.get_rolling_performance_df()
        reward_rate = s.get_reward_rate()
        n = len(s.trials)
    assert list(df.columns) == ["reward_rate", "hit_rate_raw", "hit_rate", "false_alarm_rate_raw",
                                "false_alarm_rate", "rolling_dprime"]
    assert len(df) == n and df.index.name == "trials_id"
    aborted = _trial_outcomes(path)["aborted"]
    dprime = df["rolling_dprime"].to_numpy()
    # zeros on every non-aborted trial; aborted rows are NaN like every rate column
    # (docs/analysis.md §3)
    assert (~aborted).sum() > 0
    np.testing.assert_array_equal(dprime[~aborted], np.zeros((~aborted).sum()))
    assert np.isnan(dprime[aborted]).all()
    # no licks: nobody reaches the reward-rate latency rule; NaN for the first 10 trials
    assert np.isnan(reward_rate[:10]).all()
    np.testing.assert_array_equal(reward_rate[10:], np.zeros(n - 10))


def test_passive_performance_metrics(passive, session_truth):
    path, cls = passive
    o = _trial_outcomes(path)
    with cls.from_nwb_path(path) as s:
        pm = s.get_performance_metrics()
    assert list(pm) == list(session_truth["get_performance_metrics"])  # AllenSDK's keys, in its order
    assert pm["trial_count"] == len(o["go"])
    assert pm["go_trial_count"] == o["go"].sum()
    assert pm["catch_trial_count"] == o["catch"].sum()
    assert pm["hit_trial_count"] == 0 and pm["earned_reward_count"] == 0
    assert pm["false_alarm_trial_count"] == 0
    assert pm["miss_trial_count"] == o["miss"].sum() and pm["miss_trial_count"] > 0
    assert pm["correct_reject_trial_count"] == o["correct_reject"].sum()
    assert pm["auto_reward_count"] == o["auto_rewarded"].sum()
    assert pm["total_reward_count"] == 0
    assert pm["total_reward_volume"] == 0.0
    assert pm["maximum_reward_rate"] == 0.0
    assert pm["engaged_trial_count"] == 0
    assert pm["mean_hit_rate_uncorrected"] == 0.0
    assert pm["mean_false_alarm_rate_uncorrected"] == 0.0
    assert 0.0 < pm["mean_hit_rate"] < 0.5  # trial-count corrected 1/(2N) floor
    assert pm["mean_dprime"] == 0.0 and pm["max_dprime"] == 0.0
    for key in ("mean_hit_rate_engaged", "mean_false_alarm_rate_engaged", "mean_dprime_engaged",
                "max_dprime_engaged"):
        assert math.isnan(pm[key]), key


def test_passive_presentations_use_passive_block_name(passive):
    path, cls = passive
    with cls.from_nwb_path(path) as s:
        sp = s.stimulus_presentations
    assert list(sp.columns) == PRESENTATION_COLUMNS
    names = dict(zip(sp["stimulus_block"], sp["stimulus_block_name"]))
    assert names == {0: "initial_gray_screen_5min", 1: "change_detection_passive",
                     2: "post_behavior_gray_screen_5min", 3: "natural_movie_one"}


def test_passive_experiment_ophys_members_unaffected(passive_experiment_nwb, experiment_truth):
    with BehaviorOphysExperiment.from_nwb_path(passive_experiment_nwb) as exp:
        dff = exp.dff_traces
    assert list(dff["cell_roi_id"]) == list(experiment_truth["dff_traces"]["cell_roi_id"])
    np.testing.assert_array_equal(_stack(dff["dff"]), _stack(experiment_truth["dff_traces"]["dff"]))


# ------------------------------------------------------------------------------------------------
# 2. gratings training session
# ------------------------------------------------------------------------------------------------


GRATING_NAMES = [nv.grating_name(o) for o in nv.GRATING_ORIENTATIONS]


def test_gratings_presentation_columns(gratings_nwb):
    with BehaviorSession.from_nwb_path(gratings_nwb) as s:
        sp = s.stimulus_presentations
    assert list(sp.columns) == PRESENTATION_COLUMNS + ["orientation"]
    assert sp["orientation"].dtype == np.float64
    assert sp.index.name == "stimulus_presentations_id"
    assert list(sp.index) == list(range(len(sp)))


def test_gratings_presentation_values(gratings_nwb, session_truth):
    with BehaviorSession.from_nwb_path(gratings_nwb) as s:
        sp = s.stimulus_presentations
    truth = session_truth["stimulus_presentations"]
    assert len(sp) == len(truth)
    grating = sp["stimulus_name"] == "grating"
    assert grating.sum() == (truth["stimulus_block"] == 1).sum() == 790
    assert set(sp.loc[grating, "image_name"]) == set(GRATING_NAMES)
    assert (sp.loc[grating, "image_name"] == [nv.grating_name(o) for o in sp.loc[grating, "orientation"]]).all()
    assert set(sp.loc[grating, "image_index"]) == {0, 1, 2, 3}
    expected_index = [GRATING_NAMES.index(n) for n in sp.loc[grating, "image_name"]]
    assert list(sp.loc[grating, "image_index"]) == expected_index
    assert sp.loc[~grating, "orientation"].isna().all()
    assert set(sp.loc[~grating, "stimulus_name"]) == {"spontaneous", "natural_movie_one"}
    # the orientation sequence keeps the change structure of the images session
    np.testing.assert_array_equal(sp["is_change"].to_numpy(), truth["is_change"].to_numpy())
    np.testing.assert_array_equal(sp["flashes_since_change"].to_numpy(), truth["flashes_since_change"].to_numpy())
    np.testing.assert_allclose(sp["start_time"].to_numpy(), truth["start_time"].to_numpy())


def test_gratings_task_parameters_and_metadata(gratings_nwb):
    with BehaviorSession.from_nwb_path(gratings_nwb) as s:
        tp, md = s.task_parameters, s.metadata
    assert tp["image_set"] == "gratings"
    assert tp["stimulus"] == "grating"
    assert tp["stimulus_name"] == "grating"
    assert tp["session_type"] == "TRAINING_1_gratings"
    assert md["session_type"] == "TRAINING_1_gratings"


def test_gratings_stimulus_templates(gratings_nwb):
    warped, unwarped = nv.grating_images()
    with BehaviorSession.from_nwb_path(gratings_nwb) as s:
        st = s.stimulus_templates
    assert list(st.index) == GRATING_NAMES
    assert st.index.name == "image_name"
    assert set(st.columns) == {"unwarped", "warped"}
    for i, name in enumerate(GRATING_NAMES):
        w = np.asarray(st.loc[name, "warped"])
        u = np.asarray(st.loc[name, "unwarped"])
        assert w.dtype == np.uint8 and w.shape == (1200, 1920)
        np.testing.assert_array_equal(w, warped[i])
        np.testing.assert_array_equal(u, unwarped[i])
        assert u[0, 0] == 127.0
        assert set(np.unique(w)) == {0, 255}


def test_gratings_trials(gratings_nwb):
    with BehaviorSession.from_nwb_path(gratings_nwb) as s:
        trials = s.trials
    assert len(trials) == 77
    assert set(trials["initial_image_name"]) <= set(GRATING_NAMES)
    assert set(trials["change_image_name"]) <= set(GRATING_NAMES)
    changed = trials["is_change"]
    assert (trials.loc[changed, "initial_image_name"] != trials.loc[changed, "change_image_name"]).all()


# ------------------------------------------------------------------------------------------------
# 3. multi-plane (Mesoscope) experiment, timestamp/trace length checks
# ------------------------------------------------------------------------------------------------


def test_mesoscope_metadata(mesoscope_nwb):
    with BehaviorOphysExperiment.from_nwb_path(mesoscope_nwb) as exp:
        md = exp.metadata
    assert md["imaging_plane_group"] == 2 and isinstance(md["imaging_plane_group"], (int, np.integer))
    assert md["imaging_plane_group_count"] == 4
    assert md["ophys_frame_rate"] == 11.0
    assert md["equipment_name"] == "MESO.1"
    assert md["project_code"] == "VisualBehaviorMultiscope"
    assert len(md) == 28


def test_mesoscope_traces_are_per_plane(mesoscope_nwb):
    with h5py.File(mesoscope_nwb, "r") as f:
        ts = f[nv.DFF]["timestamps"][:]
        dff = f[nv.DFF]["data"][:]
    with BehaviorOphysExperiment.from_nwb_path(mesoscope_nwb) as exp:
        np.testing.assert_array_equal(exp.ophys_timestamps, ts)
        traces = exp.dff_traces
        motion = exp.motion_correction
    assert len(ts) == 6100
    np.testing.assert_array_equal(_stack(traces["dff"]), dff.T)
    assert len(motion) == 6100


def test_mesoscope_filtered_events_use_11_hz(mesoscope_nwb):
    with BehaviorOphysExperiment.from_nwb_path(mesoscope_nwb) as exp:
        ev = exp.events
    events = _stack(ev["events"])
    filtered = _stack(ev["filtered_events"])
    expected = np.stack([_causal_halfnormal(e, 11.0) for e in events])
    np.testing.assert_allclose(filtered, expected, rtol=1e-10, atol=1e-12)
    # and it is not the 31 Hz kernel of a single-plane experiment
    wrong = np.stack([_causal_halfnormal(e, 31.0) for e in events])
    assert np.abs(filtered - wrong).max() > 1e-3


def test_mesoscope_filtered_events_non_default_arguments(mesoscope_nwb):
    with BehaviorOphysExperiment.from_nwb_path(
        mesoscope_nwb, events_filter_scale_seconds=0.1, events_filter_n_time_steps=10
    ) as exp:
        ev = exp.events
    events = _stack(ev["events"])
    expected = np.stack([_causal_halfnormal(e, 11.0, 0.1, 10) for e in events])
    np.testing.assert_allclose(_stack(ev["filtered_events"]), expected, rtol=1e-10, atol=1e-12)


def test_single_plane_longer_timestamps_are_truncated(single_long_ts_nwb, experiment_nwb):
    with h5py.File(experiment_nwb, "r") as f:
        original = f[nv.DFF]["timestamps"][:]
    with h5py.File(single_long_ts_nwb, "r") as f:
        assert len(f[nv.DFF]["timestamps"]) == len(original) + 7
    with BehaviorOphysExperiment.from_nwb_path(single_long_ts_nwb) as exp:
        ts = exp.ophys_timestamps
        dff = exp.dff_traces
        ts_after = exp.ophys_timestamps
    np.testing.assert_array_equal(ts, original)
    np.testing.assert_array_equal(ts_after, original)
    assert {len(v) for v in dff["dff"]} == {len(original)}


@pytest.mark.parametrize("variant", ["single_short_ts_nwb", "mesoscope_long_ts_nwb", "mesoscope_short_ts_nwb"])
def test_timestamp_trace_length_mismatch_raises(variant, request):
    path = request.getfixturevalue(variant)
    with BehaviorOphysExperiment.from_nwb_path(path) as exp:
        with pytest.raises(InvalidDataError) as info:
            exp.dff_traces
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------------------
# 4. experiment without eye tracking
# ------------------------------------------------------------------------------------------------


def test_no_eye_tracking_gives_empty_frame_and_warning(no_eye_tracking_nwb, session_truth):
    with BehaviorOphysExperiment.from_nwb_path(no_eye_tracking_nwb) as exp:
        with pytest.warns(UserWarning, match="no eye tracking"):
            et = exp.eye_tracking
        geometry = exp.eye_tracking_rig_geometry
        md = exp.metadata
    assert isinstance(et, pd.DataFrame) and len(et) == 0
    assert list(et.columns) == EYE_TRACKING_COLUMNS
    assert et.index.name == "frame"
    # same dtypes as the SDK's empty frame for the behavior-only reference file
    assert list(et.dtypes.astype(str)) == list(session_truth["eye_tracking"].dtypes.astype(str))
    assert geometry == {}
    assert md["equipment_name"] == "CAM2P.4"


# ------------------------------------------------------------------------------------------------
# 5. older (v1.0.x) experiment
# ------------------------------------------------------------------------------------------------


def test_v1_0_missing_trace_interfaces(v1_0_nwb, experiment_truth):
    with BehaviorOphysExperiment.from_nwb_path(v1_0_nwb) as exp:
        demixed, neuropil = exp.demixed_traces, exp.neuropil_traces
        cf = exp.corrected_fluorescence_traces
    assert demixed is None
    assert neuropil is None
    assert list(cf.columns) == ["cell_roi_id", "corrected_fluorescence"]
    truth = experiment_truth["corrected_fluorescence_traces"]
    assert list(cf.index) == list(truth.index) and cf.index.name == "cell_specimen_id"
    np.testing.assert_array_equal(_stack(cf["corrected_fluorescence"]), _stack(truth["corrected_fluorescence"]))


def test_v1_0_single_block_presentations(v1_0_nwb, experiment_truth):
    with BehaviorOphysExperiment.from_nwb_path(v1_0_nwb) as exp:
        sp = exp.stimulus_presentations
    truth = experiment_truth["stimulus_presentations"]
    block = truth[truth["stimulus_block"] == 1].reset_index(drop=True)
    assert "stimulus_block" not in sp.columns and "stimulus_block_name" not in sp.columns
    assert "image_set" not in sp.columns
    assert len(sp) == len(block) == 311
    assert sp.index.name == "stimulus_presentations_id" and list(sp.index) == list(range(311))
    assert [c for c in PRESENTATION_COLUMNS if c in sp.columns] == [
        c for c in PRESENTATION_COLUMNS if c not in ("stimulus_block", "stimulus_block_name")
    ]
    np.testing.assert_allclose(sp["start_time"].to_numpy(), block["start_time"].to_numpy())
    assert list(sp["image_name"]) == list(block["image_name"])
    np.testing.assert_array_equal(sp["is_change"].to_numpy(), block["is_change"].to_numpy())
    # without the initial gray-screen row the count starts at 0 instead of 1 (docs/format.md §8.3)
    first_change = int(np.flatnonzero(block["is_change"].to_numpy())[0])
    expected_fsc = block["flashes_since_change"].to_numpy().copy()
    expected_fsc[:first_change] -= 1
    np.testing.assert_array_equal(sp["flashes_since_change"].to_numpy(), expected_fsc)
    assert str(sp["omitted"].dtype) == "boolean" and int(sp["omitted"].sum()) == 18


def test_v1_0_trials_load(v1_0_nwb, experiment_truth):
    with BehaviorOphysExperiment.from_nwb_path(v1_0_nwb) as exp:
        trials = exp.trials
    assert list(trials.columns) == TRIALS_COLUMNS
    assert len(trials) == 29
    pd.testing.assert_series_equal(trials["change_frame"], experiment_truth["trials"]["change_frame"],
                                   check_dtype=False)


# ------------------------------------------------------------------------------------------------
# 6. null cell_specimen_id
# ------------------------------------------------------------------------------------------------


def test_null_cell_specimen_ids_become_nan(null_csid_nwb, experiment_truth):
    """Q38: AllenSDK's list of ids and Nones makes a float64 index with NaN for the unmatched ROIs,
    in every per-cell member."""
    truth_index = list(experiment_truth["cell_specimen_table"].index)
    expected = np.array([np.nan if i in NULL_ROWS else float(v) for i, v in enumerate(truth_index)])
    with BehaviorOphysExperiment.from_nwb_path(null_csid_nwb) as exp:
        tables = {m: getattr(exp, m) for m in PER_CELL_MEMBERS}
        with pytest.warns(np.exceptions.VisibleDeprecationWarning):
            ids = exp.get_cell_specimen_ids()
    cst = tables["cell_specimen_table"]
    assert cst.index.name == "cell_specimen_id"
    assert cst.index.dtype == np.float64
    np.testing.assert_array_equal(cst.index.to_numpy(), expected)
    assert ids.dtype == np.float64
    np.testing.assert_array_equal(ids, expected)
    assert list(cst["cell_roi_id"]) == list(experiment_truth["cell_specimen_table"]["cell_roi_id"])
    for member, df in tables.items():
        assert df.index.name == "cell_specimen_id", member
        assert df.index.dtype == np.float64, member
        np.testing.assert_array_equal(df.index.to_numpy(), expected, err_msg=member)
        assert df.columns[0] == "cell_roi_id", member
        assert list(df["cell_roi_id"]) == list(cst["cell_roi_id"]), member


# ------------------------------------------------------------------------------------------------
# 7. events on a subset of the ROIs
# ------------------------------------------------------------------------------------------------


def test_events_with_all_rois_do_not_warn(experiment_nwb):
    """Control for the subset test below: the unmodified file's events raise no UserWarning."""
    with BehaviorOphysExperiment.from_nwb_path(experiment_nwb) as exp:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            ev = exp.events
    assert len(ev) == 120


def test_events_roi_subset_inner_join_with_warning(events_subset_nwb):
    with h5py.File(events_subset_nwb, "r") as f:
        roi_ids = f[nv.CELL_TABLE]["id"][:]
        rows = f[nv.EVENTS]["rois"][:]
        data = f[nv.EVENTS]["data"][:]
        lambdas = f[nv.EVENTS]["lambdas"][:]
        noise = f[nv.EVENTS]["noise_stds"][:]
    kept = [r for r in range(len(roi_ids)) if r not in EVENT_DROP_ROWS]
    with BehaviorOphysExperiment.from_nwb_path(events_subset_nwb) as exp:
        with pytest.warns(UserWarning):
            ev = exp.events
        dff = exp.dff_traces
        cst = exp.cell_specimen_table
    assert len(dff) == len(cst) == 120
    assert len(ev) == 116
    assert list(ev.columns) == ["cell_roi_id", "events", "filtered_events", "lambda", "noise_std"]
    assert list(ev["cell_roi_id"]) == [int(roi_ids[r]) for r in kept]  # cell-table order
    assert list(ev.index) == [cst.index[r] for r in kept]
    position = {int(roi_ids[r]): j for j, r in enumerate(rows)}
    for roi, trace, lam, ns in zip(ev["cell_roi_id"], ev["events"], ev["lambda"], ev["noise_std"]):
        j = position[int(roi)]
        np.testing.assert_array_equal(np.asarray(trace), data[:, j])
        assert lam == lambdas[j] and ns == noise[j]


# ------------------------------------------------------------------------------------------------
# 8. non-ragged lick_times
# ------------------------------------------------------------------------------------------------


def test_nonragged_lick_times_load(nonragged_nwb, session_truth):
    with h5py.File(nonragged_nwb, "r") as f:
        assert "lick_times_index" not in f[nv.TRIALS]
        stored = f[nv.TRIALS]["lick_times"][:]
    with BehaviorSession.from_nwb_path(nonragged_nwb) as s:
        trials = s.trials
    assert list(trials.columns) == TRIALS_COLUMNS
    assert len(trials) == len(stored) == 77
    for value, expected in zip(trials["lick_times"], stored):
        np.testing.assert_array_equal(np.atleast_1d(np.asarray(value, dtype=float)), [expected])
    pd.testing.assert_series_equal(trials["response_latency"], session_truth["trials"]["response_latency"])


# ------------------------------------------------------------------------------------------------
# 9. an invalid ROI
# ------------------------------------------------------------------------------------------------


def test_invalid_roi_excluded_by_default(invalid_roi_nwb):
    with h5py.File(invalid_roi_nwb, "r") as f:
        roi_ids = f[nv.CELL_TABLE]["id"][:]
        masks = f[nv.CELL_TABLE]["image_mask"][:]
    bad = int(roi_ids[INVALID_ROW])
    with BehaviorOphysExperiment.from_nwb_path(invalid_roi_nwb) as exp:
        cst = exp.cell_specimen_table
        members = {m: getattr(exp, m) for m in ("roi_masks", "dff_traces", "events",
                                                  "corrected_fluorescence_traces", "demixed_traces",
                                                  "neuropil_traces")}
        seg = np.asarray(exp.segmentation_mask_image)
    assert len(cst) == 119 and bad not in set(cst["cell_roi_id"])
    assert cst["valid_roi"].all()
    for name, df in members.items():
        assert list(df["cell_roi_id"]) == list(cst["cell_roi_id"]), name
    keep = np.ones(len(roi_ids), bool)
    keep[INVALID_ROW] = False
    # the SDK's recorded segmentation image is binary (1 where any retained ROI covers the pixel; the
    # truth for the reference file has no 2 where ROIs overlap), so the invalid ROI's own pixels vanish
    expected = masks[keep].any(axis=0).astype(np.int64)
    assert not np.array_equal(expected, masks.any(axis=0).astype(np.int64))
    np.testing.assert_array_equal(seg, expected)


def test_invalid_roi_kept_when_not_excluded(invalid_roi_nwb):
    with h5py.File(invalid_roi_nwb, "r") as f:
        roi_ids = f[nv.CELL_TABLE]["id"][:]
    with BehaviorOphysExperiment.from_nwb_path(invalid_roi_nwb, exclude_invalid_rois=False) as exp:
        cst = exp.cell_specimen_table
        dff = exp.dff_traces
    assert len(cst) == 120 and len(dff) == 120
    assert list(cst["cell_roi_id"]) == [int(r) for r in roi_ids]
    valid = cst.set_index("cell_roi_id")["valid_roi"]
    assert valid.loc[int(roi_ids[INVALID_ROW])] == False  # noqa: E712  (numpy bool)
    assert int(valid.sum()) == 119


# ------------------------------------------------------------------------------------------------
# neuropil traces: vbo returns the neuropil series (SDK bug Q35 returned the demixed one)
# ------------------------------------------------------------------------------------------------


def test_neuropil_traces_are_the_neuropil_series(experiment_nwb, experiment_truth):
    with h5py.File(experiment_nwb, "r") as f:
        neuropil = f["processing/ophys/neuropil_trace/traces/data"][:].T
        demixed = f["processing/ophys/demixed_trace/traces/data"][:].T
    assert np.abs(neuropil - demixed).max() > 1.0  # the two series differ in the file
    with BehaviorOphysExperiment.from_nwb_path(experiment_nwb) as exp:
        np_traces = exp.neuropil_traces
        dm_traces = exp.demixed_traces
    assert list(np_traces.columns) == ["cell_roi_id", "neuropil_trace"]
    np.testing.assert_array_equal(_stack(np_traces["neuropil_trace"]), neuropil)
    # SDK truth: its `neuropil_traces` is the demixed series under a `demixed_trace` column
    sdk = experiment_truth["neuropil_traces"]
    assert list(sdk.columns) == ["cell_roi_id", "demixed_trace"]
    np.testing.assert_array_equal(_stack(sdk["demixed_trace"]), demixed)
    assert not np.allclose(_stack(np_traces["neuropil_trace"]), _stack(sdk["demixed_trace"]))
    # demixed_traces itself still matches the SDK
    assert list(dm_traces.columns) == ["cell_roi_id", "demixed_trace"]
    np.testing.assert_array_equal(_stack(dm_traces["demixed_trace"]), _stack(experiment_truth["demixed_traces"]["demixed_trace"]))
