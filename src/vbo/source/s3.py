"""Anonymous S3 access: client, error typing, URL parsing and building, safe keys, listing and sizes.

The bottom ("source") layer: nothing here knows about manifests or the cache. ``docs/format.md`` §2 (bucket,
keys, URL forms) and §3.3 (bucket and key from an entry URL).

- :func:`anonymous_client` / :func:`shared_client` — an unsigned boto3 client; endpoint from the argument,
  ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` or AWS itself (``us-west-2``).
- :func:`bucket_and_key` / :func:`parse_object_url` — the real URL forms (virtual-host AWS, path-style AWS,
  ``s3://``, a custom endpoint's path-style URL), with an optional ``?versionId=``.
- :func:`check_object_url` — refuses foreign hosts and keys that would escape the cache.
- :func:`safe_relative_key` — refuses ``..``, absolute paths, backslashes, drive letters, empty components.
- :func:`object_https_url` — an object's URL (AWS form, or path style on a custom endpoint).
- :class:`RangeClient` / :func:`shared_range_client` — anonymous ranged GETs without building a boto3 client.
- :func:`list_keys`, :func:`head_object`, :func:`object_size` — listing and sizes, with typed errors.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from vbo.errors import ForeignHostError, S3ConnectionError, S3Error, S3ObjectNotFoundError, UnsafeKeyError

BUCKET_NAME = "visual-behavior-ophys-data"  # docs/format.md §2: the release bucket
BUCKET_REGION = "us-west-2"
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
MAX_POOL_CONNECTIONS = 16  # boto3 clients (listing, HEAD, downloads)
RANGE_POOL_CONNECTIONS = 64  # a RangeClient's kept connections: two streamed files' requests in flight at once
# (vbo.source.remote.DEFAULT_PARALLEL each); a connection returned to a full pool is closed, and the next
# request pays a new handshake

# docs/format.md §3.3: the bucket is the host with this match removed (commas kept as in the SDK's class).
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


def anonymous_client(endpoint_url: str | None = None, *, region: str = BUCKET_REGION,
                     connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                     max_attempts: int = 4, max_pool_connections: int = MAX_POOL_CONNECTIONS):
    """A boto3 S3 client sending unsigned (anonymous) requests; no credentials are read or needed.

    A custom endpoint (argument or environment, see :func:`resolve_endpoint`) is addressed path-style
    (``http://host:port/bucket/key``), AWS virtual-host style. botocore retries failed requests up to
    ``max_attempts`` times ("standard" mode); a failure while streaming a body is retried by
    :func:`vbo.cache.download.download_object` and by :class:`vbo.source.remote.RemoteFile`.
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

    Accepted forms: ``https://<bucket>.s3[-.]<region>.amazonaws.com/<key>`` (``docs/format.md`` §2, §3.3),
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
    """``(bucket, key)`` of an object URL (``docs/format.md`` §3.3); see :func:`parse_object_url` for the forms."""
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


def expected_hosts(bucket: str = BUCKET_NAME, endpoint_url: str | None = None) -> set[str]:
    """Hosts an object URL of ``bucket`` may name: the AWS forms, plus the endpoint's host:port if any."""
    hosts = {f"{bucket}.s3.amazonaws.com", f"{bucket}.s3.{BUCKET_REGION}.amazonaws.com",
             f"{bucket}.s3-{BUCKET_REGION}.amazonaws.com", f"s3.{BUCKET_REGION}.amazonaws.com",
             "s3.amazonaws.com", f"s3-{BUCKET_REGION}.amazonaws.com"}
    if endpoint_url:
        hosts.add(urlsplit(endpoint_url).netloc.lower())
    return hosts


def check_object_url(url: str, bucket: str = BUCKET_NAME, endpoint_url: str | None = None) -> ObjectLocation:
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


def object_url(key: str, bucket: str = BUCKET_NAME, region: str = BUCKET_REGION) -> str:
    """HTTPS URL of an object key in the bucket, AWS virtual-host form (the form manifests use)."""
    return f"https://{bucket}.s3.{region}.amazonaws.com/{key}"


def object_https_url(key: str, bucket: str = BUCKET_NAME, version_id: str | None = None,
                     endpoint_url: str | None = None) -> str:
    """URL of an object: AWS virtual-host form (as manifests print it), or path style on a custom endpoint."""
    safe_relative_key(key)
    if endpoint_url:
        url = f"{endpoint_url.rstrip('/')}/{bucket}/{quote(key, safe='/')}"
    else:
        url = object_url(quote(key, safe="/"), bucket)
    return f"{url}?versionId={quote(version_id, safe='')}" if version_id else url



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



# --- light anonymous ranged GETs -------------------------------------------------------------------


class _RangeBody:
    """The body of a :class:`RangeClient` response: ``read()`` returns all of it (a short body raises urllib3's
    ``ProtocolError``, which :func:`is_retryable` treats as transient) and frees the connection."""

    def __init__(self, response):
        self._response = response

    def read(self) -> bytes:
        try:
            return self._response.read()
        finally:
            self._response.release_conn()


class RangeClient:
    """Anonymous GETs of object byte ranges over one urllib3 connection pool, answering like boto3's
    ``get_object`` (``VersionId``, ``ETag``, ``ContentRange``, ``ContentLength``, ``Body``; an error status is a
    botocore ``ClientError`` with the S3 error code, so :func:`is_retryable` and :func:`as_s3_error` type it).

    Unsigned GETs of public objects need no signing, so the streaming path skips building a boto3 client
    (≈ 0.3 s); anything else (``head_object``, listing ...) goes to a boto3 client built on first use
    (:func:`shared_client`). Same endpoint rules as :func:`anonymous_client` (path style on a custom endpoint,
    AWS virtual-host style in ``us-west-2`` otherwise), same timeouts, TLS verified (``AWS_CA_BUNDLE`` or
    certifi's certificates); no retries of its own
    (:class:`~vbo.source.remote.RemoteFile` retries with backoff and checks every response).
    """

    def __init__(self, endpoint_url: str | None = None, *, region: str = BUCKET_REGION,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 max_pool_connections: int = RANGE_POOL_CONNECTIONS):
        import urllib3

        self.endpoint, self.region = resolve_endpoint(endpoint_url), region
        options = {}
        bundle = os.environ.get("AWS_CA_BUNDLE", "").strip()  # as botocore: this bundle, else certifi's
        try:
            import certifi

            options["ca_certs"] = bundle or certifi.where()
        except ImportError:  # pragma: no cover - the system's certificates
            if bundle:
                options["ca_certs"] = bundle
        self._pool = urllib3.PoolManager(maxsize=max_pool_connections, block=False, retries=False,
                                         timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
                                         **options)
        self._http_error = urllib3.exceptions.HTTPError

    def object_url(self, bucket: str, key: str, version_id: str | None = None) -> str:
        """The URL a GET of ``bucket/key`` (optionally one version) goes to."""
        path = quote(key, safe="/~")
        if self.endpoint:
            url = f"{self.endpoint}/{bucket}/{path}"
        elif re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", bucket):
            url = f"https://{bucket}.s3.{self.region}.amazonaws.com/{path}"
        else:  # dots or capitals: not a valid TLS host name, path style (as botocore's "auto")
            url = f"https://s3.{self.region}.amazonaws.com/{bucket}/{path}"
        return f"{url}?versionId={quote(version_id, safe='')}" if version_id else url

    def get_object(self, *, Bucket: str, Key: str, Range: str | None = None, VersionId: str | None = None) -> dict:
        """GET (a range of) one object version; a boto3-like response dict (see the class)."""
        headers = {"Range": Range} if Range else {}
        try:
            response = self._pool.request("GET", self.object_url(Bucket, Key, VersionId), headers=headers,
                                          preload_content=False, redirect=False)
        except self._http_error as exc:  # refused, reset, timed out: transient for the callers' retries
            raise ConnectionError(f"GET {Bucket}/{Key}: {type(exc).__name__}: {exc}") from exc
        if response.status >= 300:
            raise _client_error(response, "GetObject")
        h = response.headers
        return {"VersionId": h.get("x-amz-version-id"), "ETag": h.get("ETag"), "ContentRange": h.get("Content-Range"),
                "ContentLength": int(h.get("Content-Length", -1)), "Body": _RangeBody(response)}

    def head_object(self, **kwargs) -> dict:
        return self.boto().head_object(**kwargs)

    def boto(self):
        """The boto3 client of this endpoint, for the calls this light client does not make."""
        return shared_client(self.endpoint)


def _client_error(response, operation: str) -> BaseException:
    """A botocore ClientError for an error status of ``response`` (code from the S3 XML error body)."""
    from botocore.exceptions import ClientError

    try:
        body = response.read(64 * 1024) or b""
    except Exception:  # the error body is only informative
        body = b""
    finally:
        response.release_conn()
    code = re.search(rb"<Code>([^<]{1,100})</Code>", body)
    message = re.search(rb"<Message>([^<]{0,300})</Message>", body)
    error = {"Code": code.group(1).decode("utf-8", "replace") if code else str(response.status),
             "Message": message.group(1).decode("utf-8", "replace") if message else f"HTTP {response.status}"}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": response.status}}, operation)


def _proxied(endpoint: str | None) -> bool:
    """True if the environment sends this endpoint's requests through a proxy (boto3 honours that,
    :class:`RangeClient` does not, so it is not used then)."""
    import urllib.request

    url = endpoint or f"https://s3.{BUCKET_REGION}.amazonaws.com"
    scheme, host = urlsplit(url).scheme, urlsplit(url).hostname or ""
    return scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host)


_RANGE_CLIENTS: dict[tuple[int, str | None], object] = {}


def shared_range_client(endpoint_url: str | None = None):
    """One :class:`RangeClient` per endpoint and process for streamed files (a boto3 client from
    :func:`shared_client` where a proxy is configured)."""
    key = (os.getpid(), resolve_endpoint(endpoint_url))
    if _proxied(key[1]):
        return shared_client(key[1])
    with _SHARED_CLIENTS_LOCK:
        client = _RANGE_CLIENTS.get(key)
        if client is None:
            client = _RANGE_CLIENTS[key] = RangeClient(key[1])
        return client

_SHARED_CLIENTS: dict[tuple[int, str | None], object] = {}
_SHARED_CLIENTS_LOCK = threading.Lock()


def shared_client(endpoint_url: str | None = None):
    """One :func:`anonymous_client` per endpoint and process, shared by streamed files (boto3 clients are
    thread-safe; a forked child makes its own, since connections must not cross processes)."""
    key = (os.getpid(), resolve_endpoint(endpoint_url))
    with _SHARED_CLIENTS_LOCK:
        client = _SHARED_CLIENTS.get(key)
        if client is None:
            client = _SHARED_CLIENTS[key] = anonymous_client(key[1], max_pool_connections=RANGE_POOL_CONNECTIONS)
        return client


def _forget_parent_clients() -> None:
    global _SHARED_CLIENTS_LOCK
    _SHARED_CLIENTS_LOCK = threading.Lock()
    _SHARED_CLIENTS.clear()
    _RANGE_CLIENTS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_clients)
