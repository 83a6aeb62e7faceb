"""vbo.nwb.prefetch: the HDF5 structures that read hints follow, checked against what h5py reads and reports, and
the hints at work on a streamed file (moto's S3 server behind the fault proxy of ``s3_server.py``)."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest

from s3_server import module_proxy, moto_s3, proxy, server  # noqa: F401 (fixtures)
from vbo.nwb import prefetch
from vbo.nwb.prefetch import (GroupHints, btree_children, group_tree_children, header_pointers, local_heap_data,
                              recognise, superblock_root, symbol_node_members)
from vbo.source.remote import open_remote

BUCKET = "vbo-test-prefetch"


class LoggedBytes(io.BytesIO):
    """An in-memory file that records every read HDF5 makes: ``[(offset, bytes), ...]``."""

    def __init__(self, raw: bytes):
        super().__init__(raw)
        self.reads: list[tuple[int, bytes]] = []

    def readinto(self, buffer):
        at = self.tell()
        n = super().readinto(buffer)
        self.reads.append((at, bytes(memoryview(buffer)[:n])))
        return n


def _scattered_file(path, groups: int = 4, members: int = 4) -> None:
    """Groups of small datasets with padding between them, each object given attributes afterwards (so that
    their object headers continue in blocks written later, far away), in HDF5's earliest format."""
    with h5py.File(path, "w") as f:
        for g in range(groups):
            group = f.create_group(f"g{g}")
            for m in range(members):
                group.create_dataset(f"d{m}", data=np.arange(8.0) + m)
                f.create_dataset(f"pad/{g}_{m}", data=np.zeros(20_000))  # 160 kB between the members
        f["link"] = h5py.SoftLink("/g0/d0")
        for g in range(groups):
            for m in range(members):
                for a in range(12):
                    f[f"g{g}/d{m}"].attrs[f"attribute_{a}"] = np.arange(a + 4.0)
                f.create_dataset(f"late/{g}_{m}", data=np.ones(20_000))
            for a in range(12):
                f[f"g{g}"].attrs[f"attribute_{a}"] = f"text {a}" * 5


def _read_everything(f: h5py.File) -> dict:
    seen = {}

    def visit(name, obj):  # (a visit stops at the first callback that returns something)
        seen[name] = {k: np.asarray(v) for k, v in obj.attrs.items()}

    f.visititems(visit)
    return seen


def _addresses(f: h5py.File) -> dict[str, int]:
    found = {}

    def visit(name, obj):
        found[name] = h5py.h5o.get_info(obj.id).addr

    f.visititems(visit)
    return found


def _all_pointers(raw: bytes, header: int) -> list[tuple[int, str, int]]:
    """The pointers of the object header at ``header`` and of all its continuation blocks."""
    found, blocks = [], [(raw[header:header + 16 + int.from_bytes(raw[header + 8:header + 12], "little")], True)]
    while blocks:
        data, first = blocks.pop()
        for address, kind, size in header_pointers(data, first, len(raw)):
            found.append((address, kind, size))
            if kind == "cont":
                blocks.append((raw[address:address + size], False))
    return found


@pytest.fixture(scope="module")
def scattered(tmp_path_factory):
    path = tmp_path_factory.mktemp("prefetch") / "scattered.h5"
    _scattered_file(path)
    return path


@pytest.fixture(scope="module")
def read_log(scattered) -> tuple[bytes, list[tuple[int, bytes]], dict[str, int]]:
    """The bytes of the scattered file, h5py's reads while visiting every object's attributes, and each object's
    header address (from h5py)."""
    raw = scattered.read_bytes()
    logged = LoggedBytes(raw)
    with h5py.File(logged, "r") as f:
        _read_everything(f)
        addresses = _addresses(f)
    return raw, logged.reads, addresses


def test_symbol_nodes_name_every_member_header_and_group_tables(read_log):
    raw, reads, addresses = read_log
    snods = {at: data for at, data in reads if data[:4] == b"SNOD"}
    members = [m for data in snods.values() for m in symbol_node_members(data, len(raw))]
    assert {header for header, _, _ in members} == set(addresses.values())  # the soft link has no header
    for header, btree, heap in members:
        tables = {(a, kind) for a, kind, _ in _all_pointers(raw, header) if kind in ("tree", "heap")}
        assert tables == ({(btree, "tree"), (heap, "heap")} if btree else set())  # the entry's cache agrees
    assert symbol_node_members(b"SNOD\x01\x00\x09\x00" + bytes(40), len(raw)) is None  # 9 entries, 1 present
    assert recognise(next(iter(snods.values())), len(raw)) == "snod"


def test_the_superblock_names_the_root_group(tmp_path, scattered):
    raw = scattered.read_bytes()
    with h5py.File(scattered, "r") as f:
        root = h5py.h5o.get_info(f["/"].id).addr
    header, btree, heap = superblock_root(raw[:128], len(raw))
    assert header == root
    tables = {(a, kind) for a, kind, _ in _all_pointers(raw, header) if kind in ("tree", "heap")}
    assert tables == {(btree, "tree"), (heap, "heap")}
    assert recognise(raw[:8], len(raw)) == "superblock"
    assert superblock_root(raw[:40], len(raw)) is None  # the root entry is not in these bytes
    with h5py.File(tmp_path / "latest.h5", "w", libver="latest") as f:  # superblock version 3: not this layout
        f.create_group("a")
    assert superblock_root((tmp_path / "latest.h5").read_bytes()[:128], len(raw)) is None


def test_group_trees_heaps_and_continuations_name_what_hdf5_reads_next(read_log):
    raw, reads, addresses = read_log
    read_at = {at for at, _ in reads}
    trees = [group_tree_children(data, len(raw)) for _, data in reads if data[:5] == b"TREE\x00"]
    assert trees and all(kind == "snod" and set(children) <= read_at for kind, children in trees)
    heaps = [local_heap_data(data, len(raw)) for _, data in reads if data[:4] == b"HEAP"]
    assert heaps and all(any(at <= address and address + size <= at + len(data) for at, data in reads)
                         for address, size in heaps)  # read, or within the read of the heap's header
    continued = 0
    for name, header in addresses.items():
        for address, kind, size in _all_pointers(raw, header):
            if kind == "cont":
                continued += 1
                assert (address, raw[address:address + size]) in reads, name  # read whole, as named
                assert header_pointers(raw[address:address + size], False, len(raw)) is not None
    assert continued >= 16  # every dataset's header continues elsewhere
    assert group_tree_children(b"TREE\x01" + bytes(40), len(raw)) is None  # a chunk index: not a group's
    assert local_heap_data(b"HEAP\x00" + bytes(27), len(raw)) is None  # no data segment


def test_group_hints_name_the_structures_before_hdf5_reads_them(read_log):
    """Replaying h5py's reads through a GroupHints whose cache holds what was read or hinted before: every
    group structure h5py reads beyond the first ones was named by an earlier hint."""
    raw, reads, _ = read_log
    block = 4096
    cached_blocks: set[int] = set()

    def cached(start, stop):
        blocks = range(start // block, (stop - 1) // block + 1)
        return raw[start:stop] if all(b in cached_blocks for b in blocks) else None

    hints = GroupHints(cached, merge_gap=0)
    named: set[int] = set()
    surprises = []
    for at, data in reads:
        blocks = set(range(at // block, (at + max(1, len(data)) - 1) // block + 1))
        if recognise(data, len(raw)) in ("snod", "heap") and not blocks <= cached_blocks and at not in named:
            surprises.append(at)
        cached_blocks |= blocks
        for start, stop in hints(at, data, len(raw)):
            named.add(start)
            cached_blocks |= set(range(start // block, (stop - 1) // block + 1))  # fetched ahead: there next
    assert len(named) > 20
    assert len(surprises) <= 2  # the root group's own heap and symbol node, read before any hint can know


def _member_headers_hinted(read_log, **options) -> set[str]:
    """The members of g0-g3 whose object headers a GroupHints names when h5py's reads are replayed
    through it, its cache holding every byte but those headers (until h5py reads them)."""
    raw, reads, addresses = read_log
    members = {at: path for path, at in addresses.items() if path.startswith("g") and "/" in path}

    read: set[int] = set()

    def cached(start, stop):
        return None if any(start < at + 512 and at < stop for at in members.keys() - read) else raw[start:stop]

    hints, named = GroupHints(cached, merge_gap=0, **options), set()
    for at, data in reads:
        read.add(at)
        named |= {start for start, _ in hints(at, data, len(raw))}
    return {members[at] for at in named if at in members}


def test_group_hints_do_not_follow_the_members_they_are_told_to_skip(read_log):
    everything = _member_headers_hinted(read_log)  # of g0/d0 ... g3/d3, all but those h5py reads first
    skipped = {path for path in everything if path.split("/")[1] in {"d1", "d2"}}
    assert len(everything) >= 12 and len(skipped) >= 6
    assert _member_headers_hinted(read_log, skip={f"g{g}": {"d1", "d2"} for g in range(4)}) == everything - skipped
    in_g1 = {path for path in skipped if path.startswith("g1/")}  # the names skipped in group g1 only
    assert in_g1 and _member_headers_hinted(read_log, skip={"g1": {"d1", "d2"}}) == everything - in_g1


def test_group_hints_leave_other_layouts_and_data_alone(tmp_path):
    with h5py.File(tmp_path / "new.h5", "w", libver="latest") as f:  # object header version 2, compact links
        f.create_group("a").create_dataset("x", data=np.arange(5))
    raw = (tmp_path / "new.h5").read_bytes()
    logged = LoggedBytes(raw)
    with h5py.File(logged, "r") as f:
        _read_everything(f)
    hints = GroupHints(lambda start, stop: raw[start:stop])
    assert all(hints(at, data, len(raw)) == [] for at, data in logged.reads)
    assert recognise(np.arange(64, dtype="<f8").tobytes(), len(raw)) is None
    assert btree_children(0, b"TREE\x00\x01\x01\x00" + bytes(40), len(raw)) == []  # a group's node: not chunks


def test_hinted_ranges_are_widened_to_windows_and_close_ones_joined(read_log):
    raw, _, addresses = read_log
    header = addresses["g0"]

    known = [(header, header + 512)] + [(a, a + n) for a, kind, n in _all_pointers(raw, header) if kind == "cont"]

    def cached(start, stop):  # the header HDF5 just read and its continuations: its B-tree and heap are not
        return raw[start:stop] if any(a <= start and stop <= b for a, b in known) else None

    def ranges(**options):
        return GroupHints(cached, **options)(header, raw[header:header + 512], len(raw))

    exact = ranges(merge_gap=0)
    assert len(exact) == 2 and all(stop - start < 4096 for start, stop in exact)  # its B-tree and its heap
    windows = ranges(window=65_536, merge_gap=0)
    assert all(start % 65_536 == 0 and (stop % 65_536 == 0 or stop == len(raw)) for start, stop in windows)
    assert all(any(a <= start and stop <= b for a, b in windows) for start, stop in exact)
    joined = ranges(window=65_536, merge_gap=len(raw))
    assert joined == [(windows[0][0], windows[-1][1])]


# --- on a streamed file ------------------------------------------------------------------------------


def _streamed_read(server, proxy, path, key, hint) -> tuple[dict, int, int]:
    """Read every object's attributes of ``path`` streamed cold (a fresh digest folder each time), with the read
    hint ``hint(remote)``; the values, the GET requests and the reads that waited for the network."""
    version = server.put_file(BUCKET, key, path)
    proxy.clear()
    remote = open_remote(f"{proxy.endpoint}/{BUCKET}/{key}?versionId={version}", fetch_bytes=65_536)
    remote.read_hint = hint(remote)
    with h5py.File(remote, "r") as f:
        values = _read_everything(f)
    remote.close()
    return values, len(proxy.requests(method="GET")), remote.stalls


def test_a_cold_streamed_read_waits_fewer_times_with_group_hints(server, proxy, scattered, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("VBO_BLOCK_DIGESTS", str(tmp_path / "plain"))
    plain, plain_gets, plain_stalls = _streamed_read(server, proxy, scattered, "plain.h5", lambda r: btree_children)
    monkeypatch.setenv("VBO_BLOCK_DIGESTS", str(tmp_path / "hinted"))
    hinted, hinted_gets, hinted_stalls = _streamed_read(
        server, proxy, scattered, "hinted.h5", lambda r: GroupHints(r.cached, window=65_536))
    assert hinted.keys() == plain.keys()
    assert all(np.array_equal(hinted[n][k], plain[n][k]) for n in plain for k in plain[n])
    assert hinted_stalls < plain_stalls  # fewer dependent round trips
    assert hinted_gets <= plain_gets  # ... and no more requests


def test_a_cold_streamed_experiment_waits_fewer_times_with_group_hints(server, proxy, experiment_nwb, tmp_path,
                                                                        monkeypatch):
    import pandas as pd

    import vbo
    import vbo.session

    remotes = []

    def run(make_hint, digests):
        monkeypatch.setenv("VBO_BLOCK_DIGESTS", str(tmp_path / digests))
        monkeypatch.setattr(vbo.session, "GroupHints", lambda cached, **kw: (remotes.append(cached.__self__),
                                                                             make_hint(cached, **kw))[1])
        version = server.put_file(BUCKET, f"{digests}.nwb", experiment_nwb)
        with vbo.BehaviorOphysExperiment.from_nwb_path(
                f"{proxy.endpoint}/{BUCKET}/{digests}.nwb?versionId={version}") as exp:
            return exp.metadata, exp.trials, remotes[-1].stalls

    plain_metadata, plain_trials, plain_stalls = run(lambda cached, **kw: btree_children, "plain")
    metadata, trials, stalls = run(prefetch.GroupHints, "hinted")
    assert metadata.keys() == plain_metadata.keys()
    pd.testing.assert_frame_equal(trials, plain_trials)
    assert stalls < plain_stalls
