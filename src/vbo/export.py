"""The release as analysis-ready, Hive-partitioned Parquet datasets: incremental, streamed, resumable.

``export(cache, out_dir)`` writes one folder per dataset under ``out_dir`` (partition columns in brackets):

- ``trials`` — every trial of every behavior session [``cre_line``, ``session_type``];
- ``stimulus_presentations`` — every presentation of every session [``cre_line``, ``session_type``];
- ``performance`` — one row per behavior session with its 23 metrics [``cre_line``];
- ``cells`` — ROI × experiment metadata, from the tables alone [``cre_line``];
- ``cell_responses`` — every cell's response to every change and omission [``cre_line``, ``session_type``].

Every row carries the ids (``behavior_session_id``, ``ophys_session_id``, ``ophys_experiment_id``,
``mouse_id`` …) and the metadata columns needed to join. The partition columns live in the folder names
(``cre_line=Sst-IRES-Cre/…``), as Hive, DuckDB, polars and pyarrow expect.

One task per NWB file (a *unit*) reads that file and writes its own Parquet files, so a worker holds one
session at a time (bounded memory). A unit ends by writing a small marker (``_vbo_export/units/…json``) with
the file hash and metadata it was made from: a later export skips units whose marker still matches (new or
changed sessions are the only ones recomputed) and an interrupted export resumes where it stopped. The
manifest of every export is recorded in ``_vbo_export/state.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vbo.behavior import PERFORMANCE_METRIC_KEYS
from vbo.errors import ReleaseLookupError, VboError
from vbo.experiment import BehaviorOphysExperiment
from vbo.parallel import map_files
from vbo.population import cells_table
from vbo.responses import stimulus_responses
from vbo.session import BehaviorSession

EXPORT_VERSION = 1
"""Bumped when what a unit writes changes: units made by another version are recomputed."""
STATE_FOLDER = "_vbo_export"
SESSION_DATASETS = ("trials", "stimulus_presentations", "performance")
EXPERIMENT_DATASETS = ("cell_responses",)
DATASETS = (*SESSION_DATASETS, "cells", *EXPERIMENT_DATASETS)
PARTITIONS = {"trials": ("cre_line", "session_type"), "stimulus_presentations": ("cre_line", "session_type"),
              "performance": ("cre_line",), "cells": ("cre_line",),
              "cell_responses": ("cre_line", "session_type")}
SESSION_COLUMNS = ("behavior_session_id", "ophys_session_id", "mouse_id", "cre_line", "reporter_line",
                   "full_genotype", "sex", "project_code", "session_type", "session_number", "image_set",
                   "experience_level", "equipment_name", "date_of_acquisition")
"""Behavior-table columns attached to every session row (those present in the release)."""
EXPERIMENT_COLUMNS = ("behavior_session_id", "ophys_session_id", "ophys_container_id", "mouse_id", "cre_line",
                      "reporter_line", "targeted_structure", "imaging_depth", "project_code", "session_type",
                      "session_number", "experience_level", "passive", "equipment_name", "date_of_acquisition")
"""Experiment-table columns attached to every cell-response row (those present in the release)."""
RESPONSE_COLUMNS = ("cell_roi_id", "cell_specimen_id", "stimulus_presentations_id", "trials_id", "event_type",
                    "image_name", "trial_type", "mean_response", "baseline_response", "p_value_gray_screen",
                    "event_time")
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


@dataclass
class ExportResult:
    """What one export did: units computed now, units reused from an earlier export, units removed."""

    out_dir: Path
    manifest: str
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


# --- units: one NWB file each -------------------------------------------------------------------------


def _plain(value):
    """A JSON-friendly scalar (numpy scalars, timestamps and missing values made plain)."""
    if value is None or (not isinstance(value, (list, tuple, np.ndarray)) and pd.isna(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _partition_path(dataset: str, metadata: dict, name: str) -> str:
    """``dataset/key=value/…/name`` (values percent-encoded; missing values as Hive's default partition)."""
    parts = [dataset]
    for key in PARTITIONS[dataset]:
        value = metadata.get(key)
        parts.append(f"{key}={NULL_PARTITION if value is None else quote(str(value), safe='')}")
    return "/".join([*parts, name])


def _unit(kind: str, unit_id: int, entry: dict, metadata: dict, datasets: Sequence[str]) -> dict:
    """The description of one unit handed to a worker; ``key`` changes whenever its output would."""
    metadata = {k: _plain(v) for k, v in metadata.items()}
    name = f"part-{unit_id}.parquet"
    files = {d: _partition_path(d, metadata, name) for d in datasets}
    digest = hashlib.sha256(json.dumps([EXPORT_VERSION, entry["file_hash"], metadata, files],
                                       sort_keys=True, default=str).encode()).hexdigest()
    return {"kind": kind, "id": int(unit_id), "metadata": metadata, "files": files, "key": digest,
            "name": f"{kind}-{unit_id}"}


def session_units(cache, behavior_session_ids=None) -> list[dict]:
    """One unit per behavior session (its behavior file, or its lowest experiment's file)."""
    table = cache.get_behavior_session_table()
    ids = table.index if behavior_session_ids is None else [int(i) for i in behavior_session_ids]
    columns = [c for c in SESSION_COLUMNS if c in table.columns and c != "behavior_session_id"]
    units = []
    for session_id in ids:
        metadata = {"behavior_session_id": int(session_id), **table.loc[session_id, columns].to_dict()}
        entry = cache.file_entry(behavior_session_id=session_id)
        units.append(_unit("session", session_id, entry, metadata, SESSION_DATASETS))
    return units


def experiment_units(cache, ophys_experiment_ids=None) -> list[dict]:
    """One unit per imaging experiment (its NWB file)."""
    table = cache.get_ophys_experiment_table()
    ids = table.index if ophys_experiment_ids is None else [int(i) for i in ophys_experiment_ids]
    columns = [c for c in EXPERIMENT_COLUMNS if c in table.columns]
    units = []
    for experiment_id in ids:
        metadata = {"ophys_experiment_id": int(experiment_id), **table.loc[experiment_id, columns].to_dict()}
        entry = cache.file_entry(ophys_experiment_id=experiment_id)
        units.append(_unit("experiment", experiment_id, entry, metadata, EXPERIMENT_DATASETS))
    return units


def _with_metadata(frame: pd.DataFrame, metadata: dict, dataset: str) -> pd.DataFrame:
    """``frame`` with the unit's metadata columns first; partition columns dropped (they are folder names)."""
    frame = frame.reset_index() if frame.index.name is not None else frame.reset_index(drop=True)
    frame = frame.drop(columns=[c for c in metadata if c in frame.columns])
    kept = [(key, value) for key, value in metadata.items() if key not in PARTITIONS[dataset]]
    for position, (key, value) in enumerate(kept):
        frame.insert(position, key, pd.Series([value] * len(frame), dtype=_dtype(key, value)))
    return frame


def _dtype(key: str, value) -> str:
    """The pandas dtype of a metadata column, fixed whatever the value, so every file has one schema."""
    if key == "date_of_acquisition":
        return "datetime64[ns, UTC]"
    if key == "passive" or isinstance(value, bool):
        return "boolean"
    if key.endswith("_id") or key in ("session_number", "imaging_depth", "targeted_imaging_depth"):
        return "Int64"
    if isinstance(value, float):
        return "float64"
    return "string"


def _schema(dataset: str):
    """The Arrow types of a dataset's data columns (metadata columns are typed by :func:`_dtype`)."""
    f64, i64, text, flag = pa.float64(), pa.int64(), pa.string(), pa.bool_()
    if dataset == "trials":
        columns = {"trials_id": i64, "start_time": f64, "stop_time": f64, "initial_image_name": text,
                   "change_image_name": text, "is_change": flag, "change_time": f64, "go": flag, "catch": flag,
                   "lick_times": pa.list_(f64), "response_time": f64, "response_latency": f64,
                   "reward_time": f64, "reward_volume": f64, "hit": flag, "false_alarm": flag, "miss": flag,
                   "correct_reject": flag, "aborted": flag, "auto_rewarded": flag, "change_frame": i64,
                   "trial_length": f64}
    elif dataset == "stimulus_presentations":
        columns = {"stimulus_presentations_id": i64, "stimulus_block": i64, "stimulus_block_name": text,
                   "stimulus_name": text, "image_index": i64, "image_name": text, "image_set": text,
                   "movie_frame_index": i64, "movie_repeat": i64, "duration": f64, "start_time": f64,
                   "end_time": f64, "start_frame": i64, "end_frame": i64, "is_change": flag,
                   "is_image_novel": flag, "omitted": flag, "is_sham_change": flag, "flashes_since_change": i64,
                   "trials_id": i64, "active": flag, "orientation": f64, "phase": f64, "spatial_frequency": f64}
    elif dataset == "cell_responses":
        columns = {"cell_roi_id": i64, "cell_specimen_id": i64, "stimulus_presentations_id": i64,
                   "trials_id": i64, "event_type": text, "image_name": text, "trial_type": text,
                   "mean_response": f64, "baseline_response": f64, "p_value_gray_screen": f64, "event_time": f64}
    elif dataset == "performance":
        columns = {k: i64 if k.endswith("_count") else f64 for k in PERFORMANCE_METRIC_KEYS}
    else:
        return None
    return pa.schema(list(columns.items()))


def _arrow(frame: pd.DataFrame, dataset: str, metadata: dict):
    """``frame`` as an Arrow table with the dataset's fixed schema: metadata columns first, then the known
    data columns (absent ones as nulls, e.g. ``orientation`` outside grating sessions)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    schema = _schema(dataset)
    if schema is None:
        return table
    names = [n for n in table.column_names if n in metadata]
    arrays = [table[n] for n in names]
    for field_ in schema:
        if field_.name in names:
            continue
        if field_.name in table.column_names:
            arrays.append(table[field_.name].cast(field_.type))
        else:
            arrays.append(pa.nulls(len(table), field_.type))
        names.append(field_.name)
    return pa.table(arrays, names=names)


def _write_parquet(frame, path: Path) -> None:
    """Atomic write of a DataFrame or Arrow table: a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _marker_path(out_dir: Path, unit: dict) -> Path:
    return out_dir / STATE_FOLDER / "units" / f"{unit['name']}.json"


def _finish(out_dir: Path, unit: dict, rows: dict[str, int]) -> dict:
    """Write the unit's marker (last, so an interrupted unit is redone) and return its summary."""
    marker = _marker_path(out_dir, unit)
    marker.parent.mkdir(parents=True, exist_ok=True)
    summary = {"key": unit["key"], "files": unit["files"], "rows": rows}
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(summary))
    os.replace(tmp, marker)
    return {"name": unit["name"], **summary}


def session_tables(session) -> dict[str, pd.DataFrame]:
    """The per-session tables of the export: ``trials``, ``stimulus_presentations``, ``performance``."""
    metrics = {k: _plain(v) for k, v in session.get_performance_metrics().items()}
    trials = session.trials.copy()
    return {"trials": trials, "stimulus_presentations": session.stimulus_presentations.copy(),
            "performance": pd.DataFrame([metrics])}


def export_session(source: str, out_dir: str, unit: dict) -> dict:
    """Write the session datasets of one behavior session file (runs in a worker)."""
    out = Path(out_dir)
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with BehaviorSession.from_nwb_path(source) as session:
            if int(session.behavior_session_id) != unit["id"]:
                raise ReleaseLookupError(f"{source} holds behavior session {session.behavior_session_id}, "
                                   f"not {unit['id']}")
            for dataset, frame in session_tables(session).items():
                frame = _with_metadata(frame, unit["metadata"], dataset)
                _write_parquet(_arrow(frame, dataset, unit["metadata"]), out / unit["files"][dataset])
                rows[dataset] = len(frame)
    return _finish(out, unit, rows)


def _trial_type(trials: pd.DataFrame) -> pd.Series:
    """``hit``, ``miss``, ``false_alarm``, ``correct_reject``, ``aborted`` or ``auto_rewarded`` per trial."""
    kinds = pd.Series(pd.NA, index=trials.index, dtype="string")
    for kind in ("aborted", "auto_rewarded", "hit", "miss", "false_alarm", "correct_reject"):
        if kind in trials:
            kinds[trials[kind].fillna(False).to_numpy(bool)] = kind
    return kinds


def cell_response_rows(experiment, n_shuffles: int = 10_000) -> pd.DataFrame:
    """Every cell's response to every change and every omission of one experiment.

    Columns :data:`RESPONSE_COLUMNS`: ``mean_response`` / ``baseline_response`` (dF/F over 0.5 s after /
    before the event), ``p_value_gray_screen`` (against ``n_shuffles`` gray-screen windows), ``image_name``,
    ``event_type`` (``changes`` / ``omissions``) and ``trial_type`` of the change's trial (hit, miss …).
    """
    trial_types = _trial_type(experiment.trials)
    parts = []
    for event_type in ("changes", "omissions"):
        table = stimulus_responses(experiment, event_type, "dff", n_shuffles=n_shuffles).table
        if event_type == "changes" and "trials_id" in table:
            table["trial_type"] = trial_types.reindex(table["trials_id"].to_numpy()).to_numpy()
        else:
            table["trial_type"] = pd.Series(pd.NA, index=table.index, dtype="string")
        parts.append(table[[c for c in RESPONSE_COLUMNS if c in table.columns]])
    return pd.concat(parts, ignore_index=True)


def export_experiment(source: str, out_dir: str, unit: dict, n_shuffles: int = 10_000) -> dict:
    """Write the cell responses of one experiment file (runs in a worker)."""
    out = Path(out_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with BehaviorOphysExperiment.from_nwb_path(source) as experiment:
            frame = _with_metadata(cell_response_rows(experiment, n_shuffles), unit["metadata"], "cell_responses")
    _write_parquet(_arrow(frame, "cell_responses", unit["metadata"]), out / unit["files"]["cell_responses"])
    return _finish(out, unit, {"cell_responses": len(frame)})


def _run_unit(source: str, out_dir: str, units_by_source: dict[str, dict], n_shuffles: int) -> dict:
    """Export the unit whose file is ``source`` (runs in a worker; the batch's units are keyed by source)."""
    unit = units_by_source[source]
    if unit["kind"] == "session":
        return export_session(source, out_dir, unit)
    return export_experiment(source, out_dir, unit, n_shuffles)


def _run_batch(cache, batch: list[dict], out_dir: str, n_shuffles: int, stream: bool, client,
               workers: int | None) -> list[dict]:
    """Export a batch of units, sessions and experiments apart (an imaging session's behavior is read from
    an experiment's file, so a source names one unit only within a kind)."""
    summaries = []
    for kind in ("session", "experiment"):
        units = {}
        for unit in (u for u in batch if u["kind"] == kind):
            ids = {"behavior_session_id" if kind == "session" else "ophys_experiment_id": unit["id"]}
            units[cache.file_source(stream=stream, **ids)] = unit
        summaries += map_files(_run_unit, list(units), out_dir, units, n_shuffles, client=client, workers=workers)
    return summaries


# --- bookkeeping ----------------------------------------------------------------------------------------


def _done(out_dir: Path, unit: dict) -> bool:
    """True when the unit's marker matches its key and its files are all there."""
    marker = _marker_path(out_dir, unit)
    try:
        stored = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return stored.get("key") == unit["key"] and all((out_dir / f).is_file() for f in unit["files"].values())


def _release_unit_names(cache) -> set[str]:
    """Unit names of every session and experiment of the loaded release."""
    sessions = cache.get_behavior_session_table().index
    experiments = cache.get_ophys_experiment_table().index
    return {f"session-{i}" for i in sessions} | {f"experiment-{i}" for i in experiments}


def _remove_stale(out_dir: Path, units: list[dict], release: set[str]) -> list[str]:
    """Delete the files of units the release no longer has, and old files of units whose partition moved
    (a metadata change); units merely left out of this export's selection stay. Returns removed unit names."""
    folder = out_dir / STATE_FOLDER / "units"
    wanted = {u["name"]: u for u in units}
    removed = []
    for marker in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            stored = json.loads(marker.read_text())
        except (OSError, ValueError):
            marker.unlink(missing_ok=True)
            continue
        unit = wanted.get(marker.stem)
        if unit is None and marker.stem in release:
            continue
        keep = set(unit["files"].values()) if unit else set()
        for path in stored.get("files", {}).values():
            if path not in keep:
                (out_dir / path).unlink(missing_ok=True)
        if unit is None:
            marker.unlink()
            removed.append(marker.stem)
    return removed


def _write_cells(cache, out_dir: Path) -> int:
    """The ``cells`` dataset (ROI × experiment metadata, from the tables alone), rewritten whole."""
    cells = cells_table(cache).reset_index()
    for name in cells.columns[cells.dtypes == object]:
        cells[name] = cells[name].astype("string")
    folder = out_dir / "cells"
    for old in folder.rglob("*.parquet") if folder.is_dir() else []:
        old.unlink()
    for cre_line, part in cells.groupby(cells["cre_line"].astype("string").fillna(NULL_PARTITION), dropna=False):
        name = NULL_PARTITION if cre_line == NULL_PARTITION else quote(str(cre_line), safe="")
        _write_parquet(part.drop(columns=["cre_line"]), folder / f"cre_line={name}" / "part-0.parquet")
    return len(cells)


def _record(out_dir: Path, cache, result: ExportResult) -> None:
    """Append this export to ``_vbo_export/state.json`` (manifest version and what was recomputed)."""
    path = out_dir / STATE_FOLDER / "state.json"
    state = json.loads(path.read_text()) if path.is_file() else {"export_version": EXPORT_VERSION, "exports": []}
    state["manifest"] = cache.current_manifest()
    state["exports"].append({"manifest": cache.current_manifest(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                              time.gmtime()),
                             "computed": len(result.computed), "reused": len(result.reused),
                             "removed": len(result.removed)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=1))


def export_state(out_dir: str | os.PathLike) -> dict:
    """The recorded state of an export folder: ``manifest`` (of the last export) and every ``exports`` entry."""
    path = Path(out_dir) / STATE_FOLDER / "state.json"
    if not path.is_file():
        raise VboError(f"{out_dir} holds no vbo export (no {STATE_FOLDER}/state.json); run `vbo export` first")
    return json.loads(path.read_text())


# --- the export -----------------------------------------------------------------------------------------


def export(cache, out_dir: str | os.PathLike, *, behavior_session_ids=None, ophys_experiment_ids=None,
           workers: int | None = None, client=None, stream: bool = False, n_shuffles: int = 10_000,
           batch_size: int | None = None, progress: Callable[[int, int], None] | None = None) -> ExportResult:
    """Export the release (or a selection) as Hive-partitioned Parquet datasets under ``out_dir``.

    Parameters
    ----------
    cache
        A :class:`vbo.VisualBehaviorOphysProjectCache` (static mirror, local or S3 cache).
    out_dir
        The export folder; an existing export there is updated incrementally.
    behavior_session_ids, ophys_experiment_ids : iterable of int, optional
        Only these sessions / experiments (default: all of the release; ``[]`` for none). Units of an earlier
        export that are not selected now are kept; those the release no longer has are removed.
    workers, client
        Local processes (default one per CPU), or a ``dask.distributed.Client`` whose workers reach the
        files (:func:`vbo.parallel.map_files`).
    stream
        On an S3 cache, workers read the files by byte ranges instead of downloading them.
    n_shuffles
        Gray-screen shuffles behind each response's ``p_value_gray_screen``.
    batch_size
        Units handed out between progress reports and marker checks (default ``4 × workers``).
    progress
        Called as ``progress(done, total)`` in units.

    Returns
    -------
    ExportResult
        Unit names computed now, reused from an earlier export, and removed.
    """
    start = time.perf_counter()
    out = Path(out_dir).resolve()  # workers of a kept pool may run in another working directory
    out.mkdir(parents=True, exist_ok=True)
    units = session_units(cache, behavior_session_ids) + experiment_units(cache, ophys_experiment_ids)
    result = ExportResult(out, cache.current_manifest())
    result.removed = _remove_stale(out, units, _release_unit_names(cache))
    todo = []
    for unit in units:
        (result.reused if _done(out, unit) else todo).append(unit)
    result.reused = [u["name"] for u in result.reused]
    total, done = len(units), len(units) - len(todo)
    if progress:
        progress(done, total)
    size = batch_size or 4 * (workers or os.cpu_count() or 1)
    for first in range(0, len(todo), size):
        batch = todo[first:first + size]
        summaries = _run_batch(cache, batch, str(out), n_shuffles, stream, client, workers)
        result.computed += [s["name"] for s in summaries]
        done += len(batch)
        if progress:
            progress(done, total)
    _write_cells(cache, out)
    result.seconds = time.perf_counter() - start
    _record(out, cache, result)
    return result


# --- the four metadata tables ---------------------------------------------------------------------------

METADATA_TABLES = {"behavior_session_table": "get_behavior_session_table",
                   "ophys_session_table": "get_ophys_session_table",
                   "ophys_experiment_table": "get_ophys_experiment_table",
                   "ophys_cells_table": "get_ophys_cells_table"}


def metadata_tables(cache) -> dict[str, pd.DataFrame]:
    """The four metadata tables of the loaded manifest, as the cache returns them (ids as index)."""
    return {name: getattr(cache, method)() for name, method in METADATA_TABLES.items()}


def write_tables(cache, out_dir: str | os.PathLike, format: str = "csv") -> list[Path]:
    """Write the four metadata tables as ``<name>.csv`` or ``<name>.parquet`` in ``out_dir``.

    CSV keeps the release's text form (list columns as ``[1, 2]``); Parquet keeps types (list columns as lists,
    dates as UTC timestamps).
    """
    if format not in ("csv", "parquet"):
        raise ValueError(f"format must be 'csv' or 'parquet', not {format!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in metadata_tables(cache).items():
        path = out / f"{name}.{format}"
        if format == "csv":
            table.to_csv(path)
        else:
            frame = table.reset_index()
            for column in frame.columns[frame.dtypes == object]:
                values = frame[column].dropna()
                if not (len(values) and isinstance(values.iloc[0], list)):  # lists stay lists (ints or text)
                    frame[column] = frame[column].astype("string")
            _write_parquet(frame, path)
        written.append(path)
    return written
