"""vbo.behavior as functions: d′ reference values, metrics signature, lick rate, per-flash annotations,
response matrices, faults of the helper packages not copied, and recovery of the planted behaviour."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, norm

from vbo import behavior
from vbo.behavior import dprime

# --- d′ (docs/analysis.md §3) ------------------------------------------------------------------------------


@pytest.mark.parametrize("args, kwargs, expected", [
    ((1.0, 0.0), {}, 4.6526957480816815),
    ((0.6, 0.4), {}, 0.5066942062715994),
    (([1, 1, 1], [0, 0]), {"limits": True}, 1.6419113162977828),
    ((), {"go_trials": [1] * 10, "catch_trials": [0] * 10, "limits": True}, 3.289707253902945),
    ((), {"go_trials": [1] * 20, "catch_trials": [0] * 10, "limits": True}, 3.604817611491527),
    (([True, False, True, True, False], [False, True, False, False, False]), {"limits": True}, 1.094968336708714),
])
def test_dprime_reference_values(args, kwargs, expected):
    value = dprime(*args, **kwargs)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=0, abs=1e-12)


def test_dprime_cap_and_forms():
    assert behavior.MAX_DPRIME == 4.6526957480816815
    assert dprime(1.0, 0.0) == pytest.approx(norm.ppf(0.99) - norm.ppf(0.01), abs=1e-13)
    assert behavior.rolling_dprime(np.array([1.0]), np.array([0.0]))[0] == pytest.approx(4.6526957480816815,
                                                                                          abs=1e-13)
    assert math.isnan(dprime(np.nan, 0.2)) and math.isnan(dprime(0.7, np.nan))
    assert dprime(0.9, 0.1, limits=(0.2, 0.8)) == pytest.approx(2 * norm.ppf(0.8))
    assert dprime(hit_rate=0.8, fa_rate=0.3) == dprime(0.8, 0.3)
    np.testing.assert_allclose(dprime(np.array([0.5, 0.9]), np.array([0.5, 0.1])), [0.0, 2 * norm.ppf(0.9)])
    # limits=False with trial vectors: the means, clipped to [0.01, 0.99]
    assert dprime(go_trials=[1, 1, 0, 1], catch_trials=[0, 0, 0, 1]) == pytest.approx(
        norm.ppf(0.75) - norm.ppf(0.25))
    assert math.isnan(dprime(go_trials=[], catch_trials=[0, 1], limits=True))
    with pytest.raises(ValueError):
        dprime(0.5, 0.5, limits=True)
    with pytest.raises(TypeError):
        dprime(0.5)


# --- metrics on frames ------------------------------------------------------------------------------------


def _trials(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """A synthetic trials table with every outcome, lick times and one catch trial without change time."""
    rng = np.random.default_rng(seed)
    start = np.cumsum(rng.uniform(4, 9, n)) + 300.0
    kind = rng.choice(["go", "catch", "aborted"], n, p=[0.6, 0.2, 0.2])
    kind[:3] = "auto"
    change = np.where(kind == "aborted", np.nan, start + rng.uniform(2.5, 4, n))
    respond = rng.random(n) < np.where(kind == "catch", 0.2, 0.7)
    licks = []
    for i in range(n):
        if kind[i] == "aborted":
            licks.append(np.array([start[i] + 1.0]))
        elif respond[i] or kind[i] == "auto":
            licks.append(change[i] + 0.3 + 0.15 * np.arange(5))
        else:
            licks.append(np.zeros(0))
    go = kind == "go"
    catch = kind == "catch"
    frame = pd.DataFrame({
        "start_time": start, "stop_time": start + 3.5, "change_time": change,
        "go": go, "catch": catch, "aborted": kind == "aborted", "auto_rewarded": kind == "auto",
        "hit": go & respond, "miss": go & ~respond, "false_alarm": catch & respond,
        "correct_reject": catch & ~respond, "lick_times": pd.Series(licks, dtype=object),
        "reward_volume": np.where((go & respond) | (kind == "auto"), 0.007, 0.0),
        "response_time": np.nan, "reward_time": np.nan,
    })
    frame.index = pd.Index(np.arange(n), name="trials_id")
    return frame


def _reward_rate_loop(trials: pd.DataFrame, response_window_start: float = 0.15) -> np.ndarray:
    """Straightforward per-trial reading of docs/analysis.md §2 (oracle for the vectorised version)."""
    latency = []
    for licks, change in zip(trials["lick_times"], trials["change_time"]):
        later = [lick - change for lick in licks if lick - change > response_window_start]
        latency.append(later[0] if later and not math.isnan(change) else math.inf)
    start = trials["start_time"].to_numpy()
    n = len(trials)
    out = np.full(n, np.nan)
    for t in range(10, n):
        lo, hi = max(0, t - 25), min(t + 25, n)
        correct = sum(1 for i in range(lo, hi) if latency[i] < 0.75)
        rate = correct / (start[hi - 1] - start[lo]) * 60
        out[t] = rate if math.isfinite(rate) else np.nan
    return out


def test_reward_rate_matches_loop_and_first_ten_nan():
    trials = _trials()
    rate = behavior.reward_rate(trials)
    np.testing.assert_allclose(rate, _reward_rate_loop(trials), rtol=1e-12, equal_nan=True)
    assert np.isnan(rate[:10]).all()  # D14: NaN, not +inf
    assert not behavior.engaged(trials)[:10].any()


def test_performance_metrics_signature_forms():
    trials = _trials()
    rewards = pd.DataFrame({"volume": [0.007] * 5, "timestamps": np.arange(5.0), "auto_rewarded": [False] * 5})
    rolling = behavior.rolling_performance(trials, 0.15)
    new = behavior.performance_metrics(trials, rewards, 0.15, 2.0)
    old = behavior.performance_metrics(trials, rewards, rolling, 2.0)  # the earlier positional form
    given = behavior.performance_metrics(trials, rewards, rolling=rolling)
    assert list(new) == list(old) == list(given) and len(new) == 23
    for key in new:
        assert new[key] == old[key] == given[key] or (np.isnan(new[key]) and np.isnan(old[key]))
    assert new["trial_count"] == 60 and new["total_reward_count"] == 5
    assert behavior.performance_metrics(trials, rewards, engaged_trial_reward_rate_threshold=1e9)[
        "engaged_trial_count"] == 0


def test_only_auto_rewarded_session_has_nan_rates():
    trials = _trials(20)
    for column in ("go", "catch", "hit", "miss", "false_alarm", "correct_reject", "aborted"):
        trials[column] = False
    trials["auto_rewarded"] = True
    metrics = behavior.performance_metrics(trials, pd.DataFrame({"volume": [], "timestamps": []}))
    for key in ("mean_hit_rate", "mean_false_alarm_rate", "mean_dprime", "max_dprime", "max_dprime_engaged"):
        assert np.isnan(metrics[key])


def test_session_methods_call_the_functions(tiny_release, tiny_cache):
    cache = tiny_cache
    table = cache.get_behavior_session_table()
    session_id = table.index[table["session_type"].str.startswith("OPHYS_1")][0]
    with cache.get_behavior_session(session_id) as session:
        start = session.task_parameters["response_window_sec"][0]
        expected = behavior.performance_metrics(session.trials, session.rewards, start, 1.5)
        assert session.get_performance_metrics(1.5) == expected
        pd.testing.assert_frame_equal(session.get_rolling_performance_df(),
                                      behavior.rolling_performance(session.trials, start))


def test_select_trials_and_reward_types():
    trials = _trials()
    hits = behavior.select_trials(trials, "go", "hit")
    assert hits["hit"].all() and len(hits) == trials["hit"].sum()
    assert not behavior.select_trials(trials)["aborted"].any()
    assert len(behavior.select_trials(trials, include_aborted_trials=True)) == len(trials)
    with pytest.raises(ValueError):
        behavior.select_trials(trials, "hit")
    rewards = pd.DataFrame({"volume": [0.005, 0.007, 0.007], "timestamps": [1.0, 2.0, 3.0],
                            "auto_rewarded": [True, False, False]})
    # D20: the column is auto_rewarded
    np.testing.assert_array_equal(behavior.reward_times(rewards, "auto"), [1.0])
    np.testing.assert_array_equal(behavior.reward_times(rewards, "earned"), [2.0, 3.0])
    np.testing.assert_array_equal(behavior.reward_times(rewards), [1.0, 2.0, 3.0])


# --- lick rate (docs/analysis.md §5) ----------------------------------------------------------------------------


@pytest.mark.parametrize("center", [False, True])
def test_lick_rate_is_triangular_rolling_mean(center):
    rng = np.random.default_rng(3)
    ts = 5.0 + np.arange(600) / 60.0
    frames = np.sort(rng.choice(600, 80, replace=False))
    licks = pd.DataFrame({"timestamps": ts[frames], "frame": frames})
    out = behavior.lick_rate(licks, ts, center=center)
    assert list(out.columns) == ["timestamps", "licks", "lick_rate"]
    assert out["licks"].sum() == 80
    expected = pd.Series(out["licks"]).rolling(6, win_type="triang", center=center).mean()
    np.testing.assert_allclose(out["lick_rate"], expected, atol=1e-12, equal_nan=True)
    if not center:
        assert out["lick_rate"].iloc[:5].isna().all() and out["lick_rate"].iloc[5:].notna().all()
    per_s = behavior.lick_rate(licks, ts, center=center, per_second=True)
    np.testing.assert_allclose(per_s["lick_rate"], out["lick_rate"] * 60.0, rtol=1e-9, equal_nan=True)


# --- per-flash annotation (docs/analysis.md §9) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_session():
    """A 60-minute simulated imaging session (≈ 4,800 flashes) and its planted truth."""
    from vbo.simulate.plan import SCALES, example_session
    from vbo.simulate.task import simulate_behavior

    plan = example_session(hit_probability=0.75)
    content, truth = simulate_behavior(plan, SCALES["full"], np.random.default_rng(21))
    running = pd.DataFrame({"timestamps": content.running_timestamps, "speed": content.running_speed})
    return content, truth, running


def _annotate(full_session, **kwargs):
    content, _, running = full_session
    return behavior.annotate_flashes(content.presentations, content.trials, content.licks, content.rewards,
                                     running, response_window_start=0.15, **kwargs)


def test_annotation_rows_and_columns(full_session):
    content = full_session[0]
    a = _annotate(full_session)
    block = content.presentations["stimulus_block_name"].str.contains("change_detection")
    pd.testing.assert_index_equal(a.index, content.presentations.index[block])
    assert len(a) > 4000
    for column in ("n_licks", "first_lick_time", "lick_latency", "licked", "n_rewards", "rewarded",
                   "mean_running_speed", "time_from_last_change", "time_from_last_omitted", "time_from_last_lick",
                   "time_from_last_reward", "stimulus_count_from_last_change", "stimulus_count_from_last_omitted",
                   "stimulus_count_from_last_lick", "stimulus_count_from_last_reward", "n_after_change",
                   "n_before_change", "n_after_omission", "stimulus_count_within_trial", "previous_image_name",
                   "next_start_time", "response_lick", "response_lick_latency", "previous_response_on_trial",
                   "previous_change_on_trial", "could_change", "pre_change", "lick_on_next_flash", "pre_omitted",
                   "post_omitted", "change_trials_id", "reward_rate", "engaged", "engagement_state", "epoch",
                   "outcome", *behavior.TRIAL_COLUMNS):
        assert column in a, column
    assert a["omitted"].dtype == bool
    assert (a.dtypes != object).sum() > 40  # dense columns, no per-row arrays (D26)
    assert not any(isinstance(v, np.ndarray) for v in a.iloc[0].to_numpy())
    assert a["epoch"].max() == 5  # 60 min in 10-min epochs


def test_annotation_matches_loops(full_session):
    """Every vectorised column against a straightforward per-flash loop over the definitions."""
    content, _, running = full_session
    a = _annotate(full_session)
    licks = np.sort(content.licks["timestamps"].to_numpy())
    rewards = np.sort(content.rewards["timestamps"].to_numpy())
    trials = content.trials
    rate = behavior.reward_rate(trials, 0.15)
    rt, speed = running["timestamps"].to_numpy(), running["speed"].to_numpy()
    starts = a["start_time"].to_numpy()
    kept = trials[~trials["aborted"]]
    keys = kept["change_time"].fillna(kept["start_time"]).to_numpy()
    change_times = trials["change_time"].to_numpy()
    sample = np.arange(0, len(a), 7)
    for i in sample:
        s = starts[i]
        inside = licks[(licks > s) & (licks < s + 0.75)]
        assert a["n_licks"].iat[i] == len(inside)
        assert (np.isnan(a["first_lick_time"].iat[i]) if not len(inside) else a["first_lick_time"].iat[i] == inside[0])
        assert a["n_rewards"].iat[i] == ((rewards > s) & (rewards < s + 3)).sum()
        window = (rt >= s) & (rt < s + 0.75)
        assert a["mean_running_speed"].iat[i] == pytest.approx(speed[window].mean(), rel=1e-9, abs=1e-9)
        earlier = licks[licks <= s]
        assert (a["time_from_last_lick"].iat[i] == pytest.approx(s - earlier[-1]) if len(earlier)
                else np.isnan(a["time_from_last_lick"].iat[i]))
        nxt = starts[i + 1] if i + 1 < len(a) else a["end_time"].iat[-1]
        assert a["response_lick"].iat[i] == bool(((licks >= s) & (licks < nxt)).any())
        later = np.flatnonzero(keys >= s)
        expected_rate = rate[~trials["aborted"].to_numpy()][later[0] if len(later) else -1]
        assert a["reward_rate"].iat[i] == pytest.approx(expected_rate, nan_ok=True)
        near = np.flatnonzero(np.abs(change_times - s) <= 0.5)
        assert a["change_trials_id"].iat[i] == (trials.index[near[0]] if len(near) == 1 else -1)
    # grouped counters: reference loops over all rows
    is_change, omitted = a["is_change"].to_numpy(), a["omitted"].to_numpy()
    trial_of = a["trials_id"].to_numpy()
    count, since, previous_lick, previous_change = 0, -1, False, False
    response = a["response_lick"].to_numpy()
    for i in range(len(a)):
        if i == 0 or trial_of[i] != trial_of[i - 1]:
            count, previous_lick, previous_change = 0, False, False
        since = 0 if is_change[i] else (since + 1 if since >= 0 else -1)
        assert a["stimulus_count_within_trial"].iat[i] == count
        assert a["stimulus_count_from_last_change"].iat[i] == since
        assert a["previous_response_on_trial"].iat[i] == previous_lick
        could = count >= 4 and not previous_lick and not previous_change and not omitted[i] and not (
            i > 0 and omitted[i - 1])
        assert a["could_change"].iat[i] == could
        previous_lick |= response[i]
        previous_change |= is_change[i] or a["is_sham_change"].iat[i]
        count += 1
    # every real change is a flash that could change, in the engaged part of the session
    changes = a[a["is_change"] & ~a["auto_rewarded"]]
    assert changes["could_change"].mean() > 0.95
    assert (changes["change_trials_id"] >= 0).all()
    assert set(changes["outcome"]) <= {"hit", "miss"}
    shams = a[a["is_sham_change"]]
    assert set(shams["outcome"]) <= {"false_alarm", "correct_reject"}
    assert a.loc[~(a["is_change"] | a["is_sham_change"]), "outcome"].isna().all()


def test_annotation_defects_not_copied(full_session):
    content, truth, running = full_session
    trials = content.trials.copy()
    # D15: a catch trial without change time neither crashes nor loses its reward rate (start time is used)
    catch = trials.index[trials["catch"]][3]
    trials.loc[catch, "change_time"] = np.nan
    a = behavior.annotate_flashes(content.presentations, trials, content.licks, content.rewards, running)
    assert a["reward_rate"].notna().mean() > 0.9
    # D14: never engaged on NaN / the first 10 trials
    assert not a.loc[a["reward_rate"].isna(), "engaged"].any()
    # D16: the inputs of the lick/reward counters exist
    assert {"licked", "rewarded", "stimulus_count_from_last_lick", "stimulus_count_from_last_reward"} <= set(a)
    # D18: no assumption of a 0-based positional index
    shifted = content.presentations.copy()
    shifted.index = shifted.index * 3 + 1000
    b = behavior.annotate_flashes(shifted, content.trials, content.licks, content.rewards, running)
    base = _annotate(full_session)
    np.testing.assert_array_equal(b["n_after_change"].to_numpy(), base["n_after_change"].to_numpy())
    np.testing.assert_array_equal(b["could_change"].to_numpy(), base["could_change"].to_numpy())


def test_pupil_uses_timestamps_and_correct_diameter():
    # D8: the eye-tracking timestamps, not the frame index; D9: diameter 2·√(A/π)
    eye = pd.DataFrame({"timestamps": 100.0 + np.arange(10) / 30.0, "pupil_area": np.full(10, 10_000.0),
                        "pupil_width": np.arange(10.0), "likely_blink": [False] * 9 + [True]})
    eye.index.name = "frame"
    t, diameter = behavior.pupil_series(eye, "pupil_diameter")
    assert t[0] == 100.0 and diameter[0] == pytest.approx(112.8379, abs=1e-4)
    assert np.isnan(diameter[-1])  # blink
    assert behavior.pupil_series(eye, "pupil_radius")[1][0] == pytest.approx(56.419, abs=1e-3)
    presentations = pd.DataFrame({"start_time": [100.0, 100.1], "end_time": [100.1, 100.35], "is_change": False,
                                  "omitted": [False, False], "image_name": ["a", "a"], "trials_id": [0, 0]})
    trials = _trials(12)
    a = behavior.annotate_flashes(presentations, trials, eye_tracking=eye, pupil_window=(0, 0.1),
                                  pupil_columns=("pupil_width", "pupil_diameter"))
    assert a["mean_pupil_width"].iat[0] == pytest.approx(np.mean([0, 1, 2]))  # frames at 100, 100.033, 100.067
    assert a["mean_pupil_diameter"].iat[1] == pytest.approx(112.8379, abs=1e-4)


# --- response-probability and d′ matrices (docs/analysis.md §10) ---------------------------------------------------


def test_matrices_on_known_values():
    names = ["a", "b", "c"]
    rows = []
    # transitions with known lick probabilities: (prev, this) → responses
    plan = {("a", "a"): [0, 0, 0, 1], ("a", "b"): [1, 1, 1, 0], ("b", "a"): [1, 0], ("c", "c"): [0] * 5,
            ("b", "c"): [1]}
    for (prev, this), responses in plan.items():
        for r in responses:
            rows.append(dict(previous_image_name=prev, image_name=this, response_lick=bool(r), could_change=True,
                             auto_rewarded=False, omitted=False, post_omitted=False, engaged=True))
    rows.append(dict(previous_image_name="a", image_name="b", response_lick=False, could_change=False,
                     auto_rewarded=False, omitted=False, post_omitted=False, engaged=True))  # filtered
    rows.append(dict(previous_image_name="a", image_name="b", response_lick=False, could_change=True,
                     auto_rewarded=False, omitted=False, post_omitted=False, engaged=False))  # disengaged
    a = pd.DataFrame(rows)
    p = behavior.response_probability_matrix(a)
    assert list(p.index) == names and list(p.columns) == names
    assert p.loc["a", "b"] == 0.75 and p.loc["a", "a"] == 0.25 and p.loc["b", "a"] == 0.5
    assert np.isnan(p.loc["c", "a"])
    assert behavior.response_probability_matrix(a, engaged_only=False).loc["a", "b"] == 0.6
    counts = behavior.response_probability_matrix(a, aggfunc="count")
    assert counts.loc["c", "c"] == 5
    d = behavior.dprime_matrix(p)
    assert np.isnan(np.diag(d.to_numpy())).all()
    assert np.isnan(d.loc["a", "b"])  # no b → b flashes: no false-alarm rate for image b
    assert d.loc["b", "a"] == pytest.approx(norm.ppf(0.5) - norm.ppf(0.25))
    assert d.loc["b", "c"] == pytest.approx(norm.ppf(0.99) - norm.ppf(0.01))
    ordered = behavior.response_probability_matrix(a, sort=True)
    assert list(ordered.columns) == list(p.mean().sort_values(ascending=False).index)


# --- recovery of the planted behaviour -------------------------------------------------------------------


def _exact_interval(statistic, n_go: int, n_catch: int, p_hit: float, p_fa: float, alpha: float):
    """Central (1 − alpha) range and (mean, sd) of ``statistic(k_go, k_catch)`` under Binomial sampling."""
    k_go, k_catch = np.meshgrid(np.arange(n_go + 1), np.arange(n_catch + 1), indexing="ij")
    weight = binom.pmf(k_go, n_go, p_hit) * binom.pmf(k_catch, n_catch, p_fa)
    values = np.vectorize(statistic)(k_go, k_catch).ravel()
    weight = weight.ravel()
    order = np.argsort(values)
    values, weight = values[order], weight[order]
    cdf = np.cumsum(weight)
    lo = values[np.searchsorted(cdf, alpha / 2)]
    hi = values[min(np.searchsorted(cdf, 1 - alpha / 2), len(values) - 1)]
    mean = float(np.sum(weight * values))
    sd = float(np.sqrt(np.sum(weight * (values - mean) ** 2)))
    return lo, hi, mean, sd


def _trial_dprime(n_go, n_catch):
    return lambda k, j: dprime(go_trials=[1] * k + [0] * (n_go - k), catch_trials=[1] * j + [0] * (n_catch - j),
                               limits=True)


def test_planted_behaviour_recovered_on_release(tiny_release):
    """On vbo-simulate output: engaged-trial hit and false-alarm rates and the per-session d′ trajectory agree
    with the planted probabilities within the sampling error the trial counts imply (per session at a
    Bonferroni-corrected 0.1 % level, and pooled over sessions within 3.5 standard errors)."""
    import json

    from vbo.cache.project import VisualBehaviorOphysProjectCache

    truth = json.loads((tiny_release.root / "ground_truth" / "truth.json").read_text())
    planted = pd.read_parquet(tiny_release.root / "ground_truth" / "sessions.parquet").set_index(
        "behavior_session_id")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = VisualBehaviorOphysProjectCache.from_local_cache(tiny_release.root, use_static_cache=True)
    records = []
    for session_id, row in planted.iterrows():
        if row["passive"]:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with cache.get_behavior_session(session_id) as session:
                trials = session.trials
        engaged = np.asarray(truth[str(session_id)]["behavior"]["engagement"]["trial_engaged"], bool)
        assert len(engaged) == len(trials)
        go = behavior.select_trials(trials[engaged], "go")
        catch = behavior.select_trials(trials[engaged], "catch")
        records.append(dict(session=session_id, mouse=row["mouse_id"], n_go=len(go), k_go=int(go["hit"].sum()),
                            n_catch=len(catch), k_catch=int(catch["false_alarm"].sum()),
                            p_hit=row["hit_probability"], p_fa=row["false_alarm_probability"],
                            go=go["hit"].to_numpy(), catch=catch["false_alarm"].to_numpy()))
    frame = pd.DataFrame(records)
    assert frame["n_go"].sum() > 100 and frame["n_catch"].sum() > 15
    m = len(frame)
    alpha = 1e-3 / m
    # per session: exact binomial two-sided tails
    for r in frame.itertuples():
        for k, n, p in ((r.k_go, r.n_go, r.p_hit), (r.k_catch, r.n_catch, r.p_fa)):
            if n:
                tail = min(binom.cdf(k, n, p), binom.sf(k - 1, n, p))
                assert 2 * tail > alpha, (r.session, k, n, p)
    # pooled: the hits and false alarms of all sessions against their planted expectations
    for k, n, p in (("k_go", "n_go", "p_hit"), ("k_catch", "n_catch", "p_fa")):
        expected = (frame[n] * frame[p]).sum()
        se = np.sqrt((frame[n] * frame[p] * (1 - frame[p])).sum())
        assert abs(frame[k].sum() - expected) < 3.5 * se, (k, frame[k].sum(), expected, se)
    # d′ trajectory: every session's trial-count-limited d′ lies in the exact sampling range of that
    # estimator under the planted probabilities; the standardised deviations average to ~0
    z = []
    for r in frame[(frame["n_go"] > 0) & (frame["n_catch"] > 0)].itertuples():
        observed = dprime(r.go, r.catch, limits=True)
        lo, hi, mean, sd = _exact_interval(_trial_dprime(r.n_go, r.n_catch), r.n_go, r.n_catch, r.p_hit, r.p_fa,
                                           alpha)
        assert lo - 1e-9 <= observed <= hi + 1e-9, (r.session, observed, lo, hi)
        if sd > 0:
            z.append((observed - mean) / sd)
    assert len(z) >= 8  # enough sessions for the mean test (the tiny cohort has ~10 with go and catch trials)
    assert abs(np.mean(z)) < 3.5 / np.sqrt(len(z)), np.mean(z)


def test_planted_rates_recovered_through_flash_annotations(full_session):
    """A 60-min session: the change-flash responses of the response-probability matrix recover the planted
    hit probability (engaged and disengaged trials, as planted), sham changes the false-alarm probability,
    and d′ on engaged trials the planted d′ — each within the exact sampling range of its trial counts."""
    content, truth, _ = full_session
    a = _annotate(full_session)
    engaged = np.asarray(truth["engagement"]["trial_engaged"], bool)
    trial_engaged = pd.Series(engaged, index=content.trials.index)
    p_by_state = {"hit": {True: truth["hit_probability"], False: truth["disengaged_hit_probability"]},
                  "fa": {True: truth["false_alarm_probability"], False: truth["disengaged_false_alarm_probability"]}}
    usable = a["could_change"] & ~a["auto_rewarded"] & ~a["omitted"] & ~a["post_omitted"]
    for kind, flag in (("hit", "is_change"), ("fa", "is_sham_change")):
        rows = a[usable & a[flag]]
        state = trial_engaged.loc[rows["change_trials_id"]].to_numpy()
        p = np.where(state, p_by_state[kind][True], p_by_state[kind][False])
        observed = rows["response_lick"].sum()
        assert abs(observed - p.sum()) < 3.5 * np.sqrt((p * (1 - p)).sum()), (kind, observed, p.sum())
    # the matrix holds exactly those change-flash responses off the diagonal
    total = behavior.response_probability_matrix(a, engaged_only=False, aggfunc="sum")
    off = ~np.eye(len(total), dtype=bool)
    changes = a[usable & a["is_change"]]
    assert np.nansum(total.to_numpy()[off]) == changes["response_lick"].sum()
    # d′ of engaged trials vs the planted d′
    trials = content.trials[engaged]
    go, catch = trials.loc[trials["go"], "hit"].to_numpy(), trials.loc[trials["catch"], "false_alarm"].to_numpy()
    observed = dprime(go, catch, limits=True)
    lo, hi, mean, sd = _exact_interval(_trial_dprime(len(go), len(catch)), len(go), len(catch),
                                       truth["hit_probability"], truth["false_alarm_probability"], 1e-3)
    assert lo <= observed <= hi
    planted = norm.ppf(truth["hit_probability"]) - norm.ppf(truth["false_alarm_probability"])
    assert abs(mean - planted) < 0.5  # the estimator's bias at these counts is small
    # and the session's engaged-trial rolling d′ is within sampling error of the planted d′ early on
    rolling = behavior.rolling_performance(content.trials, 0.15)
    early = (content.trials["start_time"] < truth["engagement"]["disengage_time"] - 5 * truth["engagement"]["tau_s"])
    late_enough = np.arange(len(rolling)) > 150
    sel = rolling.loc[early.to_numpy() & late_enough & ~content.trials["aborted"].to_numpy(), "rolling_dprime"]
    assert abs(sel.mean() - planted) < 4 * sd, (sel.mean(), planted, sd)


def test_pupil_trace_preprocessing_steps():
    times = 10.0 + np.arange(20) / 30.0
    area = 1000.0 + 10.0 * np.arange(20)
    blink = np.zeros(20, bool)
    blink[[0, 5, 6, 12, 13, 14, 15, 19]] = True  # an edge, a short gap, a long gap, the other edge
    eye = pd.DataFrame({"timestamps": times, "pupil_area": area, "likely_blink": blink})
    eye.index.name = "frame"

    raw = behavior.pupil_trace(eye)
    assert raw.index.name == "timestamps" and raw.name == "pupil_area" and raw.attrs["interpolated"] is False
    np.testing.assert_array_equal(raw.index.to_numpy(), times)
    assert raw.isna().sum() == blink.sum()

    filled = behavior.pupil_trace(eye, interpolate=True)
    np.testing.assert_allclose(filled.to_numpy()[1:19], area[1:19])  # linear data: exact fill
    assert np.isnan(filled.iat[0]) and np.isnan(filled.iat[19])  # edges are never extrapolated
    gapped = behavior.pupil_trace(eye, interpolate=True, max_gap=0.05)  # 2 samples = 0.033 s, 4 samples = 0.1 s
    assert np.isfinite(gapped.iloc[5:7]).all() and gapped.iloc[12:16].isna().all()

    normalised = behavior.pupil_trace(eye, baseline=(10.0, 10.1))  # samples 0..3, 0 is a blink
    assert normalised.attrs["baseline_interval"] == (10.0, 10.1)
    assert normalised.attrs["baseline_mean"] == pytest.approx(np.mean(area[1:4]))
    np.testing.assert_allclose(normalised.to_numpy(), raw.to_numpy() / np.mean(area[1:4]))
    with pytest.raises(ValueError, match="baseline"):
        behavior.pupil_trace(eye, baseline=(0.0, 1.0))

    z = behavior.pupil_trace(eye, "pupil_diameter", zscore=True)
    assert np.nanmean(z) == pytest.approx(0.0, abs=1e-12) and np.nanstd(z, ddof=1) == pytest.approx(1.0)
    assert z.attrs["zscore_ddof"] == 1

    target = np.array([9.0, 10.05, 10.2, 11.0])
    resampled = behavior.pupil_trace(eye, interpolate=True, resample_to=target)
    np.testing.assert_array_equal(resampled.index.to_numpy(), target)
    assert np.isnan(resampled.iat[0]) and np.isnan(resampled.iat[3])  # outside the eye-tracking clock
    assert resampled.iat[1] == pytest.approx(1000.0 + 10.0 * 0.05 * 30) and resampled.attrs["resampled"]


def test_pupil_trace_on_the_sdk_experiment(experiment_nwb):
    import vbo

    with vbo.BehaviorOphysExperiment.from_nwb_path(experiment_nwb) as exp:
        gray = behavior.gray_screen_interval(exp.stimulus_presentations)
        sp = exp.stimulus_presentations
        task_start = sp.loc[sp["stimulus_block_name"].str.contains("change_detection"), "start_time"].min()
        assert gray[0] == 0.0 and gray[1] == pytest.approx(task_start) and gray[1] > 250.0
        after = behavior.gray_screen_interval(exp.stimulus_presentations, "post_behavior_gray_screen")
        assert after[0] > gray[1]
        with pytest.raises(KeyError, match="no stimulus block"):
            behavior.gray_screen_interval(exp.stimulus_presentations, "no_such_block")
        trace = behavior.pupil_trace(exp.eye_tracking, "pupil_width", interpolate=True, max_gap=0.5,
                                     baseline=gray)
        eye = exp.eye_tracking
        inside = (trace.index >= gray[0]) & (trace.index <= gray[1])
        assert np.nanmean(trace[inside]) == pytest.approx(1.0)
        ophys = behavior.pupil_trace(exp.eye_tracking, "pupil_width", interpolate=True, baseline=gray,
                                     resample_to=exp.ophys_timestamps)
        assert len(ophys) == len(exp.ophys_timestamps) and ophys.notna().mean() > 0.9
        assert trace.index[0] == eye["timestamps"].min()  # the eye-tracking clock, not frame numbers
