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


class MissingDataError(NwbFileError, KeyError):
    """A stream that this member needs is absent from the file."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return f"{self.path}: {self.problem}"


class InvalidDataError(NwbFileError, ValueError):
    """A stream is present but inconsistent (e.g. timestamps shorter than traces)."""


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


# --- S3 access and downloads (vbo.cache.s3, vbo.cache.download) ------------------------------


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


class StreamIntegrityError(S3Error):
    """Streamed bytes of an object version differ from the block digests recorded for it (from a verified
    download or an earlier stream), or the server answered a range with another object, version or range."""

    def __init__(self, bucket: str | None, key: str | None, problem: str):
        super().__init__(bucket, key, f"{problem}; the server or mirror serves different bytes than recorded "
                                      f"for this object version. Nothing it sent was used. Stream from a trusted "
                                      f"endpoint, or download the file (vbo download, verified by its blake2b)")
