"""Per-block blake2b digests of streamed object versions, kept in sidecar files.

A block's digest is recorded the first time the block is seen (from a verified download, or from a first
streamed read) and every later streamed read of the block must match it (``docs/format.md`` §2: objects are
versioned, so one version's bytes never change).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

DEFAULT_BLOCK_SIZE = 64 * 1024  # bytes per digest (and per cached block) of a new sidecar
DIGEST_DIR_ENV = "VBO_BLOCK_DIGESTS"
DIGEST_BYTES = 16  # blake2b-128 per block
_DIGEST_MAGIC = b"VBO-BLOCK-DIGESTS 1\n"


def default_digest_dir() -> Path:
    """Folder of the block-digest sidecars: ``$VBO_BLOCK_DIGESTS``, else ``~/.cache/vbo/block-digests``."""
    value = os.environ.get(DIGEST_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "vbo" / "block-digests"


def _block_digest(data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


class BlockDigests:
    """blake2b-128 digest of every fixed-size block of one object version, kept in a sidecar file.

    A block's digest is *recorded* the first time the block is seen — from a verified local download
    (:meth:`record_file`, trusted) or from a first streamed read — and every later streamed read of that block
    must match it. The sidecar is named by bucket, key and version id (ETag when the bucket keeps no versions),
    not by endpoint, so a mirror is checked against what the release bucket or the download delivered.
    """

    def __init__(self, path: Path | None, size: int, block_size: int):
        self.path, self.size, self.block_size = path, int(size), int(block_size)
        n = self.n_blocks
        self.digests = bytearray(n * DIGEST_BYTES)
        self.known = bytearray(n)  # 0 unknown, 1 learned from a stream, 2 from a verified file
        self._dirty = False
        self._lock = threading.Lock()

    @property
    def n_blocks(self) -> int:
        return -(-self.size // self.block_size) if self.size else 0

    @staticmethod
    def sidecar_path(directory: str | Path, bucket: str, key: str, identity: str) -> Path:
        """Sidecar file of one object version (a hash of bucket, key and version id / ETag)."""
        name = hashlib.blake2b(f"{bucket}\0{key}\0{identity}".encode(), digest_size=20).hexdigest()
        return Path(directory) / name[:2] / f"{name}.blocks"

    @classmethod
    def load(cls, path: Path, size: int, block_size: int) -> "BlockDigests":
        """The sidecar at ``path`` (its own block size wins), or an empty one with ``block_size``."""
        stored = cls._read(path)
        if stored is None:
            return cls(path, size, block_size)
        header, known, digests = stored
        out = cls(path, int(header["size"]), int(header["block_size"]))
        if out.size == size and len(known) == out.n_blocks and len(digests) == len(known) * DIGEST_BYTES:
            out.known[:], out.digests[:] = known, digests
        else:
            out.size_mismatch = int(header["size"])
        return out

    @staticmethod
    def _read(path: Path):
        try:
            raw = Path(path).read_bytes()
        except OSError:
            return None
        if not raw.startswith(_DIGEST_MAGIC):
            return None
        try:
            head_end = raw.index(b"\n", len(_DIGEST_MAGIC))
            header = json.loads(raw[len(_DIGEST_MAGIC):head_end])
            n = -(-int(header["size"]) // int(header["block_size"])) if int(header["size"]) else 0
        except (ValueError, KeyError, TypeError, ZeroDivisionError):
            return None  # a damaged sidecar is ignored (and rewritten on the next save)
        body = raw[head_end + 1:]
        if len(body) != n + n * DIGEST_BYTES:
            return None
        return header, bytearray(body[:n]), bytearray(body[n:n + n * DIGEST_BYTES])

    def check(self, block: int, data: bytes | memoryview) -> bool:
        """Record the digest of ``block`` if unknown; return False if it differs from the recorded one."""
        digest = _block_digest(data)
        lo = block * DIGEST_BYTES
        with self._lock:
            if self.known[block]:
                return self.digests[lo:lo + DIGEST_BYTES] == digest
            self.digests[lo:lo + DIGEST_BYTES] = digest
            self.known[block] = 1
            self._dirty = True
        return True

    def source(self, block: int) -> str:
        return {1: "an earlier streamed read", 2: "a verified local file"}.get(self.known[block], "nothing")

    def save(self) -> None:
        """Write the sidecar atomically, keeping digests another process recorded meanwhile."""
        if self.path is None or not self._dirty:
            return
        with self._lock:
            stored = self._read(self.path)
            if stored is not None and int(stored[0]["size"]) == self.size and \
                    int(stored[0]["block_size"]) == self.block_size:
                for b, flag in enumerate(stored[1]):
                    if flag > self.known[b]:  # a verified file's digest replaces a streamed one
                        self.known[b] = flag
                        self.digests[b * DIGEST_BYTES:(b + 1) * DIGEST_BYTES] = \
                            stored[2][b * DIGEST_BYTES:(b + 1) * DIGEST_BYTES]
            header = json.dumps({"size": self.size, "block_size": self.block_size}).encode()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(_DIGEST_MAGIC + header + b"\n" + bytes(self.known) + bytes(self.digests))
            os.replace(tmp, self.path)
            self._dirty = False

    @classmethod
    def record_file(cls, path: str | Path, bucket: str, key: str, identity: str, *,
                    directory: str | Path | None = None, block_size: int = DEFAULT_BLOCK_SIZE) -> Path:
        """Record the block digests of a verified local copy (e.g. after a download whose blake2b matched the
        manifest) as the trusted reference for streaming the same object version; returns the sidecar path.

        ``identity`` is the object's version id (or its ETag in an unversioned bucket).
        """
        size = Path(path).stat().st_size
        out = cls(cls.sidecar_path(directory or default_digest_dir(), bucket, key, identity), size, block_size)
        with open(path, "rb") as fh:
            for b in range(out.n_blocks):
                out.digests[b * DIGEST_BYTES:(b + 1) * DIGEST_BYTES] = _block_digest(fh.read(block_size))
                out.known[b] = 2
        out._dirty = True
        out.path.parent.mkdir(parents=True, exist_ok=True)
        if out.path.exists():
            out.path.unlink()  # the verified file replaces whatever streams recorded
        out.save()
        return out.path
