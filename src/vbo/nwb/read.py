"""h5py helpers for NWB: guarded open, in-file path resolution, validated whole-dataset reads, DynamicTables.

Every read is one whole-dataset slice (``ds[()]``); nothing here reads element by element.
Paths come from :mod:`vbo.nwb.layout`. Every dataset read is checked once, without touching its
values twice: it lies in this file (no external link, external storage or virtual source), its
declared size fits the file, and its bytes decode. Ragged indices, column lengths, region rows,
booleans and ids are checked with vectorised tests before they are returned.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import stat
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Callable

import h5py
import numpy as np

from vbo.errors import (
    CorruptDataError,
    ExternalDataError,
    MalformedDataError,
    MissingDataError,
    NotHdf5Error,
    NotRegularFileError,
    NotVisualBehaviorFileError,
    NwbFileNotFoundError,
    NwbPermissionError,
    OpenTimeoutError,
    TruncatedFileError,
    VboError,
)
from vbo.nwb import layout
from vbo.parallel import THREAD_WORKERS

Source = str | os.PathLike | IO[bytes]
Where = h5py.File | h5py.Group

OPEN_TIMEOUT_ENV = "VBO_OPEN_TIMEOUT"
DEFAULT_OPEN_TIMEOUT_S = 60.0
# deflate cannot expand data more than ~1032:1, so no honest dataset declares more than this × the file size
MAX_EXPANSION = 1100
MIN_SIZE_ALLOWANCE = 1 << 20  # bytes: tiny files may hold small unallocated (fill-value) datasets
MAX_LINK_HOPS = 32
_DECIMAL_ID = re.compile(r"\s*\+?[0-9]+\s*")
_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def source_name(source: Source) -> str:
    """A printable name for a path or a file-like object."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "name", None) or getattr(source, "url", None) or repr(source))


# --- opening ----------------------------------------------------------------------------------


def open_timeout() -> float:
    """Seconds the file system gets to answer the checks made before opening (``VBO_OPEN_TIMEOUT``, default 60)."""
    try:
        return max(float(os.environ.get(OPEN_TIMEOUT_ENV, DEFAULT_OPEN_TIMEOUT_S)), 0.001)
    except ValueError:
        return DEFAULT_OPEN_TIMEOUT_S


def _within(seconds: float, name: str, check: Callable[[], None]) -> None:
    """Run ``check`` in a daemon thread; raise what it raised, or OpenTimeoutError after ``seconds``."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            check()
        except BaseException as err:  # handed to the caller below
            outcome.append(err)

    worker = threading.Thread(target=run, name="vbo-open-check", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise OpenTimeoutError(name, f"the file system did not answer within {seconds:g} s "
                                     f"(a hung mount?); raise {OPEN_TIMEOUT_ENV} to wait longer")
    if outcome:
        raise outcome[0]


def _check_regular_hdf5(path: Path) -> None:
    """Refuse anything but a readable regular file that starts with the HDF5 signature (never blocks)."""
    name = str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise NwbFileNotFoundError(name, "no such file") from None
    except PermissionError:
        raise NwbPermissionError(name, "permission denied (cannot look up the file)") from None
    if stat.S_ISDIR(info.st_mode):
        raise NotHdf5Error(name, "is a directory, not an NWB file")
    for is_kind, kind in _SPECIAL_FILES:
        if is_kind(info.st_mode):
            raise NotRegularFileError(name, f"is {kind}, not a regular file; copy the NWB file to disk first")
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFileError(name, "is not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except PermissionError:
        raise NwbPermissionError(name, "permission denied (cannot read the file)") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat and open
            raise NotRegularFileError(name, "is not a regular file")
        head = os.read(fd, len(layout.HDF5_SIGNATURE))
    finally:
        os.close(fd)
    if head != layout.HDF5_SIGNATURE:
        raise NotHdf5Error(name, "not an HDF5 file (no HDF5 signature at the start), so not an NWB file")


def open_hdf5(source: Source) -> h5py.File:
    """Open ``source`` (path or binary file-like object) read-only, classifying failures.

    A path must name a regular file (a FIFO, device or socket is refused before anything reads it);
    the checks before opening give up after :func:`open_timeout` seconds.

    Raises
    ------
    NwbFileNotFoundError, NwbPermissionError, NotRegularFileError, NotHdf5Error, TruncatedFileError,
    OpenTimeoutError
    """
    name = source_name(source)
    if isinstance(source, (str, os.PathLike)):
        _within(open_timeout(), name, lambda: _check_regular_hdf5(Path(source)))
    try:
        return h5py.File(source, "r")
    except OSError as err:
        text = str(err).lower()
        if "truncated" in text or "eof" in text:
            raise TruncatedFileError(name, f"truncated HDF5 file (incomplete download?): {err}") from err
        if "signature" in text or "not an hdf5" in text:
            raise NotHdf5Error(name, f"not an HDF5 file: {err}") from err
        raise TruncatedFileError(name, f"HDF5 file cannot be opened, it is corrupt or incomplete: {err}") from err


# --- paths inside the file ------------------------------------------------------------------------


def _filename(where: Where) -> str:
    return where.file.filename


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _wrap(oid: Any) -> Any:
    """The high-level h5py object of a low-level id."""
    if isinstance(oid, h5py.h5g.GroupID):
        return h5py.Group(oid)
    if isinstance(oid, h5py.h5d.DatasetID):
        return h5py.Dataset(oid)
    return h5py.Datatype(oid)


def _resolve(start: Any, at: str, parts: list[str], hops: int, full: str,
             open_last: bool = True) -> tuple[Any, str] | None:
    """Follow ``parts`` from the low-level group ``start`` (named ``at``) link by link: soft links inside the
    file are followed, external links are refused. Returns (low-level id, path) or None when absent; with
    ``open_last`` false, a hard link at the end is not opened (its object's header is not read) and the id
    returned is its parent's."""
    oid = start
    for i, name in enumerate(parts):
        if not isinstance(oid, h5py.h5g.GroupID):
            return None
        key = name.encode()
        try:
            kind = oid.links.get_info(key).type
        except (KeyError, ValueError, RuntimeError):  # no such link
            return None
        here = f"{at.rstrip('/')}/{name}"
        if kind == h5py.h5l.TYPE_HARD:
            if not open_last and i == len(parts) - 1:
                return oid, here
            oid, at = h5py.h5o.open(oid, key), here
            continue
        if kind == h5py.h5l.TYPE_EXTERNAL:
            target_file, target = (v.decode(errors="replace") for v in oid.links.get_val(key))
            raise ExternalDataError(_id_filename(oid), here,
                                    f"is an HDF5 external link to {target_file}:{target}; released files never "
                                    "point outside themselves, so vbo refuses to follow it")
        if kind != h5py.h5l.TYPE_SOFT or hops >= MAX_LINK_HOPS:
            raise MalformedDataError(_id_filename(oid), full, "a link that cannot be followed "
                                     f"(user-defined, or more than {MAX_LINK_HOPS} soft links in a row)")
        target = oid.links.get_val(key).decode(errors="replace")
        base, base_at = (h5py.h5o.open(oid, b"/"), "/") if target.startswith("/") else (oid, at)
        found = _resolve(base, base_at, _parts(target), hops + 1, full)
        if found is None:
            return None
        oid, at = found
    return oid, at


def _id_filename(oid: Any) -> str:
    return h5py.h5f.get_name(oid).decode(errors="replace")


def _lookup(where: Where, path: str, open_last: bool = True) -> tuple[Any, str] | None:
    """:func:`_resolve` of ``path``, absolute (from the root) or relative to ``where``."""
    if path.startswith("/"):
        start, at = h5py.h5o.open(where.id, b"/"), "/"
    else:
        start, at = where.id, where.name
    return _resolve(start, at, _parts(path), 0, path, open_last)


def node(where: Where, path: str) -> h5py.Group | h5py.Dataset | None:
    """The object at ``path`` (absolute, or relative to ``where``), or None when absent.

    Raises
    ------
    vbo.errors.ExternalDataError
        A link on the way is an HDF5 external link (it is not followed).
    """
    found = _lookup(where, path)
    return None if found is None else _wrap(found[0])


def exists(where: Where, path: str) -> bool:
    """Whether ``path`` names an object of this file (external links are refused, not followed). The object
    itself is not opened (a streamed file does not fetch its header)."""
    return _lookup(where, path, open_last=False) is not None


def _node_of_kind(where: Where, path: str, kind: type, what: str, other: str):
    """The object at ``path`` if it is a ``kind`` (a ``what``); MissingDataError if absent, MalformedDataError if
    it is the ``other`` kind of object."""
    obj = node(where, path)
    if obj is None:
        raise MissingDataError(_filename(where), f"missing {what} {path}")
    if not isinstance(obj, kind):
        raise MalformedDataError(_filename(where), path, f"is a {other} where a {what} was expected")
    return obj


def group(where: Where, path: str) -> h5py.Group:
    """The group at ``path``; MissingDataError if absent, MalformedDataError if it is not a group."""
    return _node_of_kind(where, path, h5py.Group, "group", "dataset")


def dataset(where: Where, path: str) -> h5py.Dataset:
    """The dataset at ``path`` (not read); MissingDataError if absent, MalformedDataError if not a dataset."""
    return _node_of_kind(where, path, h5py.Dataset, "dataset", "group")


def require(f: h5py.File, paths: tuple[str, ...], what: str) -> None:
    """Raise NotVisualBehaviorFileError naming the first of ``paths`` missing from ``f``."""
    missing = [p for p in paths if not exists(f, p)]
    if missing:
        raise NotVisualBehaviorFileError(
            f.filename, f"not a Visual Behavior {what} NWB file: missing {', '.join(missing)}"
        )


# --- values -----------------------------------------------------------------------------------


def decode(value: Any) -> Any:
    """bytes → str, numpy scalars → Python scalars, text arrays → object arrays of str."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "S" or (value.dtype == object and value.size and isinstance(value.flat[0], bytes)):
            return np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in value.ravel()],
                            dtype=object).reshape(value.shape)
        return value
    return value


def attrs(f: Where, path: str) -> dict[str, Any]:
    """All attributes of the object at ``path``, decoded (``{}`` if absent)."""
    obj = node(f, path)
    if obj is None:
        return {}
    try:
        return {key: decode(val) for key, val in obj.attrs.items()}
    except UnicodeDecodeError as err:
        raise MalformedDataError(_filename(f), path, f"an attribute is not valid UTF-8 text ({err})") from None
    except OSError as err:
        raise CorruptDataError(_filename(f), path, f"its attributes cannot be decoded ({err})") from None


def need(values: dict[str, Any], key: str, f: Where, path: str) -> Any:
    """``values[key]`` (attributes read by :func:`attrs` from ``path``), or MissingDataError naming it."""
    try:
        return values[key]
    except KeyError:
        raise MissingDataError(_filename(f), f"missing attribute {key!r} of {path}") from None


def _check_storage(f: Where, ds: h5py.Dataset, path: str) -> None:
    """Refuse data stored outside the file, and declared sizes that this file cannot hold (low-level calls only:
    this runs on every read)."""
    did = ds.id
    plist = did.get_create_plist()
    storage = plist.get_layout()
    if storage == h5py.h5d.VIRTUAL:
        raise ExternalDataError(_filename(f), path, "is a virtual dataset mapping other files; vbo refuses it")
    if plist.get_external_count():
        raise ExternalDataError(_filename(f), path, f"keeps its bytes in an external file "
                                f"({plist.get_external(0)[0].decode(errors='replace')}); vbo refuses it")
    space = did.get_space()
    if space.get_simple_extent_type() != h5py.h5s.SIMPLE:  # scalar or null dataspace: one value at most
        return
    shape = space.get_simple_extent_dims()
    declared = math.prod(shape) * did.dtype.itemsize
    file_size = h5py.h5i.get_file_id(did).get_filesize()
    if storage == h5py.h5d.CONTIGUOUS:
        offset = did.get_offset()
        if offset is not None and offset + declared > file_size:
            raise CorruptDataError(_filename(f), path, f"declares {declared} bytes at offset {offset}, past the "
                                   f"end of the {file_size}-byte file (truncated or corrupt)")
    if declared > MAX_EXPANSION * max(file_size, MIN_SIZE_ALLOWANCE):
        raise MalformedDataError(_filename(f), path, f"declares shape {shape} ({declared} bytes), more than a "
                                 f"{file_size}-byte file can hold even compressed")


def _read_bytes(f: Where, ds: h5py.Dataset, path: str) -> Any:
    try:
        if h5py.check_string_dtype(ds.dtype) is not None:
            value = ds.asstr()[()]
            return value if isinstance(value, str) else np.asarray(value, dtype=object)
        return ds[()]
    except UnicodeDecodeError as err:
        raise MalformedDataError(_filename(f), path, f"text is not valid UTF-8 ({err})") from None
    except OSError as err:
        _raise_unreadable(f, path, err)


def _raise_unreadable(f: Where, path: str, err: OSError) -> None:
    """An HDF5 read failed: re-raise a streamed read's transport error itself, else CorruptDataError."""
    cause = err.__cause__ or err.__context__
    if isinstance(cause, VboError):
        raise cause from err
    raise CorruptDataError(_filename(f), path, f"stored bytes cannot be decoded (corrupt compressed "
                                               f"chunk or storage): {err}") from None


def checked_dataset(f: Where, path: str) -> h5py.Dataset:
    """The dataset at ``path``, not read, with the checks every read makes (stored in this file, sizes it can hold)."""
    ds = dataset(f, path)
    _check_storage(f, ds, path)
    return ds


def read(f: Where, path: str) -> Any:
    """Whole dataset at ``path`` (strings decoded to ``str`` / object arrays of ``str``), checked as it is read.

    Raises
    ------
    vbo.errors.MissingDataError, vbo.errors.MalformedDataError, vbo.errors.CorruptDataError,
    vbo.errors.ExternalDataError
    """
    return _read_bytes(f, checked_dataset(f, path), path)


def read_optional(f: Where, path: str) -> Any | None:
    """Like :func:`read` but ``None`` when absent."""
    return read(f, path) if exists(f, path) else None


def _kind_name(values: Any) -> str:
    if isinstance(values, np.ndarray):
        return f"{values.dtype} array of shape {values.shape}"
    return type(values).__name__


def text(f: Where, path: str) -> str:
    """A scalar text dataset (e.g. ``/identifier``) as ``str``."""
    value = read(f, path)
    if isinstance(value, np.ndarray) and value.shape == (1,) and isinstance(value[0], str):
        value = value[0]
    if not isinstance(value, str):
        raise MalformedDataError(_filename(f), path, f"must be text, found {_kind_name(value)}")
    return value


def integer_text(f: Where, path: str) -> int:
    """A text dataset holding a decimal integer (``/identifier``) as ``int``."""
    value = text(f, path)
    if not _DECIMAL_ID.fullmatch(value):
        raise MalformedDataError(_filename(f), path, f"must hold a decimal integer id, found {value[:80]!r}")
    return int(value)


def datetime_text(f: Where, path: str) -> dt.datetime:
    """An ISO-8601 text dataset (``/session_start_time``) as a datetime (UTC if it names no zone)."""
    value = text(f, path)
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise MalformedDataError(_filename(f), path, f"is not an ISO-8601 date and time: {value[:80]!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


def integer_attr(values: dict[str, Any], key: str, f: Where, path: str) -> int:
    """A required integer attribute (ids, counts) as ``int``; text or fractions are refused."""
    value = need(values, key, f, path)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if not (isinstance(value, (float, np.floating)) and float(value).is_integer()):
            raise MalformedDataError(_filename(f), f"{path}@{key}", f"must be an integer, found {value!r:.80}")
    return int(value)


def number_attr(values: dict[str, Any], key: str, f: Where, path: str) -> float:
    """A required numeric attribute (rates) as ``float``."""
    value = need(values, key, f, path)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise MalformedDataError(_filename(f), f"{path}@{key}", f"must be a number, found {value!r:.80}")
    return float(value)


def text_attr(values: dict[str, Any], key: str, f: Where, path: str) -> str:
    """A required text attribute as ``str``."""
    value = need(values, key, f, path)
    if not isinstance(value, str):
        raise MalformedDataError(_filename(f), f"{path}@{key}", f"must be text, found {value!r:.80}")
    return value


def numeric(f: Where, path: str, values: Any, ndim: int | None = 1, name: str | None = None) -> np.ndarray:
    """``values`` read from ``path`` as a numeric (bool, int or float) array of ``ndim`` dimensions."""
    arr = np.asarray(values) if not isinstance(values, str) else np.asarray(values, dtype=object)
    if arr.dtype.kind not in "biuf" or (ndim is not None and arr.ndim != ndim):
        want = f"{ndim}-D numbers" if ndim is not None else "numbers"
        raise MalformedDataError(_filename(f), name or path, f"must hold {want}, found {_kind_name(arr)}")
    return arr


def read_numeric(f: Where, path: str, ndim: int | None = 1) -> np.ndarray:
    """Whole numeric dataset at ``path`` (see :func:`numeric`)."""
    return numeric(f, path, read(f, path), ndim)


def booleans(f: Where, path: str, values: Any) -> np.ndarray:
    """``values`` as a bool array: stored booleans, or integers/floats that are all 0 or 1 — never text."""
    arr = np.asarray(values)
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind in "iuf" and bool(np.isin(arr, (0, 1)).all()):
        return arr.astype(bool)
    raise MalformedDataError(_filename(f), path, f"must hold booleans, found {_kind_name(arr)}"
                             + (f" with values such as {arr.ravel()[0]!r:.40}" if arr.size else ""))


def integer_ids(f: Where, path: str, values: Any) -> np.ndarray:
    """``values`` as a 1-D int64 id array: stored integers only (no text, no fractions, nothing above int64)."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise MalformedDataError(_filename(f), path, f"ids must be 1-D integers, found {_kind_name(arr)}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise MalformedDataError(_filename(f), path, "ids exceed the int64 range")
    return arr.astype(np.int64, copy=False)


def same_length(f: Where, path: str, values: Any, n: int, of: str) -> None:
    """Raise MalformedDataError unless ``values`` has ``n`` rows along its first axis."""
    count = np.shape(values)[0] if np.ndim(values) else None
    if count != n:
        raise MalformedDataError(_filename(f), path, f"has {count if count is not None else 'no'} rows "
                                                     f"where {n} {of} need one each")


# --- DynamicTables ----------------------------------------------------------------------------


def table_columns(group: h5py.Group) -> list[str]:
    """Column names of a DynamicTable, in the stored order."""
    if layout.COLNAMES_ATTR not in group.attrs:
        raise MissingDataError(_filename(group), f"missing attribute {layout.COLNAMES_ATTR!r} of table {group.name}")
    names = decode(np.atleast_1d(group.attrs[layout.COLNAMES_ATTR]))
    if names.dtype.kind not in "OU" or not all(isinstance(n, str) for n in names.ravel()):
        raise MalformedDataError(_filename(group), f"{group.name}@{layout.COLNAMES_ATTR}",
                                 f"column names must be text, found {_kind_name(names)}")
    return [str(c) for c in names.ravel()]


def split_ragged(f: Where, path: str, values: Any, ends: Any, n_rows: int | None) -> list[np.ndarray]:
    """Rows of a ragged column: row *i* = ``values[ends[i-1]:ends[i]]``; the index is checked first.

    ``ends`` must be 1-D integers, non-decreasing, within ``0..len(values)``, one per row. Values after
    the last end are not part of any row (as in hdmf; the writer's no-lick quirk stores one there).
    """
    index_path = f"{path}{layout.INDEX_SUFFIX}"
    ends = np.asarray(ends)
    if ends.ndim != 1 or ends.dtype.kind not in "iu":
        raise MalformedDataError(_filename(f), index_path, f"a ragged index must be 1-D integers, "
                                                           f"found {_kind_name(ends)}")
    if n_rows is not None and len(ends) != n_rows:
        raise MalformedDataError(_filename(f), index_path, f"has {len(ends)} entries for {n_rows} table rows")
    if np.ndim(values) == 0:
        raise MalformedDataError(_filename(f), path, f"ragged data must be an array, found {_kind_name(values)}")
    if not len(ends):
        return []
    n_values = len(values)
    if ends.min() < 0 or ends.max() > n_values:
        raise MalformedDataError(_filename(f), index_path, f"offsets {int(ends.min())}..{int(ends.max())} "
                                                           f"fall outside the {n_values} values of {path}")
    drops = np.flatnonzero(ends[1:] < ends[:-1])
    if drops.size:
        raise MalformedDataError(_filename(f), index_path, f"offsets decrease at row {int(drops[0]) + 1} "
                                                           "(a ragged index must never decrease)")
    ends = ends.astype(np.int64)
    return np.split(np.asarray(values)[: ends[-1]], ends[:-1])


def read_column(group: h5py.Group, name: str, n_rows: int | None = None,
                members: set[str] | None = None) -> np.ndarray | list[np.ndarray]:
    """One DynamicTable column: an array, or a list of arrays for a ragged (``*_index``) column.

    AllenSDK's writer stores a ragged column without any value as one empty string with every end 0
    (docs/quirks.md): every row is then an empty array, of dtype object as AllenSDK reads it. With ``n_rows``, a
    column (or ragged index) of any other length is refused. ``members``: the names in
    ``group``, when the caller already listed them.
    """
    path = f"{group.name}/{name}"
    values = read(group, name)
    index_name = f"{name}{layout.INDEX_SUFFIX}"
    if (members is None or index_name in members) and exists(group, index_name):
        return split_ragged(group, path, values, read(group, index_name), n_rows)
    if n_rows is not None:
        same_length(group, path, values, n_rows, f"rows of {group.name}")
    return values


PREFETCH_TABLE_BYTES = 32 << 20  # tables whose stored columns are larger are read as they come


def storage_ranges(ds: h5py.Dataset) -> list[tuple[int, int]]:
    """Byte ranges ``[(start, stop), ...]`` holding a dataset's stored values: its chunks, or its contiguous
    storage; ``[]`` for compact or unallocated storage."""
    if ds.chunks is not None:
        return [(start, start + size) for _, start, size in chunk_ranges(ds)]
    offset, size = ds.id.get_offset(), ds.id.get_storage_size()
    return [(offset, offset + size)] if offset is not None and size else []


def prefetch_tables(groups: list[h5py.Group], prefetch: Callable[[list[tuple[int, int]]], Any] | None,
                    skip: tuple[str, ...] = ()) -> None:
    """For a streamed file: schedule the stored bytes of every column (and index) of these DynamicTables in one
    parallel round (:meth:`vbo.source.remote.RemoteFile.prefetch`) before they are read one by one; nothing
    when ``prefetch`` is None or the columns hold more than :data:`PREFETCH_TABLE_BYTES`."""
    if prefetch is None:
        return
    ranges: list[tuple[int, int]] = []
    for group in groups:
        for name in group:
            if name.split(layout.INDEX_SUFFIX)[0] in skip or \
                    not isinstance(group.get(name, getlink=True), h5py.HardLink):
                continue
            obj = group.get(name)
            if isinstance(obj, h5py.Dataset):
                ranges += storage_ranges(obj)
    if ranges and sum(stop - start for start, stop in ranges) <= PREFETCH_TABLE_BYTES:
        prefetch(ranges)


def read_table(group: h5py.Group, skip: tuple[str, ...] = ()) -> tuple[np.ndarray, dict[str, Any]]:
    """A DynamicTable as ``(ids, {column: values})`` with columns in stored order, every column one per row."""
    ids = integer_ids(group, f"{group.name}/{layout.ID}", read(group, layout.ID))
    members = set(group)
    columns = {name: read_column(group, name, len(ids), members) for name in table_columns(group) if name not in skip}
    return ids, columns


def region_rows(f: h5py.File, series_path: str, n_rows: int | None = None) -> np.ndarray:
    """Row indices (into the ROI table of ``n_rows`` rows) of a RoiResponseSeries' ``rois`` region."""
    path = f"{series_path}/{layout.ROIS}"
    rows = np.asarray(read(f, path))
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        raise MalformedDataError(f.filename, path, f"ROI rows must be 1-D integers, found {_kind_name(rows)}")
    if n_rows is not None and rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise MalformedDataError(f.filename, path, f"rows {int(rows.min())}..{int(rows.max())} fall outside "
                                                   f"the {n_rows} rows of the ROI table")
    return rows.astype(np.int64, copy=False)


def _texts(values: np.ndarray) -> bool:
    return values.dtype.kind == "U" or (values.dtype == object and all(isinstance(v, str) for v in values.ravel()))


def check_column_kinds(group: h5py.Group, columns: dict[str, Any], booleans: tuple[str, ...] = (),
                       numbers: tuple[str, ...] = (), texts: tuple[str, ...] = ()) -> None:
    """Refuse table columns stored with the wrong kind: text where booleans or numbers belong, numbers
    where text belongs. Booleans may be stored as numbers 0/1 (NaN for missing); ragged numeric columns
    may have rows of any length (empty rows of any type: the writer's no-lick quirk)."""
    for name, values in columns.items():
        path = f"{group.name}/{name}"
        if isinstance(values, list):
            bad = next((v for v in values if len(v) and np.asarray(v).dtype.kind not in "biuf"), None)
            if name in numbers and bad is not None:
                raise MalformedDataError(_filename(group), path, f"rows must hold numbers, found {_kind_name(bad)}")
            continue
        arr = np.asarray(values)
        if name in booleans:
            ok = arr.dtype.kind == "b" or (arr.dtype.kind in "iuf" and bool(np.isin(arr[~np.isnan(arr)]
                                           if arr.dtype.kind == "f" else arr, (0, 1)).all()))
            want = "booleans (or 0/1)"
        elif name in numbers:
            ok, want = arr.dtype.kind in "biuf", "numbers"
        elif name in texts:
            ok, want = _texts(arr), "text"
        else:
            continue
        if not ok:
            raise MalformedDataError(_filename(group), path, f"must hold {want}, found {_kind_name(arr)}")


SLAB_BYTES = 4 << 20  # bytes of one slab read by read_transposed: fits the CPU cache, amortises per-call cost
PAGE_BYTES = 4096  # the smallest page size: touching one byte in each faults every page in


def _fault_in(out: np.ndarray) -> threading.Thread:
    """Touch every page of the fresh array ``out`` in a thread and return it (join it before writing ``out``).

    The kernel's first-touch cost of a large array (zeroing, and with transparent huge pages possibly
    compaction: 0.3 s for 100 MB on this project's test machine) is then paid while a streamed file's first
    chunks are on their way, instead of stalling the decoding that would otherwise touch the pages, and with it
    the prefetch that follows the decoding. numpy releases the GIL while it writes.
    """
    pages = out.reshape(-1).view(np.uint8)[::PAGE_BYTES]
    thread = threading.Thread(target=pages.fill, args=(0,), name="vbo-fault-in", daemon=True)
    thread.start()
    return thread


def chunk_ranges(ds: h5py.Dataset) -> list[tuple[tuple[int, ...], int, int]]:
    """``(chunk offset, byte offset, stored bytes)`` of every stored chunk of a chunked dataset (one pass over
    the chunk index), ``[]`` for a contiguous or compact dataset."""
    if ds.chunks is None:
        return []
    found: list[tuple[tuple[int, ...], int, int]] = []
    if hasattr(ds.id, "chunk_iter"):
        ds.id.chunk_iter(lambda info: found.append((tuple(info.chunk_offset), info.byte_offset, info.size)))
    else:  # pragma: no cover - HDF5 < 1.12.3
        for i in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(i)
            found.append((tuple(info.chunk_offset), info.byte_offset, info.size))
    return found


def read_transposed(ds: h5py.Dataset, columns: np.ndarray | None = None, *,
                    prefetch: Callable[[list[tuple[int, int]]], Any] | None = None,
                    prefetch_window: int = 32 << 20) -> np.ndarray:
    """A 2-D dataset (rows × columns, e.g. frames × ROIs) as one C-contiguous (columns × rows) array.

    A chunked dataset whose filters vbo can decode (shuffle, deflate) is read chunk by chunk and decoded in
    threads into the result; any other is read in slabs along the first axis, each transposed into the result
    by a thread while HDF5 reads the next. The peak memory is the result plus a few chunks or two slabs (not
    three copies), and each result row (e.g. one ROI's trace) is a contiguous view of the one block. Only the
    stored columns between the first and the last wanted one are read.

    Parameters
    ----------
    ds
        A 2-D dataset.
    columns
        Stored columns to keep, in the wanted order (default all, in stored order).
    prefetch
        For a streamed file: called with the byte ranges ``[(start, stop), ...]`` of the coming chunks (of
        contiguous storage: the coming rows), up to ``prefetch_window`` bytes ahead of those being decoded or
        read, so that the network fetches (in parallel) meanwhile (e.g.
        :meth:`vbo.source.remote.RemoteFile.prefetch`).

    Returns
    -------
    numpy.ndarray
        Shape ``(len(columns), ds.shape[0])``, dtype of the dataset.
    """
    n_rows, n_columns = ds.shape
    keep = None if columns is None else np.asarray(columns, dtype=np.int64)
    if keep is not None and np.array_equal(keep, np.arange(n_columns)):
        keep = None
    out = np.empty((n_columns if keep is None else len(keep), n_rows), dtype=ds.dtype)
    if n_rows == 0 or n_columns == 0 or out.shape[0] == 0:
        return out
    lo_col, hi_col = (0, n_columns) if keep is None else (int(keep.min()), int(keep.max()) + 1)
    faulting = _fault_in(out) if prefetch is not None else None  # streamed: while the first bytes arrive
    filters = _decodable_filters(ds) if hasattr(ds.id, "read_direct_chunk") else None
    stored = chunk_ranges(ds) if filters is not None or prefetch is not None else []  # one walk of the index
    if filters is not None and _read_chunks_transposed(ds, out, keep, lo_col, hi_col, filters, stored, prefetch,
                                                       prefetch_window, faulting):
        return out
    picked = None if keep is None else keep - lo_col
    width = hi_col - lo_col
    chunk_rows = ds.chunks[0] if ds.chunks else 1
    step = max(chunk_rows, SLAB_BYTES // max(1, width * ds.dtype.itemsize) // chunk_rows * chunk_rows)
    ahead = None
    if prefetch is not None:
        if ds.chunks is None:  # streamed contiguous rows: a slab spans whole rows, at most a quarter of the window
            step = max(1, min(step, prefetch_window // 4 // (n_columns * ds.dtype.itemsize)))
        ahead = _SlabPrefetcher(_slab_ranges(ds, stored, step, lo_col, hi_col), prefetch, prefetch_window)
    # two slabs: HDF5 reads the next one while a thread transposes the last into the result (numpy's copy
    # releases the GIL)
    slabs = [np.empty((min(step, n_rows), width), dtype=ds.dtype) for _ in range(2)]
    copying = [None, None]

    def transpose(piece: np.ndarray, lo: int, hi: int) -> None:
        out[:, lo:hi] = (piece if picked is None else piece[:, picked]).T

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vbo-transpose") as pool:
        for index, lo in enumerate(range(0, n_rows, step)):
            hi = min(n_rows, lo + step)
            if ahead is not None:
                ahead.advance(lo // step)
            if copying[index % 2] is not None:
                copying[index % 2].result()  # this slab's last copy is done: it can be overwritten
            if faulting is not None:
                faulting.join()  # before the first copy writes the result
                faulting = None
            piece = slabs[index % 2][:hi - lo]
            try:
                ds.read_direct(piece, np.s_[lo:hi, lo_col:hi_col], np.s_[0:hi - lo])
            except OSError as err:
                _raise_unreadable(ds.file, ds.name, err)
            copying[index % 2] = pool.submit(transpose, piece, lo, hi)
        for future in copying:
            if future is not None:
                future.result()
    return out


SHUFFLE_FILTER, DEFLATE_FILTER = 2, 1  # HDF5 filter ids
DECODE_WORKERS = THREAD_WORKERS  # threads inflating chunks


def _decodable_filters(ds: h5py.Dataset) -> tuple[int, ...] | None:
    """The filter pipeline of a chunked 2-D numeric dataset if vbo can decode its chunks itself (any of
    shuffle then deflate, the filters AllenSDK's writer and h5py's gzip use); None otherwise."""
    if ds.chunks is None or ds.ndim != 2 or ds.dtype.kind not in "biuf":
        return None
    plist = ds.id.get_create_plist()
    filters = tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))
    return filters if filters in ((), (DEFLATE_FILTER,), (SHUFFLE_FILTER,), (SHUFFLE_FILTER, DEFLATE_FILTER)) else None


def _decode_chunk(data: bytes, mask: int, filters: tuple[int, ...], dtype: np.dtype,
                  shape: tuple[int, ...]) -> np.ndarray:
    """One stored chunk as the array HDF5 would return: inflated, then un-shuffled (each filter unless the chunk's
    filter mask says it was skipped), shaped as a whole chunk."""
    for index in reversed(range(len(filters))):
        if mask >> index & 1:
            continue
        if filters[index] == DEFLATE_FILTER:
            data = zlib.decompress(data)
        elif dtype.itemsize > 1:  # shuffle: the k-th bytes of all elements, then the next bytes ...
            planes = np.frombuffer(data, np.uint8).reshape(dtype.itemsize, -1)
            data = np.ascontiguousarray(planes.T)
    values = np.frombuffer(data, dtype=dtype)
    if values.size != math.prod(shape):
        raise ValueError(f"a chunk decodes to {values.size} values, not {math.prod(shape)}")
    return values.reshape(shape)


def _read_chunks_transposed(ds: h5py.Dataset, out: np.ndarray, keep: np.ndarray | None, lo_col: int, hi_col: int,
                            filters: tuple[int, ...], stored: list[tuple[tuple[int, ...], int, int]],
                            prefetch: Callable[[list[tuple[int, int]]], Any] | None, window: int,
                            faulting: threading.Thread | None = None) -> bool:
    """Fill ``out`` (columns × rows) from the ``stored`` chunks (:func:`chunk_ranges`) of ``ds``, whose
    ``filters`` vbo decodes (:func:`_decodable_filters`), between stored columns ``lo_col`` and ``hi_col``: HDF5
    reads each chunk's bytes (``read_direct_chunk``, in file order) and threads inflate and un-shuffle them
    (:data:`DECODE_WORKERS`), so decoding runs on every core and, for a streamed file, while the next chunks
    arrive (``prefetch`` is called with byte ranges up to ``window`` bytes ahead); ``faulting`` (:func:`_fault_in`)
    is joined before the first chunk is placed. False (and ``out`` untouched by this) if a chunk was never
    written."""
    chunk_rows, chunk_cols = ds.chunks
    n_rows, n_columns = ds.shape
    wanted = [c for c in stored if c[0][1] + chunk_cols > lo_col and c[0][1] < hi_col]
    expected = -(-n_rows // chunk_rows) * ((hi_col - 1) // chunk_cols - lo_col // chunk_cols + 1)
    if len(wanted) != expected:
        return False  # unwritten chunks hold the fill value: left to HDF5
    wanted.sort(key=lambda c: c[1])  # file order: one pass over the bytes
    dest = None
    if keep is not None:  # stored column -> rows of ``out`` that want it
        dest = {}
        for row, column in enumerate(keep.tolist()):
            dest.setdefault(column, []).append(row)

    def place(offset: tuple[int, int], data: bytes, mask: int) -> None:
        block = _decode_chunk(data, mask, filters, ds.dtype, ds.chunks)
        r0, c0 = offset
        rows = min(chunk_rows, n_rows - r0)
        if dest is None:
            c1 = min(c0 + chunk_cols, n_columns)
            out[c0:c1, r0:r0 + rows] = block[:rows, :c1 - c0].T
            return
        for column in range(c0, min(c0 + chunk_cols, n_columns)):
            for row in dest.get(column, ()):
                out[row, r0:r0 + rows] = block[:rows, column - c0]

    before = np.concatenate([[0], np.cumsum([size for _, _, size in wanted])])  # stored bytes before chunk i
    scheduled = 0  # chunks handed to ``prefetch`` so far
    pending = []
    with ThreadPoolExecutor(max_workers=DECODE_WORKERS, thread_name_prefix="vbo-decode") as pool:
        for i, (offset, _, _) in enumerate(wanted):
            # keep ``window`` bytes ahead in flight, topped up by at least an eighth of it at a time; the first
            # wave in doubling pieces, so that the first chunks arrive (and decoding starts) after about one round
            # trip, and the top-ups go out while the rest of the wave is still coming
            if prefetch is not None and scheduled < len(wanted) and before[scheduled] - before[i] < window * 7 // 8:
                stop = max(i + 1, int(np.searchsorted(before, before[i] + window, side="right")) - 1)
                pieces = _doubling_pieces(before, scheduled, stop) if scheduled == 0 else [(scheduled, stop)]
                for lo, hi in pieces:
                    prefetch([(start, start + size) for _, start, size in wanted[lo:hi]])
                scheduled = stop
            try:
                mask, data = ds.id.read_direct_chunk(offset)
            except OSError as err:
                _raise_unreadable(ds.file, ds.name, err)
            if faulting is not None:
                faulting.join()
                faulting = None
            pending.append(pool.submit(place, offset, data, mask))
            if len(pending) >= 4 * DECODE_WORKERS:
                _finish(pending.pop(0), ds)
        for future in pending:
            _finish(future, ds)
    return True


FIRST_PIECE_BYTES = 256 * 1024  # the first piece of a streamed trace read; each next piece is twice as large


def _doubling_pieces(before: np.ndarray, first: int, stop: int) -> list[tuple[int, int]]:
    """Chunks ``first..stop`` (``before[i]``: stored bytes before chunk ``i``) cut into ``(lo, hi)`` pieces of about
    :data:`FIRST_PIECE_BYTES`, then twice, four times ... as many bytes: requested at once, the small ones arrive
    first, so a reader that waits for the first chunk waits for one small response, not for the whole wave."""
    pieces, lo, size = [], first, FIRST_PIECE_BYTES
    while lo < stop:
        hi = min(stop, max(lo + 1, int(np.searchsorted(before, before[lo] + size, side="right")) - 1))
        pieces.append((lo, hi))
        lo, size = hi, 2 * size
    return pieces


def _finish(future, ds: h5py.Dataset) -> None:
    """Wait for one chunk's decoding; a chunk that does not decode is a CorruptDataError naming the dataset."""
    try:
        future.result()
    except (zlib.error, ValueError) as err:
        raise CorruptDataError(_filename(ds.file), ds.name, f"stored bytes cannot be decoded (corrupt compressed "
                                                            f"chunk): {err}") from None


def _slab_ranges(ds: h5py.Dataset, stored: list[tuple[tuple[int, ...], int, int]], step: int, lo_col: int,
                 hi_col: int) -> list[list[tuple[int, int]]]:
    """The byte ranges each slab of ``step`` rows of a 2-D dataset reads between stored columns ``lo_col`` and
    ``hi_col``: its ``stored`` chunks (:func:`chunk_ranges`) that hold those columns, or for contiguous storage
    the span from the slab's first wanted value to its last (rows are stored one after the other); ``[]`` for
    data never written."""
    if ds.chunks is None:
        offset = ds.id.get_offset()
        if offset is None:
            return []
        item, n_rows = ds.dtype.itemsize, ds.shape[0]
        row_bytes = ds.shape[1] * item
        return [[(offset + lo * row_bytes + lo_col * item, offset + (min(n_rows, lo + step) - 1) * row_bytes
                  + hi_col * item)] for lo in range(0, n_rows, step)]
    chunk_cols = ds.chunks[1]
    by_slab: dict[int, list[tuple[int, int]]] = {}
    for offset, start, size in stored:
        if offset[1] + chunk_cols > lo_col and offset[1] < hi_col:
            by_slab.setdefault(offset[0] // step, []).append((start, start + size))
    return [sorted(by_slab.get(i, [])) for i in range(max(by_slab, default=-1) + 1)]


class _SlabPrefetcher:
    """Schedules the byte ranges of coming slabs (``slabs[i]``: those slab ``i`` reads, :func:`_slab_ranges`),
    keeping at most ``window`` bytes ahead."""

    def __init__(self, slabs: list[list[tuple[int, int]]], prefetch: Callable[[list[tuple[int, int]]], Any],
                 window: int):
        self.slabs, self.prefetch, self.window = slabs, prefetch, window
        self.next = 0  # first slab not yet scheduled

    def advance(self, current: int) -> None:
        """Slab ``current`` is about to be read: schedule it and the next ones within the window."""
        budget = 0
        batch: list[tuple[int, int]] = []
        for i in range(current, len(self.slabs)):
            size = sum(b - a for a, b in self.slabs[i])
            if i > current and budget + size > self.window:
                break
            budget += size
            if i >= self.next:
                batch += self.slabs[i]
                self.next = i + 1
        if batch:
            self.prefetch(batch)
