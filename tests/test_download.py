"""vbo.cache.download: verified, resumable, locked downloads; the download record; reuse; many at once.

Network: only 127.0.0.1 (moto's S3 server and a fault proxy from ``s3_server.py``). Every wait is bounded.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from s3_server import FaultProxy, module_proxy, moto_s3, proxy, server  # noqa: F401 (fixtures)
from vbo.cache import download as dl
from vbo.cache.manifest import file_hash
from vbo.errors import DownloadError, HashMismatchError, S3ObjectNotFoundError
from vbo.source import s3

pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (test extra)")

BUCKET = "vbo-test-download"
SIZE = 1_500_000


@pytest.fixture
def client(proxy):
    # botocore's own retries off: every retry in these tests is download_object's
    return s3.anonymous_client(proxy.endpoint, read_timeout=2.0, max_attempts=1)


@pytest.fixture
def obj(server, request):
    """A fresh object: (key, version_id, bytes, blake2b)."""
    key = f"obj/{request.node.name.replace('[', '_').replace(']', '')}.bin"
    data = os.urandom(SIZE)
    return key, server.put(BUCKET, key, data), data, dl.hash_bytes(data)


def fetch(client, obj, dest, **kwargs):
    key, version, _, digest = obj
    kwargs.setdefault("backoff", 0.02)
    kwargs.setdefault("chunk_size", 64 * 1024)
    return dl.download_object(client, BUCKET, key, version, digest, dest, **kwargs)


def gets(proxy, obj):
    return proxy.requests(method="GET", match=obj[0])


# --- basic downloads ------------------------------------------------------------------------------------


def test_download_verifies_and_leaves_only_the_file(client, proxy, obj, tmp_path):
    dest = tmp_path / "sub" / "x.nwb"
    seen = []
    assert fetch(client, obj, dest, progress=seen.append) == dest
    assert dest.read_bytes() == obj[2] and file_hash(dest) == obj[3]
    assert sum(seen) == SIZE
    assert sorted(p.name for p in dest.parent.iterdir()) == ["x.nwb", "x.nwb.lock"]
    assert dl.is_transient_file(dest.parent / "x.nwb.lock") and not dl.is_transient_file(dest)
    assert len(gets(proxy, obj)) == 1
    # present and verified: nothing transferred again
    fetch(client, obj, dest)
    assert len(gets(proxy, obj)) == 1


def test_versioned_download_returns_old_bytes_after_overwrite(server, client, obj, tmp_path):
    key, version, data, digest = obj
    server.put(BUCKET, key, b"a newer version")
    fetch(client, obj, tmp_path / "old.bin")
    assert (tmp_path / "old.bin").read_bytes() == data
    latest = dl.download_object(client, BUCKET, key, None, None, tmp_path / "new.bin")
    assert latest.read_bytes() == b"a newer version"


def test_corrupt_file_at_dest_is_replaced(client, proxy, obj, tmp_path):
    dest = tmp_path / "x.bin"
    dest.write_bytes(b"garbage")
    fetch(client, obj, dest)
    assert file_hash(dest) == obj[3] and len(gets(proxy, obj)) == 1


# --- faults ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, options", [
    ("reset", {"after_bytes": 400_000}),
    ("reset", {"after_bytes": 0}),
    ("truncate", {"after_bytes": 700_000}),
    ("status", {"status": 500}),
    ("status", {"status": 503}),  # SlowDown
    ("stall", {"after_bytes": 300_000, "stall_seconds": 4.0}),  # beyond the 2 s read timeout
    ("corrupt", {"after_bytes": 1000}),  # hash mismatch once: deleted, downloaded again
], ids=["reset-mid-body", "reset-at-start", "truncated-body", "http-500", "http-503-slowdown", "stall",
        "corrupt-once"])
def test_every_fault_still_completes_with_the_right_hash(kind, options, client, proxy, obj, tmp_path):
    proxy.inject(kind, count=2, match=obj[0], **options)
    dest = tmp_path / "x.bin"
    fetch(client, obj, dest)
    assert file_hash(dest) == obj[3]
    assert not dl.partial_path(dest).exists()
    log = gets(proxy, obj)
    assert [r.fault for r in log[:2]] == [kind, kind] and log[-1].fault is None


def test_resume_after_reset_uses_a_range_request(client, proxy, obj, tmp_path):
    proxy.inject("reset", match=obj[0], after_bytes=800_000)
    dest = tmp_path / "x.bin"
    fetch(client, obj, dest)
    first, second = gets(proxy, obj)
    assert first.range is None and first.fault == "reset"
    offset = int(second.range.removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= 800_000 and second.status == 206
    assert second.bytes_sent == SIZE - offset  # only the rest travelled again
    assert file_hash(dest) == obj[3]


def test_existing_partial_is_resumed(client, proxy, obj, tmp_path):
    dest = tmp_path / "x.bin"
    dl.partial_path(dest).write_bytes(obj[2][:1_000_000])
    fetch(client, obj, dest)
    (only,) = gets(proxy, obj)
    assert only.range == "bytes=1000000-" and file_hash(dest) == obj[3]


def test_foreign_partial_is_discarded_after_the_hash_check(client, proxy, obj, tmp_path):
    dest = tmp_path / "x.bin"
    dl.partial_path(dest).write_bytes(os.urandom(SIZE - 10))  # bytes of something else
    fetch(client, obj, dest)
    assert [r.range for r in gets(proxy, obj)] == [f"bytes={SIZE - 10}-", None]
    assert file_hash(dest) == obj[3]


def test_hash_mismatch_raises_and_leaves_nothing_at_dest(client, proxy, obj, tmp_path):
    key, version, _, digest = obj
    dest = tmp_path / "x.bin"
    wrong = "0" * 128
    with pytest.raises(HashMismatchError) as info:
        dl.download_object(client, BUCKET, key, version, wrong, dest, retries=2, backoff=0.01)
    err = info.value
    assert err.expected == wrong and err.actual == digest and err.path == str(dest) and key in err.target
    assert not dest.exists() and not dl.partial_path(dest).exists()
    assert len(gets(proxy, obj)) == 3  # first attempt + 2 retries


def test_missing_object_is_not_retried(client, proxy, tmp_path):
    with pytest.raises(S3ObjectNotFoundError) as info:
        dl.download_object(client, BUCKET, "obj/none.bin", None, None, tmp_path / "none.bin")
    assert info.value.key == "obj/none.bin"
    assert len(proxy.requests(method="GET", match="none.bin")) == 1
    assert not (tmp_path / "none.bin").exists()


def test_persistent_failure_gives_up_with_download_error(client, proxy, obj, tmp_path):
    proxy.inject("status", count=50, match=obj[0], status=503)
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        fetch(client, obj, tmp_path / "x.bin", retries=3, backoff=0.01)
    assert "gave up after 4 attempts" in str(info.value) and time.monotonic() - started < 10
    assert len(gets(proxy, obj)) == 4 and not (tmp_path / "x.bin").exists()


def test_directory_in_the_way(client, obj, tmp_path):
    (tmp_path / "x.bin").mkdir()
    with pytest.raises(DownloadError, match="directory"):
        fetch(client, obj, tmp_path / "x.bin")


# --- processes -------------------------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from vbo.cache import download as dl
    from vbo.source import s3
    endpoint, bucket, key, version, digest, dest, go = sys.argv[1:8]
    deadline = time.monotonic() + 20
    while go != "-" and not Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    client = s3.anonymous_client(endpoint, read_timeout=30, max_attempts=1)
    dl.download_object(client, bucket, key, version, digest, Path(dest), chunk_size=65536, backoff=0.02,
                       lock_timeout=30)
    print("ok", flush=True)
""")


def _child(proxy, obj, dest, go="-"):
    key, version, _, digest = obj
    return subprocess.Popen([sys.executable, "-c", _CHILD, proxy.endpoint, BUCKET, key, version, digest, str(dest),
                             str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL on this platform")
def test_kill_9_mid_download_leaves_no_file_and_a_rerun_completes(client, proxy, obj, tmp_path):
    dest = tmp_path / "x.bin"
    partial = dl.partial_path(dest)
    proxy.inject("stall", match=obj[0], after_bytes=700_000, stall_seconds=30)
    child = _child(proxy, obj, dest)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < 600_000):
            assert child.poll() is None, child.communicate()
            time.sleep(0.02)
        assert partial.stat().st_size >= 600_000, "the child never got mid-way"
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL
    assert not dest.exists()  # never a partial file at dest
    kept = partial.stat().st_size
    proxy.clear()  # ends the stalled response
    fetch(client, obj, dest)
    assert file_hash(dest) == obj[3] and not partial.exists()
    assert [r.range for r in gets(proxy, obj)] == [f"bytes={kept}-"]  # resumed, not restarted


def test_two_processes_download_once(client, proxy, obj, tmp_path):
    dest = tmp_path / "shared" / "x.bin"
    go = tmp_path / "go"
    proxy.inject("delay", match=obj[0], stall_seconds=1.0)  # the first transfer takes a while
    children = [_child(proxy, obj, dest, go) for _ in range(2)]
    time.sleep(0.3)
    go.touch()
    outputs = [c.communicate(timeout=40) for c in children]
    assert [c.returncode for c in children] == [0, 0], outputs
    assert [o[0].strip() for o in outputs] == ["ok", "ok"]
    assert len(gets(proxy, obj)) == 1  # one transfer; the other process waited and found it verified
    assert file_hash(dest) == obj[3]


# --- download record and reuse ------------------------------------------------------------------------


def test_download_record_format_and_atomic_rewrite(tmp_path):
    record = dl.DownloadRecord(tmp_path / "_downloaded_data.json")
    assert record.load() == {} and not record.exists()
    record.add(tmp_path / "b.nwb", "bb")
    record.update({tmp_path / "a.nwb": "aa"})
    text = (tmp_path / "_downloaded_data.json").read_text()
    expected = {str(tmp_path / "a.nwb"): "aa", str(tmp_path / "b.nwb"): "bb"}
    assert text == json.dumps(expected, indent=2, sort_keys=True) + "\n"
    record.remove(tmp_path / "a.nwb")
    assert record.load() == {str(tmp_path / "b.nwb"): "bb"}
    record.replace({tmp_path / "c.nwb": "cc"})
    assert record.load() == {str(tmp_path / "c.nwb"): "cc"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_downloaded_data.json", "_downloaded_data.json.lock"]
    (tmp_path / "_downloaded_data.json").write_text("{not json")
    assert record.load() == {}


def test_download_record_concurrent_writers_lose_nothing(tmp_path):
    script = textwrap.dedent("""
        import sys
        from vbo.cache.download import DownloadRecord
        record = DownloadRecord(sys.argv[1])
        for i in range(15):
            record.add(f"{sys.argv[2]}/file_{i}.nwb", f"{sys.argv[2]}{i}")
    """)
    path = tmp_path / "_downloaded_data.json"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), str(tmp_path / f"w{w}")]) for w in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    assert len(dl.DownloadRecord(path).load()) == 60


def test_reuse_identical_symlink_then_hardlink_then_copy(tmp_path, monkeypatch):
    source = tmp_path / "v1.0.1" / "x.nwb"
    source.parent.mkdir()
    source.write_bytes(b"identical bytes")
    digest = file_hash(source)
    record = dl.DownloadRecord(tmp_path / "_downloaded_data.json")
    assert dl.reuse_identical(record, digest, tmp_path / "v1.1.0" / "x.nwb") is None  # nothing recorded
    record.add(source, digest)
    assert dl.reuse_identical(record, "f" * 128, tmp_path / "v1.1.0" / "y.nwb") is None  # other hash

    dest = tmp_path / "v1.1.0" / "x.nwb"
    assert dl.reuse_identical(record, digest, dest, verify=True) == "symlink"
    assert dest.is_symlink() and dest.resolve() == source.resolve() and dest.read_bytes() == b"identical bytes"

    def refuse(*args, **kwargs):
        raise OSError("not allowed here")

    monkeypatch.setattr(os, "symlink", refuse)
    dest2 = tmp_path / "v1.2.0" / "x.nwb"
    assert dl.reuse_identical(record, digest, dest2) == "hardlink"
    assert not dest2.is_symlink() and dest2.stat().st_ino == source.stat().st_ino
    monkeypatch.setattr(os, "link", refuse)
    dest3 = tmp_path / "v1.3.0" / "x.nwb"
    assert dl.reuse_identical(record, digest, dest3) == "copy"
    assert dest3.read_bytes() == b"identical bytes" and dest3.stat().st_ino != source.stat().st_ino
    assert not list(tmp_path.rglob("*.link"))
    # a recorded file that changed on disk is not reused when asked to verify; a deleted one never
    source.write_bytes(b"changed")
    assert dl.reuse_identical(record, digest, tmp_path / "v2" / "x.nwb", verify=True) is None
    source.unlink()
    assert dl.reuse_identical(record, digest, tmp_path / "v3" / "x.nwb") is None


def test_download_then_reuse_from_the_record(client, proxy, obj, tmp_path):
    record = dl.DownloadRecord(tmp_path / "_downloaded_data.json")
    first = tmp_path / "visual-behavior-ophys-1.0.1" / "x.bin"
    fetch(client, obj, first, record=record)
    assert record.load() == {str(first): obj[3]}
    second = tmp_path / "visual-behavior-ophys-1.1.0" / "x.bin"
    assert dl.reuse_identical(record, obj[3], second) == "symlink"
    assert file_hash(second) == obj[3] and len(gets(proxy, obj)) == 1


def test_verify_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    digest = file_hash(path)
    assert dl.verify_file(path, digest) == path and dl.file_matches(path, digest)
    with pytest.raises(HashMismatchError) as info:
        dl.verify_file(path, "0" * 128)
    assert info.value.actual == digest and info.value.path == str(path)
    assert not dl.file_matches(tmp_path / "missing", digest)
    with pytest.raises(FileNotFoundError):
        dl.verify_file(tmp_path / "missing", digest)


# --- many downloads -------------------------------------------------------------------------------------


def test_download_many_reports_progress(server, proxy, tmp_path):
    objects = []
    for i in range(6):
        data = os.urandom(200_000 + i * 1000)
        key = f"many/f{i}.bin"
        objects.append((key, server.put(BUCKET, key, data), dl.hash_bytes(data), len(data)))
    jobs = [dl.DownloadJob(BUCKET, key, version, digest, tmp_path / f"f{i}.bin", size if i % 2 else None)
            for i, (key, version, digest, size) in enumerate(objects)]
    dl.download_object(s3.anonymous_client(proxy.endpoint), BUCKET, objects[0][0], objects[0][1], objects[0][2],
                       jobs[0].dest)  # already present: counted as done, not transferred again
    proxy.inject("reset", match="many/f3.bin", after_bytes=100_000)
    states = []
    paths = dl.download_many(jobs, workers=3, progress=states.append, endpoint_url=proxy.endpoint,
                             backoff=0.01)
    total = sum(o[3] for o in objects)
    assert paths == [j.dest for j in jobs]
    assert all(file_hash(j.dest) == j.expected_hash for j in jobs)
    assert states[0].bytes_total == total and states[0].files_total == 6
    final = states[-1]
    assert final.finished and final.bytes_done == total and final.files_done == 6 and final.errors == 0
    assert final.rate > 0 and final.eta == 0.0
    assert all(0 <= s.bytes_done <= total for s in states)
    assert len(proxy.requests(method="GET", match="many/f0.bin")) == 1  # only the early single download


def test_download_many_collects_failures(server, proxy, tmp_path):
    data = b"fine"
    version = server.put(BUCKET, "many/ok.bin", data)
    jobs = [dl.DownloadJob(BUCKET, "many/ok.bin", version, dl.hash_bytes(data), tmp_path / "ok.bin"),
            dl.DownloadJob(BUCKET, "many/missing.bin", None, None, tmp_path / "missing.bin")]
    with pytest.raises(S3ObjectNotFoundError) as info:
        dl.download_many(jobs, endpoint_url=proxy.endpoint)
    assert [job.key for job, _ in info.value.failures] == ["many/missing.bin"]
    assert (tmp_path / "ok.bin").read_bytes() == data
    results = dl.download_many(jobs, endpoint_url=proxy.endpoint, raise_errors=False)
    assert results[0] == tmp_path / "ok.bin" and isinstance(results[1], S3ObjectNotFoundError)
