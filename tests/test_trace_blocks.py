"""Trace tables hold one ROI × frame block per member: every ROI's array is a row view of it, equal to the file."""

from __future__ import annotations

import threading
import time

import h5py
import numpy as np
import pytest

from vbo import BehaviorOphysExperiment
from vbo.nwb import read as nwb

TRACE_COLUMNS = (("dff_traces", "dff"), ("corrected_fluorescence_traces", "corrected_fluorescence"),
                 ("demixed_traces", "demixed_trace"), ("neuropil_traces", "neuropil_trace"),
                 ("events", "events"), ("events", "filtered_events"))


def _one_block(arrays) -> np.ndarray:
    """The one 2-D array every per-ROI array is a row view of (asserts that there is exactly one)."""
    arrays = list(arrays)
    bases = {id(a.base) for a in arrays}
    assert len(bases) == 1, "per-ROI arrays are not views of one block"
    block = arrays[0].base  # the one allocation (a filter may return a view of a padded buffer)
    assert block.ndim == 2 and block.shape[0] == len(arrays)
    for i, row in enumerate(arrays):
        assert row.flags.c_contiguous and np.shares_memory(row, block)
        assert row.__array_interface__["data"][0] == block[i].__array_interface__["data"][0]
    return block


@pytest.mark.parametrize("member, column", TRACE_COLUMNS)
def test_per_roi_arrays_are_views_of_one_block(experiment_nwb, member, column):
    with BehaviorOphysExperiment.from_nwb_path(experiment_nwb) as exp:
        table = getattr(exp, member)
        _one_block(table[column])
        assert all(trace.shape == exp.ophys_timestamps.shape for trace in table[column])


def test_dff_block_equals_the_stored_dataset(experiment_nwb):
    with h5py.File(experiment_nwb, "r") as f:
        stored = f["/processing/ophys/dff/traces/data"][()]  # frames × ROIs, ROIs in table order here
    with BehaviorOphysExperiment.from_nwb_path(experiment_nwb) as exp:
        traces = exp.dff_traces["dff"]
        _one_block(traces)
        np.testing.assert_array_equal(np.stack(traces.to_list()), stored.T)


@pytest.mark.parametrize("slab_bytes", [1, 5_000, 1 << 22])
@pytest.mark.parametrize("chunks", [None, (7, 3), (64, 5)])
def test_read_transposed_equals_a_whole_read(tmp_path, monkeypatch, slab_bytes, chunks):
    monkeypatch.setattr(nwb, "SLAB_BYTES", slab_bytes)
    rng = np.random.default_rng(0)
    data = rng.random((301, 11)).astype(np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("d", data=data, chunks=chunks, compression="gzip" if chunks else None)
    with h5py.File(tmp_path / "x.h5", "r") as f:
        ds = f["d"]
        whole = nwb.read_transposed(ds)
        assert whole.flags.c_contiguous and whole.dtype == np.float32
        np.testing.assert_array_equal(whole, data.T)
        order = np.array([4, 0, 10, 3])
        np.testing.assert_array_equal(nwb.read_transposed(ds, order), data.T[order])
        assert nwb.read_transposed(ds, np.array([], dtype=np.int64)).shape == (0, 301)


@pytest.mark.parametrize("columns", [None, np.array([9]), np.array([8, 2])])
def test_read_transposed_prefetches_exactly_the_chunks_it_reads(tmp_path, monkeypatch, columns):
    monkeypatch.setattr(nwb, "SLAB_BYTES", 2_000)
    data = np.random.default_rng(1).random((500, 12))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("d", data=data, chunks=(50, 3), compression="gzip")
    asked: list[list[tuple[int, int]]] = []
    with h5py.File(tmp_path / "x.h5", "r") as f:
        ds = f["d"]
        out = nwb.read_transposed(ds, columns, prefetch=asked.append, prefetch_window=3_000)
        chunks = nwb.chunk_ranges(ds)
    np.testing.assert_array_equal(out, data.T if columns is None else data.T[columns])
    flat = [r for batch in asked for r in batch]
    assert len(flat) == len(set(flat)) and len(asked) > 1  # each chunk once, in several windows
    lo, hi = (0, 12) if columns is None else (columns.min(), columns.max() + 1)
    needed = {(start, start + size) for offset, start, size in chunks if offset[1] + 3 > lo and offset[1] < hi}
    assert set(flat) == needed


def test_a_streamed_trace_read_asks_for_its_first_wave_in_doubling_pieces(tmp_path, monkeypatch):
    """The first window of a streamed read goes out as pieces of about 4, 8, 16 ... kB (here), so the first
    chunks come back after one small response; later top-ups are one call each; every chunk is asked for once."""
    monkeypatch.setattr(nwb, "FIRST_PIECE_BYTES", 4_000)
    before = np.arange(0, 101) * 1_000  # 100 chunks of 1 kB
    assert nwb._doubling_pieces(before, 0, 100) == [(0, 4), (4, 12), (12, 28), (28, 60), (60, 100)]
    assert nwb._doubling_pieces(before, 0, 1) == [(0, 1)]
    data = np.random.default_rng(4).random((2000, 12))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("d", data=data, chunks=(50, 3))  # 160 chunks of 1,200 bytes
    asked: list[list[tuple[int, int]]] = []
    with h5py.File(tmp_path / "x.h5", "r") as f:
        np.testing.assert_array_equal(nwb.read_transposed(f["d"], prefetch=asked.append, prefetch_window=60_000),
                                      data.T)
        chunks = {(start, start + size) for _, start, size in nwb.chunk_ranges(f["d"])}
    sizes = [sum(b - a for a, b in call) for call in asked]
    for k, size in enumerate(sizes[:4]):  # the first wave: 60 kB in pieces of at most 4, 8, 16, 32 kB
        assert 4_000 * 2 ** k - 1_200 < size <= 4_000 * 2 ** k, sizes
    assert sum(sizes[:5]) == 60_000  # the window (50 chunks): its last piece is what is left of it
    assert all(size <= 60_000 // 8 + 2 * 1_200 for size in sizes[5:])  # then top-ups of about an eighth
    flat = [r for call in asked for r in call]
    assert len(flat) == len(set(flat)) and set(flat) == chunks


@pytest.mark.parametrize("columns", [None, np.array([5]), np.array([7, 2])])
def test_a_streamed_contiguous_trace_read_prefetches_its_rows_ahead(tmp_path, columns):
    """Released trace tables are stored contiguous (rows one after the other, uncompressed): a streamed read asks
    for each slab's byte span ahead (the rows it reads, from its first wanted value to its last), each span at
    most a quarter of the window, at most a window ahead; together exactly the bytes from the first wanted value
    to the last."""
    data = np.random.default_rng(5).random((3000, 9))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("d", data=data)
    asked: list[list[tuple[int, int]]] = []
    with h5py.File(tmp_path / "x.h5", "r") as f:
        ds = f["d"]
        out = nwb.read_transposed(ds, columns, prefetch=asked.append, prefetch_window=40_000)
        offset = ds.id.get_offset()
    np.testing.assert_array_equal(out, data.T if columns is None else data.T[columns])
    spans = sorted(r for call in asked for r in call)
    lo, hi = (0, 9) if columns is None else (columns.min(), columns.max() + 1)
    assert spans[0][0] == offset + lo * 8 and spans[-1][1] == offset + 2999 * 72 + hi * 8
    assert all(b - a <= 40_000 // 4 for a, b in spans) and len(spans) > 4
    rows = [((a - offset) // 72, (b - offset - 1) // 72) for a, b in spans]  # first and last row of each span
    assert all(r[0] == previous[1] + 1 for previous, r in zip(rows, rows[1:]))  # every row once, in order
    assert all(sum(b - a for a, b in call) <= 40_000 for call in asked[1:])


@pytest.mark.parametrize("filters", [dict(compression="gzip", shuffle=True), dict(compression="gzip"),
                                     dict(shuffle=True), {}, dict(compression="gzip", fletcher32=True)])
@pytest.mark.parametrize("dtype", [np.float64, np.int16, np.uint8])
def test_chunks_decoded_in_threads_equal_hdf5s_decoding(tmp_path, monkeypatch, filters, dtype):
    """Shuffle and deflate chunks are read raw and decoded by vbo's threads (equal to HDF5's own read, edge
    chunks and column picks included); other pipelines (here a checksum) are left to HDF5."""
    decoded = []
    original = nwb._decode_chunk
    monkeypatch.setattr(nwb, "_decode_chunk", lambda *a: decoded.append(1) or original(*a))
    data = (np.random.default_rng(2).random((203, 13)) * 100).astype(dtype)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("d", data=data, chunks=(20, 4), **filters)
    with h5py.File(tmp_path / "x.h5", "r") as f:
        np.testing.assert_array_equal(nwb.read_transposed(f["d"]), data.T)
        picks = np.array([12, 0, 5, 5, 7])  # any order, a column twice, chunks partly wanted
        np.testing.assert_array_equal(nwb.read_transposed(f["d"], picks), data.T[picks])
    assert bool(decoded) == (not filters.get("fletcher32"))


@pytest.mark.parametrize("filters", [dict(compression="gzip"), dict(compression="gzip", fletcher32=True)])
def test_a_streamed_read_faults_the_result_in_before_writing_it(tmp_path, monkeypatch, filters):
    """A streamed read (one with a prefetch callback) touches the result's pages in a thread while the first
    chunks are on their way, and places no chunk before that thread is done: vbo's chunk path and, for a
    pipeline it leaves to HDF5 (a checksum), the slab path. A local read starts no such thread."""
    real_fault_in = nwb._fault_in
    started = []

    def late_fault_in(out):  # finishes after the first chunks are read: a write before the join is overwritten
        def touch():
            time.sleep(0.2)
            out.fill(-7)

        thread = threading.Thread(target=touch)
        thread.start()
        started.append(thread)
        return thread

    monkeypatch.setattr(nwb, "_fault_in", late_fault_in)
    data = np.random.default_rng(3).random((120, 9))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("d", data=data, chunks=(30, 4), **filters)
    with h5py.File(tmp_path / "x.h5", "r") as f:
        np.testing.assert_array_equal(nwb.read_transposed(f["d"], prefetch=lambda ranges: None), data.T)
        assert len(started) == 1 and not started[0].is_alive()
        np.testing.assert_array_equal(nwb.read_transposed(f["d"]), data.T)
        assert len(started) == 1
    fresh = np.empty((3, 5000), dtype=np.float32)
    real_fault_in(fresh).join()
    assert not fresh.reshape(-1).view(np.uint8)[::nwb.PAGE_BYTES].any()  # a byte of every page written


def test_a_chunk_stored_unfiltered_and_unwritten_chunks(tmp_path, monkeypatch):
    """A chunk whose filter mask says deflate was skipped (stored as is) decodes; a dataset with chunks never
    written (read as the fill value) is left to HDF5."""
    data = np.arange(40 * 6, dtype=np.float64).reshape(40, 6)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        ds = f.create_dataset("d", data=data, chunks=(10, 3), compression="gzip", shuffle=True)
        raw = np.ascontiguousarray(np.frombuffer(data[10:20, 3:6].copy().tobytes(), np.uint8).reshape(-1, 8).T)
        ds.id.write_direct_chunk((10, 3), raw.tobytes(), filter_mask=0b10)  # shuffled, not deflated
        f.create_dataset("sparse", shape=(40, 6), dtype=np.float64, chunks=(10, 3), fillvalue=-1.0)
        f["sparse"][0:10, 0:3] = 5.0
    with h5py.File(tmp_path / "x.h5", "r") as f:
        np.testing.assert_array_equal(nwb.read_transposed(f["d"]), data.T)
        monkeypatch.setattr(nwb, "_decode_chunk", None)  # not used: two of eight chunks were never written
        np.testing.assert_array_equal(nwb.read_transposed(f["sparse"]), f["sparse"][()].T)


def test_one_cell_dff_without_loading_the_table(experiment_nwb):
    import warnings

    with BehaviorOphysExperiment.from_nwb_path(experiment_nwb) as exp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = exp.get_cell_specimen_ids()
        t, one = exp.get_dff_traces([ids[7], ids[3]])
        assert "dff_traces" not in exp.__dict__
        # rows in cell-table order whatever the order asked, as AllenSDK returns them
        np.testing.assert_array_equal(one, np.stack(exp.dff_traces["dff"].iloc[[3, 7]].to_list()))
        np.testing.assert_array_equal(t, exp.ophys_timestamps)


def test_a_corrupt_chunk_still_raises_corrupt_data(tmp_path):
    from vbo.errors import CorruptDataError

    data = np.random.default_rng(3).random((200, 8))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("d", data=data, chunks=(50, 4), compression="gzip", shuffle=True)
    with h5py.File(tmp_path / "x.h5", "r") as f:
        _, start, size = nwb.chunk_ranges(f["d"])[3]
    raw = bytearray((tmp_path / "x.h5").read_bytes())
    raw[start + size // 2:start + size // 2 + 16] = bytes(16)
    (tmp_path / "x.h5").write_bytes(bytes(raw))
    with h5py.File(tmp_path / "x.h5", "r") as f, pytest.raises(CorruptDataError):
        nwb.read_transposed(f["d"])


def test_btree_children_name_the_nodes_hdf5_reads_next(tmp_path):
    # a streamed file fetches the children of a chunk index node as soon as HDF5 reads it (vbo.nwb.prefetch)
    import io

    from vbo.nwb.prefetch import btree_children

    with h5py.File(tmp_path / "x.h5", "w") as f:  # 2,000 chunks: a chunk index with internal nodes
        f.create_dataset("d", data=np.arange(20_000.0).reshape(2_000, 10), chunks=(10, 1), compression="gzip")
        f.create_group("g")
    raw = (tmp_path / "x.h5").read_bytes()
    reads: list[tuple[int, bytes]] = []

    class Logged(io.BytesIO):
        def readinto(self, buffer):
            at = self.tell()
            n = super().readinto(buffer)
            reads.append((at, bytes(memoryview(buffer)[:n])))
            return n

    with h5py.File(Logged(raw), "r") as f:
        f["d"].id.chunk_iter(lambda info: None)
    nodes = [(at, data) for at, data in reads if data[:4] == b"TREE"]
    internal = [(at, data) for at, data in nodes if data[4] == 1 and data[5] > 0]
    leaves = {at for at, data in nodes if data[4] == 1 and data[5] == 0}
    assert internal and leaves
    predicted = {start for at, data in internal for start, _ in btree_children(at, data, len(raw))}
    assert leaves <= predicted  # every leaf HDF5 read next was named by its parent
    group_nodes = [(at, data) for at, data in nodes if data[4] == 0]
    assert all(btree_children(at, data, len(raw)) == [] for at, data in group_nodes)  # only chunk indexes
    assert btree_children(0, b"TREE\x01\x01\x05\x00" + bytes(16), len(raw)) == []  # too short: no guess
