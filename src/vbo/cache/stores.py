"""Where the files of a project cache live and how a missing one is obtained (``docs/format.md`` §5).

Three stores, one interface (:class:`Store`); the project cache (:mod:`vbo.cache.project`) calls only the
interface and never asks which store it holds:

* :class:`S3Store` — downloads on demand into ``<cache_dir>/<project>-<version>/...`` (§5.1), verifying every
  file, reusing identical files across versions (§5.4);
* :class:`LocalStore` — the same folder, offline: never touches the network;
* :class:`StaticStore` — a mounted or synchronised copy of the bucket itself (``<cache_dir>/<project>/<key>``),
  latest manifest only, no bookkeeping (§5.5).

Every path a store hands out lies inside its cache folder: object keys are checked before they become paths,
and a link vbo did not make is refused (:class:`~vbo.errors.PlantedLinkError`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from vbo.cache import manifest as mf
from vbo.cache.download import (
    DownloadJob,
    DownloadProgress,
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
    DownloadError,
    HashMismatchError,
    ManifestError,
    NotInCacheError,
    PlantedLinkError,
    StaticCacheError,
    UnsafeKeyError,
    UnsafeNameError,
    VboError,
)

LAST_USED = "_manifest_last_used.txt"
DOWNLOAD_RECORD = "_downloaded_data.json"

log = logging.getLogger("vbo.cache")

StatToken = tuple[str, int, int]
"""``(path, size in bytes, mtime in ns)`` of a file: a verification stays valid while it holds."""


# --- small file helpers -------------------------------------------------------------------------------------


def relative_key(key: str) -> str:
    """Object key without its first (project) component, checked to stay inside the cache."""
    safe_relative_key(key)
    return safe_relative_key(key.split("/", 1)[1] if "/" in key else key)


def entry_key(entry: dict) -> tuple[str | None, str]:
    """``(bucket or None, key)`` of a manifest entry's URL."""
    return bucket_and_key(entry["url"])


def read_text_nofollow(path: Path) -> str:
    """A small text file's content, refusing a link or special file at ``path``."""
    with os.fdopen(open_nofollow(path, os.O_RDONLY), "rb") as fh:
        return fh.read().decode("utf-8")


def write_text_atomic(path: Path, text: str) -> bool:
    """Replace ``path`` by a new file holding ``text`` (a link planted there is replaced, never followed).

    Returns False (after logging) if the folder is not writable, e.g. a read-only complete cache.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as err:
        log.info("not writing %s: %s", path, err)
        return False
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        log.info("not writing %s: %s", path, err)
        return False
    return True


def stat_token(path: Path) -> StatToken | None:
    """(path, size, mtime) of an existing file, None otherwise: a cached verification stays valid while it holds."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return str(path), info.st_size, info.st_mtime_ns


def is_regular(path: Path) -> bool:
    """True for a regular file itself (not a link, FIFO, device or folder)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _all_entries(manifest: dict) -> Iterator[tuple[str, dict]]:
    for group in ("metadata_files", "data_files"):
        for name, entry in manifest[group].items():
            yield f"{group}[{name!r}].url", entry


def _checked(path: Path, where: str, check: Callable[[], object]) -> object:
    """Run ``check``; an UnsafeKeyError it raises is raised again naming the manifest and the field."""
    try:
        return check()
    except UnsafeKeyError as err:
        raise type(err)(err.key, f"manifest {path}: field {where}: {err.problem}") from None


# --- the interface --------------------------------------------------------------------------------------------


class Store:
    """Where manifests and objects of one cache live and how missing ones are obtained.

    This base class is an offline cache folder in the versioned layout (``docs/format.md`` §5.1); the
    subclasses change what differs: listing manifests, fetching a missing file, streaming, repairing.
    """

    static = False
    """True for a copy of the bucket: latest manifest only, nothing written, no manifest comparison."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = cache_dir

    # paths

    def manifest_path(self, name: str) -> Path:
        if not mf.is_manifest_name(name):
            raise UnsafeNameError(str(name), "not a manifest file name ('<project>_manifest_vX.Y.Z.json')")
        return self.cache_dir / name

    def version_folder(self, manifest: dict) -> Path:
        project = mf.safe_name(manifest["project_name"], "project_name")
        version = mf.safe_name(manifest["manifest_version"], "manifest_version")
        return self.cache_dir / f"{project}-{version}"

    def local_path(self, manifest: dict, key: str) -> Path:
        return self.inside(self.version_folder(manifest) / relative_key(key))

    def entry_path(self, manifest: dict, entry: dict) -> Path:
        """Local path of a manifest entry's file (whether or not it is there)."""
        return self.local_path(manifest, entry_key(entry)[1])

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

    def quietly_existing(self, path: Path) -> bool:
        """:meth:`existing`, with a planted link counting as absent (a download replaces it)."""
        try:
            return self.existing(path)
        except PlantedLinkError:
            return False

    # manifests

    def manifest_names(self) -> list[str]:
        """Names of the manifests this store offers."""
        return sorted(p.name for p in self.cache_dir.glob("*_manifest_v*.json")
                      if mf.is_manifest_name(p.name) and p.is_file())

    def downloaded_manifest_names(self) -> list[str]:
        """Manifests stored in the cache folder, sorted."""
        return sorted(p.name for p in self.cache_dir.iterdir() if p.is_file() and mf.is_manifest_name(p.name))

    def release_manifest_names(self) -> list[str]:
        """Every manifest of the release this store can read (a static copy keeps older ones it does not offer)."""
        return self.manifest_names()

    def fetch_manifest(self, name: str, refresh: bool = False) -> Path:
        path = self.manifest_path(name)
        if not self.existing(path):
            raise NotInCacheError(path, "You started a cache without a connection to s3 and this manifest is not "
                                        "already on your system")
        return path

    def read_manifest(self, name: str) -> dict:
        """Fetch, parse and validate a manifest (every field, and every key kept inside the cache folder)."""
        return self._parse_manifest(name, refresh=False)

    def _parse_manifest(self, name: str, refresh: bool) -> dict:
        path = self.fetch_manifest(name, refresh=refresh)
        try:
            manifest = json.loads(read_text_nofollow(Path(path)))
        except (ValueError, UnicodeDecodeError) as err:
            raise ManifestError(f"manifest {path} is not valid JSON: {err}") from err
        mf.validate_manifest(manifest, path, Path(path).name)
        self.check_entries(manifest, path)
        return manifest

    def check_entries(self, manifest: dict, path: Path) -> None:
        """Refuse a manifest whose keys would escape the cache folder (``..``, absolute paths ...)."""
        for where, entry in _all_entries(manifest):
            _checked(path, where, lambda e=entry: relative_key(entry_key(e)[1]))

    def last_used(self) -> str | None:
        """The manifest name in ``_manifest_last_used.txt``; None if there is no such file.

        Raises
        ------
        OSError, UnicodeDecodeError
            The file is a planted link, a FIFO or holds bad bytes: not trusted.
        """
        path = self.cache_dir / LAST_USED
        if not os.path.lexists(path):
            return None
        return read_text_nofollow(path).strip()

    def remember_last_used(self, name: str) -> None:
        write_text_atomic(self.cache_dir / LAST_USED, name)

    # files

    def fetch(self, manifest: dict, entry: dict, verify: bool) -> Path:
        """Local path of an entry: the cached file, else a recorded identical file linked into place."""
        path = self.entry_path(manifest, entry)
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

    def prefetch(self, manifest: dict, entries: list[dict], workers: int,
                 progress: Callable[[DownloadProgress], None] | None) -> None:
        """Bring every entry's file into the cache at once (in parallel); an offline store has nothing to do."""

    def stream_url(self, entry: dict) -> str | None:
        """URL to read an entry's object by byte ranges; None if this store reads local files only."""
        return None

    def check(self, manifest: dict, entry: dict) -> str:
        """Re-hash an entry's cached file: ``"ok"``, ``"missing"``, or ``"corrupt"`` (a wrong hash, or a link
        vbo did not make)."""
        path = self.entry_path(manifest, entry)
        try:
            present = self.existing(path)
        except PlantedLinkError:
            return "corrupt"
        if not present:
            return "missing"
        return "ok" if file_matches(path, entry["file_hash"]) else "corrupt"

    def repair(self, manifest: dict, entry: dict, path: Path) -> str:
        """Replace a corrupt file by a verified copy: ``"repaired"``, or ``"corrupt"`` if this store cannot."""
        return "corrupt"

    def record_missing(self) -> bool:
        """True if the folder holds data files but no ``_downloaded_data.json`` (so none can be reused)."""
        if (self.cache_dir / DOWNLOAD_RECORD).exists():
            return False
        return any(any("json" not in f for f in files) for _, _, files in os.walk(self.cache_dir))

    def construct_record(self) -> None:
        """Hash every data file under the cache folder and write ``_downloaded_data.json`` anew."""
        record = DownloadRecord(self.cache_dir / DOWNLOAD_RECORD)
        entries = {}
        for root, _, files in os.walk(self.cache_dir):
            for name in files:
                path = Path(root) / name
                if "json" in name or name == LAST_USED or is_transient_file(path) or not is_regular(path):
                    continue  # links and FIFOs are never hashed (a FIFO would block the read forever)
                entries[str(path.resolve())] = mf.file_hash(path)
        record.replace(entries)

    # the natural movie (docs/format.md §5.1, §5.7)

    def natural_movie(self, verified: dict[StatToken, str]) -> Path:
        """Local path of ``Movie_TOE1.npy`` in ``<cache_dir>/resources/``, verified when a hash is known.

        ``verified`` maps a file's :func:`stat_token` to the hash it was found to have (this process only);
        it is read and updated, so an unchanged file is hashed once.
        """
        path = self.inside(self.cache_dir / "resources" / Path(mf.NATURAL_MOVIE_KEY).name)
        record = DownloadRecord(path.parent / DOWNLOAD_RECORD)
        trusted = self._trusted_movie_hash(path, record)
        present = self._movie_present(path)
        token = stat_token(path) if present else None
        if present and trusted and (verified.get(token) == trusted or file_matches(path, trusted)):
            verified[token] = trusted
            return path
        return self._obtain_movie(path, record, present, trusted, verified)

    def _trusted_movie_hash(self, path: Path, record: DownloadRecord) -> str | None:
        """The hash the movie must have: the one recorded when it was downloaded (None if none was)."""
        return record.load().get(str(path.absolute()))

    def _movie_present(self, path: Path) -> bool:
        return self.existing(path)

    def _obtain_movie(self, path: Path, record: DownloadRecord, present: bool, trusted: str | None,
                      verified: dict[StatToken, str]) -> Path:
        """The movie when the cached copy is missing or did not verify; offline: an error, or the unverifiable
        copy itself."""
        if not present:
            raise NotInCacheError(path, "You started a cache without a connection to s3 and the natural movie "
                                        "is not already on your system")
        if trusted:
            raise HashMismatchError(str(path), path, trusted, mf.file_hash(path),
                                    "the natural movie's hash differs from the one recorded when it was "
                                    f"downloaded (in {record.path}); delete it and download it again")
        return path  # recorded by no one: nothing to verify it against (README: "What vbo verifies")

    def movie_template_file(self, movie: Path) -> Path | None:
        """Where the warped movie is kept beside ``movie``; None if it cannot be (a read-only folder)."""
        if not os.access(movie.parent, os.W_OK):
            return None
        return movie.with_name(movie.stem + ".warped.npy")


# --- the three stores -----------------------------------------------------------------------------------------


class LocalStore(Store):
    """A cache folder filled earlier by an S3 cache (AllenSDK's or vbo's), used offline."""


class StaticStore(Store):
    """A mounted or synchronised copy of the bucket: ``<cache_dir>/<project>/<key...>``."""

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

    def downloaded_manifest_names(self) -> list[str]:
        return self.manifest_names()

    def release_manifest_names(self) -> list[str]:
        return sorted(p.name for p in self.manifests_dir().glob("*_manifest_v*.json"))

    def manifest_path(self, name: str) -> Path:
        super().manifest_path(name)  # the name check
        return self.inside(self.manifests_dir() / name)

    def version_folder(self, manifest: dict) -> Path:
        return self.cache_dir / mf.safe_name(manifest["project_name"], "project_name")

    def last_used(self) -> str | None:
        return None  # a copy of the bucket keeps no bookkeeping: always its latest manifest

    def remember_last_used(self, name: str) -> None:
        pass

    def fetch(self, manifest: dict, entry: dict, verify: bool) -> Path:
        path = self.entry_path(manifest, entry)
        if not self.existing(path):
            raise NotInCacheError(path, f"not in the static copy of the bucket at {self.cache_dir}")
        if verify:
            verify_file(path, entry["file_hash"])
        return path

    def record_missing(self) -> bool:
        return False  # a copy of the bucket keeps no download record

    def construct_record(self) -> None:
        raise NotImplementedError("a static copy of the bucket has no download record to construct")

    def natural_movie(self, verified: dict[StatToken, str]) -> Path:
        """The bucket copy's own ``resources/Movie_TOE1.npy`` (no download record to verify it against)."""
        path = self.inside(self.cache_dir / mf.NATURAL_MOVIE_KEY)
        if not self.existing(path):
            raise NotInCacheError(path, f"not in the static copy of the bucket at {self.cache_dir}")
        return path

    def movie_template_file(self, movie: Path) -> Path | None:
        return None  # a read-only mirror: computed, never stored


class S3Store(Store):
    """Downloads from the (anonymous) bucket on demand into the versioned cache layout."""

    def __init__(self, cache_dir: Path, bucket: str, endpoint_url: str | None):
        super().__init__(cache_dir)
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.client = anonymous_client(endpoint_url)
        self.download_options: dict = {}  # extra keyword arguments of download_object (retries, backoff ...)

    @property
    def real_bucket(self) -> bool:
        """True for the release's own bucket on AWS (not a mirror or a test server)."""
        return self.bucket == mf.BUCKET_NAME and self.endpoint_url is None

    # manifests

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

    def read_manifest(self, name: str) -> dict:
        """As :meth:`Store.read_manifest`; a copy that does not parse or validate is fetched again once, so a
        damaged copy never sticks."""
        try:
            return self._parse_manifest(name, refresh=False)
        except (ManifestError, UnsafeKeyError):
            log.warning("manifest %s does not parse or validate; fetching it again", name)
            return self._parse_manifest(name, refresh=True)

    def check_entries(self, manifest: dict, path: Path) -> None:
        """Refuse entries on foreign hosts or other buckets, and keys escaping the cache folder."""
        for where, entry in _all_entries(manifest):
            _checked(path, where, lambda e=entry: check_object_url(e["url"], self.bucket, self.endpoint_url))
            _checked(path, where, lambda e=entry: relative_key(entry_key(e)[1]))

    # files

    def stream_url(self, entry: dict) -> str:
        """URL of an entry's object version on this store's endpoint, for byte-range streaming."""
        bucket, key = entry_key(entry)
        return object_https_url(key, bucket or self.bucket, entry["version_id"], self.endpoint_url)

    def fetch(self, manifest: dict, entry: dict, verify: bool) -> Path:
        """Local path of an entry: the cached file if it verifies, else a reused identical file (hashed
        first), else a download. A corrupt or planted file is replaced atomically under its lock, never
        unlinked."""
        bucket, key = entry_key(entry)
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

    def prefetch(self, manifest: dict, entries: list[dict], workers: int,
                 progress: Callable[[DownloadProgress], None] | None) -> None:
        """Download the entries not already cached (nor reusable from an identical file) in a thread pool."""
        record = DownloadRecord(self.cache_dir / DOWNLOAD_RECORD)
        jobs = []
        for entry in entries:
            bucket, key = entry_key(entry)
            path = self.local_path(manifest, key)
            if not self.quietly_existing(path) and not reuse_identical(record, entry["file_hash"], path):
                jobs.append(DownloadJob(bucket or self.bucket, key, entry["version_id"], entry["file_hash"], path))
        if jobs:
            download_many(jobs, workers=workers, progress=progress, client=self.client, record=record)

    def repair(self, manifest: dict, entry: dict, path: Path) -> str:
        """Download ``entry`` again over its corrupt copy; "repaired" only if the result verifies."""
        try:
            self.fetch(manifest, entry, verify=True)
        except VboError as err:
            log.warning("could not repair %s: %s", path, err)
            return "corrupt"
        return "repaired" if file_matches(path, entry["file_hash"]) else "corrupt"

    # the natural movie

    def _trusted_movie_hash(self, path: Path, record: DownloadRecord) -> str | None:
        """The release's known hash on the real bucket, else the one recorded at download."""
        return mf.NATURAL_MOVIE_HASH if self.real_bucket else super()._trusted_movie_hash(path, record)

    def _movie_present(self, path: Path) -> bool:
        return self.quietly_existing(path)  # a download replaces a planted link

    def _obtain_movie(self, path: Path, record: DownloadRecord, present: bool, trusted: str | None,
                      verified: dict[StatToken, str]) -> Path:
        """Fetch the movie pinned to one version, check it (the release's hash on the real bucket, else the
        server's size and ETag), keep it atomically and record its blake2b for later runs."""
        version = mf.NATURAL_MOVIE_VERSION_ID if self.real_bucket else None
        expected = mf.NATURAL_MOVIE_HASH if self.real_bucket else None
        head = head_object_retrying(self.client, self.bucket, mf.NATURAL_MOVIE_KEY, version)
        download_object(self.client, self.bucket, mf.NATURAL_MOVIE_KEY, version or head.get("VersionId"),
                        expected, path, expected_size=int(head["ContentLength"]), expected_etag=head.get("ETag"))
        record.add(path, expected or mf.file_hash(path))
        verified[stat_token(path)] = record.load().get(str(path.absolute()))
        return path
