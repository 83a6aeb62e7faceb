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


class BehaviorCloudCacheVersionException(Exception):
    """A manifest's version is outside the range this reader supports."""
