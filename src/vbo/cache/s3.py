"""Anonymous S3 access to the release bucket: client, URL parsing and building, safe keys, range reads.

``docs/format.md`` §2 (bucket, keys, URL forms) and §3.3 (bucket and key from an entry URL).

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

import hashlib
import io
import json
import os
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from vbo.cache import manifest as mf
from vbo.errors import (ForeignHostError, S3ConnectionError, S3Error, S3ObjectNotFoundError, StreamIntegrityError,
                        UnsafeKeyError)

ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
MAX_POOL_CONNECTIONS = 16
DEFAULT_BLOCK_SIZE = 256 * 1024
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
DEFAULT_PARALLEL = 8  # range requests in flight at once (prefetch)

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


# --- block digests of streamed objects ---------------------------------------------------------------

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


# --- remote file -------------------------------------------------------------------------------------


class RemoteFile(io.RawIOBase):
    """Read-only, seekable binary file over byte ranges of one S3 object version.

    Reads are served from fixed-size blocks fetched with ranged GETs (contiguous missing blocks in one
    request) and kept in an LRU cache of at most ``cache_bytes``; a read larger than half the cache is
    fetched directly. Sequential misses fetch ahead, doubling up to a quarter of the cache.
    :meth:`prefetch` fetches known byte ranges ahead of use on up to ``parallel`` connections (coalescing
    nearby ranges); a read of a block in flight waits for it instead of fetching it again. The version is
    pinned at open (the given ``version_id`` or the one the first GET reports), so an overwrite during reading
    cannot mix versions. Opening costs one round trip: the first block and the last ``tail_bytes`` (default
    four blocks) in two parallel GETs, which also report the size, version and ETag (no HeadObject); a given ``size`` (a reopened
    file) must equal the size the server reports. Thread-safe. ``bytes_transferred`` and ``requests`` count network use.

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
                 tail_bytes: int | None = None, size: int | None = None):
        super().__init__()
        tail_bytes = 4 * block_size if tail_bytes is None else tail_bytes
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.client, self.bucket, self.key = client, bucket, key
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.bytes_transferred = 0
        self.requests = 0
        self._stats_lock = threading.Lock()
        head, first_pieces = self._open_requests(version_id, int(block_size), int(tail_bytes))
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
        if verify:
            identity = self.version_id or (self.etag or "").strip('"')
            if identity:
                path = BlockDigests.sidecar_path(digest_dir or default_digest_dir(), bucket, key, identity)
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
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._cached = 0
        self._inflight: dict[int, Future] = {}
        self._lock = threading.RLock()
        self.parallel = max(1, int(parallel))
        self._pool: ThreadPoolExecutor | None = None
        for start, data in first_pieces:
            self._keep_whole_blocks(start, data)

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
                        if is_client_error(exc):
                            raise as_s3_error(exc, self.bucket, self.key) from exc
                        raise
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
        self._pos = start + n
        return n

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
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed remote file {self.name}")

    # prefetching
    def prefetch(self, ranges, *, merge_gap: int | None = None, request_bytes: int = 8 << 20) -> int:
        """Start fetching byte ranges ``[(start, stop), ...]`` in the background; return the bytes scheduled.

        Blocks already cached or in flight are skipped; runs of missing blocks closer than ``merge_gap``
        (default two blocks) become one request, and requests are cut at ``request_bytes`` so that up to
        ``parallel`` of them run at once. Later reads of these blocks wait for the fetch instead of repeating it.
        """
        self._check_open()
        gap_blocks = max(0, (2 * self.block_size if merge_gap is None else merge_gap) // self.block_size)
        wanted: set[int] = set()
        for start, stop in ranges:
            start, stop = max(0, int(start)), min(self.size, int(stop))
            if stop > start:
                wanted.update(range(start // self.block_size, (stop - 1) // self.block_size + 1))
        with self._lock:
            missing = sorted(b for b in wanted if b not in self._blocks and b not in self._inflight)
            runs: list[list[int]] = []
            per_request = max(1, request_bytes // self.block_size)
            for b in missing:
                if runs and b - runs[-1][1] <= gap_blocks + 1 and b - runs[-1][0] < per_request:
                    runs[-1][1] = b
                else:
                    runs.append([b, b])
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="vbo-range")
            for lo, hi in runs:
                blocks = [b for b in range(lo, hi + 1) if b not in self._blocks and b not in self._inflight]
                future = self._pool.submit(self._fetch_and_store, lo, hi)
                for b in blocks:
                    self._inflight[b] = future
        return sum(min(self.size, (hi + 1) * self.block_size) - lo * self.block_size for lo, hi in runs)

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

    # ranges and blocks
    def _read_range(self, start: int, stop: int) -> bytes:
        first, last = start // self.block_size, (stop - 1) // self.block_size
        have: dict[int, bytes | None] = {}
        waiting: dict[int, Future] = {}
        with self._lock:
            for b in range(first, last + 1):
                data = self._blocks.get(b)
                if data is not None:
                    self._blocks.move_to_end(b)
                elif b in self._inflight:
                    waiting[b] = self._inflight[b]
                have[b] = data
        for b, future in waiting.items():
            future.result()  # raises the fetch's error (e.g. StreamIntegrityError)
            with self._lock:
                have[b] = self._blocks.get(b)  # None if evicted meanwhile: fetched again below
        missing = [b for b, data in have.items() if data is None]
        direct = (stop - start) > self.cache_bytes // 2
        runs: list[list[int]] = []
        for b in missing:  # runs of consecutive missing blocks, one request each
            if runs and runs[-1][-1] == b - 1:
                runs[-1].append(b)
            else:
                runs.append([b])
        for run in runs:
            lo_block = run[0]
            hi_block = run[-1] if direct else self._read_ahead(run[0], run[-1])
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


def open_remote(source: str | tuple[str, str], version_id: str | None = None, client=None, *,
                block_size: int = DEFAULT_BLOCK_SIZE, cache_bytes: int = DEFAULT_CACHE_BYTES,
                endpoint_url: str | None = None, buffered: bool = False, parallel: int = DEFAULT_PARALLEL,
                verify: bool = True, digest_dir: str | Path | None = None,
                tail_bytes: int | None = None) -> RemoteFile | io.BufferedReader:
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
    parallel
        Range requests in flight at once when ranges are prefetched (:meth:`RemoteFile.prefetch`).
    verify, digest_dir
        Check every response and every block against the digests recorded for this object version
        (:class:`BlockDigests`, sidecars in ``digest_dir``, default :func:`default_digest_dir`).
    tail_bytes
        Bytes at the end of the object fetched at open, in parallel with the first block (default four
        blocks; HDF5 writers put their last metadata there).

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
        client = anonymous_client(endpoint_url or url_endpoint)
    raw = RemoteFile(client, bucket, key, version_id or url_version, block_size=block_size,
                     cache_bytes=cache_bytes, parallel=parallel, verify=verify, digest_dir=digest_dir,
                     tail_bytes=tail_bytes)
    return io.BufferedReader(raw, buffer_size=block_size) if buffered else raw
