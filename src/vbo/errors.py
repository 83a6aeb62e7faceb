"""Every exception and warning class a vbo user can catch."""

from __future__ import annotations

from pathlib import Path


class VboError(Exception):
    """Base class of every error raised by vbo."""


class NwbFileError(VboError):
    """A problem with one NWB file; ``path`` names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class NwbFileNotFoundError(NwbFileError, FileNotFoundError):
    """The NWB path does not exist."""


class NotHdf5Error(NwbFileError):
    """The file exists but is not an HDF5 (hence not an NWB) file."""


class TruncatedFileError(NwbFileError):
    """The file starts like HDF5 but is shorter than its header says (incomplete download)."""


class NotVisualBehaviorFileError(NwbFileError):
    """The file is HDF5/NWB but lacks a group or field every Visual Behavior file has."""


class FileChangedError(NwbFileError):
    """The file was replaced or rewritten on disk after an object opened it; open it again to read it."""


class MissingDataError(NwbFileError, KeyError):
    """A stream that this member needs is absent from the file."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return f"{self.path}: {self.problem}"


class InvalidDataError(NwbFileError, ValueError):
    """A stream is present but inconsistent (e.g. timestamps shorter than traces)."""


class ContentError(VboError, ValueError):
    """Content given to the NWB writer cannot be written: inconsistent shapes or missing fields (nothing was
    written). Also importable as ``vbo.nwb.write.ContentError``."""


class UnknownIdError(VboError, KeyError):
    """An id (session, experiment, mouse, cell) that the release does not contain."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SessionClosedError(VboError, ValueError):
    """A member was read for the first time after the session was closed."""


class ManifestError(VboError, ValueError):
    """A manifest that is not a valid release manifest, or lacks an entry that a table names."""


# --- project cache (names and hierarchy as in AllenSDK) ---------------------------------------


class OutdatedManifestWarning(UserWarning):
    """A newer manifest exists than the one in use."""


class MissingLocalManifestWarning(UserWarning):
    """The cache directory has no record of downloaded files."""


class UpdatedStimulusPresentationTableWarning(UserWarning):
    """Reminder that stimulus_presentations gained blocks in release 1.1.0."""


class KnownIssueWarning(UserWarning):
    """The session or experiment asked for has a documented data issue (``vbo.known_issues``)."""


class BehaviorCloudCacheVersionException(Exception):
    """A manifest's version is outside the range this reader supports."""


# --- S3 access and downloads (vbo.source, vbo.cache.download) ---------------------------------


class UnsafeKeyError(VboError, ValueError):
    """An object key (or URL) that would escape the cache folder or points at a foreign host."""

    def __init__(self, key: str, problem: str):
        self.key = str(key)
        self.problem = problem
        super().__init__(f"{self.key!r}: {problem}")


class ForeignHostError(UnsafeKeyError):
    """A manifest URL whose host is neither the release bucket's nor the configured endpoint's."""


class S3Error(VboError):
    """An S3 request failed for a reason retrying does not fix; ``bucket`` and ``key`` name the object."""

    def __init__(self, bucket: str | None, key: str | None, problem: str):
        self.bucket, self.key, self.problem = bucket, key, problem
        super().__init__(f"s3://{bucket}/{key or ''}: {problem}")


class S3ObjectNotFoundError(S3Error, FileNotFoundError):
    """No such bucket, key or version id."""


class DownloadError(VboError):
    """A download did not complete; ``target`` names the object, ``path`` the local destination."""

    def __init__(self, target: str, path: str | Path | None, problem: str):
        self.target = str(target)
        self.path = None if path is None else str(path)
        self.problem = problem
        where = f" -> {self.path}" if self.path else ""
        super().__init__(f"{self.target}{where}: {problem}")


class HashMismatchError(DownloadError):
    """A file's blake2b digest differs from the manifest's ``file_hash``."""

    def __init__(self, target: str, path: str | Path | None, expected: str, actual: str, problem: str = ""):
        self.expected, self.actual = expected, actual
        super().__init__(target, path, problem or f"blake2b {actual[:16]}... != expected {expected[:16]}...")


# --- cache boundary, trust and integrity (vbo.cache: manifest, download, project) -----------------------------


class ManifestFieldError(ManifestError):
    """One field of a manifest is missing or malformed; ``path`` names the manifest, ``field`` the field."""

    def __init__(self, path: str | Path, field: str, problem: str):
        self.path, self.field, self.problem = str(path), field, problem
        super().__init__(f"manifest {self.path}: field {field}: {problem}")


class UnsafeNameError(UnsafeKeyError):
    """A name taken from content (project name, manifest name, version) that cannot safely become a path."""


class _LocalPathError(VboError):
    """A problem with one local path; ``path`` and ``problem`` are kept (OSError subclasses format by them)."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = str(path), problem
        VboError.__init__(self, f"{self.path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class CacheFolderError(_LocalPathError, OSError):
    """The cache folder (or a path inside it) is unusable: not a folder, a link vbo did not make, unwritable."""


class CacheFolderNotFoundError(CacheFolderError, FileNotFoundError):
    """The cache folder does not exist."""


class PlantedLinkError(CacheFolderError):
    """A symbolic link (or other non-regular file) that vbo did not make sits where vbo keeps its own file."""


class NotInCacheError(_LocalPathError, FileNotFoundError):
    """An offline cache lacks a file that the manifest names; ``path`` is where it should be."""


class S3ConnectionError(S3Error):
    """The S3 endpoint could not be reached (refused, timed out, reset) even after retries."""


class UnverifiedObjectError(DownloadError):
    """Fetched bytes disagree with the server's own size or ETag for that object version."""


class LockTimeoutError(CacheFolderError, TimeoutError):
    """Another process held a cache file's lock for longer than the allowed wait."""


# --- malformed files, tables, ids (validation: vbo.nwb.read, vbo.tables, vbo.cli) ------------


class MalformedDataError(InvalidDataError):
    """A dataset, attribute or table column is present but malformed; ``dataset`` names it inside the file."""

    def __init__(self, path: str | Path, dataset: str, problem: str):
        self.dataset = dataset
        super().__init__(path, f"{dataset}: {problem}")


class CorruptDataError(MalformedDataError):
    """A dataset's stored bytes cannot be decoded (a corrupt compressed chunk, a broken storage layout)."""


class NotRegularFileError(NwbFileError):
    """The path is a FIFO, a device, a socket or another non-regular file; vbo refuses to open it."""


class ExternalDataError(NwbFileError):
    """The file points outside itself (an HDF5 external link, external raw storage or a virtual dataset).

    Released files never do; vbo refuses such a file rather than read another file's bytes.
    """

    def __init__(self, path: str | Path, dataset: str, problem: str):
        self.dataset = dataset
        super().__init__(path, f"{dataset}: {problem}")


class OpenTimeoutError(NwbFileError, TimeoutError):
    """The file system did not answer within the open timeout (a hung mount, a blocking special file)."""


class MetadataTableError(VboError, ValueError):
    """A metadata table (CSV) that cannot be read as the release's table; ``path`` and ``field`` name the spot."""

    def __init__(self, path: str | Path, field: str | None, problem: str):
        self.path = str(path)
        self.field = field
        self.problem = problem
        where = f" [{field}]" if field else ""
        super().__init__(f"{self.path}{where}: {problem}")


class InvalidIdError(VboError, TypeError, ValueError):
    """A value given as an id that is not one (not an integer or a string of ASCII digits)."""


class NwbPermissionError(NwbFileError, PermissionError):
    """The NWB file exists but this user may not read it."""


class StreamIntegrityError(S3Error):
    """Streamed bytes of an object version differ from the block digests recorded for it (from a verified
    download or an earlier stream), or the server answered a range with another object, version or range."""

    def __init__(self, bucket: str | None, key: str | None, problem: str):
        super().__init__(bucket, key, f"{problem}; the server or mirror serves different bytes than recorded "
                                      f"for this object version. Nothing it sent was used. Stream from a trusted "
                                      f"endpoint, or download the file (vbo download, verified by its blake2b)")


# --- release lookups (vbo.cache.project, vbo.history, vbo.export) -------------------------------------------


class ReleaseLookupError(VboError, RuntimeError):
    """The release's tables do not locate what was asked: an id with no row or several rows, a session with no
    file, or a file holding another session than its table row says (a RuntimeError, as AllenSDK raises)."""


class UnsupportedCacheOperationError(VboError, RuntimeError):
    """This kind of cache cannot do what was asked (e.g. compare manifests in a static copy, which holds only the
    latest one); the message says which cache can (a RuntimeError, as AllenSDK raises)."""


class StaticCacheError(VboError, RuntimeError):
    """A folder opened as a static cache (a copy of the bucket) lacks the bucket's layout."""
