"""The fault proxy of ``s3_server`` plus two faults it lacks: a server that ignores Range, and a dropped request.

``ignore_range``: the Range header is removed before the request reaches the server, which then answers
200 with the whole object (as a misbehaving mirror or cache would). ``drop``: the connection is closed
without any answer (a dropped HEAD or GET). Everything else (resets, truncation, 5xx, stalls, bit flips)
is :class:`s3_server.FaultProxy`'s.
"""

from __future__ import annotations

import time

from s3_server import FaultProxy, _ProxyHandler

EXTRA_KINDS = ("ignore_range", "drop")


class _ExtraHandler(_ProxyHandler):
    def _proxy(self) -> None:
        from urllib.parse import unquote

        kind = self.owner._take_extra(self.command, unquote(self.path))
        if kind == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if kind == "ignore_range" and "Range" in self.headers:
            del self.headers["Range"]
        super()._proxy()


class AdversarialProxy(FaultProxy):
    """:class:`FaultProxy` with the ``ignore_range`` and ``drop`` faults (``inject_extra``)."""

    handler_class = _ExtraHandler

    def __init__(self, upstream: str):
        self._extra: list[dict] = []
        self.extra_applied: list[tuple[str, str, str]] = []  # (kind, method, path) of every extra fault applied
        super().__init__(upstream)

    def inject_extra(self, kind: str, count: int = 1, *, match: str | None = None, method: str = "GET",
                     ttl: float = 60.0) -> None:
        if kind not in EXTRA_KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {EXTRA_KINDS}")
        with self._lock:
            self._extra.append({"kind": kind, "count": count, "match": match, "method": method.upper(),
                                "expires": time.monotonic() + ttl, "used": 0})

    def clear(self) -> None:
        with self._lock:
            self._extra = []
            self.extra_applied = []
        super().clear()

    def _take_extra(self, method: str, path: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            self._extra = [f for f in self._extra if f["used"] < f["count"] and f["expires"] > now]
            for fault in self._extra:
                if fault["method"] == method and (fault["match"] is None or fault["match"] in path):
                    fault["used"] += 1
                    self.extra_applied.append((fault["kind"], method, path))
                    return fault["kind"]
        return None
