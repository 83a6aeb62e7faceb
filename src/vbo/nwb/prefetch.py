"""Read hints for streamed HDF5 files: a metadata block that names the blocks HDF5 will read next.

Walking a chunk index (a version-1 B-tree, ``docs/format.md`` §13.2) reads one node after the other: the root
names its children, HDF5 reads the first child, then the next... Over a link with latency that is one round
trip per node (a 140,000-frame trace table has ~35 leaves). :func:`btree_children` recognises an internal node
of a chunk index in the bytes HDF5 just read and returns where its children are, so that a streamed file
(:meth:`vbo.source.remote.RemoteFile.prefetch`) fetches them all in one parallel round before HDF5 asks.
A hint only schedules fetches; the bytes are still checked like any others, and a wrong guess costs bytes, not
correctness.
"""

from __future__ import annotations

TREE_SIGNATURE = b"TREE"
CHUNK_INDEX = 1  # node type of a chunked dataset's B-tree (0: a group's)
HEADER_BYTES = 24  # signature, type, level, entries used, left and right sibling addresses (8-byte addresses)
ADDRESS_BYTES = 8
MAX_RANK = 32  # HDF5's limit on dataset dimensions


def btree_children(offset: int, data: bytes | memoryview, file_size: int) -> list[tuple[int, int]]:
    """Byte ranges ``[(start, stop), ...]`` of the child nodes of the chunk-index B-tree node read at ``offset``.

    ``data`` is what HDF5 read there (a whole node: the children have the same size). Returns ``[]`` for
    anything that is not an internal node (level > 0) of a chunk index with 8-byte addresses, or whose layout
    cannot be told apart unambiguously.
    """
    if len(data) < HEADER_BYTES or bytes(data[:4]) != TREE_SIGNATURE or data[4] != CHUNK_INDEX or data[5] == 0:
        return []
    used = int.from_bytes(bytes(data[6:8]), "little")
    found = [children for rank in range(1, MAX_RANK + 1)
             if (children := _children(bytes(data), used, 8 + 8 * (rank + 1), file_size)) is not None]
    if len(found) != 1:
        return []
    return [(child, min(file_size, child + len(data))) for child in found[0]]


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
