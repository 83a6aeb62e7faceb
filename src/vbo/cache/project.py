"""VisualBehaviorOphysProjectCache: AllenSDK's project cache (``api.md`` §2), safe and lazy.

Three places the data can come from (``docs/format.md`` §5.5):

* **S3 cache** (``from_s3_cache``): downloads on demand into ``<cache_dir>/<project>-<version>/...``,
  verifying every file, reusing unchanged files across versions;
* **local cache** (``from_local_cache``): the same folder, offline — never touches the network;
* **static cache** (``from_local_cache(..., use_static_cache=True)``): a mounted or synchronised copy of the
  bucket itself (``<cache_dir>/visual-behavior-ophys/...``), e.g. a ``vbo simulate`` release.

The on-disk layout and bookkeeping files are AllenSDK's, so a folder made by either works with the other.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from vbo.cache import manifest as mf
from vbo.cache.download import (
    DownloadJob,
    DownloadRecord,
    download_many,
    download_object,
    file_matches,
    is_inside,
    is_transient_file,
    open_nofollow,
    reuse_identical,
    verify_file,
)
from vbo.source.s3 import (
    anonymous_client,
    bucket_and_key,
    check_object_url,
    head_object_retrying,
    list_keys,
    object_https_url,
    safe_relative_key,
)
from vbo.errors import (
    BehaviorCloudCacheVersionException,
    CacheFolderError,
    CacheFolderNotFoundError,
    DownloadError,
    HashMismatchError,
    ManifestError,
    MissingLocalManifestWarning,
    NotInCacheError,
    OutdatedManifestWarning,
    PlantedLinkError,
    ReleaseLookupError,
    StaticCacheError,
    UnsafeKeyError,
    UnsafeNameError,
    UnsupportedCacheOperationError,
    UpdatedStimulusPresentationTableWarning,
    VboError,
)
from vbo.known_issues import warn_if_known
from vbo.screen import movie_template
from vbo.tables import lookup, normalize_id, read_metadata_table

LAST_USED = "_manifest_last_used.txt"
DOWNLOAD_RECORD = "_downloaded_data.json"
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


def _relative(key: str) -> str:
    """Object key without its first (project) component, checked to stay inside the cache."""
    safe_relative_key(key)
    return safe_relative_key(key.split("/", 1)[1] if "/" in key else key)


def _entry_key(entry: dict) -> tuple[str | None, str]:
    return bucket_and_key(entry["url"])


def _read_text_nofollow(path: Path) -> str:
    """A small text file's content, refusing a link or special file at ``path``."""
    with os.fdopen(open_nofollow(path, os.O_RDONLY), "rb") as fh:
        return fh.read().decode("utf-8")


def _write_text_atomic(path: Path, text: str) -> bool:
    """Replace ``path`` by a new file holding ``text`` (a link planted there is replaced, never followed).

    Returns False (after logging) if the folder is not writable, e.g. a read-only complete cache.
    """
    import logging
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as err:
        logging.getLogger("vbo.cache").info("not writing %s: %s", path, err)
        return False
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        logging.getLogger("vbo.cache").info("not writing %s: %s", path, err)
        return False
    return True


class _Store:
    """Where manifests and objects of one cache live and how missing ones are obtained."""

    offline = False
    static = False

    def __init__(self, cache_dir: Path):
        self.cache_dir = cache_dir

    def manifest_names(self) -> list[str]:
        raise NotImplementedError

    def manifest_path(self, name: str) -> Path:
        if not mf.is_manifest_name(name):
            raise UnsafeNameError(str(name), "not a manifest file name ('<project>_manifest_vX.Y.Z.json')")
        return self.cache_dir / name

    def version_folder(self, manifest: dict) -> Path:
        project = mf.safe_name(manifest["project_name"], "project_name")
        version = mf.safe_name(manifest["manifest_version"], "manifest_version")
        return self.cache_dir / f"{project}-{version}"

    def local_path(self, manifest: dict, key: str) -> Path:
        return self.inside(self.version_folder(manifest) / _relative(key))

    def inside(self, path: Path) -> Path:
        """``path`` itself, if its folder (links resolved) lies inside the cache folder."""
        if not is_inside(path.parent, self.cache_dir):
            raise PlantedLinkError(path.parent, f"resolves to {path.parent.resolve()}, outside the cache folder "
                                                f"{self.cache_dir}: a link vbo did not make; remove it")
        return path

    def existing(self, path: Path) -> bool:
        """True if a usable file is at ``path``: a regular file, or a link to a regular file inside the cache
        folder (how vbo and AllenSDK share unchanged files across versions); False if nothing is there.

        Raises
        ------
        PlantedLinkError
            A link pointing outside the cache folder or at nothing, a folder, FIFO or device.
        """
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if stat.S_ISREG(info.st_mode):
            return True
        if stat.S_ISLNK(info.st_mode):
            if path.is_file() and is_inside(path, self.cache_dir):
                return True
            raise PlantedLinkError(path, f"a link to {os.readlink(path)!r}, which is not a file inside the cache "
                                         "folder: vbo did not make it; remove it")
        raise PlantedLinkError(path, "not a regular file (a folder, FIFO or device is in the way); remove it")

    def fetch_manifest(self, name: str, refresh: bool = False) -> Path:
        path = self.manifest_path(name)
        if not self.existing(path):
            raise NotInCacheError(path, "You started a cache without a connection to s3 and this manifest is not "
                                        "already on your system")
        return path

    def fetch(self, manifest: dict, entry: dict, verify: bool) -> Path:
        raise NotImplementedError

    def check_entries(self, manifest: dict, path: Path) -> None:
        """Refuse a manifest whose keys would escape the cache folder (``..``, absolute paths ...)."""
        for where, entry in _all_entries(manifest):
            _checked(path, where, lambda: _relative(_entry_key(entry)[1]))


def _all_entries(manifest: dict):
    for group in ("metadata_files", "data_files"):
        for name, entry in manifest[group].items():
            yield f"{group}[{name!r}].url", entry


def _checked(path: Path, where: str, check):
    """Run ``check``; an UnsafeKeyError it raises is raised again naming the manifest and the field."""
    try:
        return check()
    except UnsafeKeyError as err:
        raise type(err)(err.key, f"manifest {path}: field {where}: {err.problem}") from None


class _LocalStore(_Store):
    """A cache folder filled earlier by an S3 cache (AllenSDK's or vbo's), used offline."""

    offline = True

    def manifest_names(self) -> list[str]:
        return sorted(p.name for p in self.cache_dir.glob("*_manifest_v*.json")
                      if mf.is_manifest_name(p.name) and p.is_file())

    def fetch(self, manifest: dict, entry: dict, verify: bool) -> Path:
        path = self.local_path(manifest, _entry_key(entry)[1])
        if not self.existing(path):
            record = DownloadRecord(self.cache_dir / DOWNLOAD_RECORD)
            try:
                reused = reuse_identical(record, entry["file_hash"], path)
            except OSError:  # a read-only cache cannot make the link
                reused = None
            if not reused:
                raise NotInCacheError(path, "You started a cache without a connection to s3 and this file is not "
                                            "already on your system")
        if verify:
            verify_file(path, entry["file_hash"])
        return path


class _StaticStore(_Store):
    """A mounted or synchronised copy of the bucket: ``<cache_dir>/<project>/<key...>``."""

    offline = True
    static = True

    def manifests_dir(self) -> Path:
        return self.cache_dir / mf.PROJECT_NAME / mf.MANIFEST_PREFIX

    def manifest_names(self) -> list[str]:
        folder = self.manifests_dir()
        if not folder.is_dir():
            raise StaticCacheError(f"{folder} does not exist: a static cache must be a copy of the bucket, with "
                               f"'{mf.PROJECT_NAME}/{mf.MANIFEST_PREFIX}/' inside {self.cache_dir}")
        names = sorted(p.name for p in folder.glob("*_manifest_v*.json") if mf.is_manifest_name(p.name))
        return [max(names, key=mf.manifest_version)] if names else []

    def manifest_path(self, name: str) -> Path:
        super().manifest_path(name)  # the name check
        return self.inside(self.manifests_dir() / name)

    def version_folder(self, manifest: dict) -> Path:
        return self.cache_dir / mf.safe_name(manifest["project_name"], "project_name")

    def fetch(self, manifest: dict, entry: dict, verify: bool) -> Path:
        path = self.local_path(manifest, _entry_key(entry)[1])
        if not self.existing(path):
            raise NotInCacheError(path, f"not in the static copy of the bucket at {self.cache_dir}")
        if verify:
            verify_file(path, entry["file_hash"])
        return path


class _S3Store(_Store):
    """Downloads from the (anonymous) bucket on demand into the versioned cache layout."""

    def __init__(self, cache_dir: Path, bucket: str, endpoint_url: str | None):
        super().__init__(cache_dir)
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.client = anonymous_client(endpoint_url)
        self.download_options: dict = {}  # extra keyword arguments of download_object (retries, backoff ...)

    def check_entries(self, manifest: dict, path: Path) -> None:
        """Refuse entries on foreign hosts or other buckets, and keys escaping the cache folder."""
        for where, entry in _all_entries(manifest):
            _checked(path, where, lambda: check_object_url(entry["url"], self.bucket, self.endpoint_url))
            _checked(path, where, lambda: _relative(_entry_key(entry)[1]))

    def manifest_names(self) -> list[str]:
        prefix = f"{mf.PROJECT_NAME}/{mf.MANIFEST_PREFIX}/"
        keys = list_keys(self.client, self.bucket, prefix)
        return sorted(Path(k).name for k in keys if k.startswith(prefix) and mf.is_manifest_name(k[len(prefix):]))

    def fetch_manifest(self, name: str, refresh: bool = False) -> Path:
        """The manifest, kept only if its size and MD5 agree with what the server says now (else fetched again,
        pinned to the version the server named, and checked against its size and ETag before it is kept)."""
        path = self.manifest_path(name)
        key = f"{mf.PROJECT_NAME}/{mf.MANIFEST_PREFIX}/{name}"
        head = head_object_retrying(self.client, self.bucket, key)
        download_object(self.client, self.bucket, key, head.get("VersionId"), None, path, force=refresh,
                        expected_size=int(head["ContentLength"]), expected_etag=head.get("ETag"), retries=4)
        return path

    def stream_url(self, entry: dict) -> str:
        """URL of an entry's object version on this store's endpoint, for byte-range streaming."""
        bucket, key = _entry_key(entry)
        return object_https_url(key, bucket or self.bucket, entry["version_id"], self.endpoint_url)

    def fetch(self, manifest: dict, entry: dict, verify: bool) -> Path:
        """Local path of an entry: the cached file if it verifies, else a reused identical file (hashed
        first), else a download. A corrupt or planted file is replaced atomically under its lock, never
        unlinked."""
        bucket, key = _entry_key(entry)
        path = self.local_path(manifest, key)
        record = DownloadRecord(self.cache_dir / DOWNLOAD_RECORD)
        try:
            present = self.existing(path)
        except PlantedLinkError as err:
            if path.is_dir() and not path.is_symlink():
                raise DownloadError(entry["url"], path, "a directory is in the way of the file") from err
            present = False  # replaced below by a verified file (the link itself, never its target)
        if present and (not verify or file_matches(path, entry["file_hash"])):
            return path
        if not present and reuse_identical(record, entry["file_hash"], path):
            return path
        download_object(self.client, bucket or self.bucket, key, entry["version_id"], entry["file_hash"], path,
                        **self.download_options)
        record.add(path, entry["file_hash"])
        return path


class CloudFetchApi:
    """The fetch layer behind a project cache (AllenSDK: ``BehaviorProjectCloudApi``); attribute ``cache``."""

    MANIFEST_COMPATIBILITY = list(MANIFEST_COMPATIBILITY)

    def __init__(self, cache: _Store):
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
        import logging

        self.logger = logging.getLogger("vbo.cache")
        self._manifest: dict | None = None
        self._manifest_name: str | None = None
        self._tables: dict[str, pd.DataFrame] = {}
        self._verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) → hash, this object only
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
        store = _S3Store(folder, bucket_name_override or mf.BUCKET_NAME, endpoint_url)
        return cls._start(store, verify_cached)

    @classmethod
    def from_local_cache(cls, cache_dir: str | Path, use_static_cache: bool = False, *, verify_cached: bool = True):
        """An offline cache: a folder filled by an S3 cache, or (``use_static_cache``) a copy of the bucket."""
        folder = Path(cache_dir).expanduser().resolve()
        if folder.exists() and not folder.is_dir():
            raise CacheFolderError(folder, "is a file, not a cache folder")
        if not folder.is_dir():
            raise CacheFolderNotFoundError(folder, "cache directory does not exist")
        store = _StaticStore(folder) if use_static_cache else _LocalStore(folder)
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
    def _start(cls, store: _Store, verify_cached: bool):
        api = CloudFetchApi(store)
        project = cls(fetch_api=api, verify_cached=verify_cached)
        if not store.static:
            project._warn_missing_record()
        project._load_last_manifest()
        return project

    @property
    def _store(self) -> _Store:
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
        if self._store.static:
            return self.list_manifest_file_names()
        return sorted(p.name for p in self._store.cache_dir.iterdir()
                      if p.is_file() and mf._MANIFEST_NAME.fullmatch(p.name))

    def latest_downloaded_manifest_file(self) -> str:
        """The highest-version manifest in the cache folder ("" if none)."""
        names = self.list_all_downloaded_manifests()
        return max(names, key=mf.manifest_version) if names else ""

    def current_manifest(self) -> str | None:
        """Name of the loaded manifest."""
        return self._manifest_name

    def _read_manifest(self, name: str) -> dict:
        """Fetch (S3: check against the server), parse and validate a manifest; an S3 cache fetches again once
        a copy that does not parse or validate, so a damaged copy never sticks."""
        try:
            return self._parse_manifest(name, refresh=False)
        except (ManifestError, UnsafeKeyError):
            if not isinstance(self._store, _S3Store):
                raise
            self.logger.warning("manifest %s does not parse or validate; fetching it again", name)
            return self._parse_manifest(name, refresh=True)

    def _parse_manifest(self, name: str, refresh: bool) -> dict:
        path = self._store.fetch_manifest(name, refresh=refresh)
        try:
            manifest = json.loads(_read_text_nofollow(Path(path)))
        except (ValueError, UnicodeDecodeError) as err:
            raise ManifestError(f"manifest {path} is not valid JSON: {err}") from err
        _check_manifest(manifest, path)
        self._store.check_entries(manifest, path)
        return manifest

    def load_manifest(self, manifest_name: str) -> None:
        """Switch to another release version (checked first: a failed switch changes nothing)."""
        names = self.list_manifest_file_names()
        if manifest_name not in names:
            raise ManifestError(f"manifest {manifest_name!r} is not available; choose one of {names}")
        latest = max(names, key=mf.manifest_version)
        manifest = self._read_manifest(manifest_name)
        version = manifest["manifest_version"]
        if not _compatible(version):
            pipeline = {p.get("name"): p.get("version") for p in manifest.get("data_pipeline", [])}
            raise BehaviorCloudCacheVersionException(
                f"the manifest has manifest_version {version} but this reader is compatible only with manifest "
                f"versions {MANIFEST_COMPATIBILITY[0]} <= X < {MANIFEST_COMPATIBILITY[1]}. The data were released "
                f"with AllenSDK {pipeline.get('AllenSDK', 'unknown')}; choose a manifest in that range.")
        if manifest_name != latest and latest not in self._warned_outdated and not self._store.static:
            self._warned_outdated.add(latest)
            warnings.warn(f"You are loading {manifest_name}. A more up to date version of the dataset, {latest}, "
                          f"is available. To see what changed: compare_manifests('{manifest_name}', '{latest}'); "
                          "to use it: load_latest_manifest()", OutdatedManifestWarning, stacklevel=2)
        tables = self._load_tables(manifest)
        self._manifest, self._manifest_name, self._tables = manifest, manifest_name, tables
        if not self._store.static:
            _write_text_atomic(self._store.cache_dir / LAST_USED, manifest_name)

    def load_latest_manifest(self) -> None:
        """Load the newest manifest (warning when it is newer than anything used before)."""
        latest = self.latest_manifest_file()
        downloaded = self.latest_downloaded_manifest_file() if not self._store.static else latest
        if downloaded and downloaded != latest:
            warnings.warn(f"{latest} is newer than {downloaded}, the latest manifest used in this cache; files that "
                          "changed will be downloaded, older ones are kept", OutdatedManifestWarning, stacklevel=2)
        self.load_manifest(latest)

    def _load_last_manifest(self) -> None:
        store = self._store
        last = store.cache_dir / LAST_USED
        if store.static or not os.path.lexists(last):
            self.load_manifest(self.latest_manifest_file())
            return
        try:
            name = _read_text_nofollow(last).strip()
        except (OSError, UnicodeDecodeError) as err:  # a planted link, a FIFO, bad bytes: not trusted
            warnings.warn(f"ignoring {last}: {err}", UserWarning, stacklevel=3)
            name = ""
        if name not in self.list_manifest_file_names():
            warnings.warn(f"{last} names {name!r}, which is not an available manifest; loading the latest",
                          UserWarning, stacklevel=3)
            name = self.latest_manifest_file()
        self.load_manifest(name)

    def _warn_missing_record(self) -> None:
        folder = self._store.cache_dir
        if (folder / DOWNLOAD_RECORD).exists():
            return
        for _, _, files in os.walk(folder):
            if any("json" not in f for f in files):
                warnings.warn(f"{folder} holds data files but no {DOWNLOAD_RECORD}; run construct_local_manifest() "
                              "so unchanged files can be reused across versions", MissingLocalManifestWarning,
                              stacklevel=3)
                return

    def compare_manifests(self, manifest_0_name: str, manifest_1_name: str) -> str:
        """What changed from ``manifest_0_name`` (older) to ``manifest_1_name``, one line per file."""
        if self._store.static:
            raise UnsupportedCacheOperationError("a static cache has only its latest manifest; compare manifests "
                                                  "with an S3 cache (from_s3_cache)")
        first, second = (self._read_manifest(n) for n in (manifest_0_name, manifest_1_name))
        return format_comparison(manifest_0_name, manifest_1_name, compare(first, second))

    def construct_local_manifest(self) -> None:
        """Hash every data file under the cache folder and write ``_downloaded_data.json`` anew."""
        if self._store.static:
            raise NotImplementedError("a static copy of the bucket has no download record to construct")
        folder = self._store.cache_dir
        record = DownloadRecord(folder / DOWNLOAD_RECORD)
        entries = {}
        for root, _, files in os.walk(folder):
            for name in files:
                path = Path(root) / name
                if "json" in name or name == LAST_USED or is_transient_file(path) or not _is_regular(path):
                    continue  # links and FIFOs are never hashed (a FIFO would block the read forever)
                entries[str(path.resolve())] = mf.file_hash(path)
        record.replace(entries)

    # --- tables -------------------------------------------------------------------------------

    def _fetch(self, entry: dict, manifest: dict | None = None) -> Path:
        """Local path of a manifest entry, downloaded/verified as needed (each object hashed once per process)."""
        manifest = manifest or self._manifest
        verify = self.verify_cached
        if verify:
            expected = self._store.local_path(manifest, bucket_and_key(entry["url"])[1])
            verify = self._verified.get(_stat_token(expected)) != entry["file_hash"]
        path = self._store.fetch(manifest, entry, verify=verify)
        if self.verify_cached:
            self._verified[_stat_token(path)] = entry["file_hash"]
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
        if stream and isinstance(self._store, _S3Store):
            return self._store.stream_url(entry)
        return self._fetch(entry)

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
        """The manifest released just before the loaded one and what changed since (``format.md`` §3.5).

        Works on every kind of cache (a static copy of the bucket included). Returns ``(None, {})`` when the
        loaded manifest is the first one available.
        """
        store = self._store
        if store.static:
            names = sorted(p.name for p in store.manifests_dir().glob("*_manifest_v*.json"))
        else:
            names = self.list_manifest_file_names()
        current = mf.manifest_version(self._manifest_name)
        older = [n for n in names if mf.manifest_version(n) < current]
        if not older:
            return None, {}
        previous = max(older, key=mf.manifest_version)
        path = store.fetch_manifest(previous)
        manifest = json.loads(Path(path).read_text())
        _check_manifest(manifest, path)
        return previous, compare(manifest, self._manifest)

    def get_behavior_ophys_experiment(self, ophys_experiment_id, stream: bool = False, **kwargs):
        """The :class:`vbo.BehaviorOphysExperiment` of one imaging plane (``id`` as int or str).

        With ``stream=True`` an S3 cache reads the file by byte ranges instead of downloading it (offline
        caches read their local copy either way).
        """
        from vbo.experiment import BehaviorOphysExperiment  # deferred: reading tables needs no h5py

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
        from vbo.session import BehaviorSession  # deferred: reading tables needs no h5py

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
        if not isinstance(self._store, _S3Store):
            return [self._fetch(e) for e in self._entries(behavior_session_ids, ophys_experiment_ids, everything)]
        store = self._store
        record = DownloadRecord(store.cache_dir / DOWNLOAD_RECORD)
        entries = self._entries(behavior_session_ids, ophys_experiment_ids, everything)
        paths, jobs = [], []
        for entry in entries:
            bucket, key = bucket_and_key(entry["url"])
            path = store.local_path(self._manifest, key)
            paths.append(path)
            if not _quietly_existing(store, path) and not reuse_identical(record, entry["file_hash"], path):
                jobs.append(DownloadJob(bucket or store.bucket, key, entry["version_id"], entry["file_hash"], path))
        if jobs:
            download_many(jobs, workers=workers, progress=progress, client=store.client, record=record)
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
            path = store.local_path(self._manifest, _entry_key(entry)[1])
            try:
                present = store.existing(path)
            except PlantedLinkError:
                present = None
            if present is False:
                report["missing"].append(str(path))
            elif present and file_matches(path, entry["file_hash"]):
                report["ok"].append(str(path))
            elif repair and isinstance(store, _S3Store):
                report[self._repair(entry, path)].append(str(path))
            else:
                report["corrupt"].append(str(path))
        self._verified.clear()
        return report

    def _repair(self, entry: dict, path: Path) -> str:
        """Download ``entry`` again over its corrupt copy; "repaired" only if the result verifies."""
        try:
            self._store.fetch(self._manifest, entry, verify=True)
        except VboError as err:
            self.logger.warning("could not repair %s: %s", path, err)
            return "corrupt"
        return "repaired" if file_matches(path, entry["file_hash"]) else "corrupt"

    def _natural_movie_path(self) -> Path:
        """Local path of ``Movie_TOE1.npy``, verified (see :meth:`get_raw_natural_movie`)."""
        store = self._store
        if store.static:
            path = store.inside(store.cache_dir / mf.NATURAL_MOVIE_KEY)
            if not store.existing(path):
                raise NotInCacheError(path, f"not in the static copy of the bucket at {store.cache_dir}")
            return path
        path = store.inside(store.cache_dir / "resources" / Path(mf.NATURAL_MOVIE_KEY).name)
        record = DownloadRecord(path.parent / DOWNLOAD_RECORD)
        real_bucket = isinstance(store, _S3Store) and store.bucket == mf.BUCKET_NAME and store.endpoint_url is None
        trusted = mf.NATURAL_MOVIE_HASH if real_bucket else record.load().get(str(path.absolute()))
        try:
            present = store.existing(path)
        except PlantedLinkError:
            if not isinstance(store, _S3Store):
                raise
            present = False  # a download replaces the link
        token = _stat_token(path) if present else None
        if present and trusted and (self._verified.get(token) == trusted or file_matches(path, trusted)):
            self._verified[token] = trusted
            return path
        if not isinstance(store, _S3Store):
            if not present:
                raise NotInCacheError(path, "You started a cache without a connection to s3 and the natural movie "
                                            "is not already on your system")
            if trusted:
                raise HashMismatchError(str(path), path, trusted, mf.file_hash(path),
                                        "the natural movie's hash differs from the one recorded when it was "
                                        f"downloaded (in {record.path}); delete it and download it again")
            return path  # recorded by no one: nothing to verify it against (README: "What vbo verifies")
        self._download_natural_movie(path, record, real_bucket)
        self._verified[_stat_token(path)] = record.load().get(str(path.absolute()))
        return path

    def _download_natural_movie(self, path: Path, record, real_bucket: bool) -> None:
        """Fetch the movie pinned to one version, check it (the release's hash on the real bucket, else the
        server's size and ETag), keep it atomically and record its blake2b for later runs."""
        store = self._store
        version = mf.NATURAL_MOVIE_VERSION_ID if real_bucket else None
        head = head_object_retrying(store.client, store.bucket, mf.NATURAL_MOVIE_KEY, version)
        download_object(store.client, store.bucket, mf.NATURAL_MOVIE_KEY, version or head.get("VersionId"),
                        mf.NATURAL_MOVIE_HASH if real_bucket else None, path,
                        expected_size=int(head["ContentLength"]), expected_etag=head.get("ETag"))
        record.add(path, mf.NATURAL_MOVIE_HASH if real_bucket else mf.file_hash(path))

    def get_raw_natural_movie(self):
        """The natural movie shown in every session (frames × rows × columns, uint8), ``Movie_TOE1.npy``.

        Kept in ``<cache_dir>/resources/`` (not versioned); an S3 cache downloads it once (verified against the
        release's known hash on the real bucket); offline caches never touch the network.
        """
        import numpy as np

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
        import numpy as np

        if n_workers is not None and (not isinstance(n_workers, int) or n_workers < 1):
            raise ValueError(f"n_workers must be a positive int or None, got {n_workers!r}")
        path = self._natural_movie_path()
        writable = os.access(path.parent, os.W_OK)  # a read-only cache computes without storing
        cache_file = None if self._store.static or not writable else path.with_name(path.stem + ".warped.npy")
        return movie_template(np.load(path), frames, n_workers=n_workers, cache_file=cache_file)


def _is_regular(path: Path) -> bool:
    """True for a regular file itself (not a link, FIFO, device or folder)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _quietly_existing(store: _Store, path: Path) -> bool:
    """:meth:`_Store.existing`, with a planted link counting as absent (the download replaces it)."""
    try:
        return store.existing(path)
    except PlantedLinkError:
        return False


def _stat_token(path: Path) -> tuple[str, int, int] | None:
    """(path, size, mtime) of an existing file, None otherwise: a cached verification stays valid while it holds."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return str(path), stat.st_size, stat.st_mtime_ns


def _check_manifest(manifest: Any, path: Path) -> None:
    """Refuse a manifest that is not a release manifest: every field checked (:func:`manifest.validate_manifest`)."""
    mf.validate_manifest(manifest, path, Path(path).name)


def compare(first: dict, second: dict) -> dict[str, list[tuple[str, str]]]:
    """Changes from manifest ``first`` (older) to ``second`` (``format.md`` §3.5), metadata and data files apart."""
    def relative(entries: dict) -> dict[str, str]:
        return {bucket_and_key(e["url"])[1].split("/", 1)[1]: e["file_hash"] for e in entries.values()}

    out = {}
    for group, label in (("metadata_files", "metadata_changes"), ("data_files", "data_changes")):
        old, new = relative(first[group]), relative(second[group])
        new_by_hash = {h: p for p, h in new.items()}
        old_hashes = set(old.values())
        changes = []
        for path in sorted(set(old) | set(new)):
            if path in old and path in new:
                if old[path] != new[path]:
                    changes.append((path, f"{path} changed"))
            elif path in old:
                renamed = new_by_hash.get(old[path])
                changes.append((path, f"{path} renamed {renamed}" if renamed else f"{path} deleted"))
            elif new[path] not in old_hashes:
                changes.append((path, f"{path} created"))
        out[label] = changes
    return out


def format_comparison(name_0: str, name_1: str, changes: dict[str, list[tuple[str, str]]]) -> str:
    lines = [msg for _, msg in changes["metadata_changes"]] + [msg for _, msg in changes["data_changes"]]
    if not lines:
        return "The two manifests are equivalent"
    return f"Changes going from\n{name_0}\nto\n{name_1}\n\n" + "\n".join(lines)
