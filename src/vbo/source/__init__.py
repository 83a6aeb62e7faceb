"""The source layer: opening a local file or a remote object, for the reader and the cache alike.

- :mod:`vbo.source.s3` — anonymous S3 client, URL parsing and building, safe keys, listing and sizes.
- :mod:`vbo.source.remote` — :class:`~vbo.source.remote.RemoteFile`, a seekable file over byte ranges.
- :mod:`vbo.source.digests` — per-block digests that every streamed read is checked against.
- :mod:`vbo.source.plan` — learned read plans: the blocks each phase of an earlier read touched.

:func:`open_file` turns a path or a URL into what ``h5py.File`` opens, with a way to open the same bytes
again later (a pool of open files closes and reopens them); nothing here knows HDF5 or the release cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from vbo.errors import FileChangedError
from vbo.source import s3
from vbo.source.remote import RemoteFile, open_remote

#: URL schemes read by byte ranges (anything else is a local path).
STREAMED_SCHEMES = ("s3://", "https://", "http://")


@dataclass
class OpenedFile:
    """One opened file: what ``h5py.File`` opens, how to release it, how to open the same bytes again.

    Attributes
    ----------
    name
        The path or URL, for messages.
    target
        A local path (``str`` or path-like), or a :class:`~vbo.source.remote.RemoteFile` for a remote object.
    release
        Frees what opening made (closes the remote file); None for a local path.
    reopen
        Opens the same file again: a local file must not have changed on disk since (else
        :class:`~vbo.errors.FileChangedError`), a remote object is read at the version first seen.
    """

    name: str
    target: str | os.PathLike | RemoteFile
    release: Callable[[], None] | None
    reopen: Callable[[], OpenedFile]

    @property
    def remote(self) -> RemoteFile | None:
        """The remote file (for its prefetch and counters), or None for a local path."""
        return self.target if isinstance(self.target, RemoteFile) else None


def is_remote(location: str | os.PathLike) -> bool:
    """True for an ``s3://``, ``https://`` or ``http://`` URL (read by byte ranges)."""
    return isinstance(location, str) and location.startswith(STREAMED_SCHEMES)


def open_file(location: str | os.PathLike) -> OpenedFile:
    """Open a local path or a remote object URL for reading (see :class:`OpenedFile`).

    A URL is streamed by verified byte ranges (:func:`vbo.source.remote.open_remote`, one light ranged-GET
    client per endpoint and process, :func:`vbo.source.s3.shared_range_client`); a local path is only checked
    on reopening (size and modification time).

    Raises
    ------
    vbo.errors.S3ObjectNotFoundError, vbo.errors.S3Error
        (a URL) no such object or version, or the endpoint cannot be read.
    """
    if is_remote(location):
        return _open_remote_url(str(location))
    return _local(location)


def _file_state(path: str) -> tuple[int, int]:
    """(size, modification time in ns) of a local file: what tells that it was replaced or rewritten."""
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def _local(location: str | os.PathLike) -> OpenedFile:
    path = os.path.abspath(location)
    state = _file_state(path) if os.path.exists(path) else None

    def reopen() -> OpenedFile:
        if state is not None and os.path.exists(path) and _file_state(path) != state:
            raise FileChangedError(location, "the file changed on disk since it was opened; open it again "
                                             "to read the new file")
        return OpenedFile(path, path, None, reopen)

    return OpenedFile(os.fspath(location), location, None, reopen)


def _open_remote_url(url: str) -> OpenedFile:
    endpoint = s3.parse_object_url(url).endpoint_url
    first = open_remote(url, client=s3.shared_range_client(endpoint))
    bucket, key, version_id, size = first.bucket, first.key, first.version_id, first.size

    def reopen() -> OpenedFile:
        again = RemoteFile(s3.shared_range_client(endpoint), bucket, key, version_id, size=size)
        return OpenedFile(again.name, again, again.close, reopen)

    return OpenedFile(first.name, first, first.close, reopen)
