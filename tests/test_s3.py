"""vbo.source (s3, remote, digests) and vbo.cache.urls: URL forms, safe keys, foreign hosts, anonymous listing, sizes, remote (range) reads.

Network: only 127.0.0.1 (moto's S3 server and a fault proxy from ``s3_server.py``).
"""

from __future__ import annotations

import io
import logging
import os
import random

import pandas as pd
import pytest

from s3_server import FaultProxy, module_proxy, moto_s3, proxy, server  # noqa: F401 (fixtures)
from vbo.cache import manifest as mf
from vbo.cache.urls import behavior_nwb_url, experiment_nwb_url, manifest_url, metadata_url
from vbo.errors import ForeignHostError, S3Error, S3ObjectNotFoundError, UnsafeKeyError, VboError
from vbo.source import s3
from vbo.source.digests import DEFAULT_BLOCK_SIZE, BlockDigests
from vbo.source.remote import open_remote

pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (test extra)")

BUCKET = "vbo-test-s3"
AWS = "https://visual-behavior-ophys-data"
KEY_951 = "visual-behavior-ophys/behavior_ophys_experiments/behavior_ophys_experiment_951980471.nwb"


@pytest.fixture
def client(proxy):
    return s3.anonymous_client(proxy.endpoint, read_timeout=5, max_attempts=1)


# --- URL forms -------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, bucket, key, version", [
    (f"{AWS}.s3-us-west-2.amazonaws.com/{KEY_951}", mf.BUCKET_NAME, KEY_951, None),  # docs form
    (f"{AWS}.s3.us-west-2.amazonaws.com/{KEY_951}", mf.BUCKET_NAME, KEY_951, None),  # manifest form
    (f"{AWS}.s3.amazonaws.com/{KEY_951}", mf.BUCKET_NAME, KEY_951, None),
    (f"{AWS}.s3.dualstack.us-west-2.amazonaws.com/{KEY_951}", mf.BUCKET_NAME, KEY_951, None),
    (f"{AWS}.s3.us-west-2.amazonaws.com/visual-behavior-ophys/resources/Movie_TOE1.npy"
     "?versionId=Czht4ouDiTvs4CC_s8hsaE7VtVt_E9rO", mf.BUCKET_NAME, "visual-behavior-ophys/resources/Movie_TOE1.npy",
     "Czht4ouDiTvs4CC_s8hsaE7VtVt_E9rO"),
    (f"https://s3.us-west-2.amazonaws.com/visual-behavior-ophys-data/{KEY_951}", mf.BUCKET_NAME, KEY_951, None),
    (f"s3://visual-behavior-ophys-data/{KEY_951}", mf.BUCKET_NAME, KEY_951, None),
    (f"http://127.0.0.1:9000/visual-behavior-ophys-data/{KEY_951}?versionId=v1", mf.BUCKET_NAME, KEY_951, "v1"),
    (f"{AWS}.s3.us-west-2.amazonaws.com/a%20b/c.csv", mf.BUCKET_NAME, "a b/c.csv", None),
])
def test_bucket_and_key_of_real_url_forms(url, bucket, key, version):
    assert s3.bucket_and_key(url) == (bucket, key)
    assert s3.parse_object_url(url).version_id == version


def test_custom_endpoint_url_names_its_endpoint():
    loc = s3.parse_object_url("http://127.0.0.1:9000/bkt/a/b.nwb")
    assert (loc.bucket, loc.key, loc.endpoint_url) == ("bkt", "a/b.nwb", "http://127.0.0.1:9000")
    assert s3.parse_object_url(f"{AWS}.s3.us-west-2.amazonaws.com/x").endpoint_url is None


@pytest.mark.parametrize("url", ["ftp://host/x", "https://visual-behavior-ophys-data.s3.amazonaws.com/",
                                 "s3://", "not a url"])
def test_urls_without_object_refused(url):
    with pytest.raises(UnsafeKeyError):
        s3.parse_object_url(url)


def test_url_builders_follow_the_key_layout():
    v = "Czht4ouDiTvs4CC_s8hsaE7VtVt_E9rO"
    host = "https://visual-behavior-ophys-data.s3.us-west-2.amazonaws.com"
    assert manifest_url("1.1.0") == (f"{host}/visual-behavior-ophys/manifests/"
                                        "visual-behavior-ophys_project_manifest_v1.1.0.json")
    assert metadata_url("ophys_session_table") == \
        f"{host}/visual-behavior-ophys/project_metadata/ophys_session_table.csv"
    assert metadata_url("ophys_cells_table.csv", version_id=v).endswith(f"ophys_cells_table.csv?versionId={v}")
    assert behavior_nwb_url(1089912433) == \
        f"{host}/visual-behavior-ophys/behavior_sessions/behavior_session_1089912433.nwb"
    assert experiment_nwb_url(951980471) == f"{host}/{KEY_951}"
    pinned = experiment_nwb_url("951980471", version_id=v, endpoint_url="http://127.0.0.1:9000")
    assert pinned == f"http://127.0.0.1:9000/visual-behavior-ophys-data/{KEY_951}?versionId={v}"
    loc = s3.parse_object_url(pinned)
    assert (loc.bucket, loc.key, loc.version_id) == (mf.BUCKET_NAME, KEY_951, v)
    with pytest.raises(ValueError, match="unknown metadata table"):
        metadata_url("cells")


# --- unsafe keys and foreign hosts ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["../x.nwb", "visual-behavior-ophys/../../etc/passwd", "a/..", "/etc/passwd",
                                 "a\\..\\b", "C:/Windows/x", "visual-behavior-ophys/C:evil", "a//b", "a/", "",
                                 "a/./b", "a/\x00b"])
def test_unsafe_keys_refused(key, tmp_path):
    with pytest.raises(UnsafeKeyError) as info:
        s3.safe_relative_key(key)
    assert isinstance(info.value, ValueError) and isinstance(info.value, VboError)
    assert info.value.key == key and str(info.value).startswith(repr(key))
    with pytest.raises(UnsafeKeyError):
        s3.local_path_for_key(tmp_path, key)


def test_safe_keys_accepted(tmp_path):
    assert s3.safe_relative_key(KEY_951) == KEY_951
    assert s3.local_path_for_key(tmp_path, KEY_951, strip_components=1) == \
        tmp_path / "behavior_ophys_experiments" / "behavior_ophys_experiment_951980471.nwb"


@pytest.mark.parametrize("url", [
    "https://evil.example.com/visual-behavior-ophys-data/visual-behavior-ophys/x.csv",
    "https://other-bucket.s3.us-west-2.amazonaws.com/visual-behavior-ophys/x.csv",
    "https://visual-behavior-ophys-data.s3.us-west-2.amazonaws.com@evil.example.com/visual-behavior-ophys/x",
    "http://visual-behavior-ophys-data.s3.us-west-2.amazonaws.com/visual-behavior-ophys/x.csv",
    "http://127.0.0.1:1/visual-behavior-ophys-data/visual-behavior-ophys/x.csv",  # no endpoint configured
    "s3://other-bucket/visual-behavior-ophys/x.csv",
])
def test_foreign_hosts_refused(url, monkeypatch):
    for name in s3.ENDPOINT_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ForeignHostError) as info:
        s3.check_object_url(url)
    assert info.value.key == url and isinstance(info.value, UnsafeKeyError)


def test_release_and_endpoint_hosts_accepted(monkeypatch):
    for name in s3.ENDPOINT_ENV:
        monkeypatch.delenv(name, raising=False)
    for url in (f"{AWS}.s3-us-west-2.amazonaws.com/{KEY_951}", f"{AWS}.s3.us-west-2.amazonaws.com/{KEY_951}"):
        assert s3.check_object_url(url).key == KEY_951
    local = f"http://127.0.0.1:9000/visual-behavior-ophys-data/{KEY_951}"
    assert s3.check_object_url(local, endpoint_url="http://127.0.0.1:9000").key == KEY_951
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    assert s3.check_object_url(local).key == KEY_951
    with pytest.raises(UnsafeKeyError, match="leave the cache"):
        s3.check_object_url(f"{AWS}.s3.us-west-2.amazonaws.com/visual-behavior-ophys/../../x")


def test_endpoint_from_argument_then_environment(monkeypatch):
    for name in s3.ENDPOINT_ENV:
        monkeypatch.delenv(name, raising=False)
    assert s3.anonymous_client().meta.endpoint_url == "https://s3.us-west-2.amazonaws.com"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    assert s3.anonymous_client().meta.endpoint_url == "http://127.0.0.1:2"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:3/")
    assert s3.anonymous_client().meta.endpoint_url == "http://127.0.0.1:3"
    assert s3.anonymous_client("http://127.0.0.1:4").meta.endpoint_url == "http://127.0.0.1:4"


# --- listing, sizes, anonymous access ------------------------------------------------------------------


def test_anonymous_listing_paginates(server, client, proxy):
    keys = [f"list/manifests/visual-behavior-ophys_project_manifest_v0.{i}.0.json" for i in range(23)]
    for key in keys:
        server.put(BUCKET, key, b"{}")
    server.put(BUCKET, "list-other/x", b"x")
    proxy.clear()
    assert s3.list_keys(client, BUCKET, "list/", page_size=5) == sorted(keys)
    pages = [r for r in proxy.requests(method="GET") if "list-type=2" in r.path]
    assert len(pages) == 5  # 23 keys, 5 per page
    assert all("max-keys=5" in r.path for r in pages)
    assert s3.list_keys(client, BUCKET, "nothing-here/") == []


def test_object_size_by_version_and_missing_objects(server, client):
    v1 = server.put(BUCKET, "size/a.bin", b"x" * 1000)
    server.put(BUCKET, "size/a.bin", b"y" * 10)
    assert s3.object_size(client, BUCKET, "size/a.bin", v1) == 1000
    assert s3.object_size(client, BUCKET, "size/a.bin") == 10
    with pytest.raises(S3ObjectNotFoundError) as info:
        s3.object_size(client, BUCKET, "size/missing.bin")
    assert isinstance(info.value, FileNotFoundError) and info.value.key == "size/missing.bin"


def test_requests_are_unsigned(server, client):
    """The client sends no credentials: a private object is refused (as S3Error, not retried forever)."""
    server.admin.put_object(Bucket=BUCKET, Key="private/x", Body=b"secret")  # default ACL: private
    with pytest.raises(S3Error):
        s3.object_size(client, BUCKET, "private/x")


# --- remote file ---------------------------------------------------------------------------------------


def test_remote_file_reads_like_a_local_file(server, client, proxy):
    data = random.Random(1).randbytes(700_001)
    version = server.put(BUCKET, "remote/r.bin", data)
    server.put(BUCKET, "remote/r.bin", b"overwritten")
    f = open_remote((BUCKET, "remote/r.bin"), version, client, block_size=16_384, cache_bytes=65_536)
    assert f.size == len(data) and f.seekable() and f.readable() and not f.writable()
    rng = random.Random(2)
    for _ in range(200):
        pos, n = rng.randrange(0, len(data) + 10), rng.randrange(0, 50_000)
        f.seek(pos)
        assert f.read(n) == data[pos:pos + n]
        assert f.tell() == min(pos + n, len(data)) if pos < len(data) else f.tell() == pos
        assert sum(len(b) for b in f._blocks.values()) <= 65_536  # the block cache stays bounded
    f.seek(-5, io.SEEK_END)
    buf = bytearray(10)
    assert f.readinto(buf) == 5 and bytes(buf[:5]) == data[-5:]
    f.seek(0)
    assert f.read() == data  # a read larger than half the cache goes straight to the network
    assert f.read(10) == b""
    with pytest.raises(OSError):
        f.seek(-1)
    f.close()
    with pytest.raises(ValueError):
        f.read(1)
    # the latest version, pinned at open; a URL's versionId pins too
    latest = open_remote(f"{proxy.endpoint}/{BUCKET}/remote/r.bin")
    assert latest.read() == b"overwritten"
    pinned = open_remote(f"{proxy.endpoint}/{BUCKET}/remote/r.bin?versionId={version}", buffered=True)
    assert pinned.read(100) == data[:100]


def test_remote_file_survives_faults(server, client, proxy):
    data = os.urandom(300_000)
    server.put(BUCKET, "remote/faults.bin", data)
    f = open_remote((BUCKET, "remote/faults.bin"), client=client, block_size=65_536, tail_bytes=0)
    f.retries, f.backoff = 6, 0.01
    for kind in ("reset", "truncate", "status"):
        proxy.inject(kind, match="faults.bin", after_bytes=1000, status=503)
    assert f.read() == data
    faults = [r.fault for r in proxy.requests(method="GET", match="faults.bin")]
    assert faults[-4:] == ["reset", "truncate", "status", None]  # after the GETs of the open
    assert f.bytes_transferred >= len(data)


def test_remote_file_missing_object(client):
    with pytest.raises(S3ObjectNotFoundError):
        open_remote((BUCKET, "remote/none.bin"), client=client)


# --- streaming NWB reads equal local reads -------------------------------------------------------------


def _counting_remote(server, proxy, path, key, block_size, fetch_bytes=None):
    version = server.put_file(BUCKET, key, path)
    proxy.clear()
    return open_remote(f"{proxy.endpoint}/{BUCKET}/{key}?versionId={version}", block_size=block_size,
                       fetch_bytes=fetch_bytes or block_size)


def test_streamed_behavior_session_equals_local(server, proxy, session_nwb):
    import vbo

    remote = _counting_remote(server, proxy, session_nwb, "nwb/behavior_session_1089912433.nwb", 64 * 1024)
    size = session_nwb.stat().st_size
    local = vbo.BehaviorSession.from_nwb_path(session_nwb)
    streamed = vbo.BehaviorSession.from_nwb_path(remote)
    assert streamed.metadata == local.metadata
    sent = sum(r.bytes_sent for r in proxy.requests(method="GET"))
    assert sent == remote.bytes_transferred
    assert sent < 0.15 * size, f"metadata-only access moved {sent} of {size} bytes"
    pd.testing.assert_frame_equal(streamed.trials, local.trials)
    pd.testing.assert_frame_equal(streamed.stimulus_presentations, local.stimulus_presentations)
    assert remote.bytes_transferred < size


def test_streamed_experiment_equals_local(server, proxy, experiment_nwb):
    import numpy as np
    import vbo

    remote = _counting_remote(server, proxy, experiment_nwb, "nwb/behavior_ophys_experiment_1091765022.nwb",
                              DEFAULT_BLOCK_SIZE)
    size = experiment_nwb.stat().st_size
    local = vbo.BehaviorOphysExperiment.from_nwb_path(experiment_nwb)
    streamed = vbo.BehaviorOphysExperiment.from_nwb_path(remote)
    assert streamed.metadata.keys() == local.metadata.keys()
    for name, value in local.metadata.items():
        assert np.array_equal(streamed.metadata[name], value) if isinstance(value, np.ndarray) \
            else streamed.metadata[name] == value, name
    assert remote.bytes_transferred < 0.2 * size, f"metadata-only access moved {remote.bytes_transferred} of {size}"
    pd.testing.assert_frame_equal(streamed.trials, local.trials)
    pd.testing.assert_frame_equal(streamed.stimulus_presentations, local.stimulus_presentations)


# --- streamed bytes are checked against block digests (issue 11) ----------------------------------------


def _corrupt_every_range(proxy, match: str, count: int = 50) -> None:
    proxy.inject("corrupt", count, match=match, after_bytes=10)


def test_corrupted_ranges_against_a_verified_file_raise(server, client, proxy, tmp_path):
    from vbo.errors import StreamIntegrityError

    data = random.Random(3).randbytes(200_000)
    (tmp_path / "good.bin").write_bytes(data)
    version = server.put(BUCKET, "digest/file.bin", data)
    digests = tmp_path / "digests"
    BlockDigests.record_file(tmp_path / "good.bin", BUCKET, "digest/file.bin", version, directory=digests,
                                block_size=16_384)
    _corrupt_every_range(proxy, "digest/file.bin")
    with pytest.raises(StreamIntegrityError) as info:  # the first block, fetched at open, is already wrong
        open_remote((BUCKET, "digest/file.bin"), version, client, block_size=65_536, digest_dir=digests)
    assert isinstance(info.value, VboError) and "verified local file" in str(info.value)
    proxy.clear()
    f = open_remote((BUCKET, "digest/file.bin"), version, client, block_size=65_536, digest_dir=digests,
                    tail_bytes=0, fetch_bytes=65_536)
    assert f.block_size == 16_384  # the recorded block size wins
    _corrupt_every_range(proxy, "digest/file.bin")
    with pytest.raises(StreamIntegrityError):
        f.seek(100_000)
        f.read(100)
    assert set(f._blocks) == {0, 1, 2, 3}  # only the verified blocks of the open, nothing of the bad response
    proxy.clear()
    f.seek(0)
    assert f.read() == data  # a good server: the same file object reads and verifies normally


def test_corrupted_ranges_against_an_earlier_stream_raise(server, client, proxy, tmp_path):
    from vbo.errors import StreamIntegrityError

    data = random.Random(4).randbytes(300_000)
    version = server.put(BUCKET, "digest/learned.bin", data)
    digests = tmp_path / "digests"
    with open_remote((BUCKET, "digest/learned.bin"), version, client, block_size=65_536,
                        digest_dir=digests) as first:
        assert first.read() == data  # first read: digests are recorded, then saved on close
    again = open_remote((BUCKET, "digest/learned.bin"), version, client, block_size=65_536, digest_dir=digests,
                        tail_bytes=0, fetch_bytes=65_536)
    _corrupt_every_range(proxy, "digest/learned.bin")
    with pytest.raises(StreamIntegrityError):
        again.seek(150_000)
        again.read(10)
    with pytest.raises(StreamIntegrityError):  # prefetched ranges too: the reader gets the error
        again.prefetch([(0, 300_000)])  # block 0 came verified with the open; the others are corrupt
        again.seek(200_000)
        again.read(10)
    unchecked = open_remote((BUCKET, "digest/learned.bin"), version, client, block_size=65_536,
                               verify=False, tail_bytes=0)
    assert unchecked.read(65_536) != data[:65_536]  # proves the proxy really corrupts what it serves


def test_prefetch_parallel_ranges_equal_the_object(server, client, proxy, tmp_path):
    data = random.Random(5).randbytes(1_000_003)
    version = server.put(BUCKET, "digest/prefetch.bin", data)
    proxy.clear()
    f = open_remote((BUCKET, "digest/prefetch.bin"), version, client, block_size=16_384, parallel=4,
                    digest_dir=tmp_path, tail_bytes=0, fetch_bytes=16_384)
    scheduled = f.prefetch([(0, 100_000), (120_000, 400_000), (900_000, 1_000_003)], request_bytes=65_536)
    assert scheduled >= 100_000 - 16_384 + 280_000 + 100_003  # block 0 came with the open
    f.seek(0)
    assert f.read(400_000) == data[:400_000]
    f.seek(900_000)
    assert f.read() == data[900_000:]
    gets = proxy.requests(method="GET", match="prefetch.bin")
    assert sum(r.bytes_sent for r in gets) == f.bytes_transferred < 1.2 * len(data)
    f.close()


def test_prefetch_keeps_the_cached_blocks_it_covers(server, client, proxy, tmp_path):
    """A prefetch over a block cached long ago marks it recent: the blocks fetched with it evict older ones, not
    it, before it is read (a dataset's chunks next to metadata read at open: one more round trip each)."""
    block = 16_384
    data = random.Random(6).randbytes(20 * block)
    version = server.put(BUCKET, "digest/lru.bin", data)
    f = open_remote((BUCKET, "digest/lru.bin"), version, client, block_size=block, cache_bytes=8 * block,
                    digest_dir=tmp_path, tail_bytes=0, fetch_bytes=block)  # block 0 cached at open

    def prefetch_and_wait(ranges):
        f.prefetch(ranges, merge_gap=0)
        for future in list(f._inflight.values()):
            future.result()

    prefetch_and_wait([(1 * block, 6 * block)])  # cache: 0, 1-5
    prefetch_and_wait([(0, block), (6 * block, 9 * block)])  # 6-8 arrive: 9 blocks, one evicted — not block 0
    proxy.clear()
    f.seek(0)
    assert f.read(block) == data[:block]
    assert not proxy.requests(method="GET", match="lru.bin"), "block 0 was evicted and fetched again"
    f.seek(block)
    assert f.read(block) == data[block:2 * block]  # block 1, the oldest, was the one evicted
    assert len(proxy.requests(method="GET", match="lru.bin")) == 1
    f.close()


def test_parallel_range_requests_keep_their_connections(server, proxy, tmp_path, caplog):
    """A streamed file's range requests in flight at once (``DEFAULT_PARALLEL``) all go back to the client's
    connection pool: none is discarded (urllib3 warns "Connection pool is full", and the next wave would pay
    new handshakes)."""
    from vbo.source.remote import DEFAULT_PARALLEL

    data = random.Random(7).randbytes(4 << 20)
    version = server.put(BUCKET, "pool/wide.bin", data)
    caplog.set_level(logging.WARNING, logger="urllib3")
    f = open_remote(f"{proxy.endpoint}/{BUCKET}/pool/wide.bin?versionId={version}", block_size=16_384,
                    digest_dir=tmp_path, tail_bytes=0)
    assert f.parallel == DEFAULT_PARALLEL
    f.prefetch([(0, len(data))], request_bytes=16_384)  # 256 requests, DEFAULT_PARALLEL at a time
    f.seek(0)
    assert f.read() == data
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()], caplog.text
    f.close()


def test_streamed_experiment_verified_against_the_local_file(server, proxy, experiment_nwb, tmp_path):
    import numpy as np
    import vbo

    key = "nwb/verified/behavior_ophys_experiment_1091765022.nwb"
    version = server.put_file(BUCKET, key, experiment_nwb)
    BlockDigests.record_file(experiment_nwb, BUCKET, key, version, directory=tmp_path)
    remote = open_remote(f"{proxy.endpoint}/{BUCKET}/{key}?versionId={version}", digest_dir=tmp_path)
    with vbo.BehaviorOphysExperiment.from_nwb_path(remote) as streamed, \
            vbo.BehaviorOphysExperiment.from_nwb_path(experiment_nwb) as local:
        np.testing.assert_array_equal(np.stack(streamed.dff_traces["dff"].to_list()),
                                      np.stack(local.dff_traces["dff"].to_list()))
        pd.testing.assert_frame_equal(streamed.trials, local.trials)


def test_block_digest_sidecar_round_trip_and_damage(tmp_path):
    data = random.Random(6).randbytes(50_000)
    (tmp_path / "f.bin").write_bytes(data)
    path = BlockDigests.record_file(tmp_path / "f.bin", "b", "k", "v1", directory=tmp_path / "d", block_size=8_192)
    loaded = BlockDigests.load(path, len(data), 65_536)
    assert loaded.block_size == 8_192 and all(flag == 2 for flag in loaded.known)
    assert loaded.check(6, data[6 * 8_192:]) and not loaded.check(0, b"x" * 8_192)
    path.write_bytes(path.read_bytes()[:-5])  # damaged: ignored, starts empty with the caller's block size
    fresh = BlockDigests.load(path, len(data), 65_536)
    assert fresh.block_size == 65_536 and not any(fresh.known)


def test_a_verified_download_is_the_reference_for_streaming(server, client, proxy, tmp_path, monkeypatch):
    """A download whose blake2b matched records the block digests, so even a first stream of that object version
    from a bad mirror is caught (no trust on first use)."""
    from vbo.cache.download import download_object, hash_bytes
    from vbo.errors import StreamIntegrityError

    monkeypatch.setenv("VBO_BLOCK_DIGESTS", str(tmp_path / "digests"))
    data = random.Random(5).randbytes(300_000)
    version = server.put(BUCKET, "digest/downloaded.bin", data)
    download_object(client, BUCKET, "digest/downloaded.bin", version, hash_bytes(data), tmp_path / "local.bin")
    assert (tmp_path / "local.bin").read_bytes() == data
    assert any((tmp_path / "digests").rglob("*.blocks")), "the verified download recorded its block digests"
    _corrupt_every_range(proxy, "digest/downloaded.bin")
    with pytest.raises(StreamIntegrityError, match="verified local file"):
        open_remote((BUCKET, "digest/downloaded.bin"), version, client)
    proxy.clear()
    with open_remote((BUCKET, "digest/downloaded.bin"), version, client) as good:
        assert good.read() == data



# --- read plans: a second read of the same version fetches what the first one needed in one round --------


@pytest.mark.parametrize("kind", ["session", "experiment"])
def test_a_second_open_follows_the_read_plan(server, proxy, kind, tmp_path, request):
    """A second open of a streamed file fetches what its first open read in one round, no request more."""
    import vbo
    from vbo.source.plan import ReadPlan, plan_path

    cls = vbo.BehaviorSession if kind == "session" else vbo.BehaviorOphysExperiment
    path, key = request.getfixturevalue(f"{kind}_nwb"), f"plan/{kind}.nwb"
    version = server.put_file(BUCKET, key, path)
    url = f"{proxy.endpoint}/{BUCKET}/{key}?versionId={version}"
    local = cls.from_nwb_path(path)

    def open_and_read() -> tuple[list[str], int]:
        """The ranges GET after the open and metadata, and the GETs in all."""
        proxy.clear()
        with cls.from_nwb_path(url) as streamed:
            assert streamed.metadata == local.metadata
            opened = [r.range for r in proxy.requests(method="GET")]
            pd.testing.assert_frame_equal(streamed.trials, local.trials)
        return opened, len(proxy.requests(method="GET"))

    cold_open, cold_total = open_and_read()
    sidecar = BlockDigests.sidecar_path(os.environ["VBO_BLOCK_DIGESTS"], BUCKET, key, version)
    plan = ReadPlan.load(plan_path(sidecar))
    assert plan is not None and plan.blocks("open") and plan.blocks("metadata") and plan.blocks("trials")
    warm_open, warm_total = open_and_read()  # same values, the open's and metadata's blocks in its planned round
    assert len(warm_open) <= len(cold_open)
    planned = set(plan.blocks("open")) | set(plan.blocks("metadata"))
    for asked in warm_open:  # each request a run of planned blocks (joined across short gaps), nothing else
        start, stop = (int(n) for n in asked.removeprefix("bytes=").split("-"))
        assert {start // plan.block_size, stop // plan.block_size} <= planned, asked
    assert warm_total - len(warm_open) <= 1  # the trials' planned blocks in one request (cold: in the open's tail)

    plan_path(sidecar).write_text("{not json")  # a damaged plan is ignored: a plain open, same values
    open_and_read()
    assert ReadPlan.load(plan_path(sidecar)) is not None  # ... and written again


def test_a_planned_open_still_checks_every_block(server, client, proxy, tmp_path):
    from vbo.errors import StreamIntegrityError

    data = random.Random(6).randbytes(400_000)
    version = server.put(BUCKET, "plan/blocks.bin", data)
    digests = tmp_path / "digests"
    with open_remote((BUCKET, "plan/blocks.bin"), version, client, block_size=16_384, digest_dir=digests) as f:
        for offset in (0, 200_000, 390_000):  # small reads: recorded in the open phase
            f.seek(offset)
            assert f.read(100) == data[offset:offset + 100]
    proxy.clear()
    again = open_remote((BUCKET, "plan/blocks.bin"), version, client, block_size=16_384, digest_dir=digests)
    again.seek(200_000)
    assert again.read(100) == data[200_000:200_100]
    assert len(proxy.requests(method="GET")) <= 3  # the planned blocks, no open requests of its own
    _corrupt_every_range(proxy, "plan/blocks.bin")
    with pytest.raises(StreamIntegrityError):  # planned blocks are verified like any others
        open_remote((BUCKET, "plan/blocks.bin"), version, client, block_size=16_384, digest_dir=digests).read(100)



@pytest.mark.parametrize("stride, requests", [(1_500_000, 14), (400_000, 10)])
def test_a_planned_open_fetches_spread_blocks_as_small_parallel_requests(server, client, proxy, tmp_path, stride,
                                                                         requests):
    """A planned open whose blocks lie far apart (a release-storage file keeps them in ~10 places) fetches each
    place in a request of its own, in one parallel round, rather than merging distant ones into long requests
    that fetch the gaps; places at most ``OPEN_JOIN_GAP`` apart share a request. Over ``OPEN_MAX_REQUESTS``
    requests, the closest places, if at most ``PLAN_MERGE_GAP`` apart, share one until the round is within it."""
    from vbo.source.remote import OPEN_JOIN_GAP, OPEN_MAX_REQUESTS, PLAN_MERGE_GAP

    data = random.Random(9).randbytes(16 * stride)
    version = server.put(BUCKET, "plan/spread.bin", data)
    offsets = [stride * i + 20_000 for i in range(1, 15)] + [stride + 20_000 + OPEN_JOIN_GAP - 16_384]
    options = dict(block_size=16_384, digest_dir=tmp_path, tail_bytes=0, fetch_bytes=16_384)
    with open_remote((BUCKET, "plan/spread.bin"), version, client, **options) as f:  # the open reads these
        for offset in offsets:
            f.seek(offset)
            assert f.read(100) == data[offset:offset + 100]
    proxy.clear()
    with open_remote((BUCKET, "plan/spread.bin"), version, client, **options) as f:
        for offset in offsets:
            f.seek(offset)
            assert f.read(100) == data[offset:offset + 100]
        assert f.misses == 0  # every block came with the planned round
    ranges = [r.range for r in proxy.requests(method="GET", match="plan/spread.bin")]
    assert len(ranges) == requests  # 15 places, two of them less than OPEN_JOIN_GAP apart: one request
    if stride > PLAN_MERGE_GAP:
        assert f.bytes_transferred <= 15 * 16_384 + OPEN_JOIN_GAP  # the planned blocks, not the gaps between
    else:  # the four closest gaps fetched to stay within the budget, no more
        assert requests == OPEN_MAX_REQUESTS
        assert f.bytes_transferred <= 15 * 16_384 + OPEN_JOIN_GAP + (14 - OPEN_MAX_REQUESTS) * stride


def _read_phases(f, phases: dict[str, list[int]], data: bytes) -> None:
    """Read the first 100 bytes (the open), then 100 bytes at each offset of each phase, in order."""
    assert f.read(100) == data[:100]
    for name, offsets in phases.items():
        with f.phase(name):
            for offset in offsets:
                f.seek(offset)
                assert f.read(100) == data[offset:offset + 100]



@pytest.mark.parametrize("n, stride, parallel, small", [
    (4, 16_384, 16, True),  # 4 blocks of 16 KiB, in one request
    (400, 16_384, 16, False),  # 6.25 MiB: over the byte cap
    (5, 1_200_000, 4, False),  # 5 requests (> 1 MiB apart), with the trials' own more than 4 in flight
])
def test_a_planned_round_follows_one_small_phase_ahead(server, client, tmp_path, n, stride, parallel, small):
    """Starting ``trials`` also fetches the planned blocks of the phase that followed it before
    (``presentations``), if they are small (capped in bytes and in requests), but never those of the phase after
    that (``dff``): one step, not a chain (the open fetches ``metadata`` ahead, which fetches nothing ahead;
    ``trials`` then has a round of its own). ``prefetch`` schedules nothing for blocks cached or in flight. Every
    block is still verified (here: equal to the data)."""
    data = random.Random(8).randbytes(10_500_000)
    key = f"plan/follow{n}.bin"
    version = server.put(BUCKET, key, data)
    phases = {"metadata": [20_000], "trials": [100_000, 140_000],  # read in this order
              "presentations": [2_000_000 + stride * i for i in range(n)], "dff": [9_500_000, 9_560_000]}
    presentations, dff = ([(offset, offset + 100) for offset in phases[name]] for name in ("presentations", "dff"))
    options = dict(block_size=16_384, digest_dir=tmp_path, tail_bytes=0, fetch_bytes=16_384, parallel=parallel)
    with open_remote((BUCKET, key), version, client, **options) as cold:  # records the plans and the order
        _read_phases(cold, phases, data)
    with open_remote((BUCKET, key), version, client, **options) as warm:
        _read_phases(warm, {name: phases[name] for name in ("metadata", "trials")}, data)
        assert warm.prefetch(dff) > 0 and (warm.prefetch(presentations) == 0) is small
    with open_remote((BUCKET, key), version, client, **options) as warm:
        _read_phases(warm, {name: phases[name] for name in ("metadata", "trials", "presentations")}, data)
        assert warm.prefetch(dff) > 0 or not small  # the presentations came ahead: they fetch nothing ahead


@pytest.mark.parametrize("stride, joined", [(24_576, True), (524_288, False)])
def test_a_planned_member_round_joins_gaps_only_while_they_add_little(server, client, proxy, tmp_path, stride,
                                                                        joined):
    """A member's planned round joins blocks across gaps (a table's close columns: one run, cut into parallel
    pieces) only while the gaps fetched stay within ``PLAN_GAP_SHARE`` of the planned bytes: one cell's chunks,
    512 KiB apart in a trace table, are fetched as themselves (joining the gaps would fetch 30 times the bytes)."""
    from vbo.source.remote import PLAN_MERGE_GAP

    block = 16_384
    data = random.Random(12).randbytes(8_000_000)
    key = f"plan/member{stride}.bin"
    version = server.put(BUCKET, key, data)
    phases = {"first": [200_000], "cell": [1_048_576 + stride * i for i in range(12)]}  # the cell after "first"
    options = dict(block_size=block, digest_dir=tmp_path, tail_bytes=0, fetch_bytes=block)
    with open_remote((BUCKET, key), version, client, **options) as cold:
        _read_phases(cold, phases, data)
    proxy.clear()
    with open_remote((BUCKET, key), version, client, **options) as warm:
        _read_phases(warm, phases, data)
        assert warm.misses == 0
    asked = sorted(tuple(int(n) for n in r.range.removeprefix("bytes=").split("-"))
                   for r in proxy.requests(method="GET", match=key))
    cell = [(start, stop + 1) for start, stop in asked if start >= 1_048_576]
    if joined:  # one request from the first column to the last, the gaps (a third of the bytes) with them
        assert cell == [(1_048_576, 1_048_576 + 17 * block)]
    else:  # each chunk's block alone
        assert cell == [(offset // block * block, offset // block * block + block) for offset in phases["cell"]]
        assert 12 * stride > 2 * PLAN_MERGE_GAP  # ... where a fixed join gap would have fetched the whole span


def test_a_planned_open_fetches_the_metadata_ahead_first_within_its_request_budget(server, client, tmp_path):
    """The open's round also fetches the phases that followed an open before, within ``OPEN_MAX_REQUESTS``
    requests, and ``metadata`` first, even when another phase followed an open more recently (a second session
    that opened the file to read one cell's trace)."""
    from vbo.source.remote import OPEN_FOLLOWER_FIRST, OPEN_MAX_REQUESTS

    stride = 1_200_000  # places further apart than any join
    data = random.Random(10).randbytes(14 * stride)
    version = server.put(BUCKET, "plan/budget.bin", data)
    spread = {OPEN_FOLLOWER_FIRST: [stride * i for i in range(1, 7)], "cells": [stride * i for i in range(7, 13)]}
    assert 1 + 2 * 6 > OPEN_MAX_REQUESTS >= 1 + 6  # each fits in the open's round, not both
    options = dict(block_size=16_384, digest_dir=tmp_path, tail_bytes=0, fetch_bytes=16_384)
    for name, offsets in spread.items():  # two sessions: open + metadata, then open + cells (the most recent)
        with open_remote((BUCKET, "plan/budget.bin"), version, client, **options) as cold:
            _read_phases(cold, {name: offsets}, data)
    with open_remote((BUCKET, "plan/budget.bin"), version, client, **options) as warm:
        assert warm.plan.next_phases("open") == ["cells", OPEN_FOLLOWER_FIRST]
        ahead = {name: warm.prefetch([(o, o + 100) for o in offsets]) for name, offsets in spread.items()}
        assert ahead[OPEN_FOLLOWER_FIRST] == 0 and ahead["cells"] > 0  # the metadata came with the open
        _read_phases(warm, spread, data)


def test_the_open_asks_for_a_hinted_range_in_one_request_later_ones_in_parallel_pieces(server, client, proxy,
                                                                                       tmp_path):
    """A hinted range of up to ``OPEN_HINT_REQUEST_BYTES`` is one request while the file opens (the open's request
    count), and cut into parallel pieces of ``PLAN_REQUEST_BYTES`` in a later phase."""
    from vbo.source.remote import OPEN_HINT_REQUEST_BYTES, PLAN_REQUEST_BYTES

    data = random.Random(11).randbytes(8_000_000)
    version = server.put(BUCKET, "plan/hinted.bin", data)
    hinted = {0: (1_048_576, 1_048_576 + OPEN_HINT_REQUEST_BYTES),  # a read at offset -> the range it hints
              4_000_000: (5_242_880, 5_242_880 + OPEN_HINT_REQUEST_BYTES)}
    assert OPEN_HINT_REQUEST_BYTES == 2 * PLAN_REQUEST_BYTES
    f = open_remote((BUCKET, "plan/hinted.bin"), version, client, block_size=16_384, tail_bytes=0,
                    fetch_bytes=16_384, digest_dir=tmp_path)
    f.read_hint = lambda offset, chunk, size: [hinted[offset]] if offset in hinted else []
    proxy.clear()
    assert f.read(100) == data[:100]  # the open
    with f.phase("later"):
        f.seek(4_000_000)
        assert f.read(100) == data[4_000_000:4_000_100]
    for start, stop in hinted.values():
        f.seek(start)
        assert f.read(stop - start) == data[start:stop]
    f.close()
    asked = [r.range for r in proxy.requests(method="GET", match="plan/hinted.bin")]
    assert f"bytes=1048576-{1_048_576 + OPEN_HINT_REQUEST_BYTES - 1}" in asked
    assert f"bytes=5242880-{5_242_880 + PLAN_REQUEST_BYTES - 1}" in asked and \
        f"bytes={5_242_880 + PLAN_REQUEST_BYTES}-{5_242_880 + OPEN_HINT_REQUEST_BYTES - 1}" in asked


# --- the light ranged-GET client of streamed files -----------------------------------------------------------


def test_range_client_streams_with_the_same_checks(server, proxy, tmp_path):
    from vbo.errors import StreamIntegrityError

    data = random.Random(7).randbytes(300_000)
    version = server.put(BUCKET, "light/r.bin", data)
    client = s3.RangeClient(proxy.endpoint)
    assert client.object_url(BUCKET, "light/a b.bin", "v/1") == \
        f"{proxy.endpoint}/{BUCKET}/light/a%20b.bin?versionId=v%2F1"
    f = open_remote((BUCKET, "light/r.bin"), version, client, block_size=65_536, tail_bytes=0,
                    digest_dir=tmp_path / "d")
    assert (f.version_id, f.size) == (version, len(data)) and f.etag
    f.retries, f.backoff = 6, 0.01
    for kind in ("reset", "truncate", "status"):  # transient faults are retried
        proxy.inject(kind, match="light/r.bin", after_bytes=1000, status=503)
    assert f.read() == data
    assert [r.fault for r in proxy.requests(method="GET", match="light/r.bin")][-4:] == ["reset", "truncate",
                                                                                         "status", None]
    f.close()
    again = open_remote((BUCKET, "light/r.bin"), version, client, block_size=65_536, digest_dir=tmp_path / "d",
                        tail_bytes=0, fetch_bytes=65_536)
    _corrupt_every_range(proxy, "light/r.bin")  # bytes that differ from the recorded digests never pass
    with pytest.raises(StreamIntegrityError):
        again.seek(200_000)
        again.read(10)
    proxy.clear()
    with pytest.raises(S3ObjectNotFoundError):  # an error status is typed as with boto3
        open_remote((BUCKET, "light/none.bin"), client=client)
    with pytest.raises(S3ObjectNotFoundError):
        open_remote((BUCKET, "light/r.bin"), "no-such-version", client)
    assert s3.head_object(client, BUCKET, "light/r.bin", version)["ContentLength"] == len(data)  # via boto3


def test_range_client_refused_endpoint_is_a_typed_error():
    import socket

    from vbo.errors import S3ConnectionError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(S3ConnectionError, match=str(port)):  # after the open's retries
        open_remote((BUCKET, "x.bin"), client=s3.RangeClient(f"http://127.0.0.1:{port}", connect_timeout=1))


def test_prefetch_runs_merge_to_a_request_budget():
    from vbo.source.remote import _cut_runs, _merged_runs

    assert _merged_runs([1, 2, 5, 20, 21, 40], 2, None) == [[1, 5], [20, 21], [40, 40]]
    assert _merged_runs([1, 2, 5, 20, 21, 40], 0, 2) == [[1, 21], [40, 40]]  # the closest runs joined first
    assert _merged_runs([1, 2, 5, 20, 21, 40], 0, 2, 13) == [[1, 5], [20, 21], [40, 40]]  # not over 13 blocks
    assert _merged_runs([1, 2, 5, 20, 21, 40], 0, 2, 14) == [[1, 21], [40, 40]]
    assert _cut_runs([[0, 9]], 4, None) == [[0, 2], [3, 5], [6, 9]]  # equal pieces; the gaps in a run fetched too
    assert _cut_runs([[0, 8]], 8, None) == [[0, 3], [4, 8]]  # not 8 blocks and 1: the pieces end together
    assert _cut_runs([[5, 5], [7, 14]], 8, None) == [[5, 5], [7, 14]]
    assert _cut_runs([[0, 9], [20, 20]], 4, 3) == [[0, 9], [20, 20]]  # never more requests than the budget
