"""Verified, resumable, lock-protected downloads and the ``_downloaded_data.json`` record.

``format.md`` §4 (blake2b), §5.2 (bookkeeping) and §5.4 (download and reuse decision).

- :func:`download_object` — stream one object version to ``<dest>.partial``, resume with a Range request,
  retry transient failures with exponential backoff, verify blake2b, then ``os.replace`` onto ``dest``.
  A partial or corrupt file never sits at ``dest``. An inter-process lock (``<dest>.lock``) makes several
  processes sharing one cache transfer each file once.
- :func:`verify_file` — blake2b check raising :class:`~vbo.errors.HashMismatchError`.
- :class:`DownloadRecord` — ``{absolute path: blake2b}``, indent 2, sorted keys, rewritten atomically under a
  lock; :func:`reuse_identical` links a recorded identical file (symlink → hard link → copy).
- :func:`download_many` — a thread pool with aggregate progress (bytes, rate, ETA); :func:`progress_bar`
  renders it with rich.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from vbo.cache.manifest import HASH_CHUNK_BYTES, file_hash
from vbo.cache.s3 import as_s3_error, backoff_delay, is_client_error, is_retryable, object_size
from vbo.errors import DownloadError, HashMismatchError, S3Error

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


def _lock(path: Path, timeout: float | None):
    from filelock import FileLock

    return FileLock(str(path), timeout=-1 if timeout is None else timeout)


# --- hashing ------------------------------------------------------------------------------------------


def verify_file(path: str | Path, expected_hash: str, target: str | None = None) -> Path:
    """Check that ``path`` hashes (blake2b, ``format.md`` §4) to ``expected_hash``; return the path.

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
    """The ``_downloaded_data.json`` record: ``{absolute local path: blake2b hex}`` (``format.md`` §5.2).

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
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
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
        """A recorded path with ``expected_hash`` that still is a regular file (not a symlink), else None."""
        skip = str(Path(exclude).absolute()) if exclude is not None else None
        for recorded, digest in sorted(self.load().items()):
            if digest == expected_hash and recorded != skip:
                candidate = Path(recorded)
                if candidate.is_file() and not candidate.is_symlink():
                    return candidate
        return None


def reuse_identical(record: DownloadRecord, expected_hash: str, dest: str | Path, *,
                    verify: bool = False) -> str | None:
    """Make ``dest`` an identical copy of a recorded file with ``expected_hash`` (``format.md`` §5.4 step 3).

    Tries a symlink, then a hard link, then a copy; each is created under a temporary name and moved onto
    ``dest`` atomically. Returns ``"symlink"``, ``"hardlink"`` or ``"copy"``, or None if the record holds no
    such file. ``verify=True`` hashes the source first (skipped and returning None if it no longer matches).
    """
    dest = Path(dest)
    source = record.find(expected_hash, exclude=dest)
    if source is None:
        return None
    if verify and not file_matches(source, expected_hash):
        log.warning("recorded file %s no longer has hash %s; not reusing it", source, expected_hash[:16])
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
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
                shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
            return method
        except (OSError, NotImplementedError) as err:
            log.debug("cannot %s %s -> %s: %s", method, source, dest, err)
            with contextlib.suppress(OSError):
                tmp.unlink()
    return None


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
                    fsync: bool = True) -> Path:
    """Download one object version to ``dest``, verified, resumable, once per shared cache.

    Parameters
    ----------
    client
        A boto3 S3 client (see :func:`vbo.cache.s3.anonymous_client`).
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

    Returns
    -------
    Path
        ``dest``. If another process completed ``dest`` meanwhile (or it already was there and verifies),
        nothing is transferred.

    Raises
    ------
    HashMismatchError
        Every attempt produced a file with the wrong digest; nothing is left at ``dest`` or the partial path.
    S3ObjectNotFoundError, S3Error
        No such object/version, access denied and other non-transient S3 errors.
    DownloadError
        Transient failures persisted beyond ``retries``, or the partial file cannot be written.
    """
    dest = Path(dest)
    target = _target(bucket, key, version_id)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_dir():
        raise DownloadError(target, dest, "a directory is in the way of the file")

    def present() -> bool:
        if not (dest.is_file() or dest.is_symlink()):
            return False
        if expected_hash is None:
            return dest.is_file()
        if file_matches(dest, expected_hash):
            return True
        log.warning("%s exists but its hash is not %s; downloading it again", dest, expected_hash[:16])
        return False

    if present():
        return dest
    with _lock(lock_path(dest), lock_timeout):
        if present():  # another process finished it while we waited
            return dest
        _download_locked(client, bucket, key, version_id, expected_hash, dest, target, retries=retries,
                         progress=progress, backoff=backoff, max_backoff=max_backoff, chunk_size=chunk_size,
                         fsync=fsync)
    if record is not None and expected_hash is not None:
        record.add(dest, expected_hash)
    return dest


def _download_locked(client, bucket, key, version_id, expected_hash, dest: Path, target: str, *, retries,
                     progress, backoff, max_backoff, chunk_size, fsync) -> None:
    partial = partial_path(dest)
    failures = 0
    attempt = 0
    counted = 0  # bytes reported to ``progress`` so far
    last_error: BaseException | None = None
    max_attempts = 10 * (retries + 1)  # hard bound, even if every attempt makes some progress

    def report(delta: int) -> None:
        nonlocal counted
        counted += delta
        if progress is not None and delta:
            progress(delta)

    def fail(exc: BaseException, made_progress: bool) -> None:
        nonlocal failures, last_error
        last_error = exc
        if not made_progress:
            failures += 1
        if failures > retries or attempt >= max_attempts:
            raise DownloadError(target, dest, f"gave up after {attempt} attempts "
                                              f"({failures} without progress): {exc}") from exc
        delay = 0.0 if made_progress else backoff_delay(failures - 1, backoff, max_backoff)
        log.info("download %s: %s; retrying in %.2f s", target, exc, delay)
        time.sleep(delay)

    while True:
        attempt += 1
        offset = partial.stat().st_size if partial.exists() else 0
        if offset != counted:
            report(offset - counted)  # a resumed partial counts as done
        kwargs = {"Bucket": bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        written = 0
        try:
            try:
                response = client.get_object(**kwargs)
            except Exception as exc:
                if is_client_error(exc) and "InvalidRange" in str(exc):
                    response = None  # the partial already holds every byte: verify it below
                else:
                    raise
            if response is not None:
                start, total = _content_range_start_total(response)
                length = int(response.get("ContentLength", -1))
                if offset and start != offset:  # the server ignored the Range: start over
                    partial.unlink(missing_ok=True)
                    report(-counted)
                    offset = 0
                    total = length
                elif not offset:
                    total = length
                body = response["Body"]
                try:
                    with open(partial, "ab" if offset else "wb") as fh:
                        while True:
                            chunk = body.read(chunk_size)
                            if not chunk:
                                break
                            try:
                                fh.write(chunk)
                                fh.flush()
                            except OSError as err:
                                raise _LocalWriteError(f"cannot write {partial}: {err}") from err
                            written += len(chunk)
                            report(len(chunk))
                        if fsync:
                            os.fsync(fh.fileno())
                finally:
                    body.close()
                size = partial.stat().st_size
                if total is not None and total >= 0 and size != total:
                    from botocore.exceptions import IncompleteReadError

                    raise IncompleteReadError(actual_bytes=size, expected_bytes=total)
        except _LocalWriteError as err:
            raise DownloadError(target, dest, str(err)) from err
        except Exception as exc:
            if is_client_error(exc) and not is_retryable(exc):
                partial.unlink(missing_ok=True)
                raise as_s3_error(exc, bucket, key) from exc
            if not is_retryable(exc):
                raise
            fail(exc, made_progress=written > 0)
            continue
        # every byte is in the partial file: verify, then move into place
        if expected_hash is not None:
            actual = file_hash(partial)
            if actual != expected_hash.lower():
                partial.unlink(missing_ok=True)
                report(-counted)
                error = HashMismatchError(target, dest, expected_hash, actual,
                                          f"downloaded bytes hash to {actual[:16]}..., manifest says "
                                          f"{expected_hash[:16]}... (attempt {attempt})")
                if failures >= retries:
                    raise HashMismatchError(target, dest, expected_hash, actual,
                                            f"hash mismatch on every one of {attempt} attempts; last "
                                            f"blake2b {actual[:16]}... != expected {expected_hash[:16]}..."
                                            ) from last_error
                fail(error, made_progress=False)
                continue
        os.replace(partial, dest)
        if fsync:
            _fsync_dir(dest.parent)
        return


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
        from vbo.cache.s3 import anonymous_client

        client = anonymous_client(endpoint_url, max_pool_connections=max(10, workers + 2))
    workers = max(1, min(workers, len(jobs) or 1))

    def size_of(job: DownloadJob) -> int:
        if job.size is not None:
            return job.size
        try:
            return object_size(client, job.bucket, job.key, job.version_id)
        except S3Error:
            return 0  # the download itself will report the error

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


@contextlib.contextmanager
def progress_bar(total_bytes: int | None = None, description: str = "Downloading",
                 console=None) -> Iterator[Callable[[DownloadProgress], None]]:
    """A rich progress bar (bytes, rate, ETA, files) whose callback fits :func:`download_many`'s ``progress``.

    >>> with progress_bar() as bar:
    ...     download_many(jobs, progress=bar)
    """
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[files]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total_bytes, files="")

        def update(state: DownloadProgress) -> None:
            bar.update(task, completed=state.bytes_done, total=state.bytes_total or total_bytes,
                       files=f"{state.files_done}/{state.files_total} files"
                             + (f", {state.errors} failed" if state.errors else ""))

        yield update


def hash_bytes(data: bytes) -> str:
    """blake2b hex of in-memory bytes (same digest as :func:`vbo.cache.manifest.file_hash`)."""
    digest = hashlib.blake2b()
    for i in range(0, len(data), HASH_CHUNK_BYTES):
        digest.update(data[i:i + HASH_CHUNK_BYTES])
    return digest.hexdigest()
