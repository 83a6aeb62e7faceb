"""A read-only seekable binary file over byte ranges of one S3 object version (what ``h5py.File`` opens).

Range reads through a bounded block cache, read-ahead on sequential misses, parallel prefetch of known
ranges, and response and block checks (:class:`~vbo.source.digests.BlockDigests`).
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from vbo.errors import S3Error, StreamIntegrityError, UnsafeKeyError
from vbo.source.digests import DEFAULT_BLOCK_SIZE, BlockDigests, default_digest_dir
from vbo.source.plan import SMALL_READ_BYTES, ReadPlan, plan_path
from vbo.source.s3 import (RangeClient, as_s3_error, backoff_delay, error_code, head_object, is_client_error,
                           is_retryable, parse_object_url, typed_s3_error)

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
DEFAULT_PARALLEL = 32  # range requests in flight at once (prefetch; per-connection throughput is limited)
DEFAULT_FETCH_BYTES = 256 * 1024  # a read that misses fetches the aligned group of blocks of this size around it
AROUND_MAX_BYTES = 4 << 20  # largest window prefetched around clustered misses
PLAN_MERGE_GAP = 1 << 20  # a planned round fetches gaps up to this size rather than add a request
PLAN_REQUEST_BYTES = 512 * 1024  # ... in requests of at most this size, in parallel
PLAN_GAP_SHARE = 1.5  # ... or smaller gaps, if fetching those would take more than this many times the planned bytes
NEXT_PHASE_BYTES = 1 << 20  # the open also fetches the plans of the phases that followed it, up to this much
FOLLOWING_PHASE_BYTES = 6 << 20  # ... and a member's round those of the members that followed it, up to this much
# the planned open round fetches gaps up to this size rather than add a request, and no larger ones: its requests
# run in parallel, and a request grown past a connection's first window (≈ 256 KiB) costs another round trip
# (a release-storage file keeps the blocks of the open and metadata in ~10 places across 1.1 GB)
OPEN_JOIN_GAP = 192 * 1024
OPEN_MAX_REQUESTS = 10  # ... and if that still makes more requests, the closest (up to PLAN_MERGE_GAP apart) are joined
OPEN_FOLLOWER_FIRST = "metadata"  # the phase (vbo.session's member) read after nearly every open: fetched ahead first
OPEN_PHASE = "open"
# a hinted range of the open (at most two 512 KiB hint windows joined: a root symbol node and the session's start
# beside it) goes out as one request, not cut in two: the open's ≤ 10 requests; later hints are cut for parallelism
OPEN_HINT_REQUEST_BYTES = 1 << 20


# --- remote file -------------------------------------------------------------------------------------


class RemoteFile(io.RawIOBase):
    """Read-only, seekable binary file over byte ranges of one S3 object version.

    Reads are served from fixed-size blocks fetched with ranged GETs (contiguous missing blocks in one
    request) and kept in an LRU cache of at most ``cache_bytes``; a read that misses fetches the aligned
    ``fetch_bytes`` (default 256 KiB) group of blocks around it, a read larger than half the cache is fetched
    directly, and sequential misses fetch ahead, doubling up to a quarter of the cache. :meth:`prefetch` fetches
    known byte ranges ahead of use on up to ``parallel`` connections (coalescing nearby ranges); a read of a
    block in flight waits for it instead of fetching it again. The version is pinned at open (the given
    ``version_id`` or the one the first GET reports), so an overwrite during reading cannot mix versions.
    Opening costs one round trip: the first group and the last ``tail_bytes`` (default four groups) in two parallel
    GETs, which also report the size, version and ETag (no HeadObject); a given ``size`` (a reopened file) must
    equal the size the server reports. A pinned version read before opens with no round trip of its own: its
    read plan (:class:`~vbo.source.plan.ReadPlan`, see :meth:`phase`) names the blocks the open needs, fetched
    in one parallel round, and the recorded size and ETag are checked on every response. Thread-safe.
    ``bytes_transferred`` and ``requests`` count network use, ``stalls`` the reads that waited for it (each at
    least one round trip), ``misses`` those of them that needed a block not yet asked for (no prefetch, plan or
    hint foresaw it).

    Verification (``verify=True``, the default): every response must name the pinned version and the
    object's ETag and cover exactly the requested range; every block's blake2b-128 must equal the digest
    recorded for this object version (:class:`BlockDigests`: from a verified download, or from the first
    streamed read of the block, persisted in ``digest_dir``). A mismatch raises
    :class:`~vbo.errors.StreamIntegrityError` and the bytes are never returned.
    """

    def __init__(self, client, bucket: str, key: str, version_id: str | None = None, *,
                 block_size: int = DEFAULT_BLOCK_SIZE, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 retries: int = 5, backoff: float = 0.2, max_backoff: float = 5.0,
                 parallel: int = DEFAULT_PARALLEL, verify: bool = True, digest_dir: str | Path | None = None,
                 tail_bytes: int | None = None, size: int | None = None,
                 fetch_bytes: int = DEFAULT_FETCH_BYTES):
        super().__init__()
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        group_bytes = max(1, int(fetch_bytes) // int(block_size)) * int(block_size)
        tail_bytes = 4 * group_bytes if tail_bytes is None else tail_bytes  # HDF5 writers' last metadata
        self.client, self.bucket, self.key = client, bucket, key
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.bytes_transferred = 0
        self.requests = 0
        self.stalls = 0
        self.misses = 0
        self._closing = False
        self._stats_lock = threading.Lock()
        directory = Path(digest_dir or default_digest_dir())
        plan = self._stored_plan(directory, version_id, size) if verify else None
        if plan is not None:  # a planned open: the recorded size, checked on every response (the ETag is pinned
            # by the first response, so a mirror with other ETags for the same version still reads)
            head, first_pieces, block_size = {"VersionId": version_id, "ETag": None, "size": plan.size}, [], \
                plan.block_size
        else:
            head, first_pieces = self._open_requests(version_id, group_bytes, int(tail_bytes))
        self.version_id = version_id or head.get("VersionId") or None
        if self.version_id == "null":
            self.version_id = None
        self.etag = head.get("ETag")
        self.size = int(head["size"])
        if size is not None and int(size) != self.size:
            raise StreamIntegrityError(bucket, key, f"reopened with {self.size} bytes where {int(size)} were read "
                                                    f"before")
        self.name = f"s3://{bucket}/{key}" + (f"?versionId={self.version_id}" if self.version_id else "")
        self.digests: BlockDigests | None = None
        identity = self.version_id or (self.etag or "").strip('"')
        sidecar = BlockDigests.sidecar_path(directory, bucket, key, identity) if identity else None
        if verify:
            if sidecar is not None:
                path = sidecar
                self.digests = BlockDigests.load(path, self.size, block_size)
                if hasattr(self.digests, "size_mismatch"):
                    raise StreamIntegrityError(bucket, key, f"the server reports {self.size} bytes for version "
                                                            f"{identity}, {self.digests.size_mismatch} were recorded")
                block_size = self.digests.block_size
        self.verify = verify
        self.block_size = int(block_size)
        self.cache_bytes = max(int(cache_bytes), 4 * self.block_size)
        self._pos = 0
        self._next_block = -1  # block after the last fetch, to detect sequential reads
        self._ahead = 1
        self.max_ahead_blocks = max(1, (self.cache_bytes // 4) // self.block_size)
        self.group_blocks = max(1, int(fetch_bytes) // self.block_size)
        self.max_around = max(self.group_blocks, AROUND_MAX_BYTES // self.block_size)
        self._around, self._last_miss = self.group_blocks, None
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._cached = 0
        self._inflight: dict[int, Future] = {}
        self._lock = threading.RLock()
        self.parallel = max(1, int(parallel))
        self._pool: ThreadPoolExecutor | None = None
        #: ``hint(offset, data, size) -> [(start, stop), ...]``: byte ranges to prefetch after a read of ``data``
        #: at ``offset`` (e.g. the children of a B-tree node, :func:`vbo.nwb.prefetch.btree_children`), or None.
        #: Not asked during a phase whose blocks came from the read plan (the plan knows what it reads). A hint
        #: with an ``arrived(size) -> [(start, stop), ...]`` method is also asked each time prefetched bytes
        #: arrive, so that a chain of structures is followed without waiting for HDF5 to read each link.
        self.read_hint = None
        self._planned = False
        for start, data in first_pieces:
            self._keep_whole_blocks(start, data)
        self._start_plan(plan, sidecar)

    # learned read plans
    def _stored_plan(self, directory: Path, version_id: str | None, size: int | None) -> ReadPlan | None:
        """The stored plan of a pinned version whose open phase is known (else None: a plain open)."""
        if not version_id:
            return None
        plan = ReadPlan.load(plan_path(BlockDigests.sidecar_path(directory, self.bucket, self.key, version_id)))
        if plan is None or not plan.has(OPEN_PHASE) or (size is not None and int(size) != plan.size):
            return None
        return plan

    def _start_plan(self, plan: ReadPlan | None, sidecar: Path | None) -> None:
        """Use ``plan`` if it fits this version and block size, else start an empty one; begin the open phase."""
        if plan is None or not plan.matches(self.size, self.etag, self.block_size):
            plan = ReadPlan(plan_path(sidecar) if sidecar is not None else None, self.size, self.etag,
                            self.block_size)
        self.plan = plan
        self._phase: str | None = OPEN_PHASE
        self._last_phase = OPEN_PHASE
        self._phase_depth = 0
        self._phases_ahead: set[str] = set()  # phases fetched in an earlier phase's round (they fetch none ahead)
        self._fetch_planned(OPEN_PHASE)

    def _fetch_planned(self, phase: str) -> None:
        """Fetch the planned blocks of ``phase`` and, one step ahead, the (few) blocks of the phases that came
        right after it before (e.g. ``metadata`` after the open, the stimulus presentations after the trials;
        see :meth:`_following_blocks`), so that the next member costs no round trip of its own, in one round
        (:meth:`_round_options`)."""
        blocks = self.plan.blocks(phase)
        self._planned = bool(blocks)  # the plan knows what this phase reads: no read hints meanwhile
        blocks = blocks + self._following_blocks(phase, blocks)
        if blocks:
            bs = self.block_size
            self.prefetch([(b * bs, (b + 1) * bs) for b in sorted(blocks)], request_bytes=PLAN_REQUEST_BYTES,
                          **self._round_options(phase, blocks))

    def _round_options(self, phase: str, blocks: list[int]) -> dict:
        """How the planned round of ``phase`` asks for ``blocks`` (:meth:`prefetch`'s options). The open's round
        joins blocks across gaps of at most :data:`OPEN_JOIN_GAP` (its requests run in parallel), then, while it
        makes more than :data:`OPEN_MAX_REQUESTS`, the closest of them up to :data:`PLAN_MERGE_GAP` apart. A
        member's round joins them across the largest gap, from :data:`PLAN_MERGE_GAP` down by halves, with which
        it fetches at most :data:`PLAN_GAP_SHARE` times the planned bytes (a table's columns lie close together:
        one request for a few MB; one cell's chunks of a trace table lie ~0.5 MB apart: fetching the gaps
        would triple the bytes)."""
        if phase == OPEN_PHASE:
            return {"merge_gap": OPEN_JOIN_GAP, "max_requests": OPEN_MAX_REQUESTS, "budget_gap": PLAN_MERGE_GAP}
        unique = sorted(set(blocks))
        gap = PLAN_MERGE_GAP
        while gap > self.block_size and sum(last - first + 1 for first, last in _merged_runs(
                unique, gap // self.block_size, None)) > PLAN_GAP_SHARE * len(unique):
            gap //= 2
        return {"merge_gap": gap}

    def _following_blocks(self, phase: str, blocks: list[int]) -> list[int]:
        """The planned blocks of the phases that followed ``phase`` before, most recent first (after the open,
        :data:`OPEN_FOLLOWER_FIRST` first), to fetch in the round of ``blocks`` (the planned blocks of ``phase``).
        One step only: a phase fetched ahead by another phase's round fetches none ahead itself, so a round never
        runs on into the phases after the next. Capped: a following phase is skipped if it would take the extra
        blocks past :data:`NEXT_PHASE_BYTES` (the open) or :data:`FOLLOWING_PHASE_BYTES` (a member), or the round
        past :data:`OPEN_MAX_REQUESTS` requests (the open) or one parallel wave (``parallel`` requests: a bulk
        phase's plan, e.g. the chunk-index nodes of a trace table, takes more)."""
        if not blocks or phase in self._phases_ahead:
            return []
        own = set(blocks)
        extra: dict[int, None] = {}
        followers = self.plan.next_phases(phase)
        if phase == OPEN_PHASE:
            followers.sort(key=lambda name: name != OPEN_FOLLOWER_FIRST)  # stable: the rest most recent first
        cap = NEXT_PHASE_BYTES if phase == OPEN_PHASE else FOLLOWING_PHASE_BYTES
        max_requests = OPEN_MAX_REQUESTS if phase == OPEN_PHASE else self.parallel
        for following in followers:
            more = dict.fromkeys(b for b in self.plan.blocks(following) if b not in own and b not in extra)
            if (len(extra) + len(more)) * self.block_size > cap:
                continue
            if self._planned_requests(phase, [*blocks, *extra, *more]) > max_requests:
                continue
            extra.update(more)
            self._phases_ahead.add(following)
        return list(extra)

    def _planned_requests(self, phase: str, blocks: list[int]) -> int:
        """How many requests the planned round of ``phase`` makes for ``blocks`` (:meth:`_round_options`)."""
        return len(self._request_runs(sorted(set(blocks)), request_bytes=PLAN_REQUEST_BYTES,
                                      **self._round_options(phase, blocks)))

    def _request_runs(self, blocks: list[int], merge_gap: int, request_bytes: int, max_requests: int | None = None,
                      budget_gap: int | None = None) -> list[list[int]]:
        """The ``[first, last]`` block runs that sorted ``blocks`` are fetched in (:meth:`prefetch`'s options, in
        bytes): joined across ``merge_gap``, merged to ``max_requests`` (across ``budget_gap`` at most), cut into
        pieces of ``request_bytes``."""
        bs = self.block_size
        runs = _merged_runs(blocks, max(0, merge_gap // bs), max_requests,
                            None if budget_gap is None else budget_gap // bs)
        return _cut_runs(runs, max(1, request_bytes // bs), max_requests)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Within this block, small reads are recorded as phase ``name`` of the read plan, and the blocks the
        plan holds for ``name`` (from earlier reads of this object version) are fetched at its start, in one
        parallel round. Nested phases belong to the outermost one. The open phase ends at the first phase."""
        if self._phase_depth:
            self._phase_depth += 1
            try:
                yield
            finally:
                self._phase_depth -= 1
            return
        if self._phase == OPEN_PHASE:
            self.plan.save()
        self.plan.follow(self._last_phase, name)
        self._last_phase = name
        self._phase, self._phase_depth = name, 1
        self._fetch_planned(name)
        try:
            yield
        finally:
            self._phase, self._phase_depth, self._planned = None, 0, False
            self.plan.save()

    def _open_requests(self, version_id: str | None, head_bytes: int, tail_bytes: int):
        """Size, version and ETag of the object from ranged GETs of its first ``head_bytes`` and (in parallel)
        its last ``tail_bytes`` — where HDF5 keeps the superblock and a writer's last metadata — instead of a
        HeadObject round trip; ``(head, [(offset, bytes), ...])``. An empty object falls back to HeadObject."""
        def get(range_header: str):
            kwargs = {"Bucket": self.bucket, "Key": self.key, "Range": range_header}
            if version_id:
                kwargs["VersionId"] = version_id
            for attempt in range(self.retries + 1):
                try:
                    with self._stats_lock:
                        self.requests += 1
                    response = self.client.get_object(**kwargs)
                    body = response["Body"].read()
                    if len(body) != int(response.get("ContentLength", len(body))):
                        raise ConnectionError("short body")
                    with self._stats_lock:
                        self.bytes_transferred += len(body)
                    return response, body
                except Exception as exc:
                    if error_code(exc) == "InvalidRange":
                        return None, b""
                    if not is_retryable(exc) or attempt >= self.retries:
                        typed = typed_s3_error(exc, self.bucket, self.key)
                        if typed is exc:
                            raise
                        raise typed from exc
                    time.sleep(backoff_delay(attempt, self.backoff, self.max_backoff))
            raise AssertionError("unreachable")  # pragma: no cover

        ranges = [f"bytes=0-{head_bytes - 1}"] + ([f"bytes=-{tail_bytes}"] if tail_bytes > 0 else [])
        with ThreadPoolExecutor(max_workers=len(ranges)) as pool:
            answers = list(pool.map(get, ranges))
        response, body = answers[0]
        if response is None:  # an empty object has no byte 0
            head = head_object(self.client, self.bucket, self.key, version_id)
            self.requests += 1
            return {"VersionId": head.get("VersionId"), "ETag": head.get("ETag"),
                    "size": int(head["ContentLength"])}, []
        content_range = response.get("ContentRange") or ""
        size = int(content_range.rsplit("/", 1)[1]) if "/" in content_range else len(body)
        head = {"VersionId": response.get("VersionId"), "ETag": response.get("ETag"), "size": size}
        pieces = [(0, body)]
        for tail_response, tail_body in answers[1:]:
            if tail_response is None or tail_response.get("ETag") != head["ETag"] or \
                    tail_response.get("VersionId") != head["VersionId"]:
                continue  # another version answered (an overwrite between the two requests): not used
            pieces.append((size - len(tail_body), tail_body))
        return head, pieces

    def _keep_whole_blocks(self, start: int, data: bytes) -> None:
        """Verify and cache the whole blocks within ``data`` (the bytes at ``start``) fetched at open."""
        bs = self.block_size
        first = -(-start // bs)
        view = memoryview(data)
        for block in range(first, (start + len(data) - 1) // bs + 1):
            lo, hi = block * bs - start, min(len(data), (block + 1) * bs - start)
            if hi - lo != min(bs, self.size - block * bs):
                continue  # not a whole block
            piece = view[lo:hi]
            if self.digests is not None and not self.digests.check(block, piece):
                raise StreamIntegrityError(self.bucket, self.key, f"bytes {block * bs}-{block * bs + len(piece) - 1} "
                                                                  f"(block {block}) differ from the digest recorded "
                                                                  f"from {self.digests.source(block)}")
            with self._lock:
                self._remember(block, bytes(piece))

    # io protocol
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(f"{self.name}: negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer) -> int:
        self._check_open()
        view = memoryview(buffer).cast("B")
        start = self._pos
        n = max(0, min(len(view), self.size - start))
        if n:
            view[:n] = self._read_range(start, start + n)
            if n <= SMALL_READ_BYTES and self._phase is not None:
                self.plan.touch(self._phase, start, start + n)
            if self.read_hint is not None and not self._planned:
                self._prefetch_hinted(lambda: self.read_hint(start, view[:n], self.size))
        self._pos = start + n
        return n

    def _prefetch_hinted(self, hint) -> None:
        """Fetch ahead the ranges ``hint()`` names, most urgent first. A hint only guesses: one that fails (or a
        file closed meanwhile) costs the prefetch, never the read that asked."""
        try:
            ahead = hint()
            if ahead:
                request_bytes = OPEN_HINT_REQUEST_BYTES if self._phase == OPEN_PHASE else PLAN_REQUEST_BYTES
                self.prefetch(ahead, request_bytes=request_bytes, ordered=True)
        except Exception:  # noqa: BLE001 (advisory: the reads go on without it)
            return

    def read(self, size: int = -1) -> bytes:
        self._check_open()
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        buf = bytearray(min(size, max(0, self.size - self._pos)))
        n = self.readinto(buf)
        return bytes(buf[:n])

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if self.closed:
            return
        self._closing = True  # no more prefetches (a fetch arriving now may ask for some)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._blocks.clear()
            self._cached = 0
            self._inflight.clear()
        if self.digests is not None:
            try:
                self.digests.save()
            except OSError:  # a read-only home: the digests of this read are simply not kept
                pass
        plan = getattr(self, "plan", None)  # None if the open failed
        if plan is not None:
            plan.save()
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed remote file {self.name}")

    # prefetching
    def prefetch(self, ranges, *, merge_gap: int | None = None, request_bytes: int = 2 << 20,
                 max_requests: int | None = None, budget_gap: int | None = None, ordered: bool = False) -> int:
        """Start fetching byte ranges ``[(start, stop), ...]`` in the background; return the bytes scheduled.

        Blocks already cached or in flight are skipped (cached ones are marked recently used, so that the blocks
        arriving with them do not evict them first); runs of missing blocks closer than ``merge_gap`` (default
        two blocks) become one request (gap included), and requests are cut into equal pieces of at most
        ``request_bytes`` so that up to ``parallel`` of them run at once. With ``max_requests``, the closest
        runs are merged until there are at most that many (or, with ``budget_gap``, until the closest are more
        than ``budget_gap`` bytes apart), and runs are cut only while the count stays within it. ``ordered``:
        the ranges are requested in the order given (the first most urgent), each on its own, instead of in
        address order. Later reads of these blocks wait for the fetch instead of repeating it.
        """
        self._check_open()
        if self._closing:
            return 0
        merge_gap = 2 * self.block_size if merge_gap is None else merge_gap
        groups: list[set[int]] = [set()]
        for start, stop in ranges:
            start, stop = max(0, int(start)), min(self.size, int(stop))
            if stop > start:
                groups[-1].update(range(start // self.block_size, (stop - 1) // self.block_size + 1))
                if ordered:
                    groups.append(set())
        with self._lock:
            runs, taken = [], set()
            for wanted in groups:
                for b in wanted & self._blocks.keys():  # cached already: now as recent as the fetched ones, so that
                    self._blocks.move_to_end(b)  # they are not evicted by them before they are read
                missing = sorted(b for b in wanted - taken if b not in self._blocks and b not in self._inflight)
                taken.update(missing)
                runs += self._request_runs(missing, merge_gap, request_bytes, max_requests, budget_gap)
            runs = [r for r in runs if any(b not in self._blocks and b not in self._inflight
                                           for b in range(r[0], r[1] + 1))]  # not a piece of a cached gap only
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="vbo-range")
            for lo, hi in runs:
                blocks = [b for b in range(lo, hi + 1) if b not in self._blocks and b not in self._inflight]
                future = self._pool.submit(self._fetch_and_store, lo, hi)
                for b in blocks:
                    self._inflight[b] = future
        return sum(min(self.size, (hi + 1) * self.block_size) - lo * self.block_size for lo, hi in runs)

    def cached(self, start: int, stop: int) -> bytes | None:
        """Bytes ``[start, stop)`` if every block they touch is in the cache, else None (nothing is fetched and
        nothing waited for; for read hints that follow pointers through bytes already fetched)."""
        start, stop = max(0, int(start)), min(self.size, int(stop))
        if stop <= start:
            return None
        first, last = start // self.block_size, (stop - 1) // self.block_size
        with self._lock:
            pieces = [self._blocks.get(b) for b in range(first, last + 1)]
        if any(piece is None for piece in pieces):
            return None
        offset = start - first * self.block_size
        return b"".join(pieces)[offset:offset + (stop - start)]

    def _fetch_and_store(self, first: int, last: int) -> None:
        try:
            pieces = self._fetch_blocks(first, last)
            with self._lock:
                for b, piece in zip(range(first, last + 1), pieces):
                    self._remember(b, piece)
        finally:
            with self._lock:
                for b in range(first, last + 1):
                    self._inflight.pop(b, None)
        self._hint_arrival()

    def _hint_arrival(self) -> None:
        """Prefetched bytes arrived: fetch what the read hint now finds they point at (if it follows arrivals)."""
        arrived = getattr(self.read_hint, "arrived", None)
        if arrived is not None and not self._planned and not self._closing:
            self._prefetch_hinted(lambda: arrived(self.size))

    # ranges and blocks
    def _read_range(self, start: int, stop: int) -> bytes:
        first, last = start // self.block_size, (stop - 1) // self.block_size
        have: dict[int, bytes | None] = {}
        unforeseen = False  # a block neither cached nor in flight: nothing asked for it before this read
        with self._lock:
            for b in range(first, last + 1):
                data = self._blocks.get(b)
                if data is not None:
                    self._blocks.move_to_end(b)
                else:
                    unforeseen = unforeseen or b not in self._inflight
                have[b] = data
        if None in have.values():
            with self._stats_lock:
                self.stalls += 1
                self.misses += unforeseen
        missing = self._await_inflight([b for b, data in have.items() if data is None], have)
        direct = (stop - start) > self.cache_bytes // 2
        if missing and not direct:
            self._fetch_around(missing[0])
            missing = self._await_inflight(missing, have)  # the window just scheduled may hold them
        runs: list[list[int]] = []
        for b in missing:  # runs of consecutive missing blocks, one request each
            if runs and runs[-1][-1] == b - 1:
                runs[-1].append(b)
            else:
                runs.append([b])
        for run in runs:
            lo_block, hi_block = (run[0], run[-1]) if direct else self._widen(run[0], run[-1])
            pieces = self._fetch_blocks(lo_block, hi_block)
            with self._lock:
                for blk, piece in zip(range(lo_block, hi_block + 1), pieces):
                    if blk in have:
                        have[blk] = piece
                    if not direct:
                        self._remember(blk, piece)
            self._next_block = hi_block + 1
        joined = b"".join(have[b] for b in range(first, last + 1))
        offset = start - first * self.block_size
        return joined[offset:offset + (stop - start)]

    def _await_inflight(self, missing: list[int], have: dict[int, bytes | None]) -> list[int]:
        """Wait for those of the ``missing`` blocks that are in flight now (prefetched, or in the window
        :meth:`_fetch_around` just scheduled), filling ``have``; the blocks still missing (never a second request
        for a block on its way)."""
        with self._lock:
            waiting = {b: self._inflight[b] for b in missing if b in self._inflight}
        for b, future in waiting.items():
            future.result()  # raises the fetch's error (e.g. StreamIntegrityError)
            with self._lock:
                have[b] = self._blocks.get(b)  # None if evicted meanwhile: fetched again
        return [b for b in missing if have[b] is None]

    def _fetch_around(self, block: int) -> None:
        """A miss close to the previous one (metadata clustered in a region, e.g. a table's column headers):
        prefetch the aligned window around it on parallel requests, the window doubling (up to
        ``AROUND_MAX_BYTES``) while misses stay close; a distant miss starts over."""
        near = self._last_miss is not None and abs(block - self._last_miss) <= 4 * self._around
        self._around = min(2 * self._around, self.max_around) if near else self.group_blocks
        self._last_miss = block
        if near:
            lo = block // self._around * self._around
            bs = self.block_size
            self.prefetch([(lo * bs, (lo + self._around) * bs)], merge_gap=0, request_bytes=self.group_blocks * bs)

    def _widen(self, first: int, last: int) -> tuple[int, int]:
        """Blocks to fetch for a miss of blocks ``first..last``: the aligned group of ``fetch_bytes`` around
        them (a metadata read's neighbours are often read next) and the read-ahead of sequential reads, without
        blocks that are cached or in flight."""
        group = self.group_blocks
        lo = first
        with self._lock:
            while lo > first // group * group and lo - 1 not in self._blocks and lo - 1 not in self._inflight:
                lo -= 1
            hi, end = last, min((last // group + 1) * group, -(-self.size // self.block_size)) - 1
            while hi < end and hi + 1 not in self._blocks and hi + 1 not in self._inflight:
                hi += 1
        return lo, max(hi, self._read_ahead(first, last))

    def _read_ahead(self, first: int, last: int) -> int:
        """Last block to fetch for a miss of blocks ``first..last``: more, doubling, while reads are sequential."""
        if first == self._next_block:
            self._ahead = min(self._ahead * 2, self.max_ahead_blocks)
        else:
            self._ahead = 1
        end = max(last, first + self._ahead - 1)
        end = min(end, (self.size - 1) // self.block_size)
        with self._lock:
            for blk in range(last + 1, end + 1):  # never re-fetch cached or in-flight blocks
                if blk in self._blocks or blk in self._inflight:
                    return blk - 1
        return end

    def _remember(self, block: int, data: bytes) -> None:
        if block in self._blocks:
            self._blocks.move_to_end(block)
            return
        self._blocks[block] = data
        self._cached += len(data)
        while self._cached > self.cache_bytes and len(self._blocks) > 1:
            _, old = self._blocks.popitem(last=False)
            self._cached -= len(old)

    def _fetch_blocks(self, first: int, last: int) -> list[bytes]:
        """Blocks ``first..last`` of the pinned version, each verified against its recorded digest."""
        lo, hi = first * self.block_size, min(self.size, (last + 1) * self.block_size)
        data = memoryview(self._fetch(lo, hi))
        pieces = []
        for i, block in enumerate(range(first, last + 1)):
            piece = data[i * self.block_size:(i + 1) * self.block_size]
            if self.digests is not None and not self.digests.check(block, piece):
                raise StreamIntegrityError(
                    self.bucket, self.key,
                    f"bytes {block * self.block_size}-{block * self.block_size + len(piece) - 1} (block {block}) "
                    f"differ from the digest recorded from {self.digests.source(block)}")
            pieces.append(bytes(piece))
        return pieces

    def _check_response(self, response: dict, start: int, stop: int) -> None:
        """The response must be the pinned version, the object's ETag and exactly the requested range."""
        problems = []
        version = response.get("VersionId")
        if self.version_id and version and version != self.version_id:
            problems.append(f"version {version} instead of {self.version_id}")
        etag = response.get("ETag")
        if self.etag is None and etag:
            with self._stats_lock:
                self.etag = self.etag or etag  # a planned open: the first response pins it
        if self.etag and etag and etag != self.etag:
            problems.append(f"ETag {etag} instead of {self.etag}")
        content_range = response.get("ContentRange")
        expected = f"bytes {start}-{stop - 1}/{self.size}"
        if content_range and content_range != expected:
            problems.append(f"Content-Range {content_range!r} instead of {expected!r}")
        if problems:
            raise StreamIntegrityError(self.bucket, self.key, f"range {start}-{stop - 1}: " + ", ".join(problems))

    def _fetch(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the pinned version, retrying transient failures."""
        kwargs = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={start}-{stop - 1}"}
        if self.version_id:
            kwargs["VersionId"] = self.version_id
        for attempt in range(self.retries + 1):
            try:
                with self._stats_lock:
                    self.requests += 1
                response = self.client.get_object(**kwargs)
                if self.verify:
                    self._check_response(response, start, stop)
                data = response["Body"].read()
                with self._stats_lock:
                    self.bytes_transferred += len(data)
                if len(data) != stop - start:
                    from botocore.exceptions import IncompleteReadError

                    raise IncompleteReadError(actual_bytes=len(data), expected_bytes=stop - start)
                return data
            except StreamIntegrityError:
                raise
            except Exception as exc:
                if not is_retryable(exc):
                    if is_client_error(exc):
                        raise as_s3_error(exc, self.bucket, self.key) from exc
                    raise
                if attempt >= self.retries:
                    raise S3Error(self.bucket, self.key, f"range {start}-{stop - 1} failed after "
                                                         f"{attempt + 1} attempts: {exc}") from exc
                time.sleep(backoff_delay(attempt, self.backoff, self.max_backoff))
        raise AssertionError("unreachable")  # pragma: no cover

    def __repr__(self) -> str:
        return f"<RemoteFile {self.name} size={self.size} transferred={self.bytes_transferred}>"


def _merged_runs(blocks: list[int], gap_blocks: int, max_runs: int | None,
                 budget_gap_blocks: int | None = None) -> list[list[int]]:
    """``[first, last]`` runs of sorted ``blocks``, joined across gaps of at most ``gap_blocks``; then, while
    there are more than ``max_runs``, the two runs with the smallest gap between them joined (while that gap is
    at most ``budget_gap_blocks``, if given)."""
    runs: list[list[int]] = []
    for b in blocks:
        if runs and b - runs[-1][1] <= gap_blocks + 1:
            runs[-1][1] = b
        else:
            runs.append([b, b])
    while max_runs is not None and len(runs) > max(1, max_runs):
        i = min(range(len(runs) - 1), key=lambda j: runs[j + 1][0] - runs[j][1])
        if budget_gap_blocks is not None and runs[i + 1][0] - runs[i][1] - 1 > budget_gap_blocks:
            break
        runs[i:i + 2] = [[runs[i][0], runs[i + 1][1]]]
    return runs


def _cut_runs(runs: list[list[int]], per_request: int, max_requests: int | None) -> list[list[int]]:
    """``runs`` cut into requests of at most ``per_request`` blocks, each run into pieces of equal size (±1
    block: parallel requests end together, none waits for a long one) — none cut if that would make more than
    ``max_requests``."""
    cut = []
    for first, last in runs:
        pieces = -(-(last - first + 1) // per_request)
        bounds = [first + (last - first + 1) * i // pieces for i in range(pieces + 1)]
        cut += [[lo, hi - 1] for lo, hi in zip(bounds, bounds[1:])]
    return runs if max_requests is not None and len(cut) > max_requests else cut


def open_remote(source: str | tuple[str, str], version_id: str | None = None, client=None, *,
                block_size: int = DEFAULT_BLOCK_SIZE, cache_bytes: int = DEFAULT_CACHE_BYTES,
                endpoint_url: str | None = None, buffered: bool = False, parallel: int = DEFAULT_PARALLEL,
                verify: bool = True, digest_dir: str | Path | None = None,
                tail_bytes: int | None = None, fetch_bytes: int = DEFAULT_FETCH_BYTES) -> RemoteFile | io.BufferedReader:
    """Open one S3 object version as a read-only seekable binary file (e.g. for ``h5py.File(f, 'r')``).

    Parameters
    ----------
    source
        An object URL (any form of :func:`parse_object_url`; a ``?versionId=`` in it pins the version) or a
        ``(bucket, key)`` pair.
    version_id
        Version to read; default the URL's ``versionId`` or the latest at open time (then pinned).
    client
        A boto3 S3 client (or anything with its ``get_object``); default a :class:`~vbo.source.s3.RangeClient`
        (anonymous ranged GETs, no boto3 client to build) on ``endpoint_url``, or on the endpoint a path-style
        custom-endpoint URL names.
    block_size, cache_bytes
        Range-request granularity and the bound of the block cache.
    buffered
        Wrap in an ``io.BufferedReader`` (not needed for h5py).
    parallel
        Range requests in flight at once when ranges are prefetched (:meth:`RemoteFile.prefetch`).
    verify, digest_dir
        Check every response and every block against the digests recorded for this object version
        (:class:`BlockDigests`, sidecars in ``digest_dir``, default :func:`default_digest_dir`).
    tail_bytes
        Bytes at the end of the object fetched at open, in parallel with the first ``fetch_bytes`` (default
        four times ``fetch_bytes``; HDF5 writers put their last metadata there).
    fetch_bytes
        A read that misses fetches the aligned group of blocks of this size around it (default 256 KiB).

    Raises
    ------
    S3ObjectNotFoundError
        No such bucket, key or version.
    StreamIntegrityError
        (on later reads) the server sent bytes that differ from the recorded digests.
    """
    if isinstance(source, tuple):
        bucket, key = source
        url_version, url_endpoint = None, None
    else:
        loc = parse_object_url(source)
        bucket, key, url_version, url_endpoint = loc.bucket, loc.key, loc.version_id, loc.endpoint_url
        if bucket is None:
            raise UnsafeKeyError(source, "cannot tell the bucket from this URL")
    if client is None:
        client = RangeClient(endpoint_url or url_endpoint)
    raw = RemoteFile(client, bucket, key, version_id or url_version, block_size=block_size,
                     cache_bytes=cache_bytes, parallel=parallel, verify=verify, digest_dir=digest_dir,
                     tail_bytes=tail_bytes, fetch_bytes=fetch_bytes)
    return io.BufferedReader(raw, buffer_size=block_size) if buffered else raw
