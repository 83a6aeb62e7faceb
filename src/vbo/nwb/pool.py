"""A bounded, process-wide pool of open HDF5 files that session and experiment objects borrow from.

Every :class:`vbo.BehaviorSession` / :class:`vbo.BehaviorOphysExperiment` opened from a path or URL owns a
:class:`FileHandle`: a recipe for opening its file plus, while it is in the pool, the open ``h5py.File``.
The pool keeps at most :func:`max_open_files` files open (least recently used are closed first); a handle whose
file was closed reopens it on its next read, so any number of objects can be alive at once whatever the limit
on open file descriptors. A file is *pinned* while a member is being read from it, and pinned files are never
closed by the pool (with more concurrent readers than slots the pool exceeds its bound until they finish).

Files that cannot be reopened (an ``h5py.File`` or a file object the caller opened) are held by their handle
for its whole life and do not count against the bound.

After ``os.fork`` the child starts with an empty pool: inherited files are closed there and each handle
reopens its own (HDF5 handles must not be shared between processes). At interpreter exit every pooled file
is closed before Python shuts down (HDF5 must not call back into a finalised interpreter).
"""

from __future__ import annotations

import atexit
import os
import resource
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import h5py

from vbo.errors import SessionClosedError

#: What opening a file returns: the file and a function that releases what the opening made (or None).
Opened = tuple[h5py.File, Callable[[], None] | None]

MAX_OPEN_FILES_ENV = "VBO_MAX_OPEN_FILES"
FRACTION_OF_LIMIT = 4  # use at most a quarter of the soft RLIMIT_NOFILE for pooled files
UPPER_BOUND = 128
LOWER_BOUND = 4


def default_max_open_files() -> int:
    """``VBO_MAX_OPEN_FILES`` if set, else a quarter of the soft open-file limit, between 4 and 128."""
    configured = os.environ.get(MAX_OPEN_FILES_ENV, "").strip()
    if configured:
        return max(1, int(configured))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return UPPER_BOUND
    return max(LOWER_BOUND, min(UPPER_BOUND, soft // FRACTION_OF_LIMIT))


class FileHandle:
    """One object's access to its HDF5 file.

    Parameters
    ----------
    name
        The file's path or URL, for messages.
    opener
        Opens the file again (returns the ``h5py.File`` and a release function); None for a file that
        cannot be reopened, which is then held for the handle's whole life.
    opened
        The file as first opened (with its release function), registered in the pool at once.
    pool
        The pool to borrow from (default the process-wide one).
    source
        What the open file reads from (a :class:`vbo.source.OpenedFile`, whose ``remote`` can prefetch byte
        ranges); the opener replaces it when it opens the file again.
    """

    def __init__(self, name: str, opener: Callable[[], Opened] | None, opened: Opened,
                 pool: FilePool | None = None, source: object | None = None):
        self.name = name
        self.source = source
        self.reopens = 0  # times the file was opened again after the pool closed it
        self._opener = opener
        self._file: h5py.File | None = opened[0]
        self._release = opened[1]
        self._pins = 0
        self._closed = False
        self._pool = pool or POOL
        if self.reopenable:
            self._pool.register(self)
        else:
            self._pool.hold(self)

    @property
    def reopenable(self) -> bool:
        """True when the pool may close the file and reopen it later."""
        return self._opener is not None

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def is_open(self) -> bool:
        """True while an open ``h5py.File`` is attached (pooled handles lose it when evicted)."""
        return self._file is not None

    def file(self) -> h5py.File:
        """The open file (reopened if the pool closed it); raises SessionClosedError after :meth:`close`."""
        return self._pool.checkout(self, pin=False)

    @contextmanager
    def pinned(self) -> Iterator[h5py.File]:
        """The open file, kept open (not evicted) until the block ends."""
        file = self._pool.checkout(self, pin=True)
        try:
            yield file
        finally:
            self._pool.unpin(self)

    def close(self) -> None:
        """Close the file for good and give back its slot; later reads raise SessionClosedError."""
        self._pool.close(self)

    def close_soon(self) -> None:
        """Like :meth:`close` but never waits for the pool's lock (for ``__del__``, which may run inside
        another thread's HDF5 call): if the lock is busy, the pool closes the file at its next use."""
        self._pool.close(self, wait=False)

    # --- used by the pool, under its lock ---------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise SessionClosedError(f"{self.name}: the session is closed; reopen it to read more members")

    def _open(self) -> None:
        self._file, self._release = self._opener()
        self.reopens += 1

    def _detach(self) -> tuple[h5py.File | None, Callable[[], None] | None]:
        detached = self._file, self._release
        self._file, self._release = None, None
        return detached

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self.is_open else "not open")
        return f"<FileHandle {self.name} ({state})>"


def _close_quietly(file: h5py.File | None, release: Callable[[], None] | None) -> None:
    try:
        if file is not None:
            file.close()
    except Exception:
        pass
    try:
        if release is not None:
            release()
    except Exception:
        pass


class FilePool:
    """At most ``capacity`` open pooled files, least recently used closed first; thread- and fork-safe."""

    def __init__(self, capacity: int | None = None):
        self.capacity = capacity or default_max_open_files()
        self._lock = threading.RLock()
        self._open: OrderedDict[int, FileHandle] = OrderedDict()  # pooled handles with a file, LRU first
        self._inherited: list[tuple[h5py.File | None, Callable[[], None] | None]] = []
        self._closing: list[FileHandle] = []  # closed by a finaliser while the lock was busy
        self._held: weakref.WeakSet[FileHandle] = weakref.WeakSet()  # handles that cannot reopen (not pooled)

    def __len__(self) -> int:
        return len(self._open)

    def register(self, handle: FileHandle) -> None:
        """Count a freshly opened pooled handle (most recently used), closing others over the bound."""
        with self._lock:
            self._close_deferred()
            self._open[id(handle)] = handle
            self._evict(keep=handle)

    def hold(self, handle: FileHandle) -> None:
        """Know of a handle that holds its own file for life (closed at interpreter exit if still open)."""
        with self._lock:
            self._held.add(handle)

    def checkout(self, handle: FileHandle, *, pin: bool) -> h5py.File:
        """The handle's open file (opened again if needed), marked most recently used; pinned if ``pin``."""
        with self._lock:  # h5py serialises HDF5 calls anyway, so opening under the lock costs no parallelism
            handle._check_usable()
            if not handle.reopenable:
                if pin:
                    handle._pins += 1
                return handle._file
            self._close_deferred()
            if handle._file is None:
                handle._open()
            self._open[id(handle)] = handle
            self._open.move_to_end(id(handle))
            if pin:
                handle._pins += 1
            self._evict(keep=handle)
            return handle._file

    def unpin(self, handle: FileHandle) -> None:
        with self._lock:
            handle._pins = max(0, handle._pins - 1)
            self._close_deferred()
            if handle.reopenable:
                self._evict(keep=None)

    def close(self, handle: FileHandle, *, wait: bool = True) -> None:
        """Close ``handle`` for good (idempotent); with ``wait=False`` defer it if the lock is busy."""
        if not self._lock.acquire(blocking=wait):
            self._closing.append(handle)  # list.append is atomic; drained under the lock
            return
        try:
            if handle._closed:
                return
            handle._closed = True
            self._open.pop(id(handle), None)
            detached = handle._detach()
        finally:
            self._lock.release()
        _close_quietly(*detached)

    def resize(self, capacity: int) -> None:
        """Change the bound (closing least recently used files now if it shrank)."""
        if capacity < 1:
            raise ValueError(f"the pool needs at least one slot, got {capacity}")
        with self._lock:
            self.capacity = int(capacity)
            self._evict(keep=None)

    def _evict(self, keep: FileHandle | None) -> None:
        excess = len(self._open) - self.capacity
        if excess <= 0:
            return
        for key, handle in list(self._open.items()):
            if excess <= 0:
                break
            if handle is keep or handle._pins or handle._closed or key not in self._open:
                continue  # (closing a file may run finalisers that close other handles meanwhile)
            del self._open[key]
            _close_quietly(*handle._detach())
            excess -= 1

    def _close_deferred(self) -> None:
        while self._inherited:
            _close_quietly(*self._inherited.pop())
        while self._closing:
            self.close(self._closing.pop())

    def close_all_at_exit(self) -> None:
        """Close every pooled file while Python still runs (registered with :mod:`atexit`): a file left open
        (a session still referenced, e.g. by a daemon thread) would otherwise be closed by HDF5's own exit
        handler after the interpreter is gone, which crashes for a file streamed through a Python file object.
        Handles stay usable in principle (they reopen), but nothing reads after exit."""
        with self._lock:
            handles = list(self._open.values()) + [h for h in list(self._held) if not h._closed]
            detached = [handle._detach() for handle in handles] + self._inherited
            self._open.clear()
            self._inherited = []
        for opened in detached:
            _close_quietly(*opened)

    def _after_fork_in_child(self) -> None:
        """Forget the parent's files (closed on the child's next use) and any lock state of its threads."""
        self._lock = threading.RLock()
        self._closing.clear()
        for handle in self._open.values():
            self._inherited.append(handle._detach())
            handle._pins = 0
        self._open.clear()


POOL = FilePool()
atexit.register(POOL.close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=POOL._after_fork_in_child)


def max_open_files() -> int:
    """How many pooled files this process keeps open at most."""
    return POOL.capacity


def set_max_open_files(capacity: int) -> None:
    """Change how many pooled files this process keeps open at most (default: a quarter of the soft
    ``RLIMIT_NOFILE``, between 4 and 128; or the ``VBO_MAX_OPEN_FILES`` environment variable)."""
    POOL.resize(capacity)


def open_files() -> int:
    """How many pooled files are open now."""
    return len(POOL)
