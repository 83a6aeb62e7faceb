#!/usr/bin/env python
"""Behavior benchmark: vbo's vectorised per-flash annotation and metrics against straightforward loops.

    python benchmarks/behavior.py [--repeat N] [--seed S]

A 60-minute session is simulated (``vbo.simulate`` scale ``full``, ≈ 4,800 change-detection flashes, the
workload of ``analysis.md`` §9). Each workload is timed for vbo and for a plain per-row Python loop over the
same definitions (the style of the reference helpers), measured in the same run; times are the best of
``--repeat``. The §9 reference times of the helper packages (other hardware) are printed for orientation.
Target (printed, never asserted): vbo at least 10× faster than the loop baseline.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd

REFERENCE_S = {"annotate flashes": "3.8 (annotate_stimuli) / 11.1 (get_annotated_stimulus_presentations)",
               "reward rate": "-", "response matrix": "-"}


def _session(seed: int):
    from vbo.simulate.plan import SCALES, example_session
    from vbo.simulate.task import simulate_behavior

    plan = example_session()
    content, _ = simulate_behavior(plan, SCALES["full"], np.random.default_rng(seed))
    running = pd.DataFrame({"timestamps": content.running_timestamps, "speed": content.running_speed})
    return content, running


# --- loop baselines (one Python iteration per flash / trial, as the reference helpers do) ----------------


def loop_reward_rate(trials: pd.DataFrame) -> np.ndarray:
    latency = []
    for licks, change in zip(trials["lick_times"], trials["change_time"]):
        later = [lick - change for lick in licks if lick - change > 0.15]
        latency.append(later[0] if later and not math.isnan(change) else math.inf)
    start = trials["start_time"].to_numpy()
    out = np.full(len(trials), np.nan)
    for t in range(10, len(trials)):
        lo, hi = max(0, t - 25), min(t + 25, len(trials))
        correct = sum(1 for i in range(lo, hi) if latency[i] < 0.75)
        out[t] = correct / (start[hi - 1] - start[lo]) * 60
    return out


def loop_annotate(presentations, trials, licks, rewards, running) -> pd.DataFrame:
    sp = presentations[presentations["stimulus_block_name"].str.contains("change_detection")].copy()
    lick_t = licks["timestamps"].to_numpy()
    reward_t = rewards["timestamps"].to_numpy()
    rt, speed = running["timestamps"].to_numpy(), running["speed"].to_numpy()
    rate = loop_reward_rate(trials)
    rows = []
    previous = None
    count = 0
    lick_on_trial = False
    for _, row in sp.iterrows():
        s = row["start_time"]
        inside = lick_t[(lick_t > s) & (lick_t < s + 0.75)]
        window = (rt >= s) & (rt < s + 0.75)
        earlier = lick_t[lick_t <= s]
        if previous is None or row["trials_id"] != previous["trials_id"]:
            count, lick_on_trial = 0, False
        trial_rate = np.nan
        for (_, trial), r in zip(trials.iterrows(), rate):
            key = trial["change_time"] if not math.isnan(trial["change_time"]) else trial["start_time"]
            if not trial["aborted"] and key >= s:
                trial_rate = r
                break
        omitted = bool(row["omitted"]) if row["omitted"] is not pd.NA else False
        rows.append(dict(licks=len(inside), first_lick=inside[0] if len(inside) else np.nan,
                         rewards=int(((reward_t > s) & (reward_t < s + 3)).sum()),
                         mean_running_speed=speed[window].mean() if window.any() else np.nan,
                         time_from_last_lick=s - earlier[-1] if len(earlier) else np.nan,
                         could_change=count >= 4 and not lick_on_trial and not omitted,
                         reward_rate=trial_rate, engaged=trial_rate > 2))
        lick_on_trial |= len(inside) > 0
        count += 1
        previous = row
    return pd.DataFrame(rows, index=sp.index)


def loop_matrix(annotated: pd.DataFrame) -> pd.DataFrame:
    names = sorted(set(annotated["image_name"].dropna()) - {"omitted"})
    out = pd.DataFrame(np.nan, index=names, columns=names)
    for prev in names:
        for this in names:
            sel = [r["response_lick"] for _, r in annotated.iterrows()
                   if r["previous_image_name"] == prev and r["image_name"] == this and r["could_change"]
                   and not r["auto_rewarded"] and not r["omitted"] and not r["post_omitted"]]
            out.loc[prev, this] = np.mean(sel) if sel else np.nan
    return out


def best(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from vbo import behavior

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    content, running = _session(args.seed)
    sp, trials, licks, rewards = content.presentations, content.trials, content.licks, content.rewards
    annotated = behavior.annotate_flashes(sp, trials, licks, rewards, running)
    n_flashes = len(annotated)
    workloads = {
        "annotate flashes": (lambda: behavior.annotate_flashes(sp, trials, licks, rewards, running),
                             lambda: loop_annotate(sp, trials, licks, rewards, running)),
        "reward rate": (lambda: behavior.reward_rate(trials), lambda: loop_reward_rate(trials)),
        "response matrix": (lambda: behavior.response_probability_matrix(annotated, engaged_only=False),
                            lambda: loop_matrix(annotated)),
    }
    print(f"session: {n_flashes} change-detection flashes, {len(trials)} trials, {len(licks)} licks")
    print(f"{'workload':<18} {'vbo (s)':>9} {'loop (s)':>9} {'loop/vbo':>9}  target ≥10×   §9 reference (s)")
    for name, (fast, slow) in workloads.items():
        t_fast = best(fast, args.repeat)
        t_slow = best(slow, 1)
        ratio = t_slow / t_fast
        print(f"{name:<18} {t_fast:9.4f} {t_slow:9.3f} {ratio:9.0f}  {'met' if ratio >= 10 else 'NOT met':<12} "
              f"{REFERENCE_S[name]}")


if __name__ == "__main__":
    main()
