"""VisualBehaviorOphysProjectCache: AllenSDK's project cache, safe and lazy (``docs/format.md`` §5).

Three places the data can come from (``docs/format.md`` §5.5), each a store of :mod:`vbo.cache.stores`:

* **S3 cache** (``from_s3_cache``): downloads on demand into ``<cache_dir>/<project>-<version>/...``,
  verifying every file, reusing unchanged files across versions;
* **local cache** (``from_local_cache``): the same folder, offline — never touches the network;
* **static cache** (``from_local_cache(..., use_static_cache=True)``): a mounted or synchronised copy of the
  bucket itself (``<cache_dir>/visual-behavior-ophys/...``), e.g. a ``vbo simulate`` release.

This module is the façade: manifests and versions, the metadata tables, which file holds a session, opening
sessions. Where files live and how a missing one is obtained is the store's business. The on-disk layout and
bookkeeping files are AllenSDK's, so a folder made by either works with the other.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vbo.cache import manifest as mf
from vbo.cache.stores import (
    DOWNLOAD_RECORD,
    LAST_USED,
    LocalStore,
    S3Store,
    StaticStore,
    StatToken,
    Store,
    stat_token,
)
from vbo.errors import (
    BehaviorCloudCacheVersionException,
    CacheFolderError,
    CacheFolderNotFoundError,
    ManifestError,
    MissingLocalManifestWarning,
    NotInCacheError,
    OutdatedManifestWarning,
    ReleaseLookupError,
    UnsupportedCacheOperationError,
    UpdatedStimulusPresentationTableWarning,
)
from vbo.experiment import BehaviorOphysExperiment
from vbo.known_issues import warn_if_known
from vbo.screen import movie_template
from vbo.session import BehaviorSession
from vbo.tables import lookup, normalize_id, read_metadata_table

MANIFEST_COMPATIBILITY = ("1.0.0", "2.0.0")
UPDATED_PRESENTATIONS_MESSAGE = (
    "As of AllenSDK 2.16.0 (and in vbo), stimulus_presentations holds every stimulus block of a session "
    "(stimulus_block, stimulus_block_name): gray screens, change detection and the natural movie. Data of "
    "releases before 1.1.0 correspond to the block whose name contains 'change_detection'."
)


def _semver(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _compatible(version: str) -> bool:
    low, high = (_semver(v) for v in MANIFEST_COMPATIBILITY)
    return low <= _semver(version) < high


class CloudFetchApi:
    """The fetch layer behind a project cache (AllenSDK: ``BehaviorProjectCloudApi``); attribute ``cache``."""

    MANIFEST_COMPATIBILITY = list(MANIFEST_COMPATIBILITY)

    def __init__(self, cache: Store):
        self.cache = cache
        self.project: VisualBehaviorOphysProjectCache | None = None

    def load_manifest(self, manifest_name: str | None = None) -> None:
        """Load a manifest by name; None loads the last used (or the latest)."""
        if self.project is None:
            raise UnsupportedCacheOperationError("this fetch API is not attached to a project cache; load manifests "
                                                  "through VisualBehaviorOphysProjectCache")
        if manifest_name is None:
            self.project._load_last_manifest()
        else:
            self.project.load_manifest(manifest_name)

    def get_natural_scene_template(self, *args, **kwargs):
        raise NotImplementedError("natural scene templates are not part of the Visual Behavior release")


class VisualBehaviorOphysProjectCache:
    """Entry point to a Visual Behavior Ophys release: metadata tables, sessions, experiments, versions.

    Build it with :meth:`from_s3_cache` or :meth:`from_local_cache`.
    """

    PROJECT_NAME = mf.PROJECT_NAME
    BUCKET_NAME = mf.BUCKET_NAME

    def __init__(self, fetch_api: CloudFetchApi | None = None, fetch_tries: int = 2, manifest=None,
                 version=None, cache: bool = True, *, verify_cached: bool = True):
        warnings.warn(UPDATED_PRESENTATIONS_MESSAGE, UpdatedStimulusPresentationTableWarning, stacklevel=2)
        self.fetch_api = fetch_api
        self.cache = None
        self.fetch_tries = fetch_tries
        self.verify_cached = verify_cached
        self.logger = logging.getLogger("vbo.cache")
        self._manifest: dict | None = None
        self._manifest_name: str | None = None
        self._tables: dict[str, pd.DataFrame] = {}
        self._verified: dict[StatToken, str] = {}  # (path, size, mtime) → hash, this object only
        self._warned_outdated: set[str] = set()
        if fetch_api is not None:
            fetch_api.project = self

    @property
    def cache_dir(self) -> Path:
        """The folder of this cache (a local cache's, or the bucket copy of a static one)."""
        return Path(self._store.cache_dir)

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def from_s3_cache(cls, cache_dir: str | Path, bucket_name_override: str | None = None, *,
                      endpoint_url: str | None = None, verify_cached: bool = True):
        """A cache that downloads from the anonymous S3 bucket into ``cache_dir`` on demand.

        ``endpoint_url`` (or ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``) points at a mirror or test server.
        """
        folder = Path(cache_dir).expanduser().resolve()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as err:
            raise CacheFolderError(folder, "is a file, not a folder: choose another cache folder") from err
        except PermissionError as err:
            raise CacheFolderError(folder, f"cannot be created ({err.strerror})") from err
        if not os.access(folder, os.W_OK | os.X_OK):
            raise CacheFolderError(folder, "is not writable: an S3 cache downloads into it; open a complete "
                                           "read-only cache with from_local_cache()")
        store = S3Store(folder, bucket_name_override or mf.BUCKET_NAME, endpoint_url)
        return cls._start(store, verify_cached)

    @classmethod
    def from_local_cache(cls, cache_dir: str | Path, use_static_cache: bool = False, *, verify_cached: bool = True):
        """An offline cache: a folder filled by an S3 cache, or (``use_static_cache``) a copy of the bucket."""
        folder = Path(cache_dir).expanduser().resolve()
        if folder.exists() and not folder.is_dir():
            raise CacheFolderError(folder, "is a file, not a cache folder")
        if not folder.is_dir():
            raise CacheFolderNotFoundError(folder, "cache directory does not exist")
        store = StaticStore(folder) if use_static_cache else LocalStore(folder)
        return cls._start(store, verify_cached)

    @classmethod
    def from_lims(cls, *args, **kwargs):
        raise NotImplementedError("from_lims reads the Allen Institute's internal database; use from_s3_cache")

    @classmethod
    def cloud_api_class(cls):
        return CloudFetchApi

    @classmethod
    def lims_api_class(cls):
        raise NotImplementedError("the internal-database fetch API is only available inside the Allen Institute")

    @classmethod
    def _start(cls, store: Store, verify_cached: bool):
        api = CloudFetchApi(store)
        project = cls(fetch_api=api, verify_cached=verify_cached)
        project._warn_missing_record()
        project._load_last_manifest()
        return project

    @property
    def _store(self) -> Store:
        return self.fetch_api.cache

    @property
    def manifest(self):
        raise NotImplementedError("manifest is not available on a cloud-backed cache; use current_manifest()")

    # --- manifests ----------------------------------------------------------------------------

    def list_manifest_file_names(self) -> list[str]:
        """Names of the available manifests, sorted."""
        return sorted(self._store.manifest_names())

    def latest_manifest_file(self) -> str:
        """The available manifest with the highest version."""
        names = self.list_manifest_file_names()
        if not names:
            raise NotInCacheError(self._store.cache_dir, "no manifest available (none in the bucket or the folder)")
        return max(names, key=mf.manifest_version)

    def list_all_downloaded_manifests(self) -> list[str]:
        """Manifests stored in the cache folder, sorted."""
        return self._store.downloaded_manifest_names()

    def latest_downloaded_manifest_file(self) -> str:
        """The highest-version manifest in the cache folder ("" if none)."""
        names = self.list_all_downloaded_manifests()
        return max(names, key=mf.manifest_version) if names else ""

    def current_manifest(self) -> str | None:
        """Name of the loaded manifest."""
        return self._manifest_name

    def load_manifest(self, manifest_name: str) -> None:
        """Switch to another release version (checked first: a failed switch changes nothing)."""
        names = self.list_manifest_file_names()
        if manifest_name not in names:
            raise ManifestError(f"manifest {manifest_name!r} is not available; choose one of {names}")
        latest = max(names, key=mf.manifest_version)
        manifest = self._store.read_manifest(manifest_name)
        version = manifest["manifest_version"]
        if not _compatible(version):
            pipeline = {p.get("name"): p.get("version") for p in manifest.get("data_pipeline", [])}
            raise BehaviorCloudCacheVersionException(
                f"the manifest has manifest_version {version} but this reader is compatible only with manifest "
                f"versions {MANIFEST_COMPATIBILITY[0]} <= X < {MANIFEST_COMPATIBILITY[1]}. The data were released "
                f"with AllenSDK {pipeline.get('AllenSDK', 'unknown')}; choose a manifest in that range.")
        if manifest_name != latest and latest not in self._warned_outdated:
            self._warned_outdated.add(latest)
            warnings.warn(f"You are loading {manifest_name}. A more up to date version of the dataset, {latest}, "
                          f"is available. To see what changed: compare_manifests('{manifest_name}', '{latest}'); "
                          "to use it: load_latest_manifest()", OutdatedManifestWarning, stacklevel=2)
        tables = self._load_tables(manifest)
        self._manifest, self._manifest_name, self._tables = manifest, manifest_name, tables
        self._store.remember_last_used(manifest_name)

    def load_latest_manifest(self) -> None:
        """Load the newest manifest (warning when it is newer than anything used before)."""
        latest = self.latest_manifest_file()
        downloaded = self.latest_downloaded_manifest_file()
        if downloaded and downloaded != latest:
            warnings.warn(f"{latest} is newer than {downloaded}, the latest manifest used in this cache; files that "
                          "changed will be downloaded, older ones are kept", OutdatedManifestWarning, stacklevel=2)
        self.load_manifest(latest)

    def _load_last_manifest(self) -> None:
        last = self._store.cache_dir / LAST_USED
        try:
            name = self._store.last_used()
        except (OSError, UnicodeDecodeError) as err:  # a planted link, a FIFO, bad bytes: not trusted
            warnings.warn(f"ignoring {last}: {err}", UserWarning, stacklevel=3)
            name = ""
        if name is None:  # never recorded (or a static copy, which records nothing)
            self.load_manifest(self.latest_manifest_file())
            return
        if name not in self.list_manifest_file_names():
            warnings.warn(f"{last} names {name!r}, which is not an available manifest; loading the latest",
                          UserWarning, stacklevel=3)
            name = self.latest_manifest_file()
        self.load_manifest(name)

    def _warn_missing_record(self) -> None:
        folder = self._store.cache_dir
        if self._store.record_missing():
            warnings.warn(f"{folder} holds data files but no {DOWNLOAD_RECORD}; run construct_local_manifest() "
                          "so unchanged files can be reused across versions", MissingLocalManifestWarning,
                          stacklevel=3)

    def compare_manifests(self, manifest_0_name: str, manifest_1_name: str) -> str:
        """What changed from ``manifest_0_name`` (older) to ``manifest_1_name``, one line per file."""
        if self._store.static:
            raise UnsupportedCacheOperationError("a static cache has only its latest manifest; compare manifests "
                                                  "with an S3 cache (from_s3_cache)")
        first, second = (self._store.read_manifest(n) for n in (manifest_0_name, manifest_1_name))
        return mf.format_comparison(manifest_0_name, manifest_1_name,
                                    mf.compare_manifests(first, second))

    def construct_local_manifest(self) -> None:
        """Hash every data file under the cache folder and write ``_downloaded_data.json`` anew."""
        self._store.construct_record()

    # --- tables -------------------------------------------------------------------------------

    def _fetch(self, entry: dict, manifest: dict | None = None) -> Path:
        """Local path of a manifest entry, downloaded/verified as needed (each object hashed once per process)."""
        manifest = manifest or self._manifest
        verify = self.verify_cached
        if verify:
            expected = self._store.entry_path(manifest, entry)
            verify = self._verified.get(stat_token(expected)) != entry["file_hash"]
        path = self._store.fetch(manifest, entry, verify=verify)
        if self.verify_cached:
            self._verified[stat_token(path)] = entry["file_hash"]
        return path

    def _load_tables(self, manifest: dict) -> dict[str, pd.DataFrame]:
        return {name: read_metadata_table(self._fetch(manifest["metadata_files"][name], manifest), name)
                for name in mf.METADATA_TABLES}

    def _table(self, name: str, ignored: dict[str, Any]) -> pd.DataFrame:
        passed = [k for k, (value, default) in ignored.items() if value != default]
        if passed:
            warnings.warn(f"{', '.join(passed)} {'is' if len(passed) == 1 else 'are'} ignored for the released "
                          "tables (as in AllenSDK); the released table is returned", UserWarning, stacklevel=3)
        return self._tables[name].copy()

    def get_behavior_session_table(self, suppress=None, as_df=True, include_ophys_data=True,
                                   include_trial_metrics=False) -> pd.DataFrame:
        """One row per behavior session (index ``behavior_session_id``)."""
        return self._table("behavior_session_table", {
            "suppress": (suppress, None), "as_df": (as_df, True), "include_ophys_data": (include_ophys_data, True),
            "include_trial_metrics": (include_trial_metrics, False)})

    def get_ophys_session_table(self, suppress=None, index_column="ophys_session_id", as_df=True,
                                include_behavior_data=True) -> pd.DataFrame:
        """One row per imaging session (index ``ophys_session_id``)."""
        return self._table("ophys_session_table", {
            "suppress": (suppress, None), "index_column": (index_column, "ophys_session_id"),
            "as_df": (as_df, True), "include_behavior_data": (include_behavior_data, True)})

    def get_ophys_experiment_table(self, suppress=None, as_df=True) -> pd.DataFrame:
        """One row per imaging plane per session (index ``ophys_experiment_id``)."""
        return self._table("ophys_experiment_table", {"suppress": (suppress, None), "as_df": (as_df, True)})

    def get_ophys_cells_table(self) -> pd.DataFrame:
        """One row per ROI of every released experiment (index ``cell_roi_id``)."""
        return self._table("ophys_cells_table", {})

    # --- sessions -----------------------------------------------------------------------------

    def _data_entry(self, file_id) -> dict:
        try:
            return self._manifest["data_files"][str(int(file_id))]
        except (KeyError, TypeError, ValueError, OverflowError):
            raise ManifestError(f"file_id {file_id} is not in manifest {self._manifest_name}") from None

    def _experiment_entry(self, ophys_experiment_id) -> dict:
        table = self._tables["ophys_experiment_table"]
        key = normalize_id(ophys_experiment_id)
        rows = table[table.index == key]
        if len(rows) != 1:
            raise ReleaseLookupError(f"ophys_experiment_table should have 1 and only 1 entry for ophys_experiment_id "
                               f"{ophys_experiment_id}; it has {len(rows)}")
        return self._data_entry(rows["file_id"].iloc[0])

    def _source(self, entry: dict, stream: bool) -> str | Path:
        """A local (downloaded, verified) path, or with ``stream`` on an S3 cache the object's URL."""
        url = self._store.stream_url(entry) if stream else None
        return url if url is not None else self._fetch(entry)

    def file_entry(self, *, behavior_session_id=None, ophys_experiment_id=None) -> dict:
        """The manifest entry (``url``, ``version_id``, ``file_hash``) of the file holding one experiment or one
        behavior session (an imaging session's behavior is read from its lowest experiment's file).

        Give exactly one of ``behavior_session_id`` / ``ophys_experiment_id`` (int or str). Returns a copy.
        """
        if (behavior_session_id is None) == (ophys_experiment_id is None):
            raise ValueError("give exactly one of behavior_session_id and ophys_experiment_id")
        if ophys_experiment_id is not None:
            return dict(self._experiment_entry(ophys_experiment_id))
        row = lookup(self._tables["behavior_session_table"], behavior_session_id, "behavior_session_id")
        file_id = row["file_id"]
        if pd.notna(file_id) and int(file_id) >= 0:
            return dict(self._data_entry(file_id))
        experiments = row["ophys_experiment_id"]
        if not isinstance(experiments, list) or not experiments:
            raise ReleaseLookupError(f"behavior session {behavior_session_id} has neither a behavior file nor released "
                                     "experiments")
        return dict(self._experiment_entry(min(experiments)))

    def file_source(self, *, behavior_session_id=None, ophys_experiment_id=None, stream: bool = False) -> str:
        """Where to open the file of :meth:`file_entry`: a local path (downloaded and verified first on an S3
        cache), or with ``stream`` on an S3 cache the object's URL for byte-range reads."""
        entry = self.file_entry(behavior_session_id=behavior_session_id, ophys_experiment_id=ophys_experiment_id)
        return str(self._source(entry, stream))

    def previous_manifest_changes(self) -> tuple[str | None, dict[str, list[tuple[str, str]]]]:
        """The manifest released just before the loaded one and what changed since (``docs/format.md`` §3.5).

        Works on every kind of cache (a static copy of the bucket included). Returns ``(None, {})`` when the
        loaded manifest is the first one available.
        """
        store = self._store
        names = store.release_manifest_names()
        current = mf.manifest_version(self._manifest_name)
        older = [n for n in names if mf.manifest_version(n) < current]
        if not older:
            return None, {}
        previous = max(older, key=mf.manifest_version)
        manifest = store.read_manifest(previous)
        return previous, mf.compare_manifests(manifest, self._manifest)

    def get_behavior_ophys_experiment(self, ophys_experiment_id, stream: bool = False, **kwargs):
        """The :class:`vbo.BehaviorOphysExperiment` of one imaging plane (``id`` as int or str).

        With ``stream=True`` an S3 cache reads the file by byte ranges instead of downloading it (offline
        caches read their local copy either way).
        """
        entry = self._experiment_entry(ophys_experiment_id)
        key = normalize_id(ophys_experiment_id)
        row = self._tables["ophys_experiment_table"].loc[key]
        warn_if_known(ophys_experiment_id=key, ophys_session_id=row.get("ophys_session_id"),
                      behavior_session_id=row.get("behavior_session_id"))
        return BehaviorOphysExperiment.from_nwb_path(self._source(entry, stream), **kwargs)

    def get_behavior_session(self, behavior_session_id, stream: bool = False, **kwargs):
        """The :class:`vbo.BehaviorSession` of one session; imaging sessions are read from their lowest
        experiment's file (the behavior data are identical in every plane's file). ``stream`` as for
        :meth:`get_behavior_ophys_experiment`."""
        row = lookup(self._tables["behavior_session_table"], behavior_session_id, "behavior_session_id")
        warn_if_known(behavior_session_id=row.name, ophys_session_id=row.get("ophys_session_id"))
        source = self.file_source(behavior_session_id=row.name, stream=stream)
        return BehaviorSession.from_nwb_path(source, **kwargs)

    # --- bulk download and verification -------------------------------------------------------

    def _entries(self, behavior_session_ids=None, ophys_experiment_ids=None, everything: bool = False) -> list[dict]:
        """Manifest entries of the files that hold the given sessions and experiments (or all files)."""
        if everything:
            return [*self._manifest["metadata_files"].values(), *self._manifest["data_files"].values()]
        entries = [self._experiment_entry(i) for i in ophys_experiment_ids or ()]
        for session_id in behavior_session_ids or ():
            row = lookup(self._tables["behavior_session_table"], session_id, "behavior_session_id")
            file_id = row["file_id"]
            if pd.notna(file_id) and int(file_id) >= 0:
                entries.append(self._data_entry(file_id))
            else:
                entries.extend(self._experiment_entry(i) for i in row["ophys_experiment_id"])
        unique = {e["url"]: e for e in entries}
        return list(unique.values())

    def download(self, behavior_session_ids=None, ophys_experiment_ids=None, everything: bool = False,
                 workers: int = 8, progress=None) -> list[Path]:
        """Download (verified, resumable, in parallel) the files of sessions/experiments, or the whole release.

        Parameters
        ----------
        behavior_session_ids, ophys_experiment_ids
            Ids (int or str); an imaging session brings every experiment file of the session.
        everything
            Every file of the current manifest.
        workers
            Parallel downloads.
        progress
            Called with a :class:`vbo.cache.download.DownloadProgress` (bytes, rate, ETA).

        Returns
        -------
        list of pathlib.Path
            Local paths, in request order.
        """
        entries = self._entries(behavior_session_ids, ophys_experiment_ids, everything)
        self._store.prefetch(self._manifest, entries, workers, progress)
        return [self._fetch(e) for e in entries]  # verifies what was already there

    def verify(self, repair: bool = True) -> dict[str, list[str]]:
        """Re-hash every cached file of the current manifest (AllenSDK never does).

        A file whose hash is wrong is, with ``repair`` on an S3 cache, replaced by a verified download (under
        the file's lock: several processes may repair one cache at once). It counts as repaired only if the
        file then on disk has the manifest's hash.

        Returns
        -------
        dict
            ``{"ok": [...], "repaired": [...], "corrupt": [...], "missing": [...]}`` (local paths as str).
            A link vbo did not make, or a file that could not be repaired, is "corrupt".
        """
        store = self._store
        report: dict[str, list[str]] = {"ok": [], "repaired": [], "corrupt": [], "missing": []}
        for entry in self._entries(everything=True):
            state = store.check(self._manifest, entry)
            path = store.entry_path(self._manifest, entry)
            if state == "corrupt" and repair:
                state = store.repair(self._manifest, entry, path)
            report[state].append(str(path))
        self._verified.clear()
        return report

    def _natural_movie_path(self) -> Path:
        """Local path of ``Movie_TOE1.npy``, verified (see :meth:`get_raw_natural_movie`)."""
        return self._store.natural_movie(self._verified)

    def get_raw_natural_movie(self):
        """The natural movie shown in every session (frames × rows × columns, uint8), ``Movie_TOE1.npy``.

        Kept in ``<cache_dir>/resources/`` (not versioned); an S3 cache downloads it once (verified against the
        release's known hash on the real bucket); offline caches never touch the network.
        """
        return np.load(self._natural_movie_path())

    def get_natural_movie_template(self, n_workers: int | None = None, *, frames=None) -> pd.DataFrame:
        """The natural movie as shown on the monitor: each frame placed on the screen and warped.

        Same values as the AllenSDK, computed once with whole-array geometry and threads instead of a
        per-frame process pool, and kept: an S3 or local cache stores the warped movie (uint8, about 2 GB
        for the real 900 frames) in ``<cache_dir>/resources/`` and maps it from disk afterwards. A static
        (read-only mirror) cache computes without storing.

        Parameters
        ----------
        n_workers : int, optional
            Threads warping frames (default: all cores).
        frames : int, slice or sequence of int, optional
            Only these movie frames (default: all, as the SDK). ``unwarped`` takes about 18 MB per frame.

        Returns
        -------
        pd.DataFrame
            Index ``movie_frame_index`` (int); columns ``unwarped`` (float64 1200 × 1920, NaN where the
            mouse cannot see) and ``warped`` (uint8 1200 × 1920), one array per frame.
        """
        if n_workers is not None and (not isinstance(n_workers, int) or n_workers < 1):
            raise ValueError(f"n_workers must be a positive int or None, got {n_workers!r}")
        path = self._natural_movie_path()
        cache_file = self._store.movie_template_file(path)  # None: a read-only cache computes without storing
        return movie_template(np.load(path), frames, n_workers=n_workers, cache_file=cache_file)
