"""vbo.nwb.prefetch: the HDF5 structures that read hints follow, checked against what h5py reads and reports, and
the hints at work on a streamed file (moto's S3 server behind the fault proxy of ``s3_server.py``)."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest

from s3_server import module_proxy, moto_s3, proxy, server  # noqa: F401 (fixtures)
from vbo.nwb import prefetch
from vbo.nwb.prefetch import (GroupHints, attribute_heaps, btree_children, chunk_node_pointers, group_tree_children,
                              header_messages, header_pointers, local_heap_data, recognise, small_data,
                              superblock_root, symbol_node_members)
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


def _member_headers_hinted(read_log, root: bool = False, **options) -> set[str]:
    """The members of g0-g3 (``root``: the root's members) whose object headers a GroupHints names (a fetched
    range covers them) when h5py's reads are replayed through it, its cache holding every byte but those
    headers (until h5py reads them)."""
    raw, reads, addresses = read_log
    members = {at: path for path, at in addresses.items()
               if ("/" not in path if root else path.startswith("g") and "/" in path)}

    read: set[int] = set()

    def cached(start, stop):
        return None if any(start < at + 512 and at < stop for at in members.keys() - read) else raw[start:stop]

    hints, named = GroupHints(cached, merge_gap=0, **options), set()
    for at, data in reads:
        read.add(at)
        named |= {header for start, stop in hints(at, data, len(raw)) for header in members if start <= header < stop}
    return {members[at] for at in named}


def test_group_hints_do_not_follow_the_members_they_are_told_to_skip(read_log):
    everything = _member_headers_hinted(read_log)  # of g0/d0 ... g3/d3, all but those h5py reads first
    skipped = {path for path in everything if path.split("/")[1] in {"d1", "d2"}}
    assert len(everything) >= 12 and len(skipped) >= 6
    assert _member_headers_hinted(read_log, skip={f"g{g}": {"d1", "d2"} for g in range(4)}) == everything - skipped
    in_g1 = {path for path in skipped if path.startswith("g1/")}  # the names skipped in group g1 only
    assert in_g1 and _member_headers_hinted(read_log, skip={"g1": {"d1", "d2"}}) == everything - in_g1


def test_the_root_group_is_skipped_by_its_own_name(read_log):
    """The root has no entry in a parent's heap: ``skip`` names it ``ROOT_NAME`` ("/")."""
    from vbo.nwb.prefetch import ROOT_NAME

    everything = _member_headers_hinted(read_log, root=True)
    assert {"g1", "g3"} <= everything
    assert _member_headers_hinted(read_log, root=True, skip={ROOT_NAME: {"g1", "g3"}}) == everything - {"g1", "g3"}
    assert _member_headers_hinted(read_log, root=True, skip={"g1": {"g3"}}) == everything, \
        "a group's own skip list leaves the root alone"


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
    assert len(exact) == 3 and all(stop - start <= 4096 for start, stop in exact)  # B-tree, heap, text attributes
    windows = ranges(window=65_536, merge_gap=0)
    assert all(start % 65_536 == 0 and (stop % 65_536 == 0 or stop == len(raw)) for start, stop in windows)
    assert all(any(a <= start and stop <= b for a, b in windows) for start, stop in exact)
    joined = ranges(window=65_536, merge_gap=len(raw))
    assert joined == [(min(w[0] for w in windows), max(w[1] for w in windows))]


def _header_messages(raw: bytes, header: int) -> list[tuple[int, bytes]]:
    """The messages of the object header at ``header`` and of its continuation blocks."""
    found, blocks = [], [(raw[header:header + 16 + int.from_bytes(raw[header + 8:header + 12], "little")], True)]
    while blocks:
        data, first = blocks.pop()
        for kind, body in header_messages(data, first):
            found.append((kind, body))
            if kind == 0x10:
                address, size = int.from_bytes(body[:8], "little"), int.from_bytes(body[8:16], "little")
                blocks.append((raw[address:address + size], False))
    return found


def _chunks_named(raw: bytes, pointer: tuple[int, str, int]) -> set[tuple[int, int]]:
    """The ``(address, size)`` chunks a chunk index names, following its nodes from ``pointer`` down."""
    address, kind, size = pointer
    if kind == "data":
        return {(address, size)}
    return set().union(*(_chunks_named(raw, child) for child in chunk_node_pointers(raw[address:address + size],
                                                                                      len(raw))))


def test_small_datasets_name_their_data_as_h5py_finds_it(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("contiguous", data=np.arange(1000.0))
        f.create_dataset("column", data=np.arange(1000.0), chunks=(200,), maxshape=(None,))  # one leaf, 5 chunks
        f.create_dataset("deep", data=np.arange(4000, dtype="i4"), chunks=(20,), maxshape=(None,))  # 200 chunks
        f.create_dataset("table", data=np.ones((300, 3)), chunks=(64, 2), compression="gzip")  # 2-D, filtered
        f.create_dataset("big", data=np.zeros(40_000))  # 320 kB: left to HDF5
        f.create_dataset("big_chunked", data=np.zeros(40_000), chunks=(1000,))
        compact = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        compact.set_layout(h5py.h5d.COMPACT)
        h5py.h5d.create(f.id, b"compact", h5py.h5t.IEEE_F64LE, h5py.h5s.create_simple((4,)), dcpl=compact).write(
            h5py.h5s.ALL, h5py.h5s.ALL, np.arange(4.0))
        f.create_dataset("scalar", data=3.5)
    raw = path.read_bytes()
    with h5py.File(path, "r") as f:
        def pointers_of(name):
            return small_data(_header_messages(raw, h5py.h5o.get_info(f[name].id).addr), len(raw))

        def chunks_of(name):
            ds = f[name]
            return {(info.byte_offset, info.size) for info in (ds.id.get_chunk_info(i)
                                                                for i in range(ds.id.get_num_chunks()))}

        assert pointers_of("contiguous") == [(f["contiguous"].id.get_offset(), "data", 8000)]
        for name in ("column", "deep", "table"):
            (root,) = pointers_of(name)
            assert root[1] == "chunks" and raw[root[0]:root[0] + 4] == b"TREE"
            assert _chunks_named(raw, root) == chunks_of(name), name
        assert len(chunks_of("deep")) == 200  # more than a node holds: an index of two levels, all followed
        assert pointers_of("big") == [] and pointers_of("big_chunked") == []
        assert pointers_of("compact") == [] and np.array_equal(f["compact"][:], np.arange(4.0))  # in its header
        assert pointers_of("scalar") == [(f["scalar"].id.get_offset(), "data", 8)]
    assert chunk_node_pointers(b"TREE\x00\x00\x01\x00" + bytes(40), len(raw)) is None  # a group's node
    assert small_data([], len(raw)) == []


def test_text_attributes_name_the_global_heaps_hdf5_reads_for_them(tmp_path):
    path = tmp_path / "attributes.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("g")
        group.attrs["scalar"] = "a text"  # h5py stores str as variable-length UTF-8
        group.attrs["array"] = np.array(["x", "yy", "zzz"], dtype=h5py.string_dtype())
        group.attrs["number"] = 3.5
        f.create_dataset("pad", data=np.zeros(50_000))  # the next global heap lies elsewhere
        f.create_dataset("d", data=np.arange(3.0)).attrs["unit"] = "s"
        f["d"].attrs["fixed"] = np.bytes_("fixed length")
    raw = path.read_bytes()
    for name in ("g", "d"):
        logged = LoggedBytes(raw)
        with h5py.File(path, "r") as f:
            header = h5py.h5o.get_info(f[name].id).addr
        with h5py.File(logged, "r") as f:
            before = len(logged.reads)
            values = {k: f[name].attrs[k] for k in f[name].attrs}
        heaps = {a for kind, body in _header_messages(raw, header) if kind == 0x0C
                 for a in attribute_heaps(body, len(raw))}
        assert len(heaps) == 1 and all(raw[h:h + 4] == b"GCOL" for h in heaps)
        assert {at for at, data in logged.reads[before:] if data[:4] == b"GCOL"} == heaps  # what h5py reads
        assert values["scalar" if name == "g" else "unit"] in ("a text", "s")
    assert attribute_heaps(bytes(8), len(raw)) == []


def test_group_hints_follow_what_arrives_without_waiting_for_hdf5(read_log):
    """Fetched bytes that arrive are followed at once: from g0's header (read by HDF5) to its B-tree and heap, to
    its symbol node, to its members' headers, with no read by HDF5 in between."""
    raw, _, addresses = read_log
    header = addresses["g0"]
    arrived: list[tuple[int, int]] = [(header, header + 4096)]

    def cached(start, stop):
        return raw[start:stop] if any(a <= start and stop <= b for a, b in arrived) else None

    hints = GroupHints(cached, merge_gap=0)
    rounds = [hints(header, raw[header:header + 512], len(raw))]
    while rounds[-1]:
        arrived += rounds[-1]  # what was asked for arrives
        rounds.append(hints.arrived(len(raw)))
    named = {start for ranges in rounds for start, _ in ranges}
    members = {addresses[f"g0/d{m}"] for m in range(4)}
    assert members <= named | {m for m in members if header <= m < header + 4096}  # (or there from the start)
    assert len(rounds) >= 4  # B-tree and heap, symbol node, member headers, the members' data
    assert hints.arrived(len(raw)) == []  # nothing left waiting


def _nested_file(path, pad: int, member_pad: int = 0) -> dict[str, int]:
    """/outer/g0 ... /outer/g3, each with small datasets (chunked, as pynwb writes table columns, with
    ``member_pad`` float64 after each) and ``pad`` float64 after it, and /after written last; the object header
    addresses."""
    with h5py.File(path, "w") as f:
        for g in range(4):
            for m in range(3):
                f.create_dataset(f"outer/g{g}/d{m}", data=np.arange(8.0) + m, chunks=True, maxshape=(None,))
                if member_pad:
                    f.create_dataset(f"outer/pad{g}_{m}", data=np.zeros(member_pad))
            f.create_dataset(f"outer/pad{g}", data=np.zeros(pad))
        f.create_dataset("after/x", data=np.zeros(100_000))
    with h5py.File(path, "r") as f:
        return _addresses(f)


def _hinted_looking_into_outer(path, group: str = "outer", **options) -> list[tuple[int, int]]:
    """The ranges a GroupHints asks for while h5py lists ``group`` (reads its symbol node, not its members'),
    everything asked arriving at once and being followed."""
    raw = path.read_bytes()
    logged = LoggedBytes(raw)
    with h5py.File(logged, "r") as f:
        list(f[group])
    have: list[tuple[int, int]] = []

    def cached(start, stop):  # the bytes if the ranges read and asked for cover them (as cached blocks do)
        covered = start
        for a, b in sorted(have):
            if a <= covered < b:
                covered = b
        return raw[start:stop] if covered >= stop else None

    hints = GroupHints(cached, merge_gap=0, **options)
    asked = []
    for at, data in logged.reads:  # replay: each read's bytes and everything hinted so far are there
        have.append((at, at + len(data)))
        more = hints(at, data, len(raw))
        while more:
            asked += more
            have += more
            more = hints.arrived(len(raw))
    return asked


def test_a_group_named_deeper_is_followed_further_down(tmp_path):
    path = tmp_path / "spread.h5"
    addresses = _nested_file(path, pad=400_000)  # 3.2 MB after each group: /outer spans more than is fetched whole
    members = {addresses[f"outer/g{g}/d{m}"] for g in range(4) for m in range(3)}

    def covered(ranges):  # the member headers among the ranges asked for
        return {m for m in members if any(lo <= m and m + 16 <= hi for lo, hi in ranges)}

    plain = covered(_hinted_looking_into_outer(path))
    assert covered(_hinted_looking_into_outer(path, deeper={"outer": 2})) == members
    assert len(plain) <= 4  # one group level down: /outer's groups, not their datasets (but a neighbour's bytes)
    assert covered(_hinted_looking_into_outer(path, deeper={"elsewhere": 2})) == plain


def test_a_group_named_deeper_is_fetched_whole_in_one_range(tmp_path):
    def one_range_covers_all(pad):
        path = tmp_path / f"pad{pad}.h5"
        addresses = _nested_file(path, pad=pad)
        members = [addresses[f"outer/g{g}/d{m}"] for g in range(4) for m in range(3)]
        ranges = _hinted_looking_into_outer(path, deeper={"outer": 2})
        assert len(ranges) == len(set(ranges))  # nothing asked twice
        return any(lo <= addresses["outer"] and lo <= min(members) and max(members) + 16 <= hi for lo, hi in ranges)

    assert one_range_covers_all(pad=20_000)  # 0.6 MB: its structures and small data in one round
    assert not one_range_covers_all(pad=400_000)  # 13 MB: more than DEEPER_SPAN_BYTES, followed piece by piece


def test_a_member_named_inside_does_not_end_a_siblings_extent(tmp_path):
    """pynwb gives ``/specifications`` its header before the last interval table's columns are written: named in
    ``inside`` for its parent, it does not end ``/intervals``' extent, which then reaches the next member."""
    path = tmp_path / "inside.h5"
    with h5py.File(path, "w") as f:
        for g in range(3):
            f.create_dataset(f"top/outer/g{g}/d", data=np.arange(8.0), chunks=True, maxshape=(None,))
        f.create_group("top/spec")  # its header lies before the last member's
        f.create_dataset("top/outer/g3/d", data=np.arange(8.0), chunks=True, maxshape=(None,))
        f.create_dataset("top/after/x", data=np.zeros(1000))
    with h5py.File(path, "r") as f:
        addresses = _addresses(f)
    assert addresses["top/outer"] < addresses["top/spec"] < addresses["top/outer/g3/d"] < addresses["top/after"]

    def whole(**inside):  # one range from the group's header to its last member's
        ranges = _hinted_looking_into_outer(path, "top/outer", deeper={"outer": 2}, **inside)
        return any(lo <= addresses["top/outer"] and addresses["top/outer/g3/d"] + 16 <= hi for lo, hi in ranges)

    assert not whole()
    assert whole(inside={"top": {"spec"}})
    assert not whole(inside={"top": {"other"}}) and not whole(inside={"elsewhere": {"spec"}})


def test_members_named_in_data_of_are_followed_to_their_data(tmp_path):
    """pynwb writes the root's small data MBs away from their headers: a dataset that ``data_of`` names for its
    group (the root by its own name) has its data fetched with its header, when its group is looked into."""
    from vbo.nwb.prefetch import ROOT_NAME

    path = tmp_path / "root_data.h5"
    with h5py.File(path, "w") as f:
        for name in ("start", "other", "inner/start"):  # each one's data far from every header
            f.create_dataset(f"pad/{name.replace('/', '_')}", data=np.zeros(200_000))
            f.create_dataset(name, data=np.arange(300.0))
    with h5py.File(path, "r") as f:
        data = {name: (f[name].id.get_offset(), f[name].id.get_offset() + 32) for name in ("start", "other",
                                                                                             "inner/start")}

    def fetched(**options) -> set[str]:
        ranges = _hinted_looking_into_outer(path, "/", **options)
        return {name for name, (lo, hi) in data.items() if any(a <= lo and hi <= b for a, b in ranges)}

    assert fetched() == set()
    assert fetched(data_of={ROOT_NAME: {"start"}}) == {"start"}  # not a sibling's, nor a deeper namesake's
    assert fetched(data_of={"inner": {"start"}}) == set()  # a group not looked into


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
            return exp.metadata, exp.trials, exp.cell_specimen_table, remotes[-1].stalls

    plain_metadata, plain_trials, plain_cells, plain_stalls = run(lambda cached, **kw: btree_children, "plain")
    metadata, trials, cells, stalls = run(prefetch.GroupHints, "hinted")
    assert metadata.keys() == plain_metadata.keys()
    pd.testing.assert_frame_equal(trials, plain_trials)
    pd.testing.assert_frame_equal(cells, plain_cells)
    assert stalls < plain_stalls


def test_a_cold_streamed_group_named_deeper_is_read_with_every_block_foreseen(server, proxy, tmp_path, monkeypatch):
    import vbo.source.remote

    path = tmp_path / "tables.h5"
    _nested_file(path, pad=0, member_pad=60_000)  # 0.5 MB between the columns: 6 MB in all
    monkeypatch.setattr(vbo.source.remote, "AROUND_MAX_BYTES", 4096)  # no growing windows: as in a 1 GB file

    def read_outer(deeper, digests):
        monkeypatch.setenv("VBO_BLOCK_DIGESTS", str(tmp_path / digests))
        version = server.put_file(BUCKET, f"{digests}.h5", path)
        remote = open_remote(f"{proxy.endpoint}/{BUCKET}/{digests}.h5?versionId={version}", block_size=4096,
                             fetch_bytes=4096, tail_bytes=4096)
        remote.read_hint = GroupHints(remote.cached, window=4096, deeper=deeper)
        with h5py.File(remote, "r") as f:
            values = {f"{g}/{d}": f["outer"][g][d][:] for g in sorted(f["outer"]) if g.startswith("g")
                      for d in sorted(f["outer"][g])}
        remote.close()
        return values, remote.misses

    plain, plain_misses = read_outer({}, "plain-tables")
    deeper, misses = read_outer({"outer": 2}, "deeper-tables")
    assert len(plain) == 12 and all(np.array_equal(deeper[k], plain[k]) for k in plain)
    assert plain_misses >= 2  # the columns' chunk indexes and chunks: HDF5 asked before any hint did
    assert misses == 0  # every block was asked for before HDF5 read it


def test_a_failing_hint_costs_the_prefetch_never_the_read(server, proxy, scattered, tmp_path, monkeypatch):
    class Broken:  # names the whole file once (so that HDF5 waits for fetches that end in arrived()), then fails
        calls = arrivals = 0

        def __call__(self, offset, data, size):
            Broken.calls += 1
            if Broken.calls == 1:
                return [(0, size)]
            raise IndexError("a parser bug")

        def arrived(self, size):
            Broken.arrivals += 1
            raise IndexError("a parser bug")

    monkeypatch.setenv("VBO_BLOCK_DIGESTS", str(tmp_path / "plain"))
    plain, _, _ = _streamed_read(server, proxy, scattered, "plain-broken.h5", lambda r: btree_children)
    monkeypatch.setenv("VBO_BLOCK_DIGESTS", str(tmp_path / "broken"))
    values, _, _ = _streamed_read(server, proxy, scattered, "broken.h5", lambda r: Broken())
    assert Broken.calls > 10 and Broken.arrivals > 0
    assert values.keys() == plain.keys()
    assert all(np.array_equal(values[n][k], plain[n][k]) for n in plain for k in plain[n])
