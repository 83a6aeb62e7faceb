"""Run one picklable function over many files: in this process, in a local process pool, or on a Dask cluster.

Population analyses open hundreds of NWB files, each independently; the work is the same function applied to
each path. :func:`map_files` hides where it runs, so the analyses take a ``client=`` (a
``dask.distributed.Client``: a ``LocalCluster`` on a laptop, or a cluster whose workers can read the same paths
or stream the same URLs) or a number of local ``workers``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def map_files(func: Callable[..., Any], paths: Sequence[str], *args: Any, client=None,
              workers: int | None = None) -> list:
    """``[func(path, *args) for path in paths]``, computed in parallel, results in input order.

    Parameters
    ----------
    func : callable
        A module-level (picklable) function of a path (str; a local file or an ``s3://``/``https://`` URL).
    paths : sequence of str
        One job per path.
    *args
        Passed to every call after the path.
    client : dask.distributed.Client, optional
        Run the jobs as Dask tasks on this client's cluster (workers must reach the paths).
    workers : int, optional
        Without ``client``: local processes (default one per CPU; 1 computes in this process).

    Returns
    -------
    list
        One result per path. The first failing job's exception is raised.
    """
    paths = [str(p) for p in paths]
    if not paths:
        return []
    if client is not None:
        futures = client.map(func, paths, *[[a] * len(paths) for a in args], pure=False)
        return client.gather(futures)
    workers = min(len(paths), workers or os.cpu_count() or 1)
    if workers <= 1:
        return [func(path, *args) for path in paths]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(func, paths, *[[a] * len(paths) for a in args],
                             chunksize=max(1, len(paths) // (4 * workers))))
