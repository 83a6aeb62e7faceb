"""Write a whole synthetic release in the bucket layout: NWB files, metadata CSVs, manifests, planted truth.

``OUT_DIR/visual-behavior-ophys/`` is the bucket prefix as on S3: the latest version of every object and
the manifests of every release version. ``OUT_DIR/previous_versions/visual-behavior-ophys/`` holds the
older data-file versions that the older manifests name (same keys, other bytes, as S3 object versions), and
``OUT_DIR/previous_versions/vX.Y.Z/visual-behavior-ophys/`` the metadata CSVs of each older version;
``OUT_DIR/ground_truth/`` holds what was planted (outside the release tree).
Every session is simulated from its own seed, so the result does not depend on the order or the number
of worker processes: same seed, same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from vbo import __version__, behavior
from vbo.cache import manifest as mf
from vbo.nwb.fastwrite import prepare, write_nwb_fast
from vbo.nwb.write import write_nwb
from vbo.simulate.mice import cells_table, metadata_tables, plan_release, table_columns, write_metadata_csv
from vbo.simulate.neurons import Container, make_container, simulate_ophys
from vbo.simulate.plan import SCALES, Scale, SessionPlan
from vbo.simulate.task import simulate_behavior

# the release's manifest versions, oldest first (docs/format.md §11); ``simulate(versions=n)`` writes the last n
RELEASE_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "1.0.0", "1.0.1", "1.1.0")
LATEST_VERSION = RELEASE_VERSIONS[-1]
OLDER_VERSIONS = RELEASE_VERSIONS[:-1]
# AllenSDK version named by each manifest's ``data_pipeline`` (docs/format.md §3). v0.1.0 → 2.10.0 is the published
# pairing; the others are chosen in release order (an assumption, not a fact)
ALLENSDK_VERSIONS = {"0.1.0": "2.10.0", "0.2.0": "2.10.2", "0.3.0": "2.11.1", "1.0.0": "2.13.1",
                     "1.0.1": "2.13.4", "1.1.0": "2.15.0"}
# versions whose CSVs still carry the internal ``file_path`` column (docs/format.md §11: "some table versions")
FILE_PATH_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "1.0.0")
CHANGED_IN_OLDER_VERSIONS = 2  # experiment files that were re-released with new streams in the latest version
GROUND_TRUTH = "ground_truth"
PREVIOUS_VERSIONS = "previous_versions"


@dataclass
class Release:
    """Where a simulated release was written and what it holds."""

    root: Path
    versions: list[str]
    n_behavior_files: int  # in the release's tables (with ``write_only``, only some of them are written)
    n_experiment_files: int

    @property
    def bucket_root(self) -> Path:
        """The folder that mirrors the bucket (pass it to a static local cache)."""
        return self.root

    @property
    def project_dir(self) -> Path:
        return self.root / mf.PROJECT_NAME

    def manifest_path(self, version: str | None = None) -> Path:
        return self.root / mf.manifest_key(version or self.versions[-1])


def _seed(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([seed, *parts])


def _assign_file_ids(sessions: list[SessionPlan]) -> None:
    """Sequential manifest keys from 1: behavior-only NWBs first, then experiment NWBs (−999 for imaging
    sessions). Never 0: AllenSDK takes a behavior ``file_id`` of 0 for "no file" (docs/format.md §6.7)."""
    next_id = 1
    for session in sessions:
        if session.is_imaging:
            session.file_id = -999
        else:
            session.file_id = next_id
            next_id += 1
    for session in sessions:
        for experiment in session.experiments:
            experiment.file_id = next_id
            next_id += 1


def _trial_counts(trials: pd.DataFrame, response_window_start: float) -> dict[str, int]:
    """The trial-summary columns of the behavior table for one session (engaged: reward rate above
    :data:`vbo.behavior.ENGAGEMENT_THRESHOLD` rewards/min)."""
    rolling = behavior.rolling_performance(trials, response_window_start)
    columns = behavior.GO_CATCH_TYPES + behavior.TRIAL_OUTCOMES
    counts = {f"{c}_trial_count": int(trials[c].sum()) for c in columns}
    counts["trial_count"] = len(trials)
    counts["engaged_trial_count"] = int((rolling["reward_rate"] > behavior.ENGAGEMENT_THRESHOLD).sum())
    return counts


def _jsonable(value):
    """Planted-truth values → JSON (numpy scalars and arrays, tuples, NaN as null)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _older_experiment(content):
    """The same experiment as released before the latest version: no demixed/neuropil traces, no r/RMSE."""
    return dataclasses.replace(content, demixed=None, neuropil=None, r=None, rmse=None)


WRITERS = ("fast", "pynwb")  # vbo.nwb.fastwrite (h5py, the default) or vbo.nwb.write (pynwb, the reference)


def _write(content, path: Path, writer: str = "fast") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if writer == "pynwb":
        return write_nwb(content, path)
    return write_nwb_fast(content, path)


def _wanted(key: str, write_only: frozenset[str] | None) -> bool:
    return write_only is None or key in write_only


def _simulate_session(job: tuple) -> dict:
    """Simulate one behavior session and write those of its files that are wanted (run in a worker process).

    Files that are not written are still simulated: the metadata tables (trial counts, cells) cover every
    session of the release.
    """
    session, containers, scale, seed, root, older_root, changed_file_ids, write_only, writer = job
    behavior, behavior_truth = simulate_behavior(session, scale, _seed(seed, session.behavior_session_id))
    result = {
        "behavior_session_id": session.behavior_session_id,
        "trial_counts": _trial_counts(behavior.trials, behavior.task_parameters["response_window_sec"][0]),
        "truth": {"behavior": behavior_truth, "experiments": {}},
        "cells": [],
        "files": [],
    }
    if not session.is_imaging:
        key = mf.behavior_nwb_key(session.behavior_session_id)
        if _wanted(key, write_only):
            path = _write(behavior, root / key, writer)
            result["files"].append((session.file_id, key, str(path)))
        return result
    for experiment in session.experiments:
        container = containers[experiment.ophys_container_id]
        ophys, ophys_truth = simulate_ophys(session, experiment, container, behavior, scale,
                                            _seed(seed, session.behavior_session_id, experiment.ophys_experiment_id))
        key = mf.experiment_nwb_key(experiment.ophys_experiment_id)
        if _wanted(key, write_only):
            path = _write(ophys, root / key, writer)
            result["files"].append((experiment.file_id, key, str(path)))
            if experiment.file_id in changed_file_ids:
                _write(_older_experiment(ophys), older_root / key, writer)
        result["truth"]["experiments"][str(experiment.ophys_experiment_id)] = ophys_truth
        for roi, specimen in zip(ophys.rois["cell_roi_id"], ophys.rois["cell_specimen_id"]):
            result["cells"].append((int(roi), None if specimen == -1 else int(specimen), experiment.ophys_experiment_id))
    return result


def simulate(out_dir: str | Path, seed: int = 0, mice: int | None = None, scale: str = "tiny",
             versions: int = 1, workers: int | None = None,
             progress: Callable[[int, int], None] | None = None,
             write_only: Callable[[dict[str, pd.DataFrame]], set[str]] | None = None,
             writer: str = "fast") -> Release:
    """Write a synthetic Visual Behavior Ophys release with planted ground truth.

    Parameters
    ----------
    out_dir
        Folder to write into (created; an existing release there is replaced).
    seed
        Random seed; the same seed gives the same bytes.
    mice
        Number of mice (default: the scale's).
    scale
        ``tiny`` (tests: seconds), ``small`` (the demo) or ``full`` (60-min sessions, ~1 GB experiments).
    versions
        Number of manifest versions (1-6): the last ``versions`` of :data:`RELEASE_VERSIONS`. Older versions
        differ as in docs/format.md §11: v1.0.x and v0.x lack the 1.1.0 CSV columns and the newest streams of a
        few experiment files, and have NaN ``file_id`` for imaging sessions; v0.x and v1.0.0 CSVs carry a
        ``file_path`` column naming that version's staging path; v0.x manifests are refused by AllenSDK and
        vbo (``BehaviorCloudCacheVersionException``).
    workers
        Worker processes (default: number of CPUs, at most 4).
    progress
        Called as ``progress(done, total)`` after each session.
    write_only
        Which NWB files to write: called with the metadata tables (``behavior_session_table``,
        ``ophys_session_table``, ``ophys_experiment_table``; trial counts not yet filled in), returns the
        manifest keys to write. Every session is still simulated, so the tables (trial counts, cells) cover
        the whole release; the manifests list the written files only. Default: every file.
    writer
        ``"fast"`` (:mod:`vbo.nwb.fastwrite`, h5py) or ``"pynwb"`` (:mod:`vbo.nwb.write`, the reference);
        both write the same tree.

    Returns
    -------
    Release
    """
    _check_arguments(scale, writer, versions)
    sc: Scale = SCALES[scale]
    root = Path(out_dir)
    for stale in (mf.PROJECT_NAME, PREVIOUS_VERSIONS, GROUND_TRUTH):
        shutil.rmtree(root / stale, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    all_versions = list(RELEASE_VERSIONS[len(RELEASE_VERSIONS) - versions:])
    older_root = root / PREVIOUS_VERSIONS if versions > 1 else None

    # the plan, then every session in worker processes (only the wanted files written)
    sessions = plan_release(_seed(seed, 0), mice or sc.default_mice, sc)
    _assign_file_ids(sessions)
    experiment_file_ids = sorted(e.file_id for s in sessions for e in s.experiments)
    changed = frozenset(experiment_file_ids[:CHANGED_IN_OLDER_VERSIONS]) if older_root else frozenset()
    containers = _containers(sessions, sc, seed)
    selected = frozenset(write_only(metadata_tables(sessions))) if write_only is not None else None
    if writer == "fast":
        prepare()  # the cached specifications, made once here rather than once per worker
    jobs = [(s, {e.ophys_container_id: containers[e.ophys_container_id] for e in s.experiments}, sc, seed, root,
             older_root, changed, selected, writer) for s in sessions]
    results = _run(jobs, workers, progress)

    # the tables and manifests of every version, the movie, the planted truth
    _write_versions(root, older_root, all_versions, sessions, results, seed)
    _write_natural_movie(root / mf.NATURAL_MOVIE_KEY, sc, seed)
    files = "all" if write_only is None else getattr(write_only, "__name__", "selected")
    _write_ground_truth(root / GROUND_TRUTH, sessions, results, seed, scale, files)
    return Release(root, all_versions, sum(not s.is_imaging for s in sessions),
                   sum(len(s.experiments) for s in sessions))


def _check_arguments(scale: str, writer: str, versions: int) -> None:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    if writer not in WRITERS:
        raise ValueError(f"unknown writer {writer!r}; choose one of {WRITERS}")
    if not 1 <= versions <= len(OLDER_VERSIONS) + 1:
        raise ValueError(f"versions must be 1..{len(OLDER_VERSIONS) + 1}, got {versions}")


def _containers(sessions: list[SessionPlan], scale: Scale, seed: int) -> dict[int, Container]:
    """Every container's cells, made from its own seed when its first experiment appears."""
    containers = {}
    for session in sessions:
        for experiment in session.experiments:
            if experiment.ophys_container_id not in containers:
                containers[experiment.ophys_container_id] = make_container(
                    experiment.ophys_container_id, session.mouse, experiment, scale,
                    _seed(seed, 1, experiment.ophys_container_id))
    return containers


def _write_versions(root: Path, older_root: Path | None, all_versions: list[str], sessions: list[SessionPlan],
                    results: list[dict], seed: int) -> None:
    """The metadata tables (trial counts and cells from ``results``) and manifest of every version."""
    trial_counts = {r["behavior_session_id"]: r["trial_counts"] for r in results}
    tables = metadata_tables(sessions, trial_counts)
    tables["ophys_cells_table"] = cells_table([c for r in results for c in r["cells"]])
    data_files = {fid: (key, Path(path)) for r in results for fid, key, path in r["files"]}
    _write_version(root, root, LATEST_VERSION, tables, data_files, seed)
    if older_root is not None:
        older_files = {fid: (key, older_root / key if (older_root / key).exists() else path)
                       for fid, (key, path) in data_files.items()}
        for version in all_versions[:-1]:
            _write_version(root, older_root / f"v{version}", version, _older_tables(tables, version), older_files, seed)


def _cost(job: tuple) -> tuple:
    """Rough relative cost of a job: imaging planes to simulate, then files to write."""
    session, *_rest, write_only, _writer = job
    keys = ([mf.experiment_nwb_key(e.ophys_experiment_id) for e in session.experiments] if session.is_imaging
            else [mf.behavior_nwb_key(session.behavior_session_id)])
    return (len(session.experiments), sum(_wanted(k, write_only) for k in keys))


def _run(jobs: list[tuple], workers: int | None, progress) -> list[dict]:
    """Results in job order; in worker processes the most expensive jobs start first (a short tail)."""
    workers = workers or min(4, os.cpu_count() or 1)
    results: list[dict | None] = [None] * len(jobs)
    if workers <= 1:
        for i, job in enumerate(jobs):
            results[i] = _simulate_session(job)
            if progress:
                progress(i + 1, len(jobs))
        return results
    order = sorted(range(len(jobs)), key=lambda i: _cost(jobs[i]), reverse=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_simulate_session, jobs[i]): i for i in order}
        for done, future in enumerate(as_completed(futures), start=1):
            results[futures[future]] = future.result()
            if progress:
                progress(done, len(jobs))
    return results


def _version_id(digest: str) -> str:
    """A stand-in S3 version id for an unpublished object (``vbo publish`` replaces it with the server's)."""
    return digest[:32]


def _pipeline(version: str, seed: int) -> list[dict]:
    """``data_pipeline`` of a manifest: the AllenSDK entry first (AllenSDK's cache reads the first one and
    fails without it, docs/format.md §3), then the simulator that really wrote the files."""
    return [
        {"name": "AllenSDK", "version": ALLENSDK_VERSIONS[version],
         "comment": "AllenSDK version whose NWB layout and table conventions this release follows"},
        {"name": "vbo", "version": __version__, "comment": f"synthetic release written by vbo simulate, seed {seed}"},
    ]


def _write_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> dict[str, tuple[str, str, str]]:
    entries = {}
    for name in mf.METADATA_TABLES:
        key = mf.metadata_key(name)
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        path = write_metadata_csv(tables[name], folder / key, name)
        digest = mf.file_hash(path)
        entries[name] = (key, _version_id(digest), digest)
    return entries


def _write_version(root: Path, objects_root: Path, version: str, tables: dict[str, pd.DataFrame],
                   data_files: dict[int, tuple[str, Path]], seed: int) -> Path:
    """Write the metadata CSVs under ``objects_root`` and the version's manifest under ``root``."""
    metadata = _write_tables(objects_root, tables)
    data = {}
    for fid, (key, path) in data_files.items():
        digest = mf.file_hash(path)
        data[fid] = (key, _version_id(digest), digest)
    manifest = mf.build_manifest(version, metadata, data, _pipeline(version, seed))
    return mf.write_manifest(manifest, root / mf.manifest_key(version))


def _older_tables(tables: dict[str, pd.DataFrame], version: str) -> dict[str, pd.DataFrame]:
    """The metadata tables as an older release version wrote them (docs/format.md §11): without the 1.1.0
    columns (trial counts; ``published_at``, ``isi_experiment_id``), NaN ``file_id`` for imaging sessions,
    and, in :data:`FILE_PATH_VERSIONS`, a ``file_path`` column pointing into that version's staging area."""
    older = {}
    for name, table in tables.items():
        if name != "ophys_cells_table":
            table = table[list(table_columns(name, "1.0"))]
        if name == "behavior_session_table":
            table = _older_behavior_table(table)
        if version in FILE_PATH_VERSIONS and name != "ophys_cells_table":
            table = table.copy()
            table["file_path"] = _staging_paths(table, version)
        older[name] = table
    return older


def _staging_paths(table: pd.DataFrame, version: str) -> list[str]:
    """Where each row's NWB sat while release ``version`` was built (the internal ``file_path`` column)."""
    stage = f"/visual-behavior-ophys-staging/v{version}"
    if "ophys_experiment_id" in table and "imaging_depth" in table:  # experiment table
        return [f"{stage}/{mf.experiment_nwb_key(e).split('/', 1)[1]}" for e in table["ophys_experiment_id"]]
    if "ophys_session_id" in table and "file_id" not in table:  # ophys session table: the session folder
        return [f"{stage}/ophys_session_{int(s)}" for s in table["ophys_session_id"]]
    return [f"{stage}/{mf.behavior_nwb_key(b).split('/', 1)[1]}" for b in table["behavior_session_id"]]


def _older_behavior_table(table: pd.DataFrame) -> pd.DataFrame:
    """Older releases left ``file_id`` empty (NaN) for imaging sessions instead of −999 (docs/format.md §11)."""
    older = table.copy()
    older["file_id"] = older["file_id"].astype(float).where(older["file_id"] != -999)
    return older


def _write_natural_movie(path: Path, scale: Scale, seed: int) -> None:
    """``resources/Movie_TOE1.npy``: the movie frames shown in every session (frames × rows × columns, uint8)."""
    rng = _seed(seed, 2)
    rows, columns = (max(8, s // 4) for s in scale.template_shape)
    drift = np.cumsum(rng.normal(0, 1, (scale.movie_frames, 1, 1)), axis=0)
    y, x = np.mgrid[0:rows, 0:columns]
    frames = 127 + 100 * np.sin((x[None] + drift) / 9.0) * np.cos((y[None] - drift) / 13.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.clip(frames, 0, 255).astype(np.uint8))


def _write_ground_truth(folder: Path, sessions: list[SessionPlan], results: list[dict], seed: int,
                        scale: str, files: str = "all") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for session in sessions:
        rows.append({
            "behavior_session_id": session.behavior_session_id,
            "mouse_id": session.mouse.mouse_id,
            "session_type": session.session_type,
            "ophys_session_id": session.ophys_session_id,
            "hit_probability": session.hit_probability,
            "false_alarm_probability": session.false_alarm_probability,
            "passive": session.passive,
            "experience_level": session.experience_level,
            "ophys_experiment_ids": [e.ophys_experiment_id for e in session.experiments],
        })
    pd.DataFrame(rows).to_parquet(folder / "sessions.parquet", index=False)
    per_session = {str(r["behavior_session_id"]): r["truth"] for r in results}
    (folder / "truth.json").write_text(json.dumps(_jsonable(per_session), indent=1, sort_keys=True) + "\n")
    marker = release_marker(seed, scale, files)
    (folder / "release.json").write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")


def simulator_fingerprint() -> str:
    """BLAKE2b of the simulator's and writer's source: a release made by other code is not reused."""
    package = Path(__file__).resolve().parents[1]
    writers = [package / "nwb" / "write.py", package / "nwb" / "fastwrite.py"]
    sources = sorted([*(package / "simulate").glob("*.py"), *writers,
                      package / "demo.py",  # which files a demo release holds
                      *(package / "nwb" / "extensions").glob("*.yaml")])
    digest = hashlib.blake2b(digest_size=16)
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def release_marker(seed: int, scale: str, files: str = "all") -> dict:
    """What ``ground_truth/release.json`` records about how a release was made (``files``: which NWB
    files were written, e.g. ``"all"`` or the name of a selection)."""
    return {"seed": seed, "scale": scale, "files": files, "vbo_version": __version__,
            "simulator": simulator_fingerprint()}
