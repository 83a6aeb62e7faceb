"""Learned read plans: which blocks each phase of reading one object version touched, to fetch them at once.

Reading an HDF5 file over byte ranges costs one round trip per dependent metadata read (an object header names
the next, a B-tree node its children). A :class:`ReadPlan` remembers, per named *phase* (opening the file, or
reading one member such as ``metadata`` or ``trials``), the blocks that the phase's small reads (at most
:data:`SMALL_READ_BYTES`: headers, B-tree nodes, heaps, small datasets) touched. The next time the same object
version is read, each phase starts by fetching its blocks in one parallel, coalesced round, so the reads that
follow are served from the block cache. Bulk data (e.g. the chunks of a trace table) is not recorded; its reads
are prefetched from the chunk index instead.

A plan is a small JSON sidecar next to the block digests of the same object version (same name, suffix
``.plan``); it holds no bytes, only block numbers, so it is never trusted for data: every block fetched because
of it is checked like any other (:class:`~vbo.source.digests.BlockDigests`, response checks). A damaged, foreign
or mismatched plan is ignored.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

SMALL_READ_BYTES = 64 * 1024  # reads up to this size are metadata-like and recorded
MAX_PLAN_BYTES = 16 << 20  # blocks kept per phase (at most), in the order they were first touched
PLAN_VERSION = 1
MAX_NEXT = 4  # phases remembered as following one phase


def plan_path(digest_sidecar: Path) -> Path:
    """The plan file of the object version whose block-digest sidecar is ``digest_sidecar``."""
    return digest_sidecar.with_suffix(".plan")


class ReadPlan:
    """Blocks touched per phase of reading one object version (``size`` bytes, ETag ``etag``, in blocks of
    ``block_size``); thread-safe. :meth:`touch` records, :meth:`blocks` answers, :meth:`save` merges and writes."""

    def __init__(self, path: Path | None, size: int, etag: str | None, block_size: int,
                 phases: dict[str, list[int]] | None = None, following: dict[str, list[str]] | None = None):
        self.path, self.size, self.etag, self.block_size = path, int(size), etag, int(block_size)
        self._stored: dict[str, list[int]] = dict(phases or {})
        self._new: dict[str, dict[int, None]] = {}  # insertion-ordered sets
        self._next: dict[str, list[str]] = dict(following or {})  # phase -> phases that started after it
        self._next_changed = False
        self._lock = threading.Lock()

    @property
    def max_blocks(self) -> int:
        return max(1, MAX_PLAN_BYTES // self.block_size)

    @classmethod
    def load(cls, path: Path) -> ReadPlan | None:
        """The plan stored at ``path``, or None (missing, damaged, or another format)."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            if raw.get("format") != PLAN_VERSION:
                return None
            phases = {str(name): _expand(runs) for name, runs in dict(raw["phases"]).items()}
            following = {str(a): [str(b) for b in list(after)] for a, after in dict(raw.get("next", {})).items()}
            return cls(Path(path), int(raw["size"]), raw.get("etag"), int(raw["block_size"]), phases, following)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def matches(self, size: int, etag: str | None, block_size: int) -> bool:
        """True if the plan was recorded for this size, ETag and block size."""
        return self.size == int(size) and self.block_size == int(block_size) and \
            (self.etag is None or etag is None or self.etag == etag)

    def blocks(self, phase: str) -> list[int]:
        """The blocks recorded for ``phase`` (stored and new), in the order first touched."""
        with self._lock:
            seen = dict.fromkeys(self._stored.get(phase, ()))
            seen.update(self._new.get(phase, {}))
        n_blocks = -(-self.size // self.block_size)
        return [b for b in seen if 0 <= b < n_blocks][:self.max_blocks]

    def has(self, phase: str) -> bool:
        return bool(self._stored.get(phase))

    def follow(self, previous: str, phase: str) -> None:
        """Record that ``phase`` started right after ``previous`` (kept: the last :data:`MAX_NEXT` such phases)."""
        with self._lock:
            after = self._next.get(previous, [])
            if after[:1] != [phase]:
                self._next[previous] = ([phase] + [p for p in after if p != phase])[:MAX_NEXT]
                self._next_changed = True

    def next_phases(self, phase: str) -> list[str]:
        """The phases that started right after ``phase`` before, most recent first."""
        return list(self._next.get(phase, ()))

    def touch(self, phase: str, start: int, stop: int) -> None:
        """Record that ``phase`` read bytes ``[start, stop)`` (a small read)."""
        first, last = start // self.block_size, (max(start, stop - 1)) // self.block_size
        with self._lock:
            new = self._new.setdefault(phase, {})
            known = self._stored.get(phase, ())
            for block in range(first, last + 1):
                if block not in new and len(new) < self.max_blocks and block not in known:
                    new[block] = None

    def save(self) -> None:
        """Merge what was recorded into the stored plan (re-read first: another process may have saved) and
        write it atomically; does nothing without new blocks or a path. An unwritable folder is ignored."""
        with self._lock:
            if self.path is None or not (any(self._new.values()) or self._next_changed):
                return
            stored = ReadPlan.load(self.path)
            merged = dict(stored._stored) if stored is not None and \
                stored.matches(self.size, self.etag, self.block_size) else {}
            for phase, blocks in {**self._stored, **{p: list(b) for p, b in self._new.items()}}.items():
                order = dict.fromkeys(merged.get(phase, []))
                order.update(dict.fromkeys(self._stored.get(phase, [])))
                order.update(dict.fromkeys(blocks))
                merged[phase] = list(order)[:self.max_blocks]
            following = {**(stored._next if stored is not None and stored.matches(self.size, self.etag, self.block_size)
                            else {}), **self._next}
            body = {"format": PLAN_VERSION, "size": self.size, "etag": self.etag, "block_size": self.block_size,
                    "phases": {name: _runs(blocks) for name, blocks in merged.items()}, "next": following}
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_text(json.dumps(body, separators=(",", ":")), encoding="utf-8")
                os.replace(tmp, self.path)
            except OSError:
                return  # a read-only home: the plan is simply not kept
            self._stored, self._next = merged, following
            self._new, self._next_changed = {}, False


def _runs(blocks: list[int]) -> list[list[int]]:
    """``[first, count]`` runs of consecutive blocks, in the given order (compact JSON)."""
    runs: list[list[int]] = []
    for block in blocks:
        if runs and block == runs[-1][0] + runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([block, 1])
    return runs


def _expand(runs) -> list[int]:
    return [int(first) + i for first, count in runs for i in range(int(count))]
