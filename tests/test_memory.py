"""Memory: looping over an experiment does not grow the process, and opening reads no data streams.

Answers AllenSDK#2420 (memory kept after each experiment) and #2306 (everything read at construction).
"""

from __future__ import annotations

import ctypes
import gc
import inspect
import sys
import warnings

import h5py
import numpy as np
import pandas as pd
import psutil
import pytest

import vbo

MB = 2**20
ITERATIONS = 20
WARMUP = 3
# One iteration decodes several hundred MB (stimulus templates alone are 8 x 1200 x 1920 float64 +
# uint8 = 166 MB; five trace matrices 18298 x 120 float64 = 88 MB; masks 27 MB). Keeping even one
# iteration's data alive exceeds this bound; allocator noise stays far below it.
GROWTH_BOUND = 60 * MB
# The groups that hold data streams; construction + metadata must not read any dataset in them.
DATA_GROUPS = ("/processing", "/intervals", "/acquisition", "/stimulus")


# --- helpers ----------------------------------------------------------------------------------------


def _nbytes(value, _depth: int = 0) -> int:
    """Bytes of array data held by a member's value (arrays, frames, Images, dicts, tuples)."""
    if _depth > 3 or value is None:
        return 0
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return sum(_nbytes(v, _depth + 1) for v in value.ravel())
        return value.nbytes
    if isinstance(value, pd.DataFrame):
        return _nbytes(value.index.to_numpy(), _depth + 1) + sum(
            _nbytes(value[c].to_numpy(), _depth + 1) for c in value.columns
        )
    if isinstance(value, pd.Series):
        return _nbytes(value.to_numpy(), _depth + 1)
    if isinstance(value, dict):
        return sum(_nbytes(v, _depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v, _depth + 1) for v in value)
    if hasattr(value, "data") and hasattr(value, "spacing"):  # vbo.Image
        return _nbytes(np.asarray(value.data), _depth + 1)
    return 0


def _read_every_member(obj) -> int:
    """Read every public member (call methods that need no arguments); return the bytes decoded."""
    total = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy methods warn by design
        for name in obj.list_data_attributes_and_methods():
            value = getattr(obj, name)
            if callable(value):
                required = [
                    p for p in inspect.signature(value).parameters.values()
                    if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                ]
                if required:  # get_cell_specimen_indices(cell_specimen_ids)
                    continue
                try:
                    value = value()
                except NotImplementedError:  # update_targeted_imaging_depth: internal database only
                    continue
            total += _nbytes(value)
    return total


def _cycle(path, keep: list | None = None) -> int:
    with vbo.BehaviorOphysExperiment.from_nwb_path(path) as obj:
        decoded = _read_every_member(obj)
        if keep is not None:
            keep.append(obj)
    return decoded


def _settled_rss() -> int:
    """RSS after collecting garbage and handing free heap pages back to the OS (glibc)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
    return psutil.Process().memory_info().rss


# --- no growth over repeated open/read/close ------------------------------------------------------------


def test_repeated_open_read_close_does_not_grow(experiment_nwb):
    decoded = [_cycle(experiment_nwb) for _ in range(WARMUP)]
    # the bound is meaningful only if one iteration's data would overshoot it several times over
    assert min(decoded) > 3 * GROWTH_BOUND, f"one iteration decoded only {min(decoded) / MB:.0f} MB"

    before = _settled_rss()
    for _ in range(ITERATIONS - WARMUP):
        _cycle(experiment_nwb)
    after = _settled_rss()

    growth = after - before
    assert growth < GROWTH_BOUND, (
        f"RSS grew {growth / MB:.1f} MB over {ITERATIONS - WARMUP} open/read/close cycles "
        f"({before / MB:.0f} → {after / MB:.0f} MB); one cycle decodes {decoded[-1] / MB:.0f} MB"
    )


def test_leak_check_detects_objects_kept_alive(experiment_nwb):
    """Negative control: the same measurement fails when each iteration's object is kept."""
    _cycle(experiment_nwb)
    kept: list = []
    before = _settled_rss()
    for _ in range(2):
        _cycle(experiment_nwb, keep=kept)
    after = _settled_rss()
    assert after - before > GROWTH_BOUND, (
        f"keeping 2 objects grew RSS by only {(after - before) / MB:.1f} MB: the leak check cannot see a leak"
    )
    kept.clear()


# --- opening reads metadata only -------------------------------------------------------------------------


@pytest.fixture
def dataset_reads(monkeypatch):
    """Record (path, element count) of every h5py dataset read (slicing, read_direct, np.asarray, chunk by chunk)."""
    reads: list[tuple[str, int]] = []
    getitem, read_direct, array = h5py.Dataset.__getitem__, h5py.Dataset.read_direct, h5py.Dataset.__array__

    def rec(ds):
        reads.append((ds.name, int(ds.size or 0)))

    def patched_getitem(self, *args, **kwargs):
        rec(self)
        return getitem(self, *args, **kwargs)

    def patched_read_direct(self, *args, **kwargs):
        rec(self)
        return read_direct(self, *args, **kwargs)

    def patched_array(self, *args, **kwargs):
        rec(self)
        return array(self, *args, **kwargs)

    from vbo.nwb import read as nwb

    chunked = nwb._read_chunks_transposed

    def patched_chunks(ds, *args, **kwargs):  # a trace read chunk by chunk (decoded in threads): a whole read
        done = chunked(ds, *args, **kwargs)
        if done:
            rec(ds)
        return done

    monkeypatch.setattr(h5py.Dataset, "__getitem__", patched_getitem)
    monkeypatch.setattr(h5py.Dataset, "read_direct", patched_read_direct)
    monkeypatch.setattr(h5py.Dataset, "__array__", patched_array)
    monkeypatch.setattr(nwb, "_read_chunks_transposed", patched_chunks)
    return reads


def _held_data(obj, depth: int = 0, seen: set | None = None) -> list[str]:
    """Arrays / frames reachable from the object's attributes (a few levels deep), as descriptions."""
    seen = set() if seen is None else seen
    found = []
    if depth > 3 or id(obj) in seen:
        return found
    seen.add(id(obj))
    if isinstance(obj, (pd.DataFrame, pd.Series)):
        return [f"{type(obj).__name__}{obj.shape}"]
    if isinstance(obj, np.ndarray):
        return [f"ndarray{obj.shape}"] if obj.size > 16 else []
    if isinstance(obj, (h5py.File, h5py.Group, h5py.Dataset, str, bytes, int, float)):
        return found
    if isinstance(obj, dict):
        children = obj.values()
    elif isinstance(obj, (list, tuple, set)):
        children = obj
    elif hasattr(obj, "__dict__"):
        children = vars(obj).values()
    else:
        return found
    for child in children:
        found += _held_data(child, depth + 1, seen)
    return found


@pytest.mark.parametrize("which", ["experiment", "session"])
def test_open_and_metadata_read_no_data_streams(which, experiment_nwb, session_nwb, dataset_reads):
    path = experiment_nwb if which == "experiment" else session_nwb
    cls = vbo.BehaviorOphysExperiment if which == "experiment" else vbo.BehaviorSession
    with cls.from_nwb_path(path) as obj:
        assert _held_data(obj) == []
        metadata = obj.metadata
        assert metadata["behavior_session_id"] > 0
        held = _held_data(obj)
        assert held == [], f"after from_nwb_path + metadata the object holds {held}"
        touched = sorted({name for name, _ in dataset_reads if name.startswith(DATA_GROUPS)})
        assert touched == [], f"opening read data streams: {touched}"
        big = sorted({(name, size) for name, size in dataset_reads if size > 64})
        assert big == [], f"opening read non-scalar datasets: {big}"

        # positive controls: the instruments do see a stream being read and kept
        _ = obj.trials
        assert any(name.startswith("/intervals/trials/") for name, _ in dataset_reads), dataset_reads
        assert any(h.startswith("DataFrame") for h in _held_data(obj))
        if which == "experiment":
            _ = obj.dff_traces
            assert ("/processing/ophys/dff/traces/data", 18298 * 120) in dataset_reads
