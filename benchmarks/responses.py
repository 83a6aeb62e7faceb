#!/usr/bin/env python
"""Event-locked tensor benchmark: vbo against a per-event loop and the bare numpy-gather floor.

    python benchmarks/responses.py [--nwb FILE] [--no-full] [--window -1 2] [--repeat 3] [--loop-events N]

Workloads — all cells × all image flashes of the change-detection block (omissions included):

* the shared SDK experiment file (``../shared/data/sdk-files/behavior_ophys_experiment_1091765022.nwb``);
* one ``full``-scale simulated experiment (60-min task, 150–250 cells at 31 Hz), simulated in memory with
  ``vbo.simulate`` (one session of one mouse; nothing written to disk).

Contenders, each computing the same interpolated cells × flashes × time tensor at the native (empirical) rate:

* ``vbo``   — :func:`vbo.responses.event_locked` (DataArray with coordinates, NaN outside the recording);
* ``loop``  — a straightforward per-event loop: for every flash, select the samples of the window with a
  boolean mask on the timestamps, then ``np.interp`` each cell (what users write by hand; the helper packages
  loop this way too, only slower). Timed on the first ``--loop-events`` flashes and scaled to all of them;
* ``floor`` — bare numpy: fractional indices and weights, two ``np.take`` gathers and the blend, no
  coordinates and no NaN edges: the least work that produces the tensor.

The shift (nearest-sample) mode is also timed against a single ``np.take`` floor. Times are the best of
``--repeat`` runs after a warm-up; the ratios come from the same run. Targets (printed, never asserted):
vbo ≥ 50× faster than the loop, vbo ≤ 2× the floor.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_NWB = REPO.parent / "shared" / "data" / "sdk-files" / "behavior_ophys_experiment_1091765022.nwb"
TARGET_LOOP = 50.0
TARGET_FLOOR = 2.0


def _best(fn, repeat: int) -> tuple[float, object]:
    fn()  # warm-up (page faults of fresh output buffers, caches)
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _loop(traces: np.ndarray, t: np.ndarray, events: np.ndarray, tau: np.ndarray) -> np.ndarray:
    out = np.empty((traces.shape[0], len(events), len(tau)))
    lo, hi = tau[0], tau[-1]
    step = float(np.mean(np.diff(t)))
    for e, event in enumerate(events):
        keep = (t >= event + lo - step) & (t <= event + hi + step)
        local_t = t[keep]
        for c in range(traces.shape[0]):
            out[c, e] = np.interp(event + tau, local_t, traces[c, keep], left=np.nan, right=np.nan)
    return out


def _floor_interp(traces: np.ndarray, t: np.ndarray, events: np.ndarray, tau: np.ndarray) -> np.ndarray:
    q = events[:, None] + tau[None, :]
    i = np.clip(np.searchsorted(t, q, side="right") - 1, 0, len(t) - 2)
    w = (q - t[i]) / (t[i + 1] - t[i])
    lower = np.take(traces, i, axis=1)
    upper = np.take(traces, i + 1, axis=1)
    upper -= lower
    upper *= w
    upper += lower
    return upper


def run(name: str, traces: np.ndarray, t: np.ndarray, events: np.ndarray, window, repeat: int,
        loop_events: int) -> dict:
    from vbo.responses import empirical_rate, event_locked, nearest_sample, relative_timebase, shift_offsets

    rate = empirical_rate(t)
    tau = relative_timebase(window, rate)
    n_cells, n_events = traces.shape[0], len(events)
    values = n_cells * n_events * len(tau)
    vbo_s, tensor = _best(lambda: event_locked(traces, t, events, window), repeat)
    floor_s, floor = _best(lambda: _floor_interp(traces, t, events, tau), repeat)
    inside = np.isfinite(tensor.to_numpy())
    assert np.allclose(tensor.to_numpy()[inside], floor[inside]), "vbo and the floor disagree"
    del floor
    k = min(loop_events, n_events)
    sample = events[np.linspace(0, n_events - 1, k).astype(int)]
    loop_part, looped = _best(lambda: _loop(traces, t, sample, tau), 1)
    loop_s = loop_part * n_events / k
    check = event_locked(traces, t, sample, window).to_numpy()
    assert np.allclose(check, looped, equal_nan=True), "vbo and the loop disagree"

    offsets = shift_offsets(window, rate)
    shift_s, _ = _best(lambda: event_locked(traces, t, events, window, interpolate=False), repeat)

    def gather():
        idx = np.clip(nearest_sample(t, events)[:, None] + offsets[None, :], 0, len(t) - 1)
        return np.take(traces, idx, axis=1)

    take_s, _ = _best(gather, repeat)
    del tensor
    return {"workload": name, "cells": n_cells, "events": n_events, "samples": len(tau), "values": values,
            "vbo_s": vbo_s, "loop_s": loop_s, "loop_events_timed": k, "floor_s": floor_s, "shift_s": shift_s,
            "take_s": take_s}


def shared_workload(path: Path):
    from vbo import BehaviorOphysExperiment
    from vbo.responses import select_events

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with BehaviorOphysExperiment.from_nwb_path(path) as e:
            traces = np.stack(e.dff_traces["dff"].to_list())
            t = np.asarray(e.ophys_timestamps)
            events = select_events(e.stimulus_presentations, "all")["event_time"].to_numpy()
    return traces, t, events


def full_workload(seed: int = 0):
    """dF/F, timestamps and flash times of one full-scale simulated Slc17a7 experiment (in memory)."""
    from vbo.simulate.mice import plan_release
    from vbo.simulate.neurons import make_container, simulate_ophys
    from vbo.simulate.plan import SCALES
    from vbo.simulate.task import simulate_behavior

    scale = SCALES["full"]
    rng = np.random.default_rng([seed, 0])
    sessions = plan_release(rng, 1, scale)
    session = next(s for s in sessions if s.is_imaging and not s.passive and s.experiments)
    experiment = session.experiments[0]
    container = make_container(experiment.ophys_container_id, session.mouse, experiment, scale,
                               np.random.default_rng([seed, 1]))
    behavior, _ = simulate_behavior(session, scale, np.random.default_rng([seed, 2]))
    ophys, _ = simulate_ophys(session, experiment, container, behavior, scale, np.random.default_rng([seed, 3]))
    presentations = behavior.presentations
    if "stimulus_block_name" in presentations:
        presentations = presentations[presentations["stimulus_block_name"].astype(str).str.contains("change_detection")]
    events = presentations["start_time"].to_numpy(np.float64)
    traces = np.ascontiguousarray(np.asarray(ophys.dff).T)
    return traces, np.asarray(ophys.ophys_timestamps, dtype=np.float64), events


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--nwb", type=Path, default=DEFAULT_NWB)
    parser.add_argument("--no-full", action="store_true", help="skip the full-scale simulated experiment")
    parser.add_argument("--window", type=float, nargs=2, default=(-1.0, 2.0))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loop-events", type=int, default=400)
    args = parser.parse_args(argv)
    rows = []
    if args.nwb.exists():
        rows.append(run(f"shared SDK file ({args.nwb.name})", *shared_workload(args.nwb), args.window, args.repeat,
                        args.loop_events))
    else:
        print(f"skipping the shared file: {args.nwb} not found", file=sys.stderr)
    if not args.no_full:
        start = time.perf_counter()
        workload = full_workload()
        print(f"simulated a full-scale experiment in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        rows.append(run("full simulated experiment", *workload, args.window, args.repeat, args.loop_events))
        del workload
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"window {tuple(args.window)} s, best of {args.repeat}")
    print()
    print("| workload | cells × flashes × samples | vbo (s) | loop (s) | floor (s) | loop / vbo | vbo / floor "
          "| shift: vbo (s) | shift: take (s) | shift vbo / take |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workload']} | {r['cells']} × {r['events']} × {r['samples']} | {r['vbo_s']:.3f} | "
              f"{r['loop_s']:.2f} | {r['floor_s']:.3f} | {r['loop_s'] / r['vbo_s']:.0f}× | "
              f"{r['vbo_s'] / r['floor_s']:.2f}× | {r['shift_s']:.3f} | {r['take_s']:.3f} | "
              f"{r['shift_s'] / r['take_s']:.2f}× |")
    print()
    for r in rows:
        ok_loop = r["loop_s"] / r["vbo_s"] >= TARGET_LOOP
        ok_floor = r["vbo_s"] / r["floor_s"] <= TARGET_FLOOR
        print(f"{r['workload']}: ≥{TARGET_LOOP:.0f}× the loop {'met' if ok_loop else 'MISSED'}; "
              f"≤{TARGET_FLOOR:.0f}× the floor {'met' if ok_floor else 'MISSED'} "
              f"(loop timed on {r['loop_events_timed']} of {r['events']} flashes, scaled)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
