"""Anonymous S3 access to the release bucket: client, URL parsing and building, safe keys, range reads.

``format.md`` §2 (bucket, keys, URL forms) and §3.3 (bucket and key from an entry URL).

- :func:`anonymous_client` — an unsigned boto3 client; endpoint from the argument, ``AWS_ENDPOINT_URL_S3``,
  ``AWS_ENDPOINT_URL`` or AWS itself (``us-west-2``).
- :func:`bucket_and_key` / :func:`parse_object_url` — the real URL forms (virtual-host AWS, path-style AWS,
  ``s3://``, a custom endpoint's path-style URL), with an optional ``?versionId=``.
- :func:`check_object_url` — refuses foreign hosts and keys that would escape the cache.
- :func:`safe_relative_key` — refuses ``..``, absolute paths, backslashes, drive letters, empty components.
- URL builders for a manifest, a metadata CSV, a behavior NWB and an experiment NWB.
- :func:`open_remote` — a read-only seekable binary file over byte ranges of one object version, good for
  ``h5py.File(fileobj)`` (a bounded block cache, counting transferred bytes).
"""

from __future__ import annotations

import io
import os
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from vbo.cache import manifest as mf
from vbo.errors import ForeignHostError, S3ConnectionError, S3Error, S3ObjectNotFoundError, UnsafeKeyError

ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
MAX_POOL_CONNECTIONS = 16
DEFAULT_BLOCK_SIZE = 256 * 1024
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024

# format.md §3.3: the bucket is the host with this match removed (commas kept as in the SDK's class).
_AWS_VIRTUAL_HOST = re.compile(r"\.s3[.,a-z0-9-]*\.amazonaws\.com$")
_AWS_PATH_HOST = re.compile(r"^s3[.,a-z0-9-]*\.amazonaws\.com$")
_DRIVE = re.compile(r"^[A-Za-z]:")
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "404", "NotFound"}
_RETRYABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed",
                    "Throttling", "ThrottlingException", "500", "502", "503", "504"}


# --- client ---------------------------------------------------------------------------------------


def resolve_endpoint(explicit: str | None = None) -> str | None:
    """The S3 endpoint to use: ``explicit``, else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else None (AWS)."""
    if explicit:
        return explicit.rstrip("/")
    for name in ENDPOINT_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value.rstrip("/")
    return None


def anonymous_client(endpoint_url: str | None = None, *, region: str = mf.BUCKET_REGION,
                     connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                     max_attempts: int = 4, max_pool_connections: int = MAX_POOL_CONNECTIONS):
    """A boto3 S3 client sending unsigned (anonymous) requests; no credentials are read or needed.

    A custom endpoint (argument or environment, see :func:`resolve_endpoint`) is addressed path-style
    (``http://host:port/bucket/key``), AWS virtual-host style. botocore retries failed requests up to
    ``max_attempts`` times ("standard" mode); a failure while streaming a body is retried by
    :func:`vbo.cache.download.download_object` and by :class:`RemoteFile`.
    """
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    endpoint = resolve_endpoint(endpoint_url)
    options = dict(
        signature_version=UNSIGNED,
        region_name=region,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=max_pool_connections,
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    try:  # botocore >= 1.36: no extra checksum headers (the blake2b of the manifest is the check)
        config = Config(**options, request_checksum_calculation="when_required",
                        response_checksum_validation="when_required")
    except TypeError:
        config = Config(**options)
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint, config=config, region_name=region)


def client_endpoint(client) -> str | None:
    """The custom endpoint of ``client`` (``scheme://host:port``), or None for AWS itself."""
    url = getattr(getattr(client, "meta", None), "endpoint_url", None)
    if not url or urlsplit(url).hostname.endswith("amazonaws.com"):
        return None
    return url.rstrip("/")


# --- errors -----------------------------------------------------------------------------------------


def is_client_error(exc: BaseException) -> bool:
    """True for an error response from S3 (botocore ClientError and its modelled subclasses, e.g. NoSuchKey)."""
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError)


def error_code(exc: BaseException) -> str:
    """The S3 error code (``NoSuchKey``, ``SlowDown``, ``503`` ...) of a botocore ClientError, else ''."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", "") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code or (str(status) if status else "")


def is_retryable(exc: BaseException) -> bool:
    """True for transient failures: connection resets/timeouts, short bodies, 5xx, SlowDown, throttling."""
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, IncompleteReadError

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error_code(exc) in _RETRYABLE_CODES or status >= 500
    if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError)):
        return True
    if type(exc).__name__ in ("ResponseStreamingError", "ReadTimeoutError", "ProtocolError", "IncompleteRead"):
        return True
    if isinstance(exc, BotoCoreError):
        return False
    # plain socket-level failures raised outside botocore's wrappers (resets, timeouts)
    return isinstance(exc, (ConnectionError, TimeoutError))


def as_s3_error(exc: BaseException, bucket: str | None, key: str | None) -> S3Error:
    """A typed S3Error (S3ObjectNotFoundError for a missing bucket/key/version) for a botocore error."""
    code = error_code(exc)
    cls = S3ObjectNotFoundError if code in _NOT_FOUND_CODES else S3Error
    return cls(bucket, key, f"{code or type(exc).__name__}: {exc}")


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter for retry ``attempt`` (0-based): uniform in [d/2, d], d = base·2^attempt ≤ cap."""
    delay = min(cap, base * (2 ** attempt))
    return delay * (0.5 + 0.5 * random.random())


# --- keys and URLs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectLocation:
    """Where an object lives: bucket, key, optional pinned version and the endpoint a URL named (if not AWS)."""

    bucket: str | None
    key: str
    version_id: str | None = None
    endpoint_url: str | None = None


def parse_object_url(url: str) -> ObjectLocation:
    """Bucket, key, ``versionId`` and endpoint of an object URL.

    Accepted forms: ``https://<bucket>.s3[-.]<region>.amazonaws.com/<key>`` (``format.md`` §2.3/§3.3),
    path-style AWS ``https://s3.<region>.amazonaws.com/<bucket>/<key>``, ``s3://<bucket>/<key>`` and a
    custom endpoint's path-style ``http://127.0.0.1:9000/<bucket>/<key>``; each with an optional
    ``?versionId=...``. The key is percent-decoded and has no leading ``/``. The bucket is None only for an
    ``amazonaws.com`` host that matches neither AWS form (as the SDK, which then warns).

    Raises
    ------
    UnsafeKeyError
        The URL has no host or no key.
    """
    parts = urlsplit(str(url).strip())
    query = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
    version_id = unquote(query["versionId"]) if query.get("versionId") else None
    path = unquote(parts.path)
    host = (parts.hostname or "").lower()
    if parts.scheme == "s3":
        if not parts.netloc:
            raise UnsafeKeyError(url, "s3:// URL without a bucket")
        bucket, key, endpoint = parts.netloc, path.lstrip("/"), None
    elif parts.scheme in ("http", "https") and host:
        if _AWS_VIRTUAL_HOST.search(host):
            bucket, key, endpoint = _AWS_VIRTUAL_HOST.sub("", host), path[1:] if path.startswith("/") else path, None
        elif _AWS_PATH_HOST.match(host) or not host.endswith("amazonaws.com"):
            first, _, rest = path.lstrip("/").partition("/")
            bucket, key = first or None, rest
            endpoint = None if host.endswith("amazonaws.com") else f"{parts.scheme}://{parts.netloc}"
        else:
            bucket, key, endpoint = None, path[1:] if path.startswith("/") else path, None
    else:
        raise UnsafeKeyError(url, "not an S3 object URL (expected https://..., http://host:port/... or s3://...)")
    if not key:
        raise UnsafeKeyError(url, "URL names no object key")
    return ObjectLocation(bucket, key, version_id, endpoint)


def bucket_and_key(url: str) -> tuple[str | None, str]:
    """``(bucket, key)`` of an object URL (``format.md`` §3.3); see :func:`parse_object_url` for the forms."""
    loc = parse_object_url(url)
    return loc.bucket, loc.key


def safe_relative_key(key: str) -> str:
    """``key`` itself if it is a safe relative POSIX path, to be joined under a cache folder.

    Raises
    ------
    UnsafeKeyError
        Empty key, absolute path, backslash, drive letter, NUL or control character, an empty, ``.`` or
        ``..`` component: anything that could land outside (or ambiguously inside) the cache folder.
    """
    if not isinstance(key, str) or not key:
        raise UnsafeKeyError(str(key), "empty object key")
    if "\\" in key:
        raise UnsafeKeyError(key, "backslash in object key (Windows path separator)")
    if key.startswith("/"):
        raise UnsafeKeyError(key, "absolute path as object key")
    if _DRIVE.match(key) or any(_DRIVE.match(part) for part in key.split("/")):
        raise UnsafeKeyError(key, "drive letter in object key")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in key):
        raise UnsafeKeyError(key, "control character in object key")
    for part in key.split("/"):
        if part == "":
            raise UnsafeKeyError(key, "empty path component in object key")
        if part in (".", ".."):
            raise UnsafeKeyError(key, f"'{part}' component in object key would leave the cache folder")
    return key


def local_path_for_key(root: str | Path, key: str, strip_components: int = 0) -> Path:
    """``root / key`` (minus its first ``strip_components`` components), refusing unsafe keys.

    Raises
    ------
    UnsafeKeyError
        The key is unsafe, or has no component left after stripping.
    """
    parts = safe_relative_key(key).split("/")[strip_components:]
    if not parts:
        raise UnsafeKeyError(key, f"nothing left of the key after removing {strip_components} component(s)")
    return Path(root).joinpath(*parts)


def expected_hosts(bucket: str = mf.BUCKET_NAME, endpoint_url: str | None = None) -> set[str]:
    """Hosts an object URL of ``bucket`` may name: the AWS forms, plus the endpoint's host:port if any."""
    hosts = {f"{bucket}.s3.amazonaws.com", f"{bucket}.s3.{mf.BUCKET_REGION}.amazonaws.com",
             f"{bucket}.s3-{mf.BUCKET_REGION}.amazonaws.com", f"s3.{mf.BUCKET_REGION}.amazonaws.com",
             "s3.amazonaws.com", f"s3-{mf.BUCKET_REGION}.amazonaws.com"}
    if endpoint_url:
        hosts.add(urlsplit(endpoint_url).netloc.lower())
    return hosts


def check_object_url(url: str, bucket: str = mf.BUCKET_NAME, endpoint_url: str | None = None) -> ObjectLocation:
    """Parse a manifest URL, refusing foreign hosts, other buckets and unsafe keys.

    The host must be one of the release bucket's AWS hosts (virtual-host or path style, ``us-west-2`` or
    global), or the host:port of ``endpoint_url`` (argument or environment) — the simulator's endpoint.

    Raises
    ------
    ForeignHostError
        Another host, another bucket, or a scheme other than https (http only for the endpoint).
    UnsafeKeyError
        The key would escape the cache folder.
    """
    endpoint = resolve_endpoint(endpoint_url)
    parts = urlsplit(str(url).strip())
    if parts.scheme == "s3":
        loc = parse_object_url(url)
    else:
        netloc = parts.netloc.lower()
        allowed = expected_hosts(bucket, endpoint)
        is_endpoint = endpoint is not None and netloc == urlsplit(endpoint).netloc.lower()
        if netloc not in allowed or "@" in netloc:
            raise ForeignHostError(url, f"host {netloc!r} is neither the {bucket} bucket's nor the configured "
                                        f"endpoint's ({endpoint or 'none'}); refusing to fetch from it")
        if parts.scheme != "https" and not (is_endpoint and parts.scheme == "http"):
            raise ForeignHostError(url, f"scheme {parts.scheme!r} refused (https only, http for a local endpoint)")
        loc = parse_object_url(url)
    if loc.bucket != bucket:
        raise ForeignHostError(url, f"bucket {loc.bucket!r} is not the release bucket {bucket!r}")
    safe_relative_key(loc.key)
    return loc


def object_https_url(key: str, bucket: str = mf.BUCKET_NAME, version_id: str | None = None,
                     endpoint_url: str | None = None) -> str:
    """URL of an object: AWS virtual-host form (as manifests print it), or path style on a custom endpoint."""
    safe_relative_key(key)
    if endpoint_url:
        url = f"{endpoint_url.rstrip('/')}/{bucket}/{quote(key, safe='/')}"
    else:
        url = mf.object_url(quote(key, safe="/"), bucket)
    return f"{url}?versionId={quote(version_id, safe='')}" if version_id else url


def manifest_url(version: str, *, bucket: str = mf.BUCKET_NAME, version_id: str | None = None,
                 endpoint_url: str | None = None) -> str:
    """URL of the manifest of a release version, e.g. ``1.1.0``."""
    return object_https_url(mf.manifest_key(version), bucket, version_id, endpoint_url)


def metadata_url(table: str, *, bucket: str = mf.BUCKET_NAME, version_id: str | None = None,
                 endpoint_url: str | None = None) -> str:
    """URL of a metadata CSV by table name (``behavior_session_table`` ...; a ``.csv`` suffix is accepted)."""
    name = table[:-4] if table.endswith(".csv") else table
    if name not in mf.METADATA_TABLES:
        raise ValueError(f"unknown metadata table {table!r}; expected one of {list(mf.METADATA_TABLES)}")
    return object_https_url(mf.metadata_key(name), bucket, version_id, endpoint_url)


behavior_nwb_key = mf.behavior_nwb_key
experiment_nwb_key = mf.experiment_nwb_key


def behavior_nwb_url(behavior_session_id: int, *, bucket: str = mf.BUCKET_NAME, version_id: str | None = None,
                     endpoint_url: str | None = None) -> str:
    """URL of a behavior-only session's NWB (imaging sessions have none; use the experiment NWBs)."""
    return object_https_url(behavior_nwb_key(behavior_session_id), bucket, version_id, endpoint_url)


def experiment_nwb_url(ophys_experiment_id: int, *, bucket: str = mf.BUCKET_NAME, version_id: str | None = None,
                       endpoint_url: str | None = None) -> str:
    """URL of an ophys experiment's NWB."""
    return object_https_url(experiment_nwb_key(ophys_experiment_id), bucket, version_id, endpoint_url)


# --- listing and sizes -----------------------------------------------------------------------------


def iter_keys(client, bucket: str, prefix: str = "", *, page_size: int | None = None) -> Iterator[str]:
    """Every key under ``prefix`` (ListObjectsV2, following continuation tokens)."""
    paginator = client.get_paginator("list_objects_v2")
    config = {"PageSize": page_size} if page_size else {}
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig=config):
            for item in page.get("Contents", ()):
                yield item["Key"]
    except Exception as exc:
        raise typed_s3_error(exc, bucket, prefix) from exc


def typed_s3_error(exc: BaseException, bucket: str | None, key: str | None) -> BaseException:
    """The :mod:`vbo.errors` exception for a failed request: S3Error for an error response, S3ConnectionError
    for a network failure (refused, reset, timed out); any other exception is returned unchanged."""
    if is_client_error(exc):
        return as_s3_error(exc, bucket, key)
    if is_retryable(exc) or type(exc).__name__ in ("EndpointConnectionError", "ConnectTimeoutError"):
        return S3ConnectionError(bucket, key, f"cannot reach the S3 endpoint ({type(exc).__name__}: {exc})")
    return exc


def list_keys(client, bucket: str, prefix: str = "", *, page_size: int | None = None) -> list[str]:
    """All keys under ``prefix``, in S3 (lexicographic) order; paginated, so > 1000 keys are complete."""
    return list(iter_keys(client, bucket, prefix, page_size=page_size))


def list_manifests(client, bucket: str = mf.BUCKET_NAME) -> list[str]:
    """Sorted manifest file names of the bucket (``format.md`` §3.4)."""
    prefix = f"{mf.PROJECT_NAME}/{mf.MANIFEST_PREFIX}/"
    return sorted(PurePosixPath(k).name for k in iter_keys(client, bucket, prefix) if k.endswith(".json"))


def head_object(client, bucket: str, key: str, version_id: str | None = None) -> dict:
    """HeadObject response (``ContentLength``, ``VersionId``, ``ETag`` ...).

    Raises
    ------
    S3ObjectNotFoundError, S3Error
    """
    kwargs = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        return client.head_object(**kwargs)
    except Exception as exc:
        raise typed_s3_error(exc, bucket, key) from exc


def head_object_retrying(client, bucket: str, key: str, version_id: str | None = None, *, attempts: int = 4,
                         backoff: float = 0.2) -> dict:
    """:func:`head_object`, retried with backoff on network failures and 5xx answers (not on a missing object).

    Raises
    ------
    S3ObjectNotFoundError
        No such object or version (not retried).
    S3ConnectionError, S3Error
        Every attempt failed.
    """
    for attempt in range(attempts):
        try:
            return head_object(client, bucket, key, version_id)
        except S3ObjectNotFoundError:
            raise
        except S3Error:
            if attempt + 1 >= attempts:
                raise
        time.sleep(backoff_delay(attempt, backoff, 5.0))
    raise AssertionError("unreachable")  # pragma: no cover


def object_size(client, bucket: str, key: str, version_id: str | None = None) -> int:
    """Size in bytes of one object version (the latest if ``version_id`` is None)."""
    return int(head_object(client, bucket, key, version_id)["ContentLength"])


def object_size_retrying(client, bucket: str, key: str, version_id: str | None = None) -> int:
    """:func:`object_size` with :func:`head_object_retrying`'s retries."""
    return int(head_object_retrying(client, bucket, key, version_id)["ContentLength"])


_SHARED_CLIENTS: dict[tuple[int, str | None], object] = {}
_SHARED_CLIENTS_LOCK = threading.Lock()


def shared_client(endpoint_url: str | None = None):
    """One :func:`anonymous_client` per endpoint and process, shared by streamed files (boto3 clients are
    thread-safe; a forked child makes its own, since connections must not cross processes)."""
    key = (os.getpid(), resolve_endpoint(endpoint_url))
    with _SHARED_CLIENTS_LOCK:
        client = _SHARED_CLIENTS.get(key)
        if client is None:
            client = _SHARED_CLIENTS[key] = anonymous_client(key[1])
        return client


def _forget_parent_clients() -> None:
    global _SHARED_CLIENTS_LOCK
    _SHARED_CLIENTS_LOCK = threading.Lock()
    _SHARED_CLIENTS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_clients)


# --- remote file -------------------------------------------------------------------------------------


class RemoteFile(io.RawIOBase):
    """Read-only, seekable binary file over byte ranges of one S3 object version.

    Reads are served from fixed-size blocks fetched with ranged GETs (contiguous missing blocks in one
    request) and kept in an LRU cache of at most ``cache_bytes``; a read larger than half the cache is
    fetched directly. Sequential misses fetch ahead, doubling up to a quarter of the cache. The version is pinned at open (the given ``version_id`` or the one HeadObject
    reports), so an overwrite during reading cannot mix versions; given ``size`` (with the version), no HeadObject
    request is made (reopening a known object). Thread-safe. ``bytes_transferred`` and
    ``requests`` count network use.
    """

    def __init__(self, client, bucket: str, key: str, version_id: str | None = None, *,
                 block_size: int = DEFAULT_BLOCK_SIZE, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 retries: int = 5, backoff: float = 0.2, max_backoff: float = 5.0, size: int | None = None):
        super().__init__()
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.client, self.bucket, self.key = client, bucket, key
        asked_head = size is None  # a known size (a reopened file) skips the HeadObject request
        if asked_head:
            head = head_object(client, bucket, key, version_id)
            version_id = version_id or head.get("VersionId") or None
            size = int(head["ContentLength"])
        self.version_id = None if version_id == "null" else version_id
        self.size = int(size)
        self.block_size = int(block_size)
        self.cache_bytes = max(int(cache_bytes), self.block_size)
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.bytes_transferred = 0
        self.requests = int(asked_head)
        self._pos = 0
        self._next_block = -1  # block after the last fetch, to detect sequential reads
        self._ahead = 1
        self.max_ahead_blocks = max(1, (self.cache_bytes // 4) // self.block_size)
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._cached = 0
        self._lock = threading.RLock()
        self.name = f"s3://{bucket}/{key}" + (f"?versionId={self.version_id}" if self.version_id else "")

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
        with self._lock:
            start = self._pos
            n = max(0, min(len(view), self.size - start))
            if n:
                view[:n] = self._read_range(start, start + n)
            self._pos = start + n
        return n

    def read(self, size: int = -1) -> bytes:
        self._check_open()
        with self._lock:
            if size is None or size < 0:
                size = max(0, self.size - self._pos)
            buf = bytearray(min(size, max(0, self.size - self._pos)))
            n = self.readinto(buf)
            return bytes(buf[:n])

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        with self._lock:
            self._blocks.clear()
            self._cached = 0
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed remote file {self.name}")

    # ranges and blocks
    def _read_range(self, start: int, stop: int) -> bytes:
        if stop - start > self.cache_bytes // 2:
            return self._fetch(start, stop)
        first, last = start // self.block_size, (stop - 1) // self.block_size
        have = {b: self._blocks.get(b) for b in range(first, last + 1)}
        missing = [b for b, data in have.items() if data is None]
        runs: list[list[int]] = []
        for b in missing:  # runs of consecutive missing blocks, one request each
            if runs and runs[-1][-1] == b - 1:
                runs[-1].append(b)
            else:
                runs.append([b])
        for run in runs:
            lo_block, hi_block = run[0], self._read_ahead(run[0], run[-1])
            lo, hi = lo_block * self.block_size, min(self.size, (hi_block + 1) * self.block_size)
            data = self._fetch(lo, hi)
            for i, blk in enumerate(range(lo_block, hi_block + 1)):
                piece = data[i * self.block_size:(i + 1) * self.block_size]
                if blk in have:
                    have[blk] = piece
                else:
                    self._remember(blk, piece)
            self._next_block = hi_block + 1
        for b, data in have.items():
            self._remember(b, data)
        joined = b"".join(have[b] for b in range(first, last + 1))
        offset = start - first * self.block_size
        return joined[offset:offset + (stop - start)]

    def _read_ahead(self, first: int, last: int) -> int:
        """Last block to fetch for a miss of blocks ``first..last``: more, doubling, while reads are sequential."""
        if first == self._next_block:
            self._ahead = min(self._ahead * 2, self.max_ahead_blocks)
        else:
            self._ahead = 1
        end = max(last, first + self._ahead - 1)
        end = min(end, (self.size - 1) // self.block_size)
        for blk in range(last + 1, end + 1):  # never re-fetch cached blocks
            if blk in self._blocks:
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

    def _fetch(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the pinned version, retrying transient failures."""
        kwargs = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={start}-{stop - 1}"}
        if self.version_id:
            kwargs["VersionId"] = self.version_id
        for attempt in range(self.retries + 1):
            try:
                self.requests += 1
                response = self.client.get_object(**kwargs)
                data = response["Body"].read()
                self.bytes_transferred += len(data)
                if len(data) != stop - start:
                    from botocore.exceptions import IncompleteReadError

                    raise IncompleteReadError(actual_bytes=len(data), expected_bytes=stop - start)
                return data
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


def open_remote(source: str | tuple[str, str], version_id: str | None = None, client=None, *,
                block_size: int = DEFAULT_BLOCK_SIZE, cache_bytes: int = DEFAULT_CACHE_BYTES,
                endpoint_url: str | None = None, buffered: bool = False) -> RemoteFile | io.BufferedReader:
    """Open one S3 object version as a read-only seekable binary file (e.g. for ``h5py.File(f, 'r')``).

    Parameters
    ----------
    source
        An object URL (any form of :func:`parse_object_url`; a ``?versionId=`` in it pins the version) or a
        ``(bucket, key)`` pair.
    version_id
        Version to read; default the URL's ``versionId`` or the latest at open time (then pinned).
    client
        A boto3 S3 client; default :func:`anonymous_client` on ``endpoint_url``, or on the endpoint a
        path-style custom-endpoint URL names.
    block_size, cache_bytes
        Range-request granularity and the bound of the block cache.
    buffered
        Wrap in an ``io.BufferedReader`` (not needed for h5py).

    Raises
    ------
    S3ObjectNotFoundError
        No such bucket, key or version.
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
        client = anonymous_client(endpoint_url or url_endpoint)
    raw = RemoteFile(client, bucket, key, version_id or url_version, block_size=block_size,
                     cache_bytes=cache_bytes)
    return io.BufferedReader(raw, buffer_size=block_size) if buffered else raw
