"""h5py helpers for NWB: open with typed errors, decode text, whole-dataset reads, DynamicTables.

Every read is one whole-dataset slice (``ds[()]``); nothing here reads element by element.
Paths come from :mod:`vbo.nwb.layout`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any, Callable

import h5py
import numpy as np

from vbo.errors import (
    MissingDataError,
    NotHdf5Error,
    NotVisualBehaviorFileError,
    NwbFileNotFoundError,
    TruncatedFileError,
)
from vbo.nwb import layout

Source = str | os.PathLike | IO[bytes]


def source_name(source: Source) -> str:
    """A printable name for a path or a file-like object."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "name", None) or getattr(source, "url", None) or repr(source))


def open_hdf5(source: Source) -> h5py.File:
    """Open ``source`` (path or binary file-like object) read-only, classifying failures.

    Raises
    ------
    NwbFileNotFoundError, NotHdf5Error, TruncatedFileError
    """
    name = source_name(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise NwbFileNotFoundError(name, "no such file")
        if path.is_dir():
            raise NotHdf5Error(name, "is a directory, not an NWB file")
        with open(path, "rb") as fh:
            head = fh.read(len(layout.HDF5_SIGNATURE))
        if head != layout.HDF5_SIGNATURE:
            raise NotHdf5Error(name, "not an HDF5 file (no HDF5 signature at the start), so not an NWB file")
    try:
        return h5py.File(source, "r")
    except OSError as err:
        text = str(err).lower()
        if "truncated" in text or "eof" in text:
            raise TruncatedFileError(name, f"truncated HDF5 file (incomplete download?): {err}") from err
        if "signature" in text or "not an hdf5" in text:
            raise NotHdf5Error(name, f"not an HDF5 file: {err}") from err
        raise TruncatedFileError(name, f"HDF5 file cannot be opened, it is corrupt or incomplete: {err}") from err


def require(f: h5py.File, paths: tuple[str, ...], what: str) -> None:
    """Raise NotVisualBehaviorFileError naming the first of ``paths`` missing from ``f``."""
    missing = [p for p in paths if p not in f]
    if missing:
        raise NotVisualBehaviorFileError(
            f.filename, f"not a Visual Behavior {what} NWB file: missing {', '.join(missing)}"
        )


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


def attrs(f: h5py.File, path: str) -> dict[str, Any]:
    """All attributes of the object at ``path``, decoded (``{}`` if absent)."""
    if path not in f:
        return {}
    return {key: decode(val) for key, val in f[path].attrs.items()}


def read(f: h5py.File, path: str) -> Any:
    """Whole dataset at ``path`` (strings decoded to ``str`` / object arrays of ``str``)."""
    try:
        ds = f[path]
    except KeyError:
        raise MissingDataError(f.filename, f"missing dataset {path}") from None
    if h5py.check_string_dtype(ds.dtype) is not None:
        value = ds.asstr()[()]
        return value if isinstance(value, str) else np.asarray(value, dtype=object)
    return ds[()]


def read_optional(f: h5py.File, path: str) -> Any | None:
    """Like :func:`read` but ``None`` when absent."""
    return read(f, path) if path in f else None


def table_columns(group: h5py.Group) -> list[str]:
    """Column names of a DynamicTable, in the stored order."""
    return [str(c) for c in decode(np.atleast_1d(group.attrs[layout.COLNAMES_ATTR]))]


def read_column(group: h5py.Group, name: str) -> np.ndarray | list[np.ndarray]:
    """One DynamicTable column: an array, or a list of arrays for a ragged (``*_index``) column."""
    f = group.file
    values = read(f, f"{group.name}/{name}")
    index_name = f"{group.name}/{name}{layout.INDEX_SUFFIX}"
    if index_name in f:
        ends = np.asarray(f[index_name][()], dtype=np.int64)
        return np.split(np.asarray(values), ends[:-1]) if len(ends) else []
    return values


def read_table(group: h5py.Group, skip: tuple[str, ...] = ()) -> tuple[np.ndarray, dict[str, Any]]:
    """A DynamicTable as ``(ids, {column: values})`` with columns in stored order."""
    ids = group[layout.ID][()]
    columns = {name: read_column(group, name) for name in table_columns(group) if name not in skip}
    return ids, columns


def region_rows(f: h5py.File, series_path: str) -> np.ndarray:
    """Row indices (into the ROI table) of a RoiResponseSeries' ``rois`` region."""
    return np.asarray(read(f, f"{series_path}/{layout.ROIS}"), dtype=np.int64)


SLAB_BYTES = 4 << 20  # bytes of one slab read by read_transposed: fits the CPU cache, amortises per-call cost


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

    Read in slabs of whole HDF5 chunks along the first axis and transposed slab by slab into the result,
    so the peak memory is the result plus one slab (not three copies), and each result row (e.g. one ROI's
    trace) is a contiguous view of the one block. Only the stored columns between the first and the last
    wanted one are read.

    Parameters
    ----------
    ds
        A 2-D dataset.
    columns
        Stored columns to keep, in the wanted order (default all, in stored order).
    prefetch
        For a streamed file: called with the byte ranges ``[(start, stop), ...]`` of the chunks of the coming
        slabs, up to ``prefetch_window`` bytes ahead of the slab being decoded, so that the network fetches
        (in parallel) while HDF5 decompresses (e.g. :meth:`vbo.cache.s3.RemoteFile.prefetch`).

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
    picked = None if keep is None else keep - lo_col
    width = hi_col - lo_col
    chunk_rows = ds.chunks[0] if ds.chunks else 1
    step = max(chunk_rows, SLAB_BYTES // max(1, width * ds.dtype.itemsize) // chunk_rows * chunk_rows)
    ahead = _SlabPrefetcher(ds, step, lo_col, hi_col, prefetch, prefetch_window) if prefetch else None
    slab = np.empty((min(step, n_rows), width), dtype=ds.dtype)
    for lo in range(0, n_rows, step):
        hi = min(n_rows, lo + step)
        if ahead is not None:
            ahead.advance(lo // step)
        piece = slab[:hi - lo]
        ds.read_direct(piece, np.s_[lo:hi, lo_col:hi_col], np.s_[0:hi - lo])
        out[:, lo:hi] = (piece if picked is None else piece[:, picked]).T
    return out


class _SlabPrefetcher:
    """Schedules the chunk byte ranges of coming slabs, keeping at most ``window`` bytes ahead."""

    def __init__(self, ds: h5py.Dataset, step: int, lo_col: int, hi_col: int,
                 prefetch: Callable[[list[tuple[int, int]]], Any], window: int):
        chunk_cols = ds.chunks[1] if ds.chunks else ds.shape[1]
        by_slab: dict[int, list[tuple[int, int]]] = {}
        for offset, start, size in chunk_ranges(ds):
            if offset[1] + chunk_cols > lo_col and offset[1] < hi_col:
                by_slab.setdefault(offset[0] // step, []).append((start, start + size))
        self.slabs = [sorted(by_slab.get(i, [])) for i in range(max(by_slab, default=-1) + 1)]
        self.prefetch, self.window = prefetch, window
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
