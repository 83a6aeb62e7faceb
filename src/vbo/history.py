"""Training histories: one row per behavior session with its metadata and performance metrics.

The metrics are those of ``get_performance_metrics`` (``docs/analysis.md`` §4), computed from each session's
NWB file in a process pool and kept on disk next to the data, so that a second call reads them back:

- :func:`training_history` — every behavior session of one mouse, in date order (tutorial "Examine the full
  training history of one mouse");
- :func:`project_history` — the same for every behavior session of the release (or a selection).

The disk cache (``<cache folder>/vbo-derived/behavior_performance.parquet``) holds one row per
(behavior session, file hash, metrics version): a file that changes between manifest versions, or a new
version of the metric definitions, is recomputed; unchanged files are reused across manifests.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from vbo import behavior
from vbo.errors import ReleaseLookupError, UnknownIdError
from vbo.parallel import map_files
from vbo.session import BehaviorSession
from vbo.tables import is_passive, normalize_id

METRICS_VERSION = 1
"""Bumped whenever the metric definitions change: rows computed by another version are recomputed."""
CACHE_FOLDER = "vbo-derived"
CACHE_FILE = "behavior_performance.parquet"
METRIC_KEYS = behavior.PERFORMANCE_METRIC_KEYS
_KEY = ("behavior_session_id", "file_hash", "metrics_version")


def session_metrics(nwb_path: str | os.PathLike,
                    engaged_trial_reward_rate_threshold: float = behavior.ENGAGEMENT_THRESHOLD) -> dict:
    """``get_performance_metrics`` of the behavior session stored in one NWB file (runs in a worker)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with BehaviorSession.from_nwb_path(nwb_path) as session:
            metrics = session.get_performance_metrics(engaged_trial_reward_rate_threshold)
            metrics["behavior_session_id"] = int(session.behavior_session_id)
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in metrics.items()}


def default_cache_path(cache) -> Path:
    """Where the performance rows of ``cache`` are kept: ``<cache folder>/vbo-derived/behavior_performance.parquet``."""
    return cache.cache_dir / CACHE_FOLDER / CACHE_FILE


def _read_cache(path: Path | None) -> pd.DataFrame:
    if path is None or not path.is_file():
        return pd.DataFrame(columns=[*_KEY, *METRIC_KEYS])
    try:
        return pd.read_parquet(path)
    except Exception as error:  # a damaged cache file is recomputed, not fatal
        warnings.warn(f"ignoring unreadable performance cache {path}: {error}", RuntimeWarning, stacklevel=3)
        return pd.DataFrame(columns=[*_KEY, *METRIC_KEYS])


def _write_cache(path: Path, rows: pd.DataFrame) -> None:
    """Atomic replace (write to a temporary file, then rename); an unwritable folder only warns."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        rows.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except OSError as error:
        warnings.warn(f"could not write the performance cache {path}: {error}", RuntimeWarning, stacklevel=3)


def performance_table(cache, behavior_session_ids, *, workers: int | None = None, client=None,
                      use_disk_cache: bool = True,
                      cache_path: str | os.PathLike | None = None,
                      engaged_trial_reward_rate_threshold: float = behavior.ENGAGEMENT_THRESHOLD) -> pd.DataFrame:
    """The 23 performance metrics of the given behavior sessions (index ``behavior_session_id``, input order).

    Files are located (and, on an S3 cache, downloaded) through ``cache``; the metrics are computed in
    ``workers`` processes (default: one per CPU; 1 computes in this process), or on a Dask cluster when a
    ``dask.distributed.Client`` is given as ``client`` (:func:`vbo.parallel.map_files`). With
    ``use_disk_cache`` rows are read from and added to ``cache_path`` (default :func:`default_cache_path`),
    keyed by session id and the file's hash, so a later call — also on another manifest version with the
    same files — reads them back.
    Only the default threshold (2.0 rewards/min) is cached.
    """
    ids = [normalize_id(i) for i in behavior_session_ids]
    cacheable = use_disk_cache and engaged_trial_reward_rate_threshold == behavior.ENGAGEMENT_THRESHOLD
    path = Path(cache_path) if cache_path is not None else default_cache_path(cache)
    stored = _read_cache(path if cacheable else None)
    entries = {i: cache.file_entry(behavior_session_id=i) for i in ids}  # the one file lookup
    wanted = pd.DataFrame({"behavior_session_id": ids, "file_hash": [entries[i]["file_hash"] for i in ids],
                           "metrics_version": METRICS_VERSION})
    found = wanted.merge(stored, on=list(_KEY), how="left", indicator=True)
    missing = found.loc[found["_merge"] == "left_only", "behavior_session_id"].drop_duplicates().tolist()
    paths = [cache.file_source(behavior_session_id=i) for i in missing]
    computed = pd.DataFrame(map_files(session_metrics, paths, engaged_trial_reward_rate_threshold, client=client,
                                      workers=workers))
    if len(computed):
        for i, expected in zip(missing, computed["behavior_session_id"]):
            if int(expected) != i:
                raise ReleaseLookupError(f"the file of behavior session {i} holds session {expected}")
        computed["file_hash"] = [entries[i]["file_hash"] for i in missing]
        computed["metrics_version"] = METRICS_VERSION
        if cacheable:
            fresh = computed[[*_KEY, *METRIC_KEYS]]
            keep = stored.merge(fresh[list(_KEY)], on=list(_KEY), how="left", indicator=True)
            kept = stored[(keep["_merge"] == "left_only").to_numpy()]
            _write_cache(path, pd.concat([kept, fresh], ignore_index=True) if len(kept) else fresh)
    rows = found.loc[found["_merge"] == "both", ["behavior_session_id", *METRIC_KEYS]]
    if len(computed):
        rows = pd.concat([rows, computed[["behavior_session_id", *METRIC_KEYS]]], ignore_index=True)
    rows = rows.drop_duplicates("behavior_session_id").set_index("behavior_session_id").reindex(ids)
    for key in METRIC_KEYS:
        if key.endswith("_count"):
            rows[key] = rows[key].astype(np.int64)
        else:
            rows[key] = rows[key].astype(float)
    return rows


def _with_metadata(cache, metrics: pd.DataFrame) -> pd.DataFrame:
    """Behavior-table metadata (without its release-time trial counts) joined to the computed metrics."""
    table = cache.get_behavior_session_table()
    metadata = table.drop(columns=[c for c in table.columns if c in METRIC_KEYS]).loc[metrics.index]
    out = metadata.join(metrics)
    return out.sort_values("date_of_acquisition", kind="stable") if "date_of_acquisition" in out else out


def training_history(cache, mouse_id, *, passive: bool = True, **kwargs) -> pd.DataFrame:
    """Every behavior session of one mouse, oldest first: behavior-table metadata plus the 23 metrics.

    Parameters
    ----------
    cache
        A :class:`vbo.VisualBehaviorOphysProjectCache`.
    mouse_id
        The mouse, as int or str (``445002`` or ``'445002'``).
    passive
        Include the passive-viewing sessions (``behavior_type`` ``"passive_viewing"``: the task replayed
        without a lick spout, so every rate and d′ is 0). False leaves them out without opening their files.
    **kwargs
        ``workers``, ``client`` (Dask), ``use_disk_cache``, ``cache_path``,
        ``engaged_trial_reward_rate_threshold`` as for
        :func:`performance_table`.

    Returns
    -------
    pandas.DataFrame
        Index ``behavior_session_id``, sorted by ``date_of_acquisition``. The count columns
        (``trial_count`` … ``engaged_trial_count``) are computed from the files, like the rates and d′.

    Raises
    ------
    vbo.errors.UnknownIdError
        (a ``KeyError``) if the mouse has no session in the release.
    """
    key = str(normalize_id(mouse_id))
    table = cache.get_behavior_session_table()
    sessions = table[table["mouse_id"].astype(str) == key]
    if not len(sessions):
        raise UnknownIdError(f"mouse_id {mouse_id!r} has no behavior session in this release")
    ids = sessions.index if passive else sessions.index[~is_passive(sessions)]
    return _with_metadata(cache, performance_table(cache, ids, **kwargs))


def project_history(cache, behavior_session_ids=None, **kwargs) -> pd.DataFrame:
    """:func:`training_history` for every behavior session of the release (or ``behavior_session_ids``),
    sorted by mouse and date; keyword arguments as for :func:`performance_table`."""
    table = cache.get_behavior_session_table()
    ids = table.index if behavior_session_ids is None else behavior_session_ids
    out = _with_metadata(cache, performance_table(cache, ids, **kwargs))
    if "mouse_id" in out and "date_of_acquisition" in out:
        out = out.sort_values(["mouse_id", "date_of_acquisition"], kind="stable")
    return out
