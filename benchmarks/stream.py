#!/usr/bin/env python
"""Streaming benchmark: one experiment read by byte ranges over a link with real latency and bandwidth.

    python benchmarks/stream.py FILE [--rtt-ms 50] [--mb-per-s 50]
                                [--tools "vbo,vbo (warm),pynwb+remfile,lazynwb"] [--markdown]

Starts a moto S3 server (own process) holding FILE, and a loopback proxy (own process) in front of it that
delays every request and every response by half the round-trip time, delays each new connection by one
round trip (the TCP handshake), and caps the bandwidth of all responses together (one shared link). Each
tool then runs in a fresh process, through the proxy, for the same jobs, one after the other on one open
file:

  open + metadata          open the file and read the session metadata
  trials + presentations   the trials table and the stimulus presentations
  dff_traces               dF/F of every ROI
  one cell's dF/F          (on a fresh open, not timed) one ROI's dF/F trace

For each job: wall time, GET requests and bytes through the proxy (counted by the proxy), and ratios from
the same run (each tool's imports are done before timing). Tools: vbo (``stream=True`` path:
:func:`vbo.source.open_file`) on an empty block-digest folder (cold: no read plan yet); "vbo (warm)", vbo again
in a new process with the read plans and digests the cold run left (a second session on the same object
version; run it after "vbo"); pynwb on remfile; and lazynwb (which also reads through remfile over HTTP).
The proxy forwards a response in pieces of 256 KiB, each crossing the link (half an RTT) before the next is
read, so one connection carries at most a few MB/s and parallel requests share the link. The response's head
travels in its first piece, with the first body bytes (as on a real link: a small response is one crossing).
Targets (printed, never asserted): open + metadata in ≤ 10 requests and ≤ 1 s; dff_traces at ≥ 70 % of the
link's bandwidth; ≥ 3× faster than the best other tool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUCKET = "vbo-stream-bench"
KEY = "visual-behavior-ophys/behavior_ophys_experiments/behavior_ophys_experiment_1.nwb"
TOOLS = ("vbo", "vbo (warm)", "pynwb+remfile", "lazynwb")
WARM = "vbo (warm)"  # vbo again in a new process, with the read plans and digests the cold run recorded
JOBS = ("open + metadata", "trials + presentations", "dff_traces", "one cell's dF/F")
_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|HEAD|PUT|POST) ")
PIECE_BYTES = 256 * 1024  # the proxy forwards a response in pieces of at most this size, one crossing at a time


# ---------------------------------------------------------------------------------------------
# the link: a latency- and bandwidth-limited TCP proxy (run in its own process)
# ---------------------------------------------------------------------------------------------


class Link:
    """One shared link: half the RTT each way, responses serialised at ``bandwidth`` bytes/s in total.

    HTTP-aware: a client connection stays open across requests (keep-alive, as with S3) while each request
    goes to the server on a new loopback connection (moto's werkzeug server closes after every response).
    """

    def __init__(self, rtt: float, bandwidth: float):
        self.half_rtt, self.bandwidth = rtt / 2, bandwidth
        self.free_at = 0.0
        self.stats = {"requests": 0, "bytes_down": 0, "connections": 0}

    async def _wait_until(self, due: float) -> None:
        delay = due - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _exchange(self, request: bytes, client_writer, upstream: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        await self._wait_until(loop.time() + self.half_rtt)  # the request crosses the link
        server_reader, server_writer = await asyncio.open_connection(*upstream)
        try:
            server_writer.write(request)
            await server_writer.drain()
            head = await server_reader.readuntil(b"\r\n\r\n")
            head = re.sub(rb"\r\nConnection: close", b"\r\nConnection: keep-alive", head, flags=re.I)
            data = head + await server_reader.read(PIECE_BYTES - len(head))  # the body follows its head at once
            while data:
                arrived = loop.time()
                start = max(arrived + self.half_rtt, self.free_at)  # the response crosses the link
                self.free_at = start + len(data) / self.bandwidth
                self.stats["bytes_down"] += len(data)  # headers and body
                await self._wait_until(self.free_at)
                client_writer.write(data)
                await client_writer.drain()
                data = await server_reader.read(PIECE_BYTES)  # werkzeug closes: the body ends at EOF
        finally:
            server_writer.close()

    async def handle(self, client_reader, client_writer, upstream: tuple[str, int]) -> None:
        self.stats["connections"] += 1
        await asyncio.sleep(2 * self.half_rtt)  # the TCP handshake of a new connection
        try:
            while True:
                head = await client_reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"\r\ncontent-length:\s*(\d+)", head, flags=re.I)
                body = await client_reader.readexactly(int(length.group(1))) if length else b""
                self.stats["requests"] += len(_REQUEST_LINE.findall(head[:16]))
                await self._exchange(head + body, client_writer, upstream)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            client_writer.close()


async def _serve_proxy(upstream: tuple[str, int], rtt: float, bandwidth: float) -> None:
    link = Link(rtt, bandwidth)
    proxy = await asyncio.start_server(lambda r, w: link.handle(r, w, upstream), "127.0.0.1", 0)

    async def stats(reader, writer):
        writer.write(json.dumps(link.stats).encode())
        await writer.drain()
        writer.close()

    control = await asyncio.start_server(stats, "127.0.0.1", 0)
    print(json.dumps({"proxy": proxy.sockets[0].getsockname()[1], "stats": control.sockets[0].getsockname()[1]}),
          flush=True)
    async with proxy, control:
        await asyncio.gather(proxy.serve_forever(), control.serve_forever())


def link_stats(port: int) -> dict:
    """The proxy's counters: GET/HEAD requests, response bytes, connections."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        return json.loads(sock.makefile("rb").read())


# ---------------------------------------------------------------------------------------------
# the jobs of each tool (run in a fresh process)
# ---------------------------------------------------------------------------------------------


def _vbo_jobs(url: str, cell: int):
    import warnings

    import boto3  # noqa: F401 (vbo imports its S3 client on first use; imports are excluded for every tool)

    import vbo
    import vbo.experiment  # noqa: F401 (vbo imports its classes lazily: done here, before timing, as for the others)

    warnings.simplefilter("ignore")  # legacy-method warnings of get_dff_traces
    state = {}

    def open_metadata():
        state["exp"] = vbo.BehaviorOphysExperiment.from_nwb_path(url)
        return state["exp"].metadata

    def fresh_cell():
        exp = vbo.BehaviorOphysExperiment.from_nwb_path(url)
        ids = exp.get_cell_specimen_ids()
        return lambda: exp.get_dff_traces([ids[cell]])

    return [open_metadata,
            lambda: (state["exp"].trials, state["exp"].stimulus_presentations),
            lambda: state["exp"].dff_traces,
            fresh_cell]


def _pynwb_jobs(url: str, cell: int):
    import h5py
    import pynwb
    import remfile

    state = {}

    def open_nwb():
        handle = h5py.File(remfile.File(url), "r")
        io = pynwb.NWBHDF5IO(file=handle, mode="r", load_namespaces=True)
        return io, io.read()

    def open_metadata():
        state["io"], nwb = open_nwb()
        state["nwb"] = nwb
        return (nwb.session_start_time, nwb.subject, {k: v for k, v in nwb.lab_meta_data.items()},
                nwb.processing["ophys"]["image_segmentation"].plane_segmentations)

    def tables():
        nwb = state["nwb"]
        return [nwb.trials.to_dataframe()] + [t.to_dataframe(exclude={"timeseries", "tags"})
                                              for name, t in nwb.intervals.items() if name.endswith("_presentations")]

    def dff():
        return nwb_dff(state["nwb"]).data[:]

    def nwb_dff(nwb):
        return nwb.processing["ophys"]["dff"].roi_response_series["traces"]

    def fresh_cell():
        _, nwb = open_nwb()
        return lambda: nwb_dff(nwb).data[:, cell]

    return [open_metadata, tables, dff, fresh_cell]


def _lazynwb_jobs(url: str, cell: int):
    import lazynwb
    from lazynwb._hdf5 import range_reader

    store_from_url = range_reader._cached_store_from_url

    def allow_http(store_url, *, client_options=None, **kwargs):  # the benchmark's link is plain http
        return store_from_url(store_url, client_options=client_options or {"allow_http": True}, **kwargs)

    range_reader._cached_store_from_url = allow_http

    def open_metadata():
        return lazynwb.get_metadata_df(url, disable_progress=True)

    def tables():
        names = [p for p in lazynwb.get_internal_paths(url) if p.startswith("/intervals/")]
        return [lazynwb.get_df(url, name, exact_path=True, disable_progress=True) for name in names]

    def dff():
        return lazynwb.get_timeseries(url, "/processing/ophys/dff/traces", exact_path=True).data[:]

    def fresh_cell():
        lazynwb.clear_cache()
        series = lazynwb.get_timeseries(url, "/processing/ophys/dff/traces", exact_path=True)
        return lambda: series.data[:, cell]

    return [open_metadata, tables, dff, fresh_cell]


JOB_FACTORIES = {"vbo": _vbo_jobs, WARM: _vbo_jobs, "pynwb+remfile": _pynwb_jobs, "lazynwb": _lazynwb_jobs}


def _run_tool(tool: str, url: str, stats_port: int, cell: int) -> list[dict]:
    jobs = JOB_FACTORIES[tool](url, cell)
    out = []
    for name, job in zip(JOBS, jobs):
        if name == "one cell's dF/F":
            job = job()  # a fresh open (not timed), then the one read
        before = link_stats(stats_port)
        start = time.perf_counter()
        try:
            job()
            error = None
        except Exception as exc:  # a tool that cannot do a job: reported, not fatal
            error = f"{type(exc).__name__}: {exc}"[:200]
        seconds = time.perf_counter() - start
        after = link_stats(stats_port)
        out.append({"job": name, "seconds": seconds, "requests": after["requests"] - before["requests"],
                    "bytes": after["bytes_down"] - before["bytes_down"], "error": error})
    return out


# ---------------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_moto(port: int) -> None:
    """moto's S3 server with two changes that keep the server from being the bottleneck: HTTP/1.1 keep-alive
    (as S3; werkzeug speaks HTTP/1.0 by default, a new connection per request), and an object's bytes read
    once instead of copied whole for every ranged GET."""
    here = Path(__file__).resolve().parent  # benchmarks/responses.py would shadow the `responses` package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    from werkzeug.serving import WSGIRequestHandler

    WSGIRequestHandler.protocol_version = "HTTP/1.1"
    from moto.s3.models import FakeKey
    from moto.server import main as moto_main

    stored = FakeKey.value

    def value_read_once(self):
        cached = getattr(self, "_bench_value", None)
        if cached is None or len(cached) != self.contentsize:
            cached = self._bench_value = stored.fget(self)
        return cached

    FakeKey.value = property(value_read_once, stored.fset)
    moto_main(["-H", "127.0.0.1", "-p", str(port)])


def _start_moto() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-moto", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def _upload(endpoint: str, path: Path) -> str:
    import boto3
    from botocore.config import Config

    admin = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-west-2",
                                           aws_access_key_id="bench", aws_secret_access_key="bench",
                                           config=Config(s3={"addressing_style": "path"}))
    admin.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    admin.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    with open(path, "rb") as fh:
        version = admin.put_object(Bucket=BUCKET, Key=KEY, Body=fh, ACL="public-read")["VersionId"]
    admin.get_object(Bucket=BUCKET, Key=KEY, Range="bytes=0-0")["Body"].read()  # the server reads it once
    return version


def _start_proxy(endpoint: str, rtt: float, bandwidth: float) -> tuple[subprocess.Popen, int, int]:
    host, port = endpoint.rsplit("//", 1)[1].split(":")
    proc = subprocess.Popen([sys.executable, __file__, "--serve-proxy", f"{host}:{port}", "--rtt-ms",
                             str(rtt * 1000), "--mb-per-s", str(bandwidth / 1e6)], stdout=subprocess.PIPE, text=True)
    ports = json.loads(proc.stdout.readline())
    return proc, ports["proxy"], ports["stats"]


def _tool_process(tool: str, url: str, stats_port: int, cell: int, digest_dir: str) -> list[dict]:
    env = dict(os.environ, VBO_BLOCK_DIGESTS=digest_dir)
    done = subprocess.run([sys.executable, __file__, "--run-tool", tool, "--url", url, "--stats-port",
                           str(stats_port), "--cell", str(cell)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
        return [{"job": job, "seconds": None, "requests": None, "bytes": None,
                 "error": f"{tool} failed (its error is printed above)"} for job in JOBS]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fmt_s(x):
    return "—" if x is None else f"{x:.2f}"


def _fmt_mb(x):
    return "—" if x is None else f"{x / 1e6:.1f}"


def _ratio(cells: dict[str, dict], others: list[str], ours: str) -> str:
    """Best other tool's time over ``ours``' (e.g. ``3.2x``), or a dash."""
    ok = [cells[t]["seconds"] for t in others if cells[t]["seconds"] is not None and not cells[t]["error"]]
    mine = cells[ours]["seconds"]
    return f"{min(ok) / mine:.1f}x" if ok and mine and not cells[ours]["error"] else "—"


def _target(job: str, cell: dict, bandwidth: float) -> str:
    """The issue's target for ``job`` and whether ``cell`` (one vbo run) meets it."""
    if cell["seconds"] is None or cell["error"]:
        return ""
    if job == "open + metadata":
        good = cell["requests"] <= 10 and cell["seconds"] <= 1.0
        return f"≤ 10 GETs, ≤ 1 s {'✓' if good else '✗'}"
    if job == "dff_traces":
        share = cell["bytes"] / cell["seconds"] / bandwidth
        return f"{share:.0%} of link (≥ 70 % {'✓' if share >= 0.7 else '✗'})"
    return ""


def report(results: dict[str, list[dict]], args, size: int, load: str) -> str:
    tools = list(results)
    ours = [t for t in ("vbo", WARM) if t in results]
    others = [t for t in tools if t not in ours]
    head = ["job"] + [f"{t} (s)" for t in tools] + [f"{t} GETs" for t in tools] + [f"{t} MB" for t in tools]
    if others:
        head += [f"best other / {t}" for t in ours]
    head += [f"target ({t})" for t in ours]
    lines = [head]
    bandwidth = args.mb_per_s * 1e6
    for i, job in enumerate(JOBS):
        row = [job]
        cells = {t: results[t][i] for t in tools}
        row += [_fmt_s(cells[t]["seconds"]) if not cells[t]["error"] else "error" for t in tools]
        row += ["—" if cells[t]["requests"] is None else str(cells[t]["requests"]) for t in tools]
        row += [_fmt_mb(cells[t]["bytes"]) for t in tools]
        if others:
            row += [_ratio(cells, others, t) for t in ours]
        row += [_target(job, cells[t], bandwidth) for t in ours]
        lines.append(row)
    title = (f"**{args.file.name}** ({size / 1e6:.0f} MB) over a {args.rtt_ms:g} ms RTT, {args.mb_per_s:g} MB/s link "
             f"(moto S3 server behind a loopback proxy); load average before the run: {load}")
    errors = [f"{t}, {r['job']}: {r['error']}" for t in tools for r in results[t] if r["error"]]
    if args.markdown:
        out = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in lines[1:]]
    else:
        widths = [max(len(str(r[c])) for r in lines) for c in range(len(head))]
        out = [title] + ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)) for r in lines]
    return "\n".join(out + [f"error: {e}" for e in errors])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, nargs="?")
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="round-trip time added by the proxy (ms)")
    parser.add_argument("--mb-per-s", type=float, default=50.0, help="bandwidth of the link (MB/s, all connections)")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--cell", type=int, default=3, help="position of the ROI read alone")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--serve-proxy", help=argparse.SUPPRESS)
    parser.add_argument("--serve-moto", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run-tool", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--stats-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve_moto:
        _serve_moto(args.serve_moto)
        return 0
    if args.serve_proxy:
        host, port = args.serve_proxy.split(":")
        asyncio.run(_serve_proxy((host, int(port)), args.rtt_ms / 1000, args.mb_per_s * 1e6))
        return 0
    if args.run_tool:
        print(json.dumps(_run_tool(args.run_tool, args.url, args.stats_port, args.cell)))
        return 0
    if args.file is None:
        parser.error("give an experiment NWB file (e.g. one of `vbo simulate --scale full`)")

    load = " ".join(os.getloadavg().__repr__().strip("()").split(", ")[:1])
    moto, endpoint = _start_moto()
    proxy = None
    try:
        version = _upload(endpoint, args.file)
        proxy, proxy_port, stats_port = _start_proxy(endpoint, args.rtt_ms / 1000, args.mb_per_s * 1e6)
        url = f"http://127.0.0.1:{proxy_port}/{BUCKET}/{KEY}"
        results = {}
        with tempfile.TemporaryDirectory() as digests:
            for tool in args.tools.split(","):
                tool_url = f"{url}?versionId={version}" if tool in ("vbo", WARM) else url
                results[tool] = _tool_process(tool, tool_url, stats_port, args.cell, digests)
                print(f"{tool}: done", file=sys.stderr)
        print(f"_Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
              f"{os.cpu_count()} CPUs_")
        print(report(results, args, args.file.stat().st_size, load))
    finally:
        for proc in (proxy, moto):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
