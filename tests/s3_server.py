"""Test helpers: a real S3 protocol server (moto, server mode) on 127.0.0.1 and a fault-injecting proxy.

Usage (no conftest needed)::

    from s3_server import FaultProxy, moto_s3
    s3 = moto_s3()                       # one per test process, stopped at exit
    s3.create_bucket("bucket")           # versioned
    s3, manifests = publish_release(release_folder, "bucket")   # or: a whole simulated release
    version = s3.put("bucket", "key", b"bytes")
    with FaultProxy(s3.endpoint) as proxy:
        proxy.inject("reset", after_bytes=100_000, match="key")
        client = vbo.source.s3.anonymous_client(proxy.endpoint)
        ...
        proxy.requests(method="GET", match="key")   # what went through, with Range headers and faults

Faults (each bounded by ``count`` and an expiry time): ``reset`` (TCP RST after ``after_bytes`` of the body),
``truncate`` (clean close after ``after_bytes`` although Content-Length promised more), ``status`` (an S3 XML
error: 500 InternalError, 503 SlowDown ...), ``stall`` (send ``after_bytes`` then sleep ``stall_seconds``,
then close), ``corrupt`` (flip one byte of the body at ``after_bytes``), ``delay`` (wait ``stall_seconds``
before answering normally). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import atexit
import http.client
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length", "server", "date", "host"}
FAULT_KINDS = ("reset", "truncate", "status", "stall", "corrupt", "delay")
_ERROR_CODES = {500: "InternalError", 502: "BadGateway", 503: "SlowDown", 504: "GatewayTimeout"}


class MotoS3:
    """moto's ThreadedMotoServer on 127.0.0.1 (free port) with a signed admin client for uploads."""

    def __init__(self):
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log on stderr
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self._admin = None
        self._lock = threading.Lock()

    @property
    def admin(self):
        """A signed client (dummy credentials; moto accepts them) to create buckets and upload."""
        with self._lock:
            if self._admin is None:
                import boto3
                from botocore.config import Config

                self._admin = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint, region_name="us-west-2", aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
            return self._admin

    def create_bucket(self, bucket: str, versioned: bool = True) -> None:
        try:
            self.admin.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        except self.admin.exceptions.BucketAlreadyOwnedByYou:
            pass
        if versioned:
            self.admin.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Upload ``data`` (publicly readable, as the release bucket is); return the new VersionId."""
        return self.admin.put_object(Bucket=bucket, Key=key, Body=data, ACL="public-read")["VersionId"]

    def put_file(self, bucket: str, key: str, path) -> str:
        with open(path, "rb") as fh:
            return self.admin.put_object(Bucket=bucket, Key=key, Body=fh, ACL="public-read")["VersionId"]

    def stop(self) -> None:
        self.server.stop()


_MOTO: MotoS3 | None = None
_MOTO_LOCK = threading.Lock()


def moto_s3() -> MotoS3:
    """The test process's moto server (started on first use, stopped at exit)."""
    global _MOTO
    with _MOTO_LOCK:
        if _MOTO is None:
            _MOTO = MotoS3()
            atexit.register(_MOTO.stop)
        return _MOTO


def publish_release(root, bucket: str) -> tuple[MotoS3, dict]:
    """Publish the release folder ``root`` to a new versioned ``bucket`` of the test process's moto server.

    Returns the server and what :func:`vbo.cache.publish.publish` returned (the published manifests by name).
    """
    from vbo.cache.publish import publish

    server = moto_s3()
    server.create_bucket(bucket)
    return server, publish(root, bucket, client=server.admin)


@dataclass
class Fault:
    kind: str
    count: int = 1
    match: str | None = None  # substring of the (decoded) request path
    method: str = "GET"
    after_bytes: int = 0
    status: int = 503
    stall_seconds: float = 5.0
    expires: float = field(default=0.0)  # monotonic deadline
    used: int = 0


@dataclass
class RequestLog:
    method: str
    path: str
    range: str | None
    status: int = 0
    fault: str | None = None
    bytes_sent: int = 0
    started: float = field(default_factory=time.monotonic)


class FaultProxy:
    """A threaded HTTP/1.1 proxy on 127.0.0.1 in front of ``upstream`` that injects faults on demand."""

    handler_class: type = None  # the request handler (default _ProxyHandler); a subclass may extend it

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname, parts.port or 80
        self._faults: list[Fault] = []
        self._log: list[RequestLog] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        proxy = self

        class Handler(self.handler_class or _ProxyHandler):
            owner = proxy

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    # control
    def inject(self, kind: str, count: int = 1, *, match: str | None = None, method: str = "GET",
               after_bytes: int = 0, status: int = 503, stall_seconds: float = 5.0,
               ttl: float = 60.0) -> Fault:
        """Apply fault ``kind`` to the next ``count`` matching requests (within ``ttl`` seconds)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {FAULT_KINDS}")
        fault = Fault(kind, count, match, method.upper(), after_bytes, status, min(stall_seconds, 60.0),
                      time.monotonic() + ttl)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Drop pending faults and the request log; wake stalled responses."""
        with self._lock:
            self._faults.clear()
            self._log.clear()
        self._stop.set()
        self._stop = threading.Event()

    def requests(self, method: str | None = None, match: str | None = None) -> list[RequestLog]:
        with self._lock:
            return [r for r in self._log if (method is None or r.method == method)
                    and (match is None or match in r.path)]

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # used by the handler
    def _take(self, method: str, path: str) -> Fault | None:
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if f.used < f.count and f.expires > now]
            for fault in self._faults:
                if fault.method == method and (fault.match is None or fault.match in path):
                    fault.used += 1
                    return fault
        return None

    def _record(self, entry: RequestLog) -> None:
        with self._lock:
            self._log.append(entry)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # resets and broken pipes are the point
        pass


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy
    timeout = 30

    def log_message(self, *args) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle/delayed-ACK stalls

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (OSError, ValueError):  # the client went away, or we reset the connection on purpose
            self.close_connection = True

    def do_GET(self):
        self._proxy()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _proxy(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        path = unquote(self.path)
        entry = RequestLog(self.command, path, self.headers.get("Range"))
        owner._record(entry)
        fault = owner._take(self.command, path)
        entry.fault = fault.kind if fault else None
        if fault is not None and fault.kind == "delay":
            owner._stop.wait(fault.stall_seconds)
            fault = None
        if fault is not None and fault.kind == "status":
            code = _ERROR_CODES.get(fault.status, "InternalError")
            payload = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>"
                       f"<Message>injected fault</Message></Error>").encode()
            self.send_response(fault.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            entry.status = fault.status
            return
        conn = http.client.HTTPConnection(owner.upstream_host, owner.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Host"] = f"{owner.upstream_host}:{owner.upstream_port}"
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            upstream_length = response.getheader("Content-Length")
            status, reason, resp_headers = response.status, response.reason, response.getheaders()
        finally:
            conn.close()
        entry.status = status
        self.send_response(status, reason)
        for key, value in resp_headers:
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        if self.command == "HEAD":
            self.send_header("Content-Length", upstream_length or "0")
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault is None or not data:
            entry.bytes_sent = len(data)
            self.wfile.write(data)
            return
        cut = min(fault.after_bytes, len(data))
        if fault.kind == "corrupt":
            corrupted = bytearray(data)
            corrupted[min(cut, len(data) - 1)] ^= 0xFF
            entry.bytes_sent = len(data)
            self.wfile.write(bytes(corrupted))
            return
        entry.bytes_sent = cut
        self.wfile.write(data[:cut])
        self.wfile.flush()
        self.close_connection = True
        if fault.kind == "stall":
            owner._stop.wait(fault.stall_seconds)
        elif fault.kind == "reset":
            time.sleep(0.2)  # let the client take the bytes already sent before the RST
            self._reset()

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0, then close every reference to the socket)."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            return
        for stream in (self.wfile, self.rfile):
            try:
                stream.close()
            except OSError:
                pass
        self.connection.close()


# --- fixtures shared by the S3 test modules (import them there; each module names its BUCKET) ---------------

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def server(request):
    """The moto server, with the importing module's ``BUCKET`` created (versioned)."""
    srv = moto_s3()
    srv.create_bucket(request.module.BUCKET)
    return srv


@pytest.fixture(scope="module")
def module_proxy(server):
    with FaultProxy(server.endpoint) as px:
        yield px


@pytest.fixture
def proxy(module_proxy):
    """The module's fault proxy with no fault pending before and after the test."""
    module_proxy.clear()
    yield module_proxy
    module_proxy.clear()
