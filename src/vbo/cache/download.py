"""Verified, resumable, lock-protected downloads and the ``_downloaded_data.json`` record.

``docs/format.md`` §4 (blake2b), §5.2 (bookkeeping) and §5.4 (download and reuse decision).

- :func:`download_object` — stream one object version to ``<dest>.partial``, resume with a Range request,
  retry transient failures with exponential backoff, verify blake2b, then ``os.replace`` onto ``dest``.
  A partial or corrupt file never sits at ``dest``. An inter-process lock (``<dest>.lock``) makes several
  processes sharing one cache transfer each file once. Objects without a manifest hash (manifests, the
  natural movie) are checked against the server's size and ETag instead.
- Planted files: partials, locks and the record are opened with ``O_NOFOLLOW`` (:func:`open_nofollow`); a
  link or FIFO planted at a partial or lock path is removed, never written through.
- :func:`verify_file` — blake2b check raising :class:`~vbo.errors.HashMismatchError`.
- :class:`DownloadRecord` — ``{absolute path: blake2b}``, indent 2, sorted keys, rewritten atomically under a
  lock; :func:`reuse_identical` hashes a recorded identical file inside the cache, then links it (symlink →
  hard link → copy) under the destination's lock.
- :func:`download_many` — a thread pool reporting aggregate progress (bytes, rate, ETA) to a callback as a
  :class:`DownloadProgress`; drawing it is the caller's business (the ``vbo`` command draws a rich bar).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from vbo.cache.manifest import HASH_CHUNK_BYTES, file_hash
from vbo.errors import (CacheFolderError, DownloadError, HashMismatchError, LockTimeoutError, PlantedLinkError,
                        UnverifiedObjectError)
from vbo.source.digests import BlockDigests
from vbo.source.s3 import (anonymous_client, as_s3_error, backoff_delay, is_client_error, is_retryable,
                           object_size_retrying)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: filelock's own lock
    fcntl = None
    from filelock import FileLock

log = logging.getLogger("vbo.cache.download")

PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"
DEFAULT_RETRIES = 10
CHUNK_BYTES = 1024 * 1024


TRANSIENT_SUFFIXES = (PARTIAL_SUFFIX, LOCK_SUFFIX, ".link", ".tmp")


def is_transient_file(path: str | Path) -> bool:
    """True for this module's own bookkeeping files (partials, locks, temporaries): never data, never hashed."""
    return Path(path).name.endswith(TRANSIENT_SUFFIXES)


def partial_path(dest: str | Path) -> Path:
    """Where the bytes of ``dest`` accumulate until verified: ``<dest>.partial`` in the same folder."""
    dest = Path(dest)
    return dest.with_name(dest.name + PARTIAL_SUFFIX)


def lock_path(dest: str | Path) -> Path:
    dest = Path(dest)
    return dest.with_name(dest.name + LOCK_SUFFIX)


NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _lock(path: Path, timeout: float | None):
    """An exclusive inter-process lock on ``path`` that never follows a link planted there."""
    if fcntl is None:  # pragma: no cover - not POSIX
        return FileLock(str(path), timeout=-1 if timeout is None else timeout)
    return _NoFollowLock(path, timeout)


def open_nofollow(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses to follow a symbolic link at ``path`` and to open anything but a regular file.

    Raises
    ------
    PlantedLinkError
        ``path`` is a symbolic link, a FIFO, a device or a folder.
    """
    try:
        fd = os.open(path, flags | NOFOLLOW | CLOEXEC | getattr(os, "O_NONBLOCK", 0), mode)
    except OSError as err:
        if err.errno == errno.ELOOP or (err.errno == errno.EISDIR):
            raise PlantedLinkError(path, "a link or folder that vbo did not make is in the way; "
                                         "remove it") from err
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PlantedLinkError(path, "not a regular file (a FIFO, device or socket?); remove it")
    return fd


def remove_if_planted(path: Path) -> bool:
    """Remove a symbolic link or special file at ``path`` (never what it points to); True if one was removed.

    vbo's own bookkeeping files (partials, locks) are regular files, so anything else there was planted.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISREG(info.st_mode):
        return False
    if stat.S_ISDIR(info.st_mode):
        raise PlantedLinkError(path, "a folder is where vbo keeps one of its own files; remove it")
    log.warning("removing %s: a link or special file that vbo did not make", path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True


class _NoFollowLock:
    """``flock`` on ``<path>``, opened with ``O_NOFOLLOW`` and never truncated; ``timeout`` None waits forever."""

    def __init__(self, path: Path, timeout: float | None):
        self.path, self.timeout, self.fd = Path(path), timeout, None

    def _open(self) -> int:
        for _ in range(3):
            remove_if_planted(self.path)
            try:
                return open_nofollow(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except PlantedLinkError:
                continue  # planted again between the check and the open: remove again
        raise PlantedLinkError(self.path, "a link keeps reappearing where vbo keeps its lock file")

    def __enter__(self):
        fd = self._open()
        deadline = None if self.timeout is None or self.timeout < 0 else time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeoutError(self.path, f"still locked by another process after {self.timeout} s")
                time.sleep(delay)
                delay = min(0.2, delay * 2)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


# --- hashing ------------------------------------------------------------------------------------------


def verify_file(path: str | Path, expected_hash: str, target: str | None = None) -> Path:
    """Check that ``path`` hashes (blake2b, ``docs/format.md`` §4) to ``expected_hash``; return the path.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    HashMismatchError
        The digest differs (``expected`` and ``actual`` attributes hold both).
    """
    path = Path(path)
    actual = file_hash(path)
    if actual != expected_hash.lower():
        raise HashMismatchError(target or str(path), path, expected_hash, actual)
    return path


def file_matches(path: str | Path, expected_hash: str) -> bool:
    """True if ``path`` is a file whose blake2b digest is ``expected_hash``."""
    try:
        verify_file(path, expected_hash)
        return True
    except (OSError, HashMismatchError):
        return False


# --- download record ----------------------------------------------------------------------------------


class DownloadRecord:
    """The ``_downloaded_data.json`` record: ``{absolute local path: blake2b hex}`` (``docs/format.md`` §5.2).

    Every change is a read-modify-write under ``<record>.lock`` and an atomic rewrite (temporary file in the
    same folder, then ``os.replace``), indent 2, sorted keys, so concurrent writers in several processes
    never lose each other's entries and readers never see half a file.
    """

    def __init__(self, path: str | Path, *, lock_timeout: float | None = 600.0):
        self.path = Path(path)
        self.lock_timeout = lock_timeout

    def load(self) -> dict[str, str]:
        """The record's entries; an absent, empty or unreadable record is empty (it is rebuilt, not trusted)."""
        try:
            with os.fdopen(open_nofollow(self.path, os.O_RDONLY), "rb") as fh:
                data = json.loads(fh.read())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:  # a planted link (PlantedLinkError is an OSError), bad JSON
            log.warning("ignoring unreadable download record %s: %s", self.path, err)
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items()}

    def exists(self) -> bool:
        return self.path.is_file()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _lock(lock_path(self.path), self.lock_timeout):
            yield

    def _write(self, entries: dict[str, str]) -> None:
        text = json.dumps(entries, indent=2, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def add(self, path: str | Path, file_hash: str) -> None:
        """Record ``path`` (made absolute) → ``file_hash``."""
        self.update({path: file_hash})

    def update(self, entries: dict) -> None:
        """Record several ``{path: hash}`` at once."""
        with self._locked():
            data = self.load()
            data.update({str(Path(p).absolute()): h for p, h in entries.items()})
            self._write(data)

    def remove(self, path: str | Path) -> None:
        with self._locked():
            data = self.load()
            if data.pop(str(Path(path).absolute()), None) is not None:
                self._write(data)

    def replace(self, entries: dict) -> None:
        """Rewrite the whole record (``construct_local_manifest``)."""
        with self._locked():
            self._write({str(Path(p).absolute()): h for p, h in entries.items()})

    def find(self, expected_hash: str, exclude: str | Path | None = None) -> Path | None:
        """A recorded path with ``expected_hash`` that still is a regular file (not a link) inside the record's
        folder, else None (an entry pointing outside the cache is never used)."""
        skip = str(Path(exclude).absolute()) if exclude is not None else None
        root = self.path.parent.resolve()
        for recorded, digest in sorted(self.load().items()):
            if digest == expected_hash and recorded != skip:
                candidate = Path(recorded)
                if candidate.is_file() and not candidate.is_symlink() and is_inside(candidate, root):
                    return candidate
        return None


def is_inside(path: str | Path, root: str | Path) -> bool:
    """True if ``path`` (links resolved) lies inside folder ``root``."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def reuse_identical(record: DownloadRecord, expected_hash: str, dest: str | Path, *,
                    verify: bool = True) -> str | None:
    """Make ``dest`` an identical copy of a recorded file with ``expected_hash`` (``docs/format.md`` §5.4).

    The source is hashed first (``verify``, default on): a recorded file that no longer has its hash is not
    reused. Under ``dest``'s lock, tries a symlink, then a hard link, then a copy; each is made under a
    temporary name and moved onto ``dest`` atomically. Returns ``"symlink"``, ``"hardlink"`` or ``"copy"``,
    or None if the record holds no usable file.
    """
    dest = Path(dest)
    source = record.find(expected_hash, exclude=dest)
    if source is None:
        return None
    if verify and not file_matches(source, expected_hash):
        log.warning("recorded file %s no longer has hash %s; not reusing it", source, expected_hash[:16])
        return None
    make_parent(dest)
    with _lock(lock_path(dest), 600.0):
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.{threading.get_ident()}.link")
        for method in ("symlink", "hardlink", "copy"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            try:
                if method == "symlink":
                    os.symlink(source.absolute(), tmp)
                elif method == "hardlink":
                    os.link(source, tmp)
                else:
                    shutil.copyfile(source, tmp, follow_symlinks=False)
                os.replace(tmp, dest)
                return method
            except (OSError, NotImplementedError) as err:
                log.debug("cannot %s %s -> %s: %s", method, source, dest, err)
                with contextlib.suppress(OSError):
                    tmp.unlink()
    return None


def make_parent(dest: Path) -> None:
    """Create ``dest``'s folder; a file in the way is a typed error."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise CacheFolderError(dest.parent, f"cannot create the folder: a file is in the way ({err})") from err


# --- one download ---------------------------------------------------------------------------------------


class _LocalWriteError(Exception):
    """Writing the partial file failed (disk full, permissions): not retried."""


def _target(bucket: str, key: str, version_id: str | None) -> str:
    return f"s3://{bucket}/{key}" + (f"?versionId={version_id}" if version_id else "")


def _content_range_start_total(response: dict) -> tuple[int | None, int | None]:
    text = response.get("ContentRange") or ""  # "bytes 100-199/1000"
    try:
        span, total = text.split(" ", 1)[1].split("/")
        return int(span.split("-")[0]), (int(total) if total != "*" else None)
    except (IndexError, ValueError):
        return None, None


def download_object(client, bucket: str, key: str, version_id: str | None, expected_hash: str | None,
                    dest: str | Path, *, retries: int = DEFAULT_RETRIES, progress: Callable[[int], None] | None = None,
                    backoff: float = 0.5, max_backoff: float = 30.0, chunk_size: int = CHUNK_BYTES,
                    lock_timeout: float | None = None, record: DownloadRecord | None = None,
                    fsync: bool = True, expected_size: int | None = None,
                    expected_etag: str | None = None, force: bool = False) -> Path:
    """Download one object version to ``dest``, verified, resumable, once per shared cache.

    Parameters
    ----------
    client
        A boto3 S3 client (see :func:`vbo.source.s3.anonymous_client`).
    bucket, key, version_id
        The object; ``version_id`` None means the latest version (manifests, listings).
    expected_hash
        blake2b hex the file must have; None skips the hash check (the byte count is still checked).
    dest
        Final path. Bytes go to ``<dest>.partial`` in the same folder, which a rerun resumes with a Range
        request; ``dest`` appears (``os.replace``) only after verification.
    retries
        Failed attempts tolerated before giving up. An attempt that failed after writing new bytes (a reset
        mid-body, a stall) does not use up the budget, as its bytes are kept; a hash mismatch always does.
    progress
        Called with the number of new bytes after each chunk (negative when discarded bytes are recounted).
    lock_timeout
        Seconds to wait for another process downloading the same ``dest`` (None: wait as long as it takes).
    record
        If given, ``dest → expected_hash`` is added to this download record after a real download.
    expected_size, expected_etag
        For objects without a manifest hash (manifests, the natural movie): the size in bytes and ETag
        that HeadObject reported for the pinned version. The bytes must have that size and, when the ETag is
        a plain MD5 (single-part upload), that MD5, both for a file already at ``dest`` and for new bytes.
    force
        Download even if the file at ``dest`` passes these checks (it failed a later one, e.g. parsing).

    Returns
    -------
    Path
        ``dest``. If another process completed ``dest`` meanwhile (or it already was there and verifies),
        nothing is transferred.

    Raises
    ------
    HashMismatchError
        Every attempt produced a file with the wrong digest; nothing is left at ``dest`` or the partial path.
    UnverifiedObjectError
        Every attempt produced bytes whose size or MD5 differs from ``expected_size`` / ``expected_etag``.
    PlantedLinkError
        A folder, FIFO or device sits at ``dest`` or its partial path.
    S3ObjectNotFoundError, S3Error
        No such object/version, access denied and other non-transient S3 errors.
    DownloadError
        Transient failures persisted beyond ``retries``, or the partial file cannot be written.
    """
    dest = Path(dest)
    target = _target(bucket, key, version_id)
    make_parent(dest)
    if dest.is_dir() and not dest.is_symlink():
        raise DownloadError(target, dest, "a directory is in the way of the file")
    check = _Expected(expected_hash, expected_size, expected_etag)
    if not force and _already_there(dest, check):
        return dest
    with _lock(lock_path(dest), lock_timeout):
        if not force and _already_there(dest, check):  # another process finished it while we waited
            return dest
        _download_locked(client, bucket, key, version_id, check, dest, target, retries=retries,
                         progress=progress, backoff=backoff, max_backoff=max_backoff, chunk_size=chunk_size,
                         fsync=fsync)
    if record is not None and expected_hash is not None:
        record.add(dest, expected_hash)
    return dest


def _already_there(dest: Path, check: _Expected) -> bool:
    """A regular file (never a link: a real download replaces one) with the expected bytes is at ``dest``."""
    if dest.is_symlink() or not dest.is_file():
        return False
    problem = check.problem(dest)
    if problem is None:
        return True
    log.warning("%s exists but %s; downloading it again", dest, problem)
    return False


@dataclass(frozen=True)
class _Expected:
    """What the bytes of one object must be: a blake2b digest, and/or a size and an ETag from the server."""

    file_hash: str | None = None
    size: int | None = None
    etag: str | None = None

    @property
    def md5(self) -> str | None:
        """The ETag as an MD5 hex digest, if it is one (multipart ETags carry a '-N' suffix and are not)."""
        tag = (self.etag or "").strip('"').lower()
        return tag if len(tag) == 32 and all(c in "0123456789abcdef" for c in tag) else None

    def problem(self, path: Path) -> _Problem | None:
        """None if ``path`` has the expected bytes, else what is wrong."""
        try:
            if self.size is not None and path.stat().st_size != self.size:
                return _Problem(f"it has {path.stat().st_size} bytes, the server says {self.size}")
            if self.file_hash is not None:
                actual = file_hash(path)
                if actual != self.file_hash.lower():
                    return _Problem(f"its blake2b is {actual[:16]}..., expected {self.file_hash[:16]}...", actual)
            if self.md5 is not None:
                actual = _md5(path)
                if actual != self.md5:
                    return _Problem(f"its MD5 is {actual}, the server's ETag says {self.md5}")
        except OSError as err:
            return _Problem(f"it cannot be read ({err})")
        return None


class _Problem(str):
    """Why bytes are not the expected ones; ``actual`` holds the full blake2b digest for a hash mismatch."""

    actual: str | None

    def __new__(cls, text: str, actual: str | None = None):
        obj = super().__new__(cls, text)
        obj.actual = actual
        return obj


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _partial_size(partial: Path) -> int:
    """Bytes already in ``partial`` (0 if absent); a link or special file planted there is removed first."""
    remove_if_planted(partial)
    try:
        return os.lstat(partial).st_size
    except FileNotFoundError:
        return 0


class _Attempts:
    """Bookkeeping of one locked download: attempts, failures without progress, bytes reported to ``progress``."""

    def __init__(self, target: str, dest: Path, retries: int, progress: Callable[[int], None] | None,
                 backoff: float, max_backoff: float):
        self.target, self.dest, self.retries, self.progress = target, dest, retries, progress
        self.backoff, self.max_backoff = backoff, max_backoff
        self.attempt = 0
        self.failures = 0  # attempts that failed without writing new bytes
        self.counted = 0  # bytes reported to ``progress`` so far
        self.written = 0  # new bytes written by the current attempt
        self.last_error: BaseException | None = None
        self.max_attempts = 10 * (retries + 1)  # hard bound, even if every attempt makes some progress

    def start(self, offset: int) -> None:
        """Begin an attempt from a partial file of ``offset`` bytes (a resumed partial counts as done)."""
        self.attempt += 1
        self.written = 0
        if offset != self.counted:
            self.report(offset - self.counted)

    def report(self, delta: int) -> None:
        self.counted += delta
        if self.progress is not None and delta:
            self.progress(delta)

    def wrote(self, nbytes: int) -> None:
        self.written += nbytes
        self.report(nbytes)

    def fail(self, exc: BaseException, made_progress: bool) -> None:
        """Count a failed attempt and wait before the next; give up once the budget is spent."""
        self.last_error = exc
        if not made_progress:
            self.failures += 1
        if self.failures > self.retries or self.attempt >= self.max_attempts:
            raise DownloadError(self.target, self.dest, f"gave up after {self.attempt} attempts "
                                                        f"({self.failures} without progress): {exc}") from exc
        delay = 0.0 if made_progress else backoff_delay(self.failures - 1, self.backoff, self.max_backoff)
        log.info("download %s: %s; retrying in %.2f s", self.target, exc, delay)
        time.sleep(delay)


def _download_locked(client, bucket, key, version_id, check: _Expected, dest: Path, target: str, *, retries,
                     progress, backoff, max_backoff, chunk_size, fsync) -> None:
    """Transfer (resuming the partial file), verify and move into place, retrying; the caller holds the lock."""
    partial = partial_path(dest)
    attempts = _Attempts(target, dest, retries, progress, backoff, max_backoff)
    while True:
        offset = _partial_size(partial)
        attempts.start(offset)
        try:
            _get_into_partial(client, bucket, key, version_id, partial, offset, attempts, chunk_size, fsync)
        except _LocalWriteError as err:
            raise DownloadError(target, dest, str(err)) from err
        except Exception as exc:
            if is_client_error(exc) and not is_retryable(exc):
                partial.unlink(missing_ok=True)
                raise as_s3_error(exc, bucket, key) from exc
            if not is_retryable(exc):
                raise
            attempts.fail(exc, made_progress=attempts.written > 0)
            continue
        # every byte is in the partial file: verify, then move into place
        problem = check.problem(partial)
        if problem is None:
            break
        partial.unlink(missing_ok=True)
        attempts.report(-attempts.counted)
        error = _verification_error(check, target, dest, partial, problem, attempts.attempt)
        if attempts.failures >= retries:
            raise error from attempts.last_error
        attempts.fail(error, made_progress=False)
    os.replace(partial, dest)
    if fsync:
        _fsync_dir(dest.parent)
    if check.file_hash is not None and version_id:
        _record_stream_digests(dest, bucket, key, version_id)


def _get_into_partial(client, bucket: str, key: str, version_id: str | None, partial: Path, offset: int,
                      attempts: _Attempts, chunk_size: int, fsync: bool) -> None:
    """One GET of the object (from byte ``offset`` if the partial file holds some) into the partial file.

    Raises ``IncompleteReadError`` if the body ends before the size the server announced.
    """
    kwargs = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    if offset:
        kwargs["Range"] = f"bytes={offset}-"
    try:
        response = client.get_object(**kwargs)
    except Exception as exc:
        if is_client_error(exc) and "InvalidRange" in str(exc):
            return  # the partial already holds every byte: the caller verifies it
        raise
    start, total = _content_range_start_total(response)
    length = int(response.get("ContentLength", -1))
    if offset and start != offset:  # the server ignored the Range: start over
        partial.unlink(missing_ok=True)
        attempts.report(-attempts.counted)
        offset = 0
        total = length
    elif not offset:
        total = length
    size = _write_body(response["Body"], partial, offset, attempts, chunk_size, fsync)
    if total is not None and total >= 0 and size != total:
        from botocore.exceptions import IncompleteReadError  # deferred like every botocore import (vbo.cache.s3)

        raise IncompleteReadError(actual_bytes=size, expected_bytes=total)


def _write_body(body, partial: Path, offset: int, attempts: _Attempts, chunk_size: int, fsync: bool) -> int:
    """Write a response body to the partial file (appended after ``offset`` bytes); the file's size afterwards."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if offset else os.O_TRUNC)
    try:
        with os.fdopen(open_nofollow(partial, flags), "ab" if offset else "wb") as fh:
            while chunk := body.read(chunk_size):
                try:
                    fh.write(chunk)
                    fh.flush()
                except OSError as err:
                    raise _LocalWriteError(f"cannot write {partial}: {err}") from err
                attempts.wrote(len(chunk))
            if fsync:
                os.fsync(fh.fileno())
            return os.fstat(fh.fileno()).st_size
    finally:
        body.close()


def _record_stream_digests(path: Path, bucket: str, key: str, version_id: str) -> None:
    """A file whose blake2b matched the manifest becomes the reference that streamed reads of the same object
    version are checked against, block by block (:class:`vbo.source.digests.BlockDigests`)."""
    try:
        BlockDigests.record_file(path, bucket, key, version_id)
    except OSError as err:  # the download itself is sound; streaming then falls back to trust on first use
        log.warning("could not record block digests of %s: %s", path, err)


def _verification_error(check: _Expected, target: str, dest: Path, partial: Path, problem: _Problem,
                        attempt: int) -> DownloadError:
    if problem.actual is not None:
        return HashMismatchError(target, dest, check.file_hash, problem.actual,
                                 f"downloaded bytes: {problem} (attempt {attempt}); the manifest's hash is "
                                 f"{check.file_hash[:16]}...")
    return UnverifiedObjectError(target, dest, f"downloaded bytes: {problem} (attempt {attempt})")


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- many downloads ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadJob:
    """One object to fetch: bucket, key, version, expected blake2b, destination, size if known."""

    bucket: str
    key: str
    version_id: str | None
    expected_hash: str | None
    dest: Path
    size: int | None = None


@dataclass
class DownloadProgress:
    """Aggregate progress of :func:`download_many` as passed to its callback."""

    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    elapsed: float
    rate: float  # bytes per second since the start
    eta: float | None  # seconds, None while unknown
    finished: bool = False
    errors: int = 0


@dataclass
class _Tracker:
    callback: Callable[[DownloadProgress], None] | None
    bytes_total: int
    files_total: int
    interval: float = 0.2
    bytes_done: int = 0
    files_done: int = 0
    errors: int = 0
    start: float = field(default_factory=time.monotonic)
    last: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, nbytes: int = 0, files: int = 0, errors: int = 0, force: bool = False) -> None:
        with self.lock:
            self.bytes_done += nbytes
            self.files_done += files
            self.errors += errors
            now = time.monotonic()
            if self.callback is None or not (force or now - self.last >= self.interval):
                return
            self.last = now
            snapshot = self.snapshot(now)
        self.callback(snapshot)

    def snapshot(self, now: float | None = None, finished: bool = False) -> DownloadProgress:
        elapsed = max(1e-9, (now or time.monotonic()) - self.start)
        rate = self.bytes_done / elapsed
        remaining = max(0, self.bytes_total - self.bytes_done)
        eta = remaining / rate if rate > 0 else None
        return DownloadProgress(self.bytes_done, self.bytes_total, self.files_done, self.files_total, elapsed,
                                rate, 0.0 if finished else eta, finished, self.errors)


def download_many(jobs: Iterable[DownloadJob], workers: int = 8,
                  progress: Callable[[DownloadProgress], None] | None = None, *, client=None,
                  endpoint_url: str | None = None, retries: int = DEFAULT_RETRIES,
                  record: DownloadRecord | None = None, raise_errors: bool = True,
                  **download_kwargs) -> list[Path | BaseException]:
    """Download several objects in a thread pool, reporting aggregate progress.

    Sizes not given in the jobs are looked up (HeadObject) first, in the pool, so the total is known up
    front. Files already present and verified count as done without transfer. ``progress`` receives a
    :class:`DownloadProgress` at most every 0.2 s from worker threads, and once more with ``finished=True``.

    Returns the destination of each job in order. If some failed: with ``raise_errors`` (default) the first
    error is raised after every job has finished (its ``failures`` attribute lists ``(job, error)``);
    otherwise the exception takes the job's place in the list.
    """
    jobs = list(jobs)
    if client is None:
        client = anonymous_client(endpoint_url, max_pool_connections=max(10, workers + 2))
    workers = max(1, min(workers, len(jobs) or 1))

    def size_of(job: DownloadJob) -> int:
        if job.size is not None:
            return job.size
        try:
            return object_size_retrying(client, job.bucket, job.key, job.version_id)
        except Exception as exc:  # noqa: BLE001 - a size is only for progress: never abort the batch for it
            log.info("size of %s unknown (%s); downloading it anyway", job.key, exc)
            return 0

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vbo-download") as pool:
        sizes = list(pool.map(size_of, jobs))
        tracker = _Tracker(progress, sum(sizes), len(jobs))
        tracker.add(force=True)

        def run(index: int) -> Path:
            job = jobs[index]
            got = 0

            def on_bytes(delta: int) -> None:
                nonlocal got
                got += delta
                tracker.add(delta)

            try:
                path = download_object(client, job.bucket, job.key, job.version_id, job.expected_hash, job.dest,
                                       retries=retries, progress=on_bytes, record=record, **download_kwargs)
            except BaseException:
                tracker.add(-got, files=1, errors=1)
                raise
            tracker.add(sizes[index] - got, files=1)  # an already present file counts as done
            return path

        futures = {pool.submit(run, i): i for i in range(len(jobs))}
        results: list[Path | BaseException] = [None] * len(jobs)  # type: ignore[list-item]
        for future in as_completed(futures):
            index = futures[future]
            try:
                results[index] = future.result()
            except Exception as exc:  # noqa: BLE001 - collected and re-raised below
                results[index] = exc
    if progress is not None:
        progress(tracker.snapshot(finished=True))
    failures = [(job, res) for job, res in zip(jobs, results) if isinstance(res, BaseException)]
    if failures and raise_errors:
        first = failures[0][1]
        first.failures = failures  # type: ignore[attr-defined]
        if len(failures) > 1:
            first.add_note(f"{len(failures)} of {len(jobs)} downloads failed; see .failures")
        raise first
    return results


def hash_bytes(data: bytes) -> str:
    """blake2b hex of in-memory bytes (same digest as :func:`vbo.cache.manifest.file_hash`)."""
    digest = hashlib.blake2b()
    for i in range(0, len(data), HASH_CHUNK_BYTES):
        digest.update(data[i:i + HASH_CHUNK_BYTES])
    return digest.hexdigest()
