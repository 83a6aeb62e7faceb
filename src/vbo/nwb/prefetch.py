"""Read hints for streamed HDF5 files: a metadata block that names the blocks HDF5 will read next.

HDF5 finds every metadata block from a previous one (``docs/format.md`` §13), so over a link with latency each
is one more round trip. Two kinds of hint shorten that chain:

- :func:`btree_children`: an internal node of a chunk index (a version-1 B-tree, §13.2) names its children;
  HDF5 reads them one after the other (a 140,000-frame trace table has ~35 leaves), a streamed file
  (:meth:`vbo.source.remote.RemoteFile.prefetch`) fetches them all in one parallel round before HDF5 asks.
- :class:`GroupHints`: the structures of groups (§13.4): a group's symbol table (B-tree, symbol nodes, local
  heap), the object headers of its members and their continuation blocks, starting from the root group the
  superblock names. When HDF5 reads a symbol node, the
  members it lists are looked at next (their object headers, and for a member group its heap and B-tree); the
  hint follows these pointers through the bytes already fetched and fetches where they leave them, one group
  level down at most, so that the members' blocks (which lie megabytes apart) arrive in one parallel round
  instead of one round trip each. Pointers are followed as fetched bytes arrive (:meth:`GroupHints.arrived`).
  A group named in ``deeper`` (the interval tables) is followed further down, its datasets of at most 256 KiB
  (table columns) to their data or chunk index and chunks (§13.5), with its whole extent fetched at once
  (§13.6); a dataset named in ``data_of`` (the session's start) is followed to its data with its header.

A hint only schedules fetches; the bytes are still checked like any others, and a wrong guess costs bytes, not
correctness. Files in other layouts (object header version 2, compact or dense link storage, 4-byte addresses)
get no group hints.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping

TREE_SIGNATURE = b"TREE"
SNOD_SIGNATURE = b"SNOD"
HEAP_SIGNATURE = b"HEAP"
GROUP_INDEX = 0  # node type of a group's B-tree
CHUNK_INDEX = 1  # node type of a chunked dataset's B-tree (0: a group's)
HEADER_BYTES = 24  # signature, type, level, entries used, left and right sibling addresses (8-byte addresses)
ADDRESS_BYTES = 8
MAX_RANK = 32  # HDF5's limit on dataset dimensions
UNDEFINED = (1 << 64) - 1  # the undefined address
ROOT_NAME = "/"  # the root group's name in ``skip`` and ``deeper`` (it has no entry in a parent's heap)

SUPERBLOCK_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ROOT_ENTRY_AT = {0: 56}  # where the root group's symbol table entry starts, by superblock version (h5py's: 0)
ENTRY_BYTES = 40  # a symbol table entry: name offset, header address, cache type, reserved, 16-byte scratch pad
GROUP_CACHE = 1  # cache type of an entry whose scratch pad holds the member group's B-tree and heap addresses
HEAP_HEADER_BYTES = 32  # HEAP, version, 3 reserved, data size, free-list offset, data address
OBJECT_HEADER_BYTES = 16  # version 1, reserved, message count (2), reference count (4), header size (4), padding
MESSAGE_HEADER_BYTES = 8  # type (2), size (2), flags (1), 3 reserved
DATASPACE, LAYOUT, ATTRIBUTE = 0x01, 0x08, 0x0C  # message types: a shape; where data are; an attribute
VLEN_CLASS = 9  # datatype class of variable-length data (strings): each element names a global heap object
GLOBAL_HEAP_BYTES = 4096  # a global heap collection is at least this size
MAX_ATTRIBUTE_ELEMENTS = 64  # vlen elements of one attribute looked at (a table's colnames: tens)
CONTINUATION, SYMBOL_TABLE = 0x10, 0x11  # message types: a continuation block; a group's B-tree and heap
CONTIGUOUS, CHUNKED = 1, 2  # layout classes (version-3 layout message)
SMALL_DATA_BYTES = 256 * 1024  # a dataset whose data are at most this size (a table column) has them fetched ahead
CHUNK_NODE_ENTRIES = 64  # a chunk index node holds up to 2K = 64 chunks (HDF5's default K of 32)
MAX_MESSAGE_TYPE = 0x18

# the bytes fetched for a structure whose size is not known before it is read (each within one block)
GUESS_BYTES = {"header": 512, "heap": HEAP_HEADER_BYTES, "tree": 544, "snod": 328}
MAX_FOLLOWED = 16384  # structures a GroupHints remembers (a bound on its memory, far above one session's)
MAX_STRUCTURE_BYTES = 64 * 1024  # a larger read is data, not a structure worth parsing
DEEPER_SPAN_BYTES = 8 << 20  # a group followed deeper has the span of its members' structures fetched, up to this
MERGE_GAP = 512 * 1024  # hinted windows closer than this are fetched as one range (a table's columns: 14 -> 7 GETs)
# the aligned window fetched around a hinted structure in a streamed NWB file: structures HDF5 reads one after the
# other often lie a few hundred kB apart (a cold experiment open: 10 GETs with 512 KiB, 13 with 256 KiB)
HINT_WINDOW_BYTES = 512 * 1024

Pointer = tuple[int, str, int, int]  # (address, kind, size in bytes or 0 if not known, group levels left)


def btree_children(offset: int, data: bytes | memoryview, file_size: int) -> list[tuple[int, int]]:
    """Byte ranges ``[(start, stop), ...]`` of the child nodes of the chunk-index B-tree node read at ``offset``.

    ``data`` is what HDF5 read there (a whole node: the children have the same size). Returns ``[]`` for
    anything that is not an internal node (level > 0) of a chunk index with 8-byte addresses, or whose layout
    cannot be told apart unambiguously.
    """
    if len(data) < HEADER_BYTES or data[5] == 0:
        return []
    found = chunk_node_pointers(bytes(data), file_size) or []
    return [(child, min(file_size, child + size)) for child, _, size in found]


def _children(data: bytes, used: int, key_bytes: int, file_size: int) -> list[int] | None:
    """The ``used`` child addresses if keys of ``key_bytes`` fit the node, else None.

    A chunk key is the chunk's stored size (4 bytes), its filter mask (4) and its offset in each dimension plus
    one more, 0 for every chunk (8 each); keys and child addresses alternate, with one closing key more.
    """
    stride = key_bytes + ADDRESS_BYTES
    if used == 0 or HEADER_BYTES + used * stride + key_bytes > len(data):
        return None
    children = []
    for i in range(used):
        key = HEADER_BYTES + i * stride
        if data[key + key_bytes - 8:key + key_bytes] != bytes(8):
            return None  # the extra dimension's offset of a chunk is 0 (the closing key's is not)
        child = int.from_bytes(data[key + key_bytes:key + stride], "little")
        if not 0 < child < file_size:
            return None
        children.append(child)
    return children


# --- group structures (docs/format.md §13.4) ---------------------------------------------------------


def _u(data: bytes, at: int, n: int = 8) -> int:
    return int.from_bytes(data[at:at + n], "little")


def _valid(address: int, file_size: int) -> bool:
    return 0 < address < file_size and address != UNDEFINED


def group_tree_children(data: bytes, file_size: int) -> tuple[str, list[int]] | None:
    """``("tree" | "snod", addresses)``: the children of a group B-tree node (its symbol nodes at level 0, its
    child nodes above), or None if ``data`` is not a whole group node with 8-byte addresses and lengths.

    A group node's keys are offsets into the group's local heap (8 bytes); keys and children alternate, with one
    key more than children."""
    if len(data) < HEADER_BYTES or data[:4] != TREE_SIGNATURE or data[4] != GROUP_INDEX:
        return None
    used = _u(data, 6, 2)
    if used == 0 or HEADER_BYTES + used * 16 + 8 > len(data):
        return None
    children = [_u(data, HEADER_BYTES + 8 + 16 * i) for i in range(used)]
    if not all(_valid(c, file_size) for c in children):
        return None
    return ("tree" if data[5] > 0 else "snod"), children


def symbol_node_members(data: bytes, file_size: int) -> list[tuple[int, int, int]] | None:
    """``[(header, btree, heap), ...]`` for the entries of a symbol node (``SNOD``): each member's object header
    address and, for a member group whose entry caches them, its B-tree and local heap addresses (else 0); None
    if ``data`` is not a whole version-1 symbol node."""
    if len(data) < 8 or data[:4] != SNOD_SIGNATURE or data[4] != 1:
        return None
    count = _u(data, 6, 2)
    if 8 + count * ENTRY_BYTES > len(data):
        return None
    members = []
    for i in range(count):
        entry = 8 + i * ENTRY_BYTES
        header = _u(data, entry + 8)
        if not _valid(header, file_size):
            continue  # a soft link: no object header
        btree = heap = 0
        if _u(data, entry + 16, 4) == GROUP_CACHE:
            btree, heap = _u(data, entry + 24), _u(data, entry + 32)
            if not (_valid(btree, file_size) and _valid(heap, file_size)):
                btree = heap = 0
        members.append((header, btree, heap))
    return members


def symbol_node_names(data: bytes) -> dict[int, int]:
    """``{header: name offset}`` for the entries of a whole version-1 symbol node (``data``): where each member's
    name starts in the parent group's local-heap data segment; ``{}`` if ``data`` is not one."""
    if len(data) < 8 or data[:4] != SNOD_SIGNATURE or data[4] != 1 or 8 + _u(data, 6, 2) * ENTRY_BYTES > len(data):
        return {}
    entries = (8 + i * ENTRY_BYTES for i in range(_u(data, 6, 2)))
    return {_u(data, entry + 8): _u(data, entry) for entry in entries}


def heap_name(names: bytes | None, offset: int) -> str | None:
    """The null-terminated name at ``offset`` of a local heap's data segment ``names`` (None if not there)."""
    end = names.find(b"\0", offset) if names is not None and offset < len(names) else -1
    return names[offset:end].decode("utf-8", "replace") if end > offset else None


def superblock_root(data: bytes, file_size: int) -> tuple[int, int, int] | None:
    """``(header, btree, heap)`` of the root group from a superblock of version 0 with 8-byte addresses and
    lengths (its root entry's scratch pad names the root's B-tree and heap, else 0), or None."""
    if data[:8] != SUPERBLOCK_SIGNATURE or len(data) < 16 or data[8] not in ROOT_ENTRY_AT or \
            data[13] != ADDRESS_BYTES or data[14] != ADDRESS_BYTES:
        return None
    at = ROOT_ENTRY_AT[data[8]]
    if len(data) < at + ENTRY_BYTES:
        return None
    members = symbol_node_members(b"SNOD\x01\x00\x01\x00" + data[at:at + ENTRY_BYTES], file_size)
    return members[0] if members else None


def local_heap_data(data: bytes, file_size: int) -> tuple[int, int] | None:
    """``(address, size)`` of the data segment of the local heap whose header is ``data``, or None."""
    if len(data) < HEAP_HEADER_BYTES or data[:4] != HEAP_SIGNATURE or data[4] != 0:
        return None
    size, address = _u(data, 8), _u(data, 24)
    if not _valid(address, file_size) or not 0 < size <= file_size - address:
        return None
    return address, size


def header_messages(data: bytes, header: bool) -> list[tuple[int, bytes]] | None:
    """The ``(type, body)`` messages of a version-1 object header (``header=True``: ``data`` starts with its
    16-byte prefix and may run past its end) or of one of its continuation blocks (``data`` is the whole block:
    its messages must fill it exactly); None if ``data`` does not look like one."""
    if header:
        if len(data) < OBJECT_HEADER_BYTES or data[0] != 1 or data[1] != 0 or _u(data, 4, 4) == 0:
            return None
        start, stop = OBJECT_HEADER_BYTES, OBJECT_HEADER_BYTES + _u(data, 8, 4)
        stop = min(stop, len(data))
    else:
        start, stop = 0, len(data)
    messages, at = [], start
    while at + MESSAGE_HEADER_BYTES <= stop:
        kind, size = _u(data, at, 2), _u(data, at + 2, 2)
        if kind > MAX_MESSAGE_TYPE or size % 8 or any(data[at + 5:at + 8]):
            return None
        messages.append((kind, data[at + MESSAGE_HEADER_BYTES:at + MESSAGE_HEADER_BYTES + size]))
        at += MESSAGE_HEADER_BYTES + size
    if not messages or (not header and at != stop):
        return None
    return messages


def small_data(messages: list[tuple[int, bytes]], file_size: int) -> list[tuple[int, str, int]]:
    """Where the data of a dataset of at most :data:`SMALL_DATA_BYTES` are, from its header's ``messages``: its
    contiguous bytes (``"data"``), or the root node of its chunk index (``"chunks"``, sized for a full node);
    ``[]`` for larger data, compact data (in the header already) and other layouts."""
    shape = next((body for kind, body in messages if kind == DATASPACE), None)
    layout = next((body for kind, body in messages if kind == LAYOUT), None)
    elements = _shape_elements(shape) if shape is not None else None
    if elements is None or layout is None or len(layout) < 18 or layout[0] != 3:
        return []
    if layout[1] == CONTIGUOUS:
        address, size = _u(layout, 2), _u(layout, 10)
        return [(address, "data", size)] if _valid(address, file_size) and 0 < size <= SMALL_DATA_BYTES else []
    if layout[1] != CHUNKED:
        return []
    dims, address = layout[2], _u(layout, 3)
    if len(layout) < 11 + 4 * dims or not _valid(address, file_size):
        return []
    item = _u(layout, 11 + 4 * (dims - 1), 4)  # the last "dimension" is the element size
    key = 8 + 8 * dims  # chunk size, filter mask, an offset per dimension
    node = HEADER_BYTES + CHUNK_NODE_ENTRIES * (key + ADDRESS_BYTES) + key
    return [(address, "chunks", node)] if 0 < elements * item <= SMALL_DATA_BYTES else []


def chunk_node_pointers(data: bytes, file_size: int) -> list[tuple[int, str, int]] | None:
    """The children of a chunk index node (``"chunks"``, above the leaves, each of the size of ``data``) or the
    chunks of a leaf (``"data"`` with their stored sizes); None if ``data`` is not a whole node with 8-byte
    addresses."""
    if len(data) < HEADER_BYTES or data[:4] != TREE_SIGNATURE or data[4] != CHUNK_INDEX:
        return None
    data = bytes(data)
    used, found = _u(data, 6, 2), None
    for rank in range(1, MAX_RANK + 1):
        key = 8 + 8 * (rank + 1)
        children = _children(data, used, key, file_size)
        if children is not None:
            if found is not None:
                return None  # two ranks fit: ambiguous
            found = [(child, "chunks", len(data)) if data[5] else  # all nodes of a tree have one size
                     (child, "data", _u(data, HEADER_BYTES + i * (key + ADDRESS_BYTES), 4))
                     for i, child in enumerate(children)]
    return found


def _shape_elements(space: bytes) -> int | None:
    """Elements of a dataspace message body (version 1 or 2; scalar: 1), or None if it is not one."""
    if len(space) < 4 or space[0] not in (1, 2):
        return None
    rank, first = space[1], 8 if space[0] == 1 else 4
    if space[0] == 2 and space[3] == 2:  # a null dataspace
        return 0
    if len(space) < first + 8 * rank:
        return None
    elements = 1
    for i in range(rank):
        elements *= _u(space, first + 8 * i)
    return elements


def attribute_heaps(body: bytes, file_size: int) -> list[int]:
    """The global heap collections that hold the values of a variable-length (text) attribute, from its message
    body (version 1: name, datatype and dataspace each padded to 8 bytes, then the data; each element is a
    4-byte length, the collection's address and a 4-byte index); ``[]`` for other attributes."""
    if len(body) < 8 or body[0] != 1:
        return []
    name, kind, space = _u(body, 2, 2), _u(body, 4, 2), _u(body, 6, 2)

    def padded(n: int) -> int:  # each part takes a multiple of 8 bytes
        return -(-n // 8) * 8

    at = 8 + padded(name)
    datatype = body[at:at + kind]
    at += padded(kind)
    elements = _shape_elements(body[at:at + space])
    at += padded(space)
    if not datatype or datatype[0] & 0x0F != VLEN_CLASS or not elements:
        return []
    found = []
    for i in range(min(elements, MAX_ATTRIBUTE_ELEMENTS)):
        element = at + 16 * i
        if element + 16 > len(body):
            break
        address = _u(body, element + 4)
        if _valid(address, file_size) and address not in found:
            found.append(address)
    return found


def header_pointers(data: bytes, header: bool, file_size: int, data_too: bool = True
                    ) -> list[tuple[int, str, int]] | None:
    """``[(address, kind, size), ...]``: the continuation blocks (``"cont"``) of the object header (or
    continuation block, ``header=False``) ``data``; for a group, its B-tree (``"tree"``) and local heap
    (``"heap"``); for a dataset of at most :data:`SMALL_DATA_BYTES`, where its data are (:func:`small_data`;
    unless ``data_too`` is false); the global heap collections of its text attributes (``"data"``,
    :func:`attribute_heaps`). None if ``data`` is not one."""
    messages = header_messages(data, header)
    if messages is None:
        return None
    found = small_data(messages, file_size) if data_too else []
    for kind, body in messages:
        if kind == CONTINUATION and len(body) >= 16 and _valid(_u(body, 0), file_size) and \
                0 < _u(body, 8) <= file_size - _u(body, 0):
            found.append((_u(body, 0), "cont", _u(body, 8)))
        elif kind == SYMBOL_TABLE and len(body) >= 16 and _valid(_u(body, 0), file_size) and \
                _valid(_u(body, 8), file_size):
            found += [(_u(body, 0), "tree", 0), (_u(body, 8), "heap", 0)]
        elif kind == ATTRIBUTE:
            found += [(address, "data", GLOBAL_HEAP_BYTES) for address in attribute_heaps(body, file_size)]
    return found


def pointers(kind: str, data: bytes, file_size: int, levels: int, data_too: bool = True) -> list[Pointer] | None:
    """The structures that the structure ``kind`` (read as ``data``) points at, with the group levels left
    to follow from each (one less below a symbol node), a dataset's small data only if ``data_too``; None if
    ``data`` is not such a structure."""
    if kind == "snod":
        members = symbol_node_members(data, file_size)
        if members is None:
            return None
        if levels <= 0:
            return []
        found = []
        for header, btree, heap in members:
            found.append((header, "header", 0, levels - 1))
            if btree:
                found += [(btree, "tree", 0, levels - 1), (heap, "heap", 0, levels - 1)]
        return found
    if kind == "superblock":
        root = superblock_root(data, file_size)
        if root is None:
            return None
        header, btree, heap = root
        return [(header, "header", 0, levels)] + ([(btree, "tree", 0, levels), (heap, "heap", 0, levels)]
                                                   if btree else [])
    if kind == "tree":
        children = group_tree_children(data, file_size)
        return None if children is None else [(c, children[0], 0, levels) for c in children[1]]
    if kind == "heap":
        segment = local_heap_data(data, file_size)
        return None if segment is None else [(segment[0], "data", segment[1], levels)]
    if kind in ("header", "cont"):
        found = header_pointers(data, kind == "header", file_size, data_too)
        return None if found is None else [(a, k, n, levels) for a, k, n in found]
    if kind == "chunks":
        found = chunk_node_pointers(data, file_size)
        return None if found is None else [(a, k, n, levels) for a, k, n in found if k != "data" or n > 0]
    return None


def recognise(data: bytes, file_size: int) -> str | None:
    """The kind of group structure ``data`` (a read of HDF5) starts with, by its signature or shape."""
    head = data[:4]
    if data[:8] == SUPERBLOCK_SIGNATURE:
        return "superblock"
    if head == SNOD_SIGNATURE:
        return "snod"
    if head == HEAP_SIGNATURE:
        return "heap"
    if head == TREE_SIGNATURE:
        return "tree" if len(data) > 4 and data[4] == GROUP_INDEX else None
    if header_messages(data, True) is not None:
        return "header"
    return None


class GroupHints:
    """A read hint (``hint(offset, data, file_size) -> [(start, stop), ...]``) that follows group structures.

    ``cached(start, stop)`` returns bytes already fetched (or None, without fetching). When HDF5 reads a group
    structure, its pointers are followed through cached bytes (the superblock → the root group's header, B-tree
    and heap; object header → continuation blocks and symbol table; B-tree → child nodes → symbol nodes; heap →
    its data; a symbol node → its members' headers, heaps and B-trees, ``levels`` group levels down at most;
    within a ``deeper`` group, a dataset's header → its data if small, :func:`small_data`) and the first
    structures not yet fetched are returned, each widened to the aligned ``window`` of bytes around it (what a
    read that misses would fetch) and windows less than ``merge_gap`` bytes apart joined (one request instead of
    two), to be fetched ahead in one parallel round. Structures not yet there are followed on a later read, or
    by :meth:`arrived` when fetched bytes arrive. A chunk index node gets :func:`btree_children`. Thread-safe.

    ``skip`` (``{group name: member names}``; the root group is :data:`ROOT_NAME`), if given, names members not
    to follow ahead: when a symbol node of a group so named is read, the members it lists under those names
    (looked up in the group's local heap) are left alone; their blocks are read when HDF5 reads the member,
    which then hints as usual. A group's name is looked up in its parent's heap (at its entry in the parent's
    symbol node, which HDF5 read to get there); a symbol node of a listed group waits until its own names are
    cached (HDF5 reads them to look a member up); a group whose name is not known is followed whole.

    ``deeper`` (``{group name: levels}``) names groups to follow further: when HDF5 looks into one (reads its
    symbol node), its members are followed ``levels`` group levels down instead of ``levels``, with the data of
    their small datasets (table columns), and the extent of the group (from its header to its parent's next
    member, at most :data:`DEEPER_SPAN_BYTES`) is fetched in the same round.

    ``inside`` (``{group name: member names}``) names members whose header a writer may place inside an earlier
    sibling's extent (pynwb's cached schemas, ``/specifications``, lie between the interval tables' headers and
    the last of their columns): they do not end a sibling's extent.

    ``data_of`` (``{group name: member names}``) names datasets followed to their small data whenever their
    group's symbol node is (the root's ``session_start_time``, whose data a writer keeps MBs from its header); as
    with ``skip``, the symbol node waits until its members' names are cached.
    """

    def __init__(self, cached: Callable[[int, int], bytes | None], levels: int = 1, window: int = 0,
                 merge_gap: int = MERGE_GAP, skip: Mapping[str, Collection[str]] | None = None,
                 deeper: Mapping[str, int] | None = None, inside: Mapping[str, Collection[str]] | None = None,
                 data_of: Mapping[str, Collection[str]] | None = None):
        self.cached, self.levels, self.window, self.merge_gap = cached, int(levels), int(window), int(merge_gap)
        self.skip = dict(skip or {})
        self.data_of = dict(data_of or {})
        self.deeper = dict(deeper or {})
        self.inside = dict(inside or {})
        self._heap_of: dict[int, int] = {}  # a group's B-tree node or symbol node -> the group's heap header
        self._entry_of: dict[int, tuple[int, int]] = {}  # a group's heap -> its parent's heap, its name's offset
        # a group's heap -> its header, and the later siblings' headers with their names' offsets in the parent's heap
        self._extent_of: dict[int, tuple[int, list[tuple[int, int]]]] = {}
        self._followed: dict[int, int] = {}  # address -> group levels it was followed with
        self._waiting: dict[int, Pointer] = {}  # not cached when last looked at: followed once it is
        self._asked: set[int] = set()  # addresses returned for fetching before
        self._spanned: set[int] = set()  # symbol nodes of ``deeper`` groups whose extent was fetched
        self._spans: list[tuple[int, int]] = []  # their extents, asked for after the structures (which HDF5 awaits)
        # structures within a ``deeper`` group, and the headers ``data_of`` names: their small data are followed
        self._below_deeper: set[int] = set()
        self._root_heap = 0  # the root group's heap (named by the superblock): its group name is ROOT_NAME
        self._lock = threading.Lock()  # asked by the reading thread and, on arrivals, by the fetching ones

    def __call__(self, offset: int, data, file_size: int) -> list[tuple[int, int]]:
        if len(data) > MAX_STRUCTURE_BYTES:
            return []
        data = bytes(data)
        chunks = btree_children(offset, data, file_size)
        if chunks:
            return chunks
        with self._lock:
            return self._after_read(offset, data, file_size)

    def arrived(self, file_size: int) -> list[tuple[int, int]]:
        """Windows to fetch next now that more bytes are cached: the structures waiting for their bytes are
        followed (so a chain of them is fetched one round trip per link, without waiting for HDF5's reads)."""
        with self._lock:
            return self._advance(None, file_size) if self._waiting else []

    def _after_read(self, offset: int, data: bytes, file_size: int) -> list[tuple[int, int]]:
        known = self._waiting.pop(offset, None)
        kind = known[1] if known is not None else recognise(data, file_size)
        first = None
        if kind is not None:  # what HDF5 read: followed with all levels, even if it was followed before
            self._followed.pop(offset, None)
            first = (offset, kind, known[2] if known is not None else 0, self.levels)
        return self._advance(first, file_size)

    def _advance(self, first: Pointer | None, file_size: int) -> list[tuple[int, int]]:
        """Follow ``first`` (what HDF5 just read, if anything), then every structure fetched ahead whose bytes
        may be there now; the windows to fetch next, then the extents of ``deeper`` groups."""
        fetch: dict[int, int] = {}
        waiting, self._waiting = self._waiting, {}
        if first is not None:
            self._follow(first, file_size, fetch)
        for pointer in waiting.values():
            self._follow(pointer, file_size, fetch)
        spans, self._spans = self._spans, []
        return self._windows(fetch, file_size) + spans

    def _windows(self, fetch: dict[int, int], file_size: int) -> list[tuple[int, int]]:
        """The ``{start: stop}`` ranges of ``fetch`` widened to aligned windows, those closer than the merge gap
        joined; in the order their first structure was named (what HDF5 read names what it reads next)."""
        w = self.window
        rank = {start: i for i, start in enumerate(fetch)}
        merged: list[list[int]] = []
        for start, stop in sorted(fetch.items()):
            first = rank[start]
            if w > 0:
                start, stop = start // w * w, min(file_size, -(-stop // w) * w)
            if merged and start - merged[-1][1] <= self.merge_gap:
                merged[-1][1], merged[-1][2] = max(merged[-1][1], stop), min(merged[-1][2], first)
            else:
                merged.append([start, stop, first])
        return [(start, stop) for start, stop, _ in sorted(merged, key=lambda m: m[2])]

    def _follow(self, pointer: Pointer, file_size: int, fetch: dict[int, int]) -> None:
        """Follow ``pointer`` and what it points at through cached bytes; where they run out, wait for the
        structure and (the first time) add its bytes to ``fetch``."""
        todo = [pointer]
        while todo:
            address, kind, size, levels = todo.pop()
            if self._followed.get(address, -1) >= levels or len(self._followed) >= MAX_FOLLOWED:
                continue
            length = size or self._length(kind, address, file_size)
            data = self.cached(address, min(file_size, address + length)) if length else None
            if data is None:
                if address not in self._asked and len(self._asked) < MAX_FOLLOWED:
                    self._asked.add(address)
                    fetch[address] = min(file_size, address + (length or GUESS_BYTES.get(kind, 8)))
                if kind != "data" and len(self._waiting) < MAX_FOLLOWED:
                    self._waiting[address] = (address, kind, size, levels)
                continue
            deeper = 0
            if kind == "snod" and self.deeper and levels > 0:  # a group HDF5 looks into (not one fetched ahead)
                deeper = self.deeper.get(self._group_name(address, file_size), 0)
                levels = max(levels, deeper)
            below = bool(deeper) or address in self._below_deeper  # small data are followed there only
            found = pointers(kind, data, file_size, levels, data_too=below) or []
            if below and len(self._below_deeper) < MAX_FOLLOWED:
                self._below_deeper.update(p[0] for p in found)
            if deeper and found and address not in self._spanned:  # its blocks lie together: all in this round
                self._spanned.add(address)
                lo, hi = self._extent(address, found, file_size)
                if hi - lo <= DEEPER_SPAN_BYTES:
                    self._spans.append((lo, min(file_size, hi)))
            if kind == "snod" and (self.skip or self.data_of) and found:
                found = self._by_name(address, data, found, file_size)
                if found is None:  # its members' names are not here yet: followed once they are
                    if len(self._waiting) < MAX_FOLLOWED:
                        self._waiting[address] = (address, kind, size, levels)
                    continue
            self._followed[address] = levels
            self._note_heaps(address, kind, data, found, file_size)
            todo += found

    def _note_heaps(self, address: int, kind: str, data: bytes, found: list[Pointer], file_size: int) -> None:
        """Remember the group heap of each B-tree node and symbol node in ``found`` (what ``address`` names) and,
        for a symbol node, where its member groups' names are."""
        if not (self.skip or self.deeper or self.data_of) or len(self._heap_of) + len(self._entry_of) >= MAX_FOLLOWED:
            return
        if kind == "tree":
            if address in self._heap_of:
                self._heap_of.update((child[0], self._heap_of[address]) for child in found)
            return
        for pointer, after in zip(found, found[1:]):  # a group's B-tree is named just before its heap
            if pointer[1] == "tree" and after[1] == "heap":
                self._heap_of[pointer[0]] = after[0]
                if kind == "superblock":
                    self._root_heap = after[0]
        if kind == "snod" and address in self._heap_of:
            offsets = symbol_node_names(data)
            members = symbol_node_members(data, file_size) or []
            headers = sorted(header for header, _, _ in members)
            for header, _, heap in members:
                if heap and header in offsets:
                    self._entry_of[heap] = (self._heap_of[address], offsets[header])
                    self._extent_of[heap] = (header, [(h, offsets.get(h, -1)) for h in headers if h > header])

    def _names(self, heap: int, file_size: int) -> bytes | None:
        """The data segment of the local heap whose header is at ``heap`` (the names of its group's members),
        if cached."""
        header = self.cached(heap, min(file_size, heap + HEAP_HEADER_BYTES))
        segment = local_heap_data(header, file_size) if header is not None else None
        return self.cached(segment[0], segment[0] + segment[1]) if segment is not None else None

    def _by_name(self, address: int, data: bytes, found: list[Pointer], file_size: int) -> list[Pointer] | None:
        """``found`` (the members of the symbol node ``data`` at ``address``) without those ``skip`` names for
        its group, the headers of those ``data_of`` names marked to be followed to their small data; ``found`` as
        is if the group is listed in neither (or its name is not known); None if it is but the names of its
        members are not cached yet."""
        group = self._group_name(address, file_size)
        skip, data_of = self.skip.get(group, ()), self.data_of.get(group, ())
        if not (skip or data_of):
            return found
        names = self._names(self._heap_of[address], file_size)
        if names is None:
            return None
        named = {header: heap_name(names, at) for header, at in symbol_node_names(data).items()}
        if data_of and len(self._below_deeper) < MAX_FOLLOWED:
            self._below_deeper.update(header for header, name in named.items() if name in data_of)
        skipped = {header for header, name in named.items() if name in skip}
        members = symbol_node_members(data, file_size) or []
        skipped |= {a for header, btree, heap_at in members if header in skipped for a in (btree, heap_at) if a}
        return [pointer for pointer in found if pointer[0] not in skipped]

    def _extent(self, address: int, found: list[Pointer], file_size: int) -> tuple[int, int]:
        """Where the blocks of the group whose symbol node is at ``address`` (naming ``found``) lie: from its
        header to the header of the next member of its parent in the file (a writer writes a group's members
        after it and before its next sibling; a sibling the parent lists in ``inside`` does not count); else the
        span of ``found``."""
        lo, hi = min(p[0] for p in found), max(p[0] for p in found) + max(self.window, 1)
        heap = self._heap_of.get(address, 0)
        if heap not in self._extent_of:
            return lo, hi
        header, later = self._extent_of[heap]
        parent = self._entry_of[heap][0]
        inside = self.inside.get(self._heap_group_name(parent, file_size) or "", ())
        names = self._names(parent, file_size) if inside else None
        after = next((h for h, at in later if heap_name(names, at) not in inside), file_size)
        return (min(lo, header), max(hi, after)) if header <= lo else (lo, hi)

    def _group_name(self, address: int, file_size: int) -> str | None:
        """The name of the group whose symbol node (or B-tree node) is at ``address``, if known: looked up in its
        parent's heap at its entry in the parent's symbol node (both read on the way here)."""
        return self._heap_group_name(self._heap_of.get(address, 0), file_size)

    def _heap_group_name(self, heap: int, file_size: int) -> str | None:
        """The name of the group whose local heap is at ``heap``, if known (see :meth:`_group_name`)."""
        if heap and heap == self._root_heap:
            return ROOT_NAME
        parent, offset = self._entry_of.get(heap, (0, 0))
        return heap_name(self._names(parent, file_size), offset) if parent else None

    def _length(self, kind: str, address: int, file_size: int) -> int:
        """The size of structure ``kind`` at ``address`` from its cached prefix (0: its prefix is not cached)."""
        prefix = self.cached(address, min(file_size, address + OBJECT_HEADER_BYTES))
        if prefix is None or len(prefix) < 8:
            return 0
        if kind == "snod":
            return 8 + _u(prefix, 6, 2) * ENTRY_BYTES
        if kind == "superblock":
            return ROOT_ENTRY_AT.get(prefix[8], 0) + ENTRY_BYTES
        if kind == "tree":
            return HEADER_BYTES + _u(prefix, 6, 2) * 16 + 8
        if kind == "header" and len(prefix) >= OBJECT_HEADER_BYTES:
            return OBJECT_HEADER_BYTES + _u(prefix, 8, 4)
        return GUESS_BYTES.get(kind, 0)
