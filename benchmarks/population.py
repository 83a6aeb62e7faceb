#!/usr/bin/env python
"""Population benchmark: cross-experiment tables and responses; scaling from 1 to 2 (or W) workers.

    python benchmarks/population.py [--workers W] [--experiments N] [--files-per-cluster F] [--markdown]

Runs on the demo's synthetic release with every file written (``small`` scale, simulated into the user cache
once; ``vbo demo`` itself writes only the files it opens).
Workloads, each measured in the same run:

- **cells × metadata** — :func:`vbo.population.cells_table` (metadata tables only) against the way users
  answer it today: opening every experiment file for its ``cell_specimen_table`` and metadata;
- **change responses** (heavy: every cell's event-locked responses) and **ROI table** (light) of N
  experiments — one file after another in this process (the baseline), then local processes and a Dask
  ``LocalCluster``, each with 1 and with W workers. Pools and clusters are started and warmed (one task per
  worker) before timing, as they are once per session; the speed-up 1 → W workers is the scale-out.

It ends with the projection to a real cluster: measured per-file cost × files ÷ workers (+ the measured
per-task overhead), for the whole release. Targets (printed, never asserted): the metadata query ≥ 100×
faster than opening the files; ≥ 1.8× from 1 to 2 workers on the heavy workload.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

TARGET_SCALING = 1.8
RELEASE_EXPERIMENTS = 1941  # imaging planes of the Visual Behavior Ophys release


def _timed(func, *args, **kwargs):
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return time.perf_counter() - start, result


def _open_every_file(cache, ids) -> int:
    rows = 0
    for experiment_id in ids:
        with cache.get_behavior_ophys_experiment(int(experiment_id)) as experiment:
            rows += len(experiment.cell_specimen_table)
            experiment.metadata
    return rows


def _warm(*_):
    """Imports what a task needs (done once per worker process, as in any session)."""
    import vbo.experiment  # noqa: F401
    import vbo.population  # noqa: F401
    import vbo.responses  # noqa: F401

    return os.getpid()


def _best(repeat: int, func, *args, **kwargs) -> float:
    return min(_timed(func, *args, **kwargs)[0] for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--experiments", type=int, default=48, help="experiments for the per-file workloads")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    import distributed

    import vbo
    from vbo import parallel, population
    from vbo.demo import default_cache_dir, ensure_release

    release, _ = ensure_release(default_cache_dir(), files="all")  # the baseline opens every file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = vbo.VisualBehaviorOphysProjectCache.from_local_cache(release, use_static_cache=True)
    table = cache.get_ophys_experiment_table()
    active = table[~table["passive"]]
    ids = list(active.index[:args.experiments])
    every = list(table.index)
    load_before = os.getloadavg()[0]
    _warm()

    t_query, cells = _timed(population.cells_table, cache)
    t_open, _ = _timed(_open_every_file, cache, every)

    workloads = (("change responses", population.population_responses, {"event_type": "changes"}),
                 ("ROI table", population.roi_table, {}))
    results: dict[str, dict[str, float]] = {name: {} for name, _, _ in workloads}
    for name, func, extra in workloads:
        results[name]["serial"] = _best(args.repeat, func, cache, ids, workers=1, **extra)
    for n in sorted({1, args.workers}):
        if n > 1:
            list(parallel._pool(n).map(_warm, range(4 * n)))
        for name, func, extra in workloads:
            if n > 1:
                results[name][f"processes {n}"] = _best(args.repeat, func, cache, ids, workers=n, **extra)
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, dashboard_address=None,
                                      silence_logs=40) as cluster, distributed.Client(cluster) as client:
            client.run(_warm)
            for name, func, extra in workloads:
                results[name][f"Dask {n}"] = _best(args.repeat, func, cache, ids, client=client, **extra)
    parallel.shutdown()
    results_processes_1 = {name: r["serial"] for name, r in results.items()}  # 1 process == in this process

    w = args.workers
    print(f"_{platform.python_version()}, {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after_")
    print(f"release: {release.name}; {len(every)} experiments, {len(cells)} ROIs; per-file workloads on "
          f"{len(ids)} files")
    head = ["workload", "1 worker (s)", f"{w} processes (s)", "speed-up", "Dask 1 (s)", f"Dask {w} (s)",
            "speed-up", "target"]
    rows = [["cells × metadata", f"{t_open:.3f} (open {len(every)} files)", f"{t_query:.4f} (tables)",
             f"{t_open / t_query:,.0f}x", "", "", "", "≥ 100x " + ("✓" if t_open / t_query >= 100 else "✗")]]
    for name, r in results.items():
        local = results_processes_1[name] / r[f"processes {w}"]
        dask = r["Dask 1"] / r[f"Dask {w}"]
        heavy = name == "change responses"
        target = f"≥ {TARGET_SCALING}x " + ("✓" if min(local, dask) >= TARGET_SCALING else "✗") if heavy else ""
        rows.append([f"{name} ({len(ids)} files)", f"{results_processes_1[name]:.2f}", f"{r[f'processes {w}']:.2f}",
                     f"{local:.2f}x", f"{r['Dask 1']:.2f}", f"{r[f'Dask {w}']:.2f}", f"{dask:.2f}x", target])
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        print("\n".join("| " + " | ".join(r) + " |" for r in rows))
    else:
        widths = [max(len(str(x[c])) for x in [head] + rows) for c in range(len(head))]
        for r in [head] + rows:
            print("  ".join(str(v).ljust(wd) for v, wd in zip(r, widths)))

    heavy = results["change responses"]
    per_file = heavy["serial"] / len(ids)
    overhead = max(0.0, heavy["Dask 1"] - heavy["serial"]) / len(ids)
    print(f"\nprojection (change responses): {per_file:.3f} s per file here (+{overhead:.3f} s Dask overhead per "
          f"task); the {RELEASE_EXPERIMENTS} planes of the release:")
    for workers in (1, 2, 16, 64, 256):
        seconds = (per_file + overhead) * RELEASE_EXPERIMENTS / workers
        print(f"  {workers:>4} workers: {seconds / 60:8.1f} min")
    print("(simulated files are smaller than released ones: scale per_file by the ratio of file sizes, "
          "and add the download or streaming time per file)")


if __name__ == "__main__":
    main()
