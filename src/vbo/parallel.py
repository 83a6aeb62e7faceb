"""Run one picklable function over many files: in this process, in a local process pool, or on a Dask cluster.

Population analyses open hundreds of NWB files, each independently; the work is the same function applied to
each path. :func:`map_files` hides where it runs, so the analyses take a ``client=`` (a
``dask.distributed.Client``: a ``LocalCluster`` on a laptop, or a cluster whose workers can read the same paths
or stream the same URLs) or a number of local ``workers``.

Scale-out: jobs start largest file first (longest-processing-time first, so the last job to finish is a small
one and no worker idles while one straggler runs), one file per task, and the local process pool is kept for
the rest of the session so that a second analysis does not pay its start-up (:func:`shutdown` ends it).
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_POOLS: dict[int, ProcessPoolExecutor] = {}
THREAD_WORKERS = max(1, min(8, os.cpu_count() or 1))  # threads for numpy / zlib work (they release the GIL)
_POOLS_LOCK = threading.Lock()


def _pool(workers: int) -> ProcessPoolExecutor:
    """The session's process pool of ``workers`` processes (started on first use, ended at exit)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None or getattr(pool, "_broken", False):
            pool = _POOLS[workers] = ProcessPoolExecutor(max_workers=workers)
        return pool


def shutdown() -> None:
    """End the process pools :func:`map_files` keeps between calls."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)


def largest_first(paths: Sequence[str]) -> list[int]:
    """Positions of ``paths`` by decreasing file size (URLs and missing files keep their place, at the end)."""
    def size(path: str) -> int:
        try:
            return os.path.getsize(path)
        except OSError:
            return -1
    sizes = [size(p) for p in paths]
    return sorted(range(len(paths)), key=lambda i: (-sizes[i], i))


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
    order = largest_first(paths)
    ordered = [paths[i] for i in order]
    if client is not None:
        futures = client.map(func, ordered, *[[a] * len(paths) for a in args], pure=False)
        results = client.gather(futures)
    else:
        workers = min(len(paths), workers or os.cpu_count() or 1)
        if workers <= 1:
            return [func(path, *args) for path in paths]
        results = list(_pool(workers).map(func, ordered, *[[a] * len(paths) for a in args], chunksize=1))
    out: list = [None] * len(paths)
    for position, result in zip(order, results):
        out[position] = result
    return out
