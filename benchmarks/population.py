#!/usr/bin/env python
"""Population benchmark: cross-experiment tables and responses, one file at a time vs processes vs Dask.

    python benchmarks/population.py [--workers W] [--experiments N]

Runs on the demo's synthetic release with every file written (``small`` scale, simulated into the user cache
once; ``vbo demo`` itself writes only the files it opens).
Workloads, each measured in the same run:

- **cells × metadata** — :func:`vbo.population.cells_table` (metadata tables only) against the way users
  answer it today: opening every experiment file for its ``cell_specimen_table`` and metadata;
- **ROI table** and **change responses** of N experiments — one file after another in this process (the
  baseline), a local process pool, and a Dask ``LocalCluster`` with the same number of workers.

Targets (printed, never asserted): the metadata query ≥ 100× faster than opening the files; parallel runs
faster than the serial baseline (at most ``workers``×, less the start-up of the pool or cluster).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--experiments", type=int, default=24, help="experiments for the per-file workloads")
    args = parser.parse_args()

    import distributed

    import vbo
    from vbo import population
    from vbo.demo import default_cache_dir, ensure_release

    release, _ = ensure_release(default_cache_dir(), all_files=True)  # the baseline opens every file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = vbo.VisualBehaviorOphysProjectCache.from_local_cache(release, use_static_cache=True)
    table = cache.get_ophys_experiment_table()
    active = table[~table["passive"]]
    ids = list(active.index[:args.experiments])
    every = list(table.index)

    t_query, cells = _timed(population.cells_table, cache)
    t_open, _ = _timed(_open_every_file, cache, every)
    rows = [("cells × metadata", f"{len(every)} files / none", t_open, [("metadata tables", t_query)])]

    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        for name, func, extra in (("ROI table", population.roi_table, {}),
                                  ("change responses", population.population_responses, {"event_type": "changes"})):
            t_serial, _ = _timed(func, cache, ids, workers=1, **extra)
            t_pool, _ = _timed(func, cache, ids, workers=args.workers, **extra)
            t_dask, _ = _timed(func, cache, ids, client=client, **extra)
            rows.append((name, f"{len(ids)} files", t_serial,
                         [(f"{args.workers} processes", t_pool), (f"Dask {args.workers} workers", t_dask)]))

    print(f"release: {release.name}; {len(every)} experiments, {len(cells)} ROIs; {args.workers} workers")
    print(f"{'workload':<18} {'input':<17} {'baseline (s)':>12}  {'vbo':<22} {'vbo (s)':>9} {'baseline/vbo':>13}")
    for name, size, base, variants in rows:
        for label, seconds in variants:
            print(f"{name:<18} {size:<17} {base:12.3f}  {label:<22} {seconds:9.3f} {base / seconds:12.1f}x")


if __name__ == "__main__":
    main()
