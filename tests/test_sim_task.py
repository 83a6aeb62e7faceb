"""The simulated behaviour of one session (vbo.simulate.task): invariants, reader consistency, planted truth."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import uuid

import numpy as np
import pandas as pd
import pytest

from vbo import behavior, derive
from vbo.simulate import task as sim
from vbo.simulate.plan import SCALES, SessionPlan, example_mouse, example_session
from vbo.simulate.task import simulate_behavior

TINY, SMALL, FULL = SCALES["tiny"], SCALES["small"], SCALES["full"]
OUTCOMES = ["hit", "miss", "false_alarm", "correct_reject", "auto_rewarded", "aborted"]


def _plan(session_type: str = "OPHYS_1_images_A", *, image_set: str | None = "A", passive: bool = False,
          imaging: bool = True, omissions: bool = True, novel: bool = False, equipment: str = "CAM2P.4",
          hit: float = 0.8, fa: float = 0.2, familiar: str = "A", novel_set: str = "B") -> SessionPlan:
    return example_session(
        session_type, example_mouse(familiar_image_set=familiar, novel_image_set=novel_set),
        date_of_acquisition=dt.datetime(2021, 3, 9, 9, 47, 12, 58000, tzinfo=dt.timezone.utc),
        equipment_name=equipment, image_set=image_set, passive=passive, is_imaging=imaging,
        has_omissions=omissions, novel_images=novel, hit_probability=hit, false_alarm_probability=fa)


PLANS = {
    "ophys1": _plan(),
    "passive": _plan("OPHYS_2_images_A_passive", passive=True, hit=0.0, fa=0.0),
    "habituation": _plan("OPHYS_0_images_A_habituation", imaging=False, omissions=False),
    "training0": _plan("TRAINING_0_gratings_autorewards_15min", image_set=None, imaging=False, omissions=False,
                       equipment="BEH.B-Box3", hit=0.3, fa=0.3),
    "gratings": _plan("TRAINING_2_gratings_flashed", image_set=None, imaging=False, omissions=False,
                      equipment="BEH.B-Box3", hit=0.6, fa=0.3),
    "training3": _plan("TRAINING_3_images_A_10uL_reward", imaging=False, omissions=False, equipment="BEH.D-Box2"),
    "epilogue": _plan("TRAINING_5_images_A_epilogue", imaging=False, omissions=False, equipment="BEH.B-Box1"),
    "novel_h": _plan("OPHYS_4_images_H", image_set="H", novel=True, equipment="MESO.1", familiar="G",
                     novel_set="H"),
}


@pytest.fixture(scope="module")
def sessions():
    """One small session of every kind (seeded)."""
    return {name: simulate_behavior(plan, SMALL, np.random.default_rng([7, i]))
            for i, (name, plan) in enumerate(PLANS.items())}


@pytest.fixture(scope="module")
def full_session():
    """A 60-min imaging session (scale full)."""
    return simulate_behavior(_plan(hit=0.75, fa=0.2), FULL, np.random.default_rng(11))


# --- determinism -------------------------------------------------------------------------------


def test_seeded_determinism():
    a, ta = simulate_behavior(PLANS["ophys1"], TINY, np.random.default_rng(3))
    b, tb = simulate_behavior(PLANS["ophys1"], TINY, np.random.default_rng(3))
    c, _ = simulate_behavior(PLANS["ophys1"], TINY, np.random.default_rng(4))
    pd.testing.assert_frame_equal(a.trials.drop(columns="lick_times"), b.trials.drop(columns="lick_times"))
    assert all(np.array_equal(x, y) for x, y in zip(a.trials["lick_times"], b.trials["lick_times"]))
    pd.testing.assert_frame_equal(a.presentations, b.presentations)
    pd.testing.assert_frame_equal(a.licks, b.licks)
    np.testing.assert_array_equal(a.stimulus_timestamps, b.stimulus_timestamps)
    np.testing.assert_array_equal(a.running_speed, b.running_speed)
    np.testing.assert_array_equal(a.eye_tracking.pupil.area_raw, b.eye_tracking.pupil.area_raw)
    assert a.metadata == b.metadata
    assert json.dumps(ta, sort_keys=True) == json.dumps(tb, sort_keys=True)
    assert not np.array_equal(a.stimulus_timestamps, c.stimulus_timestamps)
    assert a.metadata["behavior_session_uuid"] != c.metadata["behavior_session_uuid"]


def test_truth_is_json(sessions):
    for content, truth in sessions.values():
        text = json.dumps(truth, allow_nan=False)
        back = json.loads(text)
        for key in ("hit_probability", "false_alarm_probability", "engagement", "trial_counts", "change_times",
                    "omitted_flash_times", "image_sequence", "monitor_delay", "blocks"):
            assert key in back
        counts = back["trial_counts"]
        assert counts["trials"] == len(content.trials)
        assert counts["go"] == int(content.trials["go"].sum())
        assert counts["aborted"] == int(content.trials["aborted"].sum())
        assert len(back["engagement"]["trial_engaged"]) == len(content.trials)
        np.testing.assert_allclose(back["change_times"],
                                   content.trials.loc[content.trials["is_change"], "change_time"], atol=1e-6)


# --- trials ------------------------------------------------------------------------------------


def _check_trials(content, truth):
    trials = content.trials
    ts = content.stimulus_timestamps
    delay = truth["monitor_delay"]
    assert list(trials.columns) == ["start_time", "stop_time", "initial_image_name", "change_image_name", "is_change",
                                    "change_time", "go", "catch", "lick_times", "response_time", "response_latency",
                                    "reward_time", "reward_volume", "hit", "false_alarm", "miss", "correct_reject",
                                    "aborted", "auto_rewarded", "change_frame", "trial_length"]
    assert trials.index.name == "trials_id" and trials.index.dtype == np.int64
    assert (trials.index == np.arange(len(trials))).all()
    for c in ["is_change", "go", "catch"] + OUTCOMES:
        assert trials[c].dtype == bool, c
    assert trials["change_frame"].dtype == np.int64
    assert trials["initial_image_name"].dtype == object and trials["change_image_name"].dtype == object
    # exactly one outcome per trial
    assert (trials[OUTCOMES].sum(axis=1) == 1).all()
    aborted, auto, catch, go = (trials[c].to_numpy() for c in ("aborted", "auto_rewarded", "catch", "go"))
    assert (go == (~aborted & ~catch & ~auto)).all()
    assert not (catch & (aborted | auto)).any()
    assert (trials["hit"] | trials["miss"]).eq(go).all()
    assert (trials["false_alarm"] | trials["correct_reject"]).eq(catch).all()
    # change frame / time
    has_change = ~aborted
    assert ((trials["change_frame"] == -99) == aborted).all()
    assert trials.loc[aborted, "change_time"].isna().all()
    frames = trials.loc[has_change, "change_frame"].to_numpy()
    np.testing.assert_allclose(trials.loc[has_change, "change_time"], ts[frames] + delay, rtol=0, atol=1e-9)
    assert (trials.loc[has_change, "start_time"] <= trials.loc[has_change, "change_time"]).all()
    assert (trials.loc[has_change, "change_time"] < trials.loc[has_change, "stop_time"]).all()
    assert (trials["is_change"] == (go | auto)).all()
    assert ((trials["initial_image_name"] != trials["change_image_name"]) == trials["is_change"]).all()
    assert (trials["initial_image_name"].to_numpy()[1:] == trials["change_image_name"].to_numpy()[:-1]).all()
    # times: start/stop on the stimulus clock without delay, ordered, non-overlapping
    assert np.isin(trials["start_time"], ts).all() and np.isin(trials["stop_time"], ts).all()
    assert (trials["stop_time"] > trials["start_time"]).all()
    assert (trials["start_time"].to_numpy()[1:] > trials["stop_time"].to_numpy()[:-1]).all()
    np.testing.assert_allclose(trials["trial_length"], trials["stop_time"] - trials["start_time"])
    # licks, responses
    first = np.array([x[0] if len(x) else np.nan for x in trials["lick_times"]])
    np.testing.assert_array_equal(trials["response_time"], np.where(aborted, np.nan, first))
    latency = trials["response_latency"].to_numpy()
    assert np.isnan(latency[aborted]).all()
    no_lick = np.isnan(first) & ~aborted
    assert np.isinf(latency[no_lick]).all()
    licked = ~np.isnan(first) & ~aborted
    np.testing.assert_allclose(latency[licked], first[licked] - trials["change_time"].to_numpy()[licked])
    in_window = (latency > 0.15) & (latency < 0.75)
    responded = (trials["hit"] | trials["false_alarm"]).to_numpy()
    assert in_window[responded].all()
    assert not in_window[(trials["miss"] | trials["correct_reject"]).to_numpy()].any()
    # aborted trials have a lick before their (unscheduled) change: the first lick ends the trial
    assert all(len(x) > 0 and x[0] < stop for x, stop in zip(trials.loc[aborted, "lick_times"],
                                                             trials.loc[aborted, "stop_time"]))
    # rewards
    params = content.task_parameters
    hit = trials["hit"].to_numpy()
    np.testing.assert_array_equal(trials.loc[hit, "reward_time"], trials.loc[hit, "response_time"])
    assert (trials.loc[hit, "reward_volume"] == params["reward_volume"]).all()
    assert (trials.loc[auto, "reward_volume"] == params["auto_reward_volume"]).all()
    unrewarded = ~(hit | auto)
    assert (trials.loc[unrewarded, "reward_volume"] == 0).all() and trials.loc[unrewarded, "reward_time"].isna().all()
    rewarded = ~np.isnan(trials["reward_time"].to_numpy())
    assert ((trials["reward_time"] >= trials["start_time"]) & (trials["reward_time"] <= trials["stop_time"]))[
        rewarded].all()


def _check_lick_assignment(content):
    """lick_times = licks whose frame is in (start frame, next start frame]; the last trial up to the movie."""
    trials = content.trials
    if content.licks is None:
        assert all(len(x) == 0 for x in trials["lick_times"])
        return
    ts = content.stimulus_timestamps
    start_frames = np.searchsorted(ts, trials["start_time"].to_numpy())
    movie = content.presentations.loc[content.presentations["stimulus_block"] == 3, "start_frame"]
    bounds = np.append(start_frames[1:], movie.min() - 1 if len(movie) else np.iinfo(np.int64).max)
    frames = content.licks["frame"].to_numpy()
    for lo, hi, cell in zip(start_frames, bounds, trials["lick_times"]):
        np.testing.assert_array_equal(cell, ts[frames[(frames > lo) & (frames <= hi)]])
    np.testing.assert_array_equal(content.licks["timestamps"], ts[frames])


@pytest.mark.parametrize("name", list(PLANS))
def test_trial_invariants(sessions, name):
    content, truth = sessions[name]
    assert len(content.trials) > 20
    _check_trials(content, truth)
    _check_lick_assignment(content)


def test_licks_and_rewards_tables(sessions):
    content, _ = sessions["ophys1"]
    licks, rewards, trials = content.licks, content.rewards, content.trials
    assert list(licks.columns) == ["timestamps", "frame"] and licks["frame"].dtype == np.int64
    assert (np.diff(licks["frame"]) > 0).all()
    assert list(rewards.columns) == ["volume", "timestamps", "auto_rewarded"] and rewards["auto_rewarded"].dtype == bool
    assert math.isclose(rewards["volume"].sum(), trials["reward_volume"].sum())
    assert rewards["auto_rewarded"].sum() == trials["auto_rewarded"].sum() == sim.AUTO_REWARDED_TRIALS
    assert set(rewards["volume"]) == {0.005, 0.007}
    # licks come in bouts: intervals of 7-10 stimulus frames inside a bout
    gaps = np.diff(licks["frame"])
    assert np.isin(gaps[gaps <= 10], sim.LICK_INTERVAL_FRAMES).all()
    assert (gaps <= 10).mean() > 0.5
    assert np.isin(np.diff(content.stimulus_timestamps[:1000]).round(2), [0.02, 0.03]).all()


def test_training_stages(sessions):
    t0, truth0 = sessions["training0"]
    trials = t0.trials
    assert (trials["auto_rewarded"] == ~trials["aborted"]).all()  # TRAINING_0: every trial auto-rewarded
    # the early training stages are the change-detection block alone: no gray screens, no movie epilogue
    presentations = t0.presentations
    assert set(presentations["stimulus_block"]) == {0}
    assert set(presentations["stimulus_block_name"]) == {"change_detection_behavior"}
    assert set(presentations["stimulus_name"]) == {"grating"} and (presentations["movie_frame_index"] == -99).all()
    assert presentations["active"].all()
    assert presentations["end_time"].max() - presentations["start_time"].min() <= 900 + 1
    assert t0.stimulus_timestamps[-1] - t0.stimulus_timestamps[0] <= 900 + 1
    for name in ("epilogue", "habituation", "ophys1"):  # TRAINING_5 and the imaging rig: gray, task, gray, movie
        blocks = sessions[name][0].presentations.groupby("stimulus_block")["stimulus_name"].first()
        assert blocks.loc[0] == blocks.loc[2] == "spontaneous" and blocks.loc[3] == "natural_movie_one", name
    t3, _ = sessions["training3"]
    assert t3.task_parameters["reward_volume"] == 0.010
    assert (t3.trials.loc[t3.trials["hit"], "reward_volume"] == 0.010).all()
    assert t3.trials["auto_rewarded"].sum() == 5


def test_passive_session(sessions):
    content, truth = sessions["passive"]
    assert content.licks is None and content.rewards is None
    trials = content.trials
    assert all(len(x) == 0 for x in trials["lick_times"])
    assert (trials["reward_volume"] == 0).all()
    assert not (trials["hit"] | trials["false_alarm"] | trials["aborted"] | trials["auto_rewarded"]).any()
    assert np.isinf(trials["response_latency"]).all()
    rolling = behavior.rolling_performance(trials, content.task_parameters["response_window_sec"][0])
    assert (rolling["rolling_dprime"] == 0).all()
    assert set(content.presentations["stimulus_block_name"]) == {
        "initial_gray_screen_5min", "change_detection_passive", "post_behavior_gray_screen_5min", "natural_movie_one"}
    assert truth["engagement"]["disengage_time"] is None


# --- presentations -----------------------------------------------------------------------------

FIXED = list(derive.PRESENTATION_FIXED_ORDER)


@pytest.mark.parametrize("name", list(PLANS))
def test_presentations_shape_and_dtypes(sessions, name):
    content, truth = sessions[name]
    p = content.presentations
    extra = ["orientation", "image_set"] if name in ("training0", "gratings") else ["image_set"]
    assert list(p.columns) == FIXED + extra
    assert p.index.name == "stimulus_presentations_id" and (p.index == np.arange(len(p))).all()
    ints = ["stimulus_block", "image_index", "movie_frame_index", "start_frame", "end_frame", "movie_repeat",
            "flashes_since_change", "trials_id"]
    for c in ints:
        assert p[c].dtype == np.int64, c
    for c in ["is_change", "active", "is_sham_change"]:
        assert p[c].dtype == bool, c
    for c in ["omitted", "is_image_novel"]:
        assert isinstance(p[c].dtype, pd.BooleanDtype), c
    for c in ["stimulus_block_name", "image_name", "stimulus_name", "image_set"]:
        assert p[c].dtype == object, c
    assert (np.diff(p["start_time"]) > 0).all()
    np.testing.assert_allclose(p["duration"], p["end_time"] - p["start_time"])
    image_rows = p["stimulus_block_name"].str.startswith("change_detection")
    assert image_rows.any()
    assert p.loc[~image_rows, "image_name"].isna().all() and p.loc[image_rows, "image_name"].notna().all()
    assert p.loc[~image_rows, "omitted"].isna().all() and p.loc[image_rows, "omitted"].notna().all()
    assert (p.loc[~image_rows, "image_index"] == -99).all()
    assert (p.loc[image_rows, "movie_frame_index"] == -99).all()
    assert p.loc[image_rows, "image_set"].notna().all() and p.loc[~image_rows, "image_set"].isna().all()


@pytest.mark.parametrize("name", list(PLANS))
def test_presentations_match_reader_recomputation(sessions, name):
    """Reading the table back through the reader's algorithm (format.md §8.3) changes nothing."""
    content, _ = sessions[name]
    p = content.presentations.drop(columns="image_set")
    stored = []
    for _, rows in p.groupby("stimulus_name", sort=True):  # as the writer splits and the reader concatenates
        rows = rows.reset_index(drop=True).rename(columns={"end_time": "stop_time"})
        rows = rows[[c for c in rows.columns if not rows[c].isna().all()]]
        for c in ("omitted", "is_image_novel"):
            if c in rows:
                rows[c] = rows[c].astype("Float64").astype(float)
        rows = rows.drop(columns=["is_change", "flashes_since_change"])  # recomputed
        stored.append(rows)
    back = derive.stimulus_presentations(stored, content.trials)
    pd.testing.assert_frame_equal(back, p)


def test_flash_timing_and_monitor_delay(sessions):
    content, truth = sessions["ophys1"]
    p, ts, delay = content.presentations, content.stimulus_timestamps, truth["monitor_delay"]
    assert delay == sim.MONITOR_DELAY["CAM2P.4"]
    flashes = p[p["stimulus_block"] == 1]
    assert (np.diff(flashes["start_frame"]) == 45).all()
    shown = flashes[~flashes["omitted"].astype(bool)]
    assert (shown["end_frame"] - shown["start_frame"] == 15).all()
    np.testing.assert_allclose(flashes["start_time"], ts[flashes["start_frame"]] + delay, atol=1e-9)
    np.testing.assert_allclose(shown["end_time"], ts[shown["end_frame"]] + delay, atol=1e-9)
    assert shown["duration"].between(0.24, 0.27).all()
    omitted = flashes[flashes["omitted"].astype(bool)]
    assert (omitted["duration"] == 0.25).all() and (omitted["end_frame"] - omitted["start_frame"] == 15).all()
    assert (omitted["image_name"] == "omitted").all() and (omitted["image_index"] == 8).all()
    assert omitted["is_image_novel"].isna().all()
    # change_time is the start of the change flash; catch trials' sham change is flagged on its flash
    trials = content.trials
    changes = trials[trials["is_change"]]
    by_frame = flashes.set_index("start_frame")
    np.testing.assert_allclose(by_frame.loc[changes["change_frame"], "start_time"], changes["change_time"])
    assert by_frame.loc[changes["change_frame"], "is_change"].all()
    assert set(flashes.loc[flashes["is_change"], "start_frame"]) == set(changes["change_frame"])
    sham = trials.loc[trials["catch"], "change_frame"]
    assert set(flashes.loc[flashes["is_sham_change"], "start_frame"]) == set(sham)
    assert (by_frame.loc[changes["change_frame"], "image_name"].to_numpy() == changes["change_image_name"]).all()
    # stimulus clock: imaging sessions start at 8-9 s, behavior-only at 0; ~60 Hz
    assert 8.0 <= ts[0] <= 9.0
    assert abs(np.median(np.diff(ts)) - 1 / 60) < 1e-4
    habituation, htruth = sessions["habituation"]
    assert habituation.stimulus_timestamps[0] == 0.0 and htruth["monitor_delay"] == sim.BEHAVIOR_ONLY_MONITOR_DELAY


def test_trials_id_and_active(sessions):
    content, _ = sessions["ophys1"]
    p, trials = content.presentations, content.trials
    flashes = p[p["stimulus_block"] == 1]
    inside = flashes[flashes["start_time"] < trials["stop_time"].max()]
    ids = inside["trials_id"].to_numpy()
    starts = trials["start_time"].to_numpy()
    assert (starts[ids] < inside["start_time"].to_numpy()).all()
    after = np.minimum(ids + 1, len(trials) - 1)
    assert ((ids == len(trials) - 1) | (inside["start_time"].to_numpy() <= starts[after])).all()
    assert (flashes.loc[flashes["start_time"] >= trials["stop_time"].max(), "trials_id"] == -99).all()
    assert (p.loc[p["stimulus_block"] != 1, "trials_id"] == -99).all()
    assert p.loc[p["stimulus_block"] == 1, "active"].all() and not p.loc[p["stimulus_block"] != 1, "active"].any()


def test_omitted_flash_rules(sessions, full_session):
    for name, (content, _truth) in sessions.items():
        p = content.presentations
        flashes = p[p["stimulus_block"] == 1].reset_index(drop=True)
        omitted = flashes["omitted"].to_numpy(bool)
        if not PLANS[name].has_omissions:
            assert not omitted.any(), name
            assert math.isnan(content.task_parameters["omitted_flash_fraction"])
            continue
        assert content.task_parameters["omitted_flash_fraction"] == 0.05
        special = (flashes["is_change"] | flashes["is_sham_change"]).to_numpy()
        assert not (omitted & special).any()
        assert not (omitted[:-1] & special[1:]).any()  # the flash before a (sham) change is never omitted
        assert not omitted[0]
    content, truth = full_session
    flashes = content.presentations[content.presentations["stimulus_block"] == 1]
    n, k = len(flashes), int(flashes["omitted"].sum())
    assert abs(k / n - 0.05) < 4 * math.sqrt(0.05 * 0.95 / n)
    np.testing.assert_allclose(truth["omitted_flash_times"], flashes.loc[flashes["omitted"].astype(bool),
                                                                         "start_time"], atol=1e-6)
    shown = n - k
    assert content.task_parameters["n_stimulus_frames"] == 15 * shown


def test_block_structure(full_session, sessions):
    content, truth = full_session
    p = content.presentations
    names = p.groupby("stimulus_block")["stimulus_block_name"].unique().map(list).to_dict()
    assert names == {0: ["initial_gray_screen_5min"], 1: ["change_detection_behavior"],
                     2: ["post_behavior_gray_screen_5min"], 3: ["natural_movie_one"]}
    stim = p.groupby("stimulus_block")["stimulus_name"].unique().map(list).to_dict()
    assert stim == {0: ["spontaneous"], 1: ["Natural_Images_Lum_Matched_set_training_2017"], 2: ["spontaneous"],
                    3: ["natural_movie_one"]}
    blocks = [p[p["stimulus_block"] == b] for b in range(4)]
    assert len(blocks[0]) == len(blocks[2]) == 1
    assert blocks[0]["start_time"].iloc[0] == 0.0 and blocks[0]["start_frame"].iloc[0] == 0
    for a, b in zip(blocks[:-1], blocks[1:]):
        assert a["end_time"].iloc[-1] == b["start_time"].iloc[0]
    ts = content.stimulus_timestamps
    assert abs(blocks[0]["end_time"].iloc[0] - ts[0] - FULL.initial_gray_s) < 1.0
    assert abs(blocks[1]["end_time"].iloc[-1] - blocks[1]["start_time"].iloc[0] - FULL.task_s) < 1.0
    assert abs(blocks[2]["duration"].iloc[0] - FULL.final_gray_s) < 1.0
    movie = blocks[3]
    assert len(movie) == FULL.movie_repeats * FULL.movie_frames
    assert (movie["movie_frame_index"].to_numpy() == np.tile(np.arange(FULL.movie_frames), FULL.movie_repeats)).all()
    assert (movie["movie_repeat"].to_numpy() == np.repeat(np.arange(FULL.movie_repeats), FULL.movie_frames)).all()
    assert (np.diff(movie["start_frame"]) == 2).all() and movie["end_frame"].iloc[-1] == len(ts) - 1
    assert movie["duration"].iloc[:-1].between(0.03, 0.04).all()
    assert len(ts) == len(content.running_timestamps) == len(content.running_speed)


def test_gratings_session(sessions):
    content, _ = sessions["gratings"]
    p = content.presentations
    flashes = p[p["stimulus_block"] == 0]  # TRAINING_2: the task block alone
    assert len(flashes) == len(p)
    assert set(flashes["image_name"]) == {"gratings_0.0", "gratings_90.0"}
    assert set(flashes["stimulus_name"]) == {"grating"} and set(flashes["image_set"]) == {"grating"}
    np.testing.assert_array_equal(flashes["orientation"], flashes["image_name"].str[9:].astype(float))
    assert set(flashes["image_index"]) == {0, 1}
    [template] = content.templates
    assert template.name == "grating"
    assert template.image_names == ["gratings_0.0", "gratings_90.0", "gratings_180.0", "gratings_270.0"]
    assert template.warped.shape == (4, *SMALL.template_shape) and template.warped.dtype == np.uint8
    # prepared like the image sets: NaN where the mouse cannot see, curved by the monitor warp
    assert np.isnan(template.unwarped[:, 0, 0]).all()
    assert template.warped.min() < 20 and template.warped.max() > 235
    _assert_straight_then_curved(template)
    params = content.task_parameters
    assert params["stimulus"] == "grating" and params["stimulus_name"] == "grating"
    assert params["reward_volume"] == 0.010
    assert set(content.trials["initial_image_name"]) <= {"gratings_0.0", "gratings_90.0"}


def _bar_edge(image: np.ndarray, row: int, start: int) -> float:
    """Column (sub-pixel) where row ``row`` of a grating first rises through mid-gray right of ``start``."""
    line = image[row].astype(float) - 127.0
    for c in range(start, len(line) - 1):
        if line[c] < 0 <= line[c + 1]:
            return c + (-line[c]) / (line[c + 1] - line[c])
    return np.nan


def _assert_straight_then_curved(template) -> None:
    """The 0° grating's bars are straight lines in ``unwarped`` and curves in ``warped``: a bar edge followed
    down the rows stays on one column unwarped, and departs from any straight line by pixels once warped."""
    rows_total, cols_total = template.warped.shape[1:]
    rows = np.arange(rows_total // 10, rows_total - rows_total // 10, max(rows_total // 30, 1))
    start = int(cols_total * 0.8)
    straight = np.array([_bar_edge(template.unwarped[0], r, cols_total // 2) for r in rows])
    assert np.isfinite(straight).sum() >= 3 and np.nanmax(straight) - np.nanmin(straight) < 0.5
    edge = np.array([_bar_edge(template.warped[0], r, start) for r in rows])
    assert np.isfinite(edge).all()
    line = np.polyval(np.polyfit(rows, edge, 1), rows)
    assert np.abs(edge - line).max() > 0.01 * cols_total  # curved, not merely tilted


def test_templates_deterministic_per_set(sessions):
    a = sessions["ophys1"][0].templates[0]
    again = simulate_behavior(_plan("OPHYS_3_images_A"), SMALL, np.random.default_rng(99))[0].templates[0]
    assert a.name == "Natural_Images_Lum_Matched_set_training_2017.07.14"
    assert a.image_names == ["im065", "im061", "im062", "im063", "im066", "im069", "im077", "im085"]
    np.testing.assert_array_equal(a.warped, again.warped)
    np.testing.assert_array_equal(a.unwarped, again.unwarped)
    assert a.warped.shape == (8, *SMALL.template_shape) and a.warped.dtype == np.uint8
    assert a.unwarped.dtype == np.float64
    visible = ~np.isnan(a.unwarped[0])
    assert 0.3 < visible.mean() < 0.6 and not visible[0, 0] and visible[visible.shape[0] // 2, visible.shape[1] // 2]
    assert np.nanmin(a.unwarped) >= 0 and np.nanmax(a.unwarped) <= 255
    h = sessions["novel_h"][0].templates[0]
    assert h.name.startswith("Natural_Images_Lum_Matched_set_ophys_H") and not np.array_equal(h.warped, a.warped)
    names = {"A": [f"im{i:03d}" for i in range(8)]}
    custom = simulate_behavior(PLANS["ophys1"], TINY, np.random.default_rng(0), image_names=names)[0]
    assert custom.templates[0].image_names == names["A"]
    assert set(custom.trials["initial_image_name"]) <= set(names["A"])


def test_novel_images(sessions):
    content, truth = sessions["novel_h"]
    p = content.presentations
    shown = p[(p["stimulus_block"] == 1) & ~p["omitted"].fillna(True)]
    shared = set(sim.IMAGE_SETS["G"][2]) & set(sim.IMAGE_SETS["H"][2])
    novel = shown["is_image_novel"].astype(bool)
    assert (novel == ~shown["image_name"].isin(shared)).all()
    assert novel.any() and (~novel).any()
    assert sorted(truth["image_sequence"]["novel_images"]) == sorted(set(sim.IMAGE_SETS["H"][2]) - shared)
    familiar = sessions["ophys1"][0].presentations
    assert not familiar["is_image_novel"].fillna(False).any()
    assert content.stimulus_timestamps[0] >= 8 and truth["monitor_delay"] == sim.MONITOR_DELAY["MESO.1"]


# --- planted behaviour ---------------------------------------------------------------------------


def test_planted_rates_recovered(full_session):
    content, truth = full_session
    trials = content.trials
    engaged = np.asarray(truth["engagement"]["trial_engaged"])
    go, catch = trials["go"].to_numpy() & engaged, trials["catch"].to_numpy() & engaged
    n_go, n_catch = int(go.sum()), int(catch.sum())
    assert n_go > 150 and n_catch > 25
    for observed, planted, n in ((trials["hit"].to_numpy()[go].mean(), truth["hit_probability"], n_go),
                                 (trials["false_alarm"].to_numpy()[catch].mean(), truth["false_alarm_probability"],
                                  n_catch)):
        assert abs(observed - planted) < 4 * math.sqrt(planted * (1 - planted) / n), (observed, planted, n)
    assert truth["hit_probability"] == 0.75 and truth["false_alarm_probability"] == 0.2
    # without the truth flags: the first half of the task is engaged (the disengagement comes later)
    early = (trials["start_time"] < truth["engagement"]["disengage_time"] - 5 * truth["engagement"]["tau_s"]).to_numpy()
    assert engaged[early].all()
    counts = truth["trial_counts"]
    assert counts["auto_rewarded"] == 5 and 0.1 < counts["aborted"] / counts["trials"] < 0.35
    assert 0.1 < counts["catch"] / (counts["go"] + counts["catch"]) < 0.22
    assert 400 < len(trials) < 600


def test_engagement_falls_late(full_session):
    content, truth = full_session
    trials = content.trials
    rate = behavior.reward_rate(trials, content.task_parameters["response_window_sec"][0])
    n = len(trials)
    assert np.nanmean(rate[10: n // 3]) > 2.0
    assert np.nanmean(rate[-30:]) < 2.0
    engaged = np.asarray(truth["engagement"]["trial_engaged"])
    assert engaged[: n // 3].mean() > 0.95 and engaged[-30:].mean() < 0.2
    # running is faster when disengaged
    assert truth["running"]["mean_speed_disengaged"] > truth["running"]["mean_speed_engaged"]


def test_running_streams(full_session):
    content, _ = full_session
    n = len(content.stimulus_timestamps)
    for name in ("running_speed", "running_speed_unfiltered", "running_dx", "v_in", "v_sig"):
        assert len(getattr(content, name)) == n, name
    assert content.running_dx.dtype == np.float32
    np.testing.assert_array_equal(content.running_timestamps, content.stimulus_timestamps)
    speed, raw = content.running_speed, content.running_speed_unfiltered
    assert 3 < speed.mean() < 40 and speed.mean() > -1
    assert np.std(np.diff(speed)) < np.std(np.diff(raw))  # low-pass filtered
    assert ((content.v_sig >= 0) & (content.v_sig <= content.v_in)).all() and 4.8 < content.v_in.mean() < 5.0


def test_eye_tracking(sessions):
    content, truth = sessions["ophys1"]
    eye = content.eye_tracking
    n = len(eye.timestamps)
    assert abs(np.median(np.diff(eye.timestamps)) - 1 / 30) < 1e-3
    assert eye.timestamps[0] < content.stimulus_timestamps[0] and eye.timestamps[-1] > content.stimulus_timestamps[-1]
    for e in (eye.eye, eye.pupil, eye.corneal_reflection):
        assert e.center.shape == (n, 2) and len(e.area) == len(e.width) == len(e.angle) == n
    assert 25 < np.nanmedian(eye.pupil.width) < 40 and 140 < np.nanmedian(eye.eye.width) < 160
    np.testing.assert_allclose(eye.eye.area_raw, np.pi * eye.eye.width * eye.eye.height)
    np.testing.assert_allclose(eye.pupil.area_raw, np.pi * np.fmax(eye.pupil.width, eye.pupil.height) ** 2)
    blinks = derive.likely_blinks(eye.eye.area_raw, eye.pupil.area_raw)
    np.testing.assert_array_equal(blinks, eye.likely_blink)
    assert 0.005 < blinks.mean() < 0.1
    assert np.isnan(eye.pupil.area_raw).any() and np.isnan(eye.eye.area).sum() >= np.isnan(eye.pupil.area_raw).sum()
    assert content.rig_geometry.equipment == "CAM2P.4" and len(content.rig_geometry.camera_position) == 3
    for name in ("habituation", "training3", "gratings"):
        other = sessions[name][0]
        assert other.eye_tracking is None and other.rig_geometry is None


def test_metadata_subject_parameters(sessions):
    content, _ = sessions["ophys1"]
    assert content.identifier == "1091562010" and content.session_type == "OPHYS_1_images_A"
    assert content.session_start_time == PLANS["ophys1"].date_of_acquisition
    meta = content.metadata
    assert uuid.UUID(meta["behavior_session_uuid"]).version == 4
    assert meta["stimulus_frame_rate"] == 60.0 and meta["project_code"] == "VisualBehavior"
    assert content.subject["age"] == "P140D" and content.subject["subject_id"] == "453911"
    assert content.subject["species"] == "Mus musculus"
    params = content.task_parameters
    assert list(params) == sorted(params) and len(params) == 12
    assert params["response_window_sec"] == [0.15, 0.75] and params["blank_duration_sec"] == [0.5, 0.5]
    assert params["stimulus_name"] == "Natural_Images_Lum_Matched_set_training_2017"
    descriptions = {name: s[0].experiment_description for name, s in sessions.items()}
    assert len(set(descriptions.values())) == len(descriptions)
    assert "passive" in descriptions["passive"] and "15 minutes" in descriptions["training0"]


# --- round trip through the NWB writer -----------------------------------------------------------


@pytest.mark.parametrize("name", ["ophys1", "passive", "gratings"])
def test_write_read_round_trip(tmp_path, name):
    import warnings

    import vbo
    from vbo.nwb.write import write_nwb

    content, _ = simulate_behavior(PLANS[name], TINY, np.random.default_rng(5))
    path = write_nwb(content, tmp_path / f"{name}.nwb")
    with vbo.BehaviorSession.from_nwb_path(path) as session:
        trials = session.trials
        pd.testing.assert_frame_equal(trials.drop(columns="lick_times"), content.trials.drop(columns="lick_times"))
        assert all(np.array_equal(a, b) for a, b in zip(trials["lick_times"], content.trials["lick_times"]))
        pd.testing.assert_frame_equal(session.stimulus_presentations, content.presentations.drop(columns="image_set"))
        np.testing.assert_array_equal(session.stimulus_timestamps, content.stimulus_timestamps)
        if content.licks is None:
            assert session.licks.empty and session.rewards.empty
        else:
            pd.testing.assert_frame_equal(session.licks, content.licks)
            pd.testing.assert_frame_equal(session.rewards, content.rewards)
        pd.testing.assert_frame_equal(session.running_speed, pd.DataFrame(
            {"timestamps": content.running_timestamps, "speed": content.running_speed}))
        pd.testing.assert_frame_equal(session.raw_running_speed, pd.DataFrame(
            {"timestamps": content.running_timestamps, "speed": content.running_speed_unfiltered}))
        expected = dict(content.task_parameters, image_set=derive.image_set(content.session_type))
        got = session.task_parameters
        assert list(got) == sorted(expected)
        for key, value in expected.items():
            assert got[key] == value or (isinstance(value, float) and math.isnan(value) and math.isnan(got[key])), key
        meta = session.metadata
        for key in ("behavior_session_id", "equipment_name", "project_code", "session_type", "stimulus_frame_rate"):
            assert meta[key] == content.metadata[key], key
        assert str(meta["behavior_session_uuid"]) == content.metadata["behavior_session_uuid"]
        assert meta["date_of_acquisition"] == content.session_start_time
        assert meta["age_in_days"] == int(content.subject["age"][1:-1])
        assert meta["mouse_id"] == content.subject["subject_id"]
        assert meta["driver_line"] == sorted(content.subject["driver_line"])
        templates = session.stimulus_templates
        assert list(templates.index) == content.templates[0].image_names
        np.testing.assert_array_equal(np.stack(templates["warped"]), content.templates[0].warped)
        performance = session.get_performance_metrics()
        assert performance["trial_count"] == len(content.trials)
        if content.eye_tracking is not None:
            eye = session.eye_tracking
            assert len(eye) == len(content.eye_tracking.timestamps)
            np.testing.assert_array_equal(eye["likely_blink"], content.eye_tracking.likely_blink)
            assert session.eye_tracking_rig_geometry["equipment"] == content.rig_geometry.equipment
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert session.eye_tracking.empty
            assert session.eye_tracking_rig_geometry == {}


def test_plan_fields_unchanged():
    """task.py uses only the fields plan.py defines (no extra fields were needed)."""
    names = {f.name for f in dataclasses.fields(SessionPlan)}
    assert {"hit_probability", "false_alarm_probability", "has_omissions", "novel_images", "passive",
            "is_imaging", "stage", "image_set", "equipment_name"} <= names
