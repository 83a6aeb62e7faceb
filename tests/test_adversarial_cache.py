"""An adversarial suite for the project cache: malformed manifests, a faulty network, planted files, races.

Every case ends in one of three outcomes, printed as a table at the end of the module:

- ``ok``: vbo returned the release's bytes (or did its job) despite the fault;
- ``typed``: vbo raised a :mod:`vbo.errors` exception that names the file (and the field);
- ``WRONG``: anything else — a raw exception, different bytes, a write or read outside the cache, a link
  followed. A wrong answer fails its test.

Network: moto's S3 server on 127.0.0.1, reached through a fault-injecting proxy (``fault_proxy.py``).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import vbo
from vbo import errors as E
from vbo.cache import download as dl
from vbo.cache import manifest as mf
from vbo.source import s3

pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (test extra)")
from fault_proxy import AdversarialProxy  # noqa: E402
from quiet import quiet  # noqa: E402
from s3_server import proxy, publish_release  # noqa: E402, F401 (proxy: the fixture, on this module's module_proxy)

Cache = vbo.VisualBehaviorOphysProjectCache
BUCKET = "vbo-adversarial"
NAME = mf.manifest_name("1.1.0")
BIG_BYTES = 160 * 1024 * 1024  # release-sized: hashing it takes long enough for a race to show
LEDGER: list[tuple[str, str, str]] = []  # (case, outcome, detail)


def record(case: str, outcome: str, detail: str = "") -> None:
    LEDGER.append((case, outcome, detail[:90]))


def expect_typed(case: str, call, error: type[E.VboError] = E.VboError, *names: str) -> BaseException:
    """Run ``call``; pass only if it raises ``error`` (a vbo.errors class) whose message holds every name."""
    try:
        result = call()
    except error as err:
        missing = [n for n in names if n not in str(err)]
        record(case, "typed" if not missing else "WRONG", f"{type(err).__name__}: ...{str(err)[-60:]}")
        assert not missing, f"{case}: {type(err).__name__} does not name {missing}: {err}"
        return err
    except Exception as err:  # noqa: BLE001 - a raw error is the wrong answer this suite looks for
        record(case, "WRONG", f"raw {type(err).__name__}: {err}")
        raise AssertionError(f"{case}: raw {type(err).__name__} instead of {error.__name__}: {err}") from err
    record(case, "WRONG", f"no error; returned {result!r}"[:90])
    raise AssertionError(f"{case}: no error raised")


@pytest.fixture(scope="module", autouse=True)
def ledger(request):
    """Print the table of cases, outcomes and details after the module."""
    yield LEDGER
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not LEDGER:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print_ledger(reporter)


def print_ledger(reporter) -> None:
    counts = {k: sum(1 for _, o, _ in LEDGER if o == k) for k in ("ok", "typed", "WRONG")}
    reporter.write_line("")
    reporter.write_line(f"adversarial cache suite: {len(LEDGER)} cases, {counts['ok']} ok, {counts['typed']} typed "
                        f"errors, {counts['WRONG']} wrong answers")
    reporter.write_line(f"{'case':<58} {'outcome':<7} detail")
    for case, outcome, detail in LEDGER:
        reporter.write_line(f"{case:<58} {outcome:<7} {detail}")


# --- 1. malformed manifests, field by field (static and offline caches: no network) -------------------------


def base_manifest() -> dict:
    digest = "ab" * 64
    tables = {t: (mf.metadata_key(t), "v1", digest) for t in mf.METADATA_TABLES}
    data = {5: (mf.experiment_nwb_key(5), "v1", "cd" * 64)}
    return mf.build_manifest("1.1.0", tables, data, [{"name": "AllenSDK", "version": "2.16.2"}])


def mutate(path: str, value) -> callable:
    """A mutation setting ``path`` (keys separated by '/', '~' deletes) in a manifest copy."""
    def apply(manifest: dict) -> dict:
        out = copy.deepcopy(manifest)
        *parents, last = path.split("/")
        node = out
        for part in parents:
            node = node[part] if part != "*" else next(iter(node.values()))
        if last == "*":
            last = next(iter(node))
        if value == "~":
            del node[last]
        else:
            node[last] = value
        return out
    return apply


def rename_key(group: str, new_key: str):
    def apply(manifest: dict) -> dict:
        out = copy.deepcopy(manifest)
        entries = out[group]
        first = next(iter(entries))
        entries[new_key] = entries.pop(first)
        return out
    return apply


URL_OF_5 = "data_files/5/url"
# (case, mutation, error class, names the message must hold besides the manifest path)
MANIFEST_CASES = [
    ("top level is a list", lambda m: [m], E.ManifestFieldError, "(top level)"),
    ("top level is null", lambda m: None, E.ManifestFieldError, "(top level)"),
    ("project_name missing", mutate("project_name", "~"), E.ManifestFieldError, "project_name"),
    ("project_name is a number", mutate("project_name", 7), E.ManifestFieldError, "project_name"),
    ("project_name ../../escape", mutate("project_name", "../../escape"), E.UnsafeNameError, "project_name"),
    ("project_name absolute", mutate("project_name", "/tmp/evil"), E.UnsafeNameError, "project_name"),
    ("project_name with a slash", mutate("project_name", "a/b"), E.UnsafeNameError, "project_name"),
    ("project_name empty", mutate("project_name", ""), E.UnsafeNameError, "project_name"),
    ("project_name hidden", mutate("project_name", ".hidden"), E.UnsafeNameError, "project_name"),
    ("project_name with newline", mutate("project_name", "vbo\n"), E.UnsafeNameError, "project_name"),
    ("project_name 300 characters", mutate("project_name", "p" * 300), E.UnsafeNameError, "project_name"),
    ("manifest_version missing", mutate("manifest_version", "~"), E.ManifestFieldError, "manifest_version"),
    ("manifest_version a float", mutate("manifest_version", 1.1), E.ManifestFieldError, "manifest_version"),
    ("manifest_version ../1.1.0", mutate("manifest_version", "../1.1.0"), E.ManifestFieldError,
     "manifest_version"),
    ("manifest_version not X.Y.Z", mutate("manifest_version", "1.1"), E.ManifestFieldError, "manifest_version"),
    ("manifest_version differs from name", mutate("manifest_version", "1.2.0"), E.ManifestFieldError,
     "manifest_version"),
    ("metadata_file_id_column_name a list", mutate("metadata_file_id_column_name", []), E.ManifestFieldError,
     "metadata_file_id_column_name"),
    ("data_pipeline a string", mutate("data_pipeline", "AllenSDK"), E.ManifestFieldError, "data_pipeline"),
    ("data_pipeline of numbers", mutate("data_pipeline", [1, 2]), E.ManifestFieldError, "data_pipeline"),
    ("metadata_files missing", mutate("metadata_files", "~"), E.ManifestFieldError, "metadata_files"),
    ("metadata_files a list", mutate("metadata_files", []), E.ManifestFieldError, "metadata_files"),
    ("metadata_files lacks a table", mutate("metadata_files/ophys_cells_table", "~"), E.ManifestFieldError,
     "metadata_files"),
    ("metadata_files extra table", mutate("metadata_files/extra_table", {"url": "u", "version_id": "v",
                                                                          "file_hash": "ab" * 64}),
     E.ManifestFieldError, "metadata_files"),
    ("metadata entry is a list", mutate("metadata_files/behavior_session_table", []), E.ManifestFieldError,
     "behavior_session_table"),
    ("metadata entry lacks url", mutate("metadata_files/behavior_session_table/url", "~"), E.ManifestFieldError,
     "behavior_session_table'].url"),
    ("metadata url is a number", mutate("metadata_files/behavior_session_table/url", 3), E.ManifestFieldError,
     ".url"),
    ("metadata version_id null", mutate("metadata_files/behavior_session_table/version_id", None),
     E.ManifestFieldError, ".version_id"),
    ("metadata file_hash short", mutate("metadata_files/behavior_session_table/file_hash", "abc"),
     E.ManifestFieldError, ".file_hash"),
    ("metadata file_hash not hex", mutate("metadata_files/behavior_session_table/file_hash", "zz" * 64),
     E.ManifestFieldError, ".file_hash"),
    ("metadata url escapes the cache", mutate("metadata_files/behavior_session_table/url",
                                              mf.object_url("visual-behavior-ophys/../../../etc/passwd")),
     E.UnsafeKeyError, "behavior_session_table"),
    ("data_files missing", mutate("data_files", "~"), E.ManifestFieldError, "data_files"),
    ("data_files is a list", mutate("data_files", [{"url": "u"}]), E.ManifestFieldError, "data_files"),
    ("data_files is a string", mutate("data_files", "x"), E.ManifestFieldError, "data_files"),
    ("data file id not a number", rename_key("data_files", "abc"), E.ManifestFieldError, "data_files['abc']"),
    ("data file id ../x", rename_key("data_files", "../x"), E.ManifestFieldError, "data_files"),
    ("data entry null", mutate("data_files/5", None), E.ManifestFieldError, "data_files['5']"),
    ("data url control character", mutate(URL_OF_5, mf.object_url("visual-behavior-ophys/a\x00b.nwb")),
     E.ManifestFieldError, "data_files['5'].url"),
    ("data url absolute key", mutate(URL_OF_5, "https://visual-behavior-ophys-data.s3.amazonaws.com//etc/x"),
     E.UnsafeKeyError, "data_files['5'].url"),
    ("data url with backslash", mutate(URL_OF_5, mf.object_url("visual-behavior-ophys/..\\..\\x.nwb")),
     E.UnsafeKeyError, "data_files['5'].url"),
    ("data url file://", mutate(URL_OF_5, "file:///etc/passwd"), E.UnsafeKeyError, "data_files['5'].url"),
    ("data file_hash 129 digits", mutate("data_files/5/file_hash", "a" * 129), E.ManifestFieldError,
     "data_files['5'].file_hash"),
]


def static_bucket(root: Path, manifest_bytes: bytes, name: str = NAME) -> Path:
    folder = root / mf.PROJECT_NAME / mf.MANIFEST_PREFIX
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(manifest_bytes)
    return root


@pytest.mark.parametrize("case, change, error, field", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
@pytest.mark.parametrize("mode", ["static", "offline"])
def test_malformed_manifest_field_is_a_typed_error_naming_file_and_field(case, change, error, field, mode,
                                                                         tmp_path):
    text = json.dumps(change(base_manifest())).encode()
    if mode == "static":
        root = static_bucket(tmp_path, text)
        open_cache = lambda: quiet(Cache.from_local_cache, root, use_static_cache=True)  # noqa: E731
    else:
        (tmp_path / NAME).write_bytes(text)
        open_cache = lambda: quiet(Cache.from_local_cache, tmp_path)  # noqa: E731
    expect_typed(f"{mode}: {case}", open_cache, error, NAME, field)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([mf.PROJECT_NAME] if mode == "static" else [NAME])


@pytest.mark.parametrize("case, data", [
    ("not JSON", b"{not json"),
    ("not UTF-8", b"\xff\xfe{}"),
    ("empty file", b""),
])
def test_unparseable_manifest_is_a_typed_error(case, data, tmp_path):
    root = static_bucket(tmp_path, data)
    expect_typed(f"static: manifest {case}", lambda: quiet(Cache.from_local_cache, root, use_static_cache=True),
                 E.ManifestError, NAME)


def test_well_formed_manifest_gets_as_far_as_the_missing_tables(tmp_path):
    """The control row: the base manifest passes every check; what stops it is the absent CSV, typed."""
    root = static_bucket(tmp_path, json.dumps(base_manifest()).encode())
    expect_typed("static: valid manifest, no tables", lambda: quiet(Cache.from_local_cache, root,
                                                                   use_static_cache=True),
                 E.NotInCacheError, "behavior_session_table.csv")


def test_stray_json_files_beside_the_manifests_are_ignored(tmp_path):
    root = static_bucket(tmp_path, json.dumps(base_manifest()).encode())
    folder = root / mf.PROJECT_NAME / mf.MANIFEST_PREFIX
    (folder / "notes.json").write_text("{}")
    (folder / "x_manifest_vlatest.json").write_text("[]")
    (folder / "visual-behavior-ophys_project_manifest_v9.9.9.json.bak").write_text("[]")
    err = expect_typed("static: stray JSON files in manifests/",
                       lambda: quiet(Cache.from_local_cache, root, use_static_cache=True), E.NotInCacheError)
    assert "behavior_session_table.csv" in str(err)  # it went on with the real manifest


@pytest.mark.parametrize("content", ["../../etc/passwd_manifest_v1.1.0.json", "nonsense", ""])
def test_last_used_naming_something_else_falls_back_to_a_real_manifest(content, tmp_path):
    (tmp_path / NAME).write_text(json.dumps(base_manifest()))
    (tmp_path / "_manifest_last_used.txt").write_text(content)
    expect_typed(f"offline: last-used names {content!r}", lambda: quiet(Cache.from_local_cache, tmp_path),
                 E.NotInCacheError, "behavior_session_table.csv")


def test_cache_folder_that_is_a_regular_file(tmp_path):
    plain = tmp_path / "cache"
    plain.write_text("not a folder")
    expect_typed("S3 cache folder is a regular file",
                 lambda: quiet(Cache.from_s3_cache, plain, endpoint_url="http://127.0.0.1:9"), E.CacheFolderError,
                 str(plain))
    expect_typed("local cache folder is a regular file", lambda: quiet(Cache.from_local_cache, plain),
                 E.CacheFolderError, str(plain))
    expect_typed("local cache folder missing", lambda: quiet(Cache.from_local_cache, tmp_path / "none"),
                 E.CacheFolderNotFoundError, "none")


# --- 2. a published release behind a fault proxy ------------------------------------------------------------


@pytest.fixture(scope="module")
def release(tiny_release):
    return publish_release(tiny_release.root, BUCKET)


@pytest.fixture(scope="module")
def module_proxy(release):
    server, _ = release
    with AdversarialProxy(server.endpoint) as px:
        yield px


def open_s3(folder: Path, endpoint: str):
    return quiet(Cache.from_s3_cache, folder, bucket_name_override=BUCKET, endpoint_url=endpoint)


def server_manifest(release) -> bytes:
    server, _ = release
    key = f"{mf.PROJECT_NAME}/{mf.MANIFEST_PREFIX}/{NAME}"
    return server.admin.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def first_experiment(cache) -> tuple[int, Path, dict]:
    oeid = int(cache.get_ophys_experiment_table().index[0])
    entry = cache._experiment_entry(oeid)
    path = cache._store.local_path(cache._manifest, s3.bucket_and_key(entry["url"])[1])
    return oeid, path, entry


def flip_bit(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0x01
    path.write_bytes(bytes(data))


MANIFEST_DAMAGE = {
    "one flipped bit": lambda p: flip_bit(p),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "data_files turned into a list": lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "data_files": list(json.loads(p.read_text())["data_files"].values())})),
    "a foreign host planted": lambda p: p.write_text(json.dumps(mutate(
        "data_files/*/url", "https://evil.example.com/visual-behavior-ophys/x.nwb")(json.loads(p.read_text())))),
    "emptied": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_damaged_manifest_on_disk_is_fetched_again_on_the_next_start(damage, release, proxy, tmp_path):
    folder = tmp_path / "cache"
    open_s3(folder, proxy.endpoint)
    MANIFEST_DAMAGE[damage](folder / NAME)
    try:
        cache = open_s3(folder, proxy.endpoint)
    except Exception as err:  # noqa: BLE001
        record(f"S3 start with a manifest {damage}", "WRONG", f"{type(err).__name__}: {err}")
        raise
    same = (folder / NAME).read_bytes() == server_manifest(release)
    record(f"S3 start with a manifest {damage}", "ok" if same else "WRONG", "fetched again, server's bytes")
    assert same and cache.current_manifest() == NAME


def test_stray_objects_beside_the_manifests_in_the_bucket_are_ignored(release, proxy, tmp_path):
    server, _ = release
    prefix = f"{mf.PROJECT_NAME}/{mf.MANIFEST_PREFIX}/"
    strays = {prefix + "notes.json": b"{}", prefix + "x_manifest_vlatest.json": b"[]",
              prefix + "sub/visual-behavior-ophys_project_manifest_v9.9.9.json": b"[]"}
    versions = {key: server.put(BUCKET, key, body) for key, body in strays.items()}
    try:
        cache = open_s3(tmp_path / "cache", proxy.endpoint)
    finally:
        for key, version in versions.items():
            server.admin.delete_object(Bucket=BUCKET, Key=key, VersionId=version)
    ok = cache.current_manifest() == NAME and NAME in cache.list_manifest_file_names()
    record("S3: stray JSON objects in manifests/", "ok" if ok else "WRONG", f"{cache.list_manifest_file_names()}")
    assert ok


def test_planted_fifo_and_link_are_never_hashed_or_recorded(release, proxy, tmp_path, victim):
    folder = tmp_path / "cache"
    cache = open_s3(folder, proxy.endpoint)
    os.mkfifo(folder / "visual-behavior-ophys-1.1.0" / "trap.nwb")
    os.symlink(victim, folder / "visual-behavior-ophys-1.1.0" / "link.nwb")
    cache.construct_local_manifest()  # a FIFO read would block forever
    recorded = json.loads((folder / "_downloaded_data.json").read_text())
    ok = not any(name.endswith(("trap.nwb", "link.nwb")) for name in recorded) and untouched(victim)
    record("FIFO and link planted, construct_local_manifest()", "ok" if ok else "WRONG", f"{len(recorded)} recorded")
    assert ok


def test_manifest_fetched_through_bit_flips_is_never_kept(release, proxy, tmp_path):
    proxy.inject("corrupt", count=2, match=NAME, after_bytes=500)  # two bad transfers, then a good one
    cache = open_s3(tmp_path / "cache", proxy.endpoint)
    same = (tmp_path / "cache" / NAME).read_bytes() == server_manifest(release)
    record("manifest GET with bit flips (x2)", "ok" if same else "WRONG", "checked against size + ETag")
    assert same and cache.current_manifest() == NAME


def test_natural_movie_corruption_is_caught(release, proxy, tmp_path):
    folder = tmp_path / "cache"
    cache = open_s3(folder, proxy.endpoint)
    movie = cache.get_raw_natural_movie()
    path = folder / "resources" / "Movie_TOE1.npy"
    flip_bit(path, at=path.stat().st_size - 5)
    again = open_s3(folder, proxy.endpoint).get_raw_natural_movie()
    ok = np.array_equal(again, movie)
    record("S3: natural movie with a flipped bit", "ok" if ok else "WRONG", "fetched again")
    assert ok
    flip_bit(path, at=path.stat().st_size - 5)
    offline = quiet(Cache.from_local_cache, folder)
    expect_typed("offline: natural movie with a flipped bit", offline.get_raw_natural_movie, E.HashMismatchError,
                 "Movie_TOE1.npy")
    proxy.inject("corrupt", count=3, match="Movie_TOE1", after_bytes=200)
    again = open_s3(folder, proxy.endpoint).get_raw_natural_movie()
    flips = [r.fault for r in proxy.requests("GET", "Movie_TOE1")]
    ok = np.array_equal(again, movie) and flips.count("corrupt") == 3
    record("S3: movie on disk and 3 transfers corrupt", "ok" if ok else "WRONG", f"GETs {flips}")
    assert ok


def test_object_corrupt_on_every_transfer_is_never_kept(release, proxy, tmp_path):
    server, _ = release
    key = mf.NATURAL_MOVIE_KEY
    client = s3.anonymous_client(proxy.endpoint)
    head = s3.head_object(client, BUCKET, key)
    proxy.inject("corrupt", count=50, match="Movie_TOE1", after_bytes=200, ttl=300)
    dest = tmp_path / "Movie_TOE1.npy"
    expect_typed("unhashed object corrupt on every transfer", lambda: dl.download_object(
        client, BUCKET, key, head["VersionId"], None, dest, expected_size=int(head["ContentLength"]),
        expected_etag=head["ETag"], retries=2, backoff=0.01), E.UnverifiedObjectError, "Movie_TOE1", "MD5")
    assert not dest.exists() and not dl.partial_path(dest).exists()


@pytest.mark.parametrize("kind, options", [
    ("reset", {"after_bytes": 40_000}),
    ("truncate", {"after_bytes": 40_000}),
    ("status", {"status": 503}),
    ("status", {"status": 500}),
    ("corrupt", {"after_bytes": 10_000}),
    ("stall", {"after_bytes": 40_000, "stall_seconds": 1.0}),
    ("ignore_range", {}),
], ids=["reset", "truncate", "503", "500", "bitflip", "stall", "ignore_range"])
def test_every_network_fault_still_gives_the_release_bytes(kind, options, release, proxy, tmp_path, tiny_release):
    cache = open_s3(tmp_path / "cache", proxy.endpoint)
    oeid, path, entry = first_experiment(cache)
    truth = (tiny_release.root / mf.experiment_nwb_key(oeid)).read_bytes()
    if kind == "ignore_range":  # a partial exists, and the server answers its Range request with everything
        dl.partial_path(path).parent.mkdir(parents=True, exist_ok=True)
        dl.partial_path(path).write_bytes(truth[:30_000])
        proxy.inject_extra("ignore_range", count=1, match=f"_{oeid}.nwb")
    else:
        proxy.inject(kind, count=2, match=f"_{oeid}.nwb", **options)
    with cache.get_behavior_ophys_experiment(oeid) as experiment:
        assert len(experiment.dff_traces) > 0
    same = path.read_bytes() == truth
    faults = [r.fault for r in proxy.requests("GET", f"_{oeid}.nwb")] + [k for k, *_ in proxy.extra_applied]
    record(f"download through {kind} {options or ''}", "ok" if same else "WRONG", f"GETs with faults {faults}")
    assert same and not dl.partial_path(path).exists()
    assert faults.count(kind if kind != "status" else "status") >= 1


def test_stalled_response_is_bounded_by_the_read_timeout(release, proxy, tmp_path, tiny_release):
    server, published = release
    entry = published[NAME]["data_files"][next(iter(published[NAME]["data_files"]))]
    key = s3.bucket_and_key(entry["url"])[1]
    client = s3.anonymous_client(proxy.endpoint, read_timeout=1.0, max_attempts=1)
    proxy.inject("stall", match=key, after_bytes=30_000, stall_seconds=50)
    started = time.monotonic()
    dest = dl.download_object(client, BUCKET, key, entry["version_id"], entry["file_hash"], tmp_path / "x.nwb",
                              backoff=0.01)
    waited = time.monotonic() - started
    ok = mf.file_hash(dest) == entry["file_hash"] and waited < 40
    record("GET stalls for 50 s (read timeout 1 s)", "ok" if ok else "WRONG", f"resumed after {waited:.1f} s")
    assert ok


def test_dropped_head_requests_never_abort_a_batch(release, proxy, tmp_path):
    server, published = release
    entries = list(published[NAME]["data_files"].values())[:3]
    jobs = [dl.DownloadJob(BUCKET, s3.bucket_and_key(e["url"])[1], e["version_id"], e["file_hash"],
                           tmp_path / f"{i}.nwb") for i, e in enumerate(entries)]
    proxy.inject_extra("drop", count=30, method="HEAD")
    client = s3.anonymous_client(proxy.endpoint, max_attempts=2)
    results = dl.download_many(jobs, workers=3, client=client, backoff=0.01)
    ok = all(mf.file_hash(p) == e["file_hash"] for p, e in zip(results, entries))
    record("every HEAD dropped in a batch of 3", "ok" if ok else "WRONG",
           f"{len(proxy.extra_applied)} HEADs dropped, all files verified")
    assert ok and len(proxy.extra_applied) >= 3


def test_refused_endpoint_is_a_typed_error_and_a_clean_cli_exit(tmp_path):
    import socket

    with socket.socket() as sock:  # a port with nothing listening on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    expect_typed("S3 cache on an endpoint that refuses", lambda: open_s3(tmp_path / "cache", endpoint),
                 E.S3ConnectionError, str(port))
    from typer.testing import CliRunner

    from vbo.cli import app

    result = CliRunner().invoke(app, ["download", str(tmp_path / "cli"), "--experiments", "1", "--bucket", BUCKET,
                                      "--endpoint-url", endpoint])
    clean = result.exit_code != 0 and (result.exception is None or isinstance(result.exception, SystemExit))
    record("`vbo download` on an endpoint that refuses", "typed" if clean else "WRONG",
           f"exit {result.exit_code}: {result.output.strip()[-60:]}")
    assert clean, (result.output, result.exception)


def test_verify_reports_only_what_it_really_repaired(release, proxy, tmp_path, tiny_release):
    cache = open_s3(tmp_path / "cache", proxy.endpoint)
    oeid, path, entry = first_experiment(cache)
    cache.download(ophys_experiment_ids=[oeid])
    flip_bit(path)
    proxy.inject("corrupt", count=100, match=f"_{oeid}.nwb", after_bytes=1000, ttl=600)  # corrupt every time
    cache._store.download_options = {"retries": 2, "backoff": 0.01}
    report = cache.verify(repair=True)
    honest = str(path) in report["corrupt"] and str(path) not in report["repaired"]
    record("verify(repair) while every re-download is corrupt", "ok" if honest else "WRONG",
           f"reported as {[k for k, v in report.items() if str(path) in v]}")
    assert honest
    proxy.clear()
    report = cache.verify(repair=True)
    fixed = str(path) in report["repaired"] and mf.file_hash(path) == entry["file_hash"]
    record("verify(repair) once the network is sound", "ok" if fixed else "WRONG", "repaired and verified")
    assert fixed


# --- 3. planted files: links and special files where vbo keeps its own ---------------------------------------


@pytest.fixture
def victim(tmp_path):
    """A file outside every cache that nothing may write, truncate or serve."""
    path = tmp_path / "outside" / "victim.txt"
    path.parent.mkdir()
    path.write_text("precious\n")
    return path


def untouched(victim: Path) -> bool:
    return victim.read_text() == "precious\n"


def test_planted_link_at_the_partial_is_not_written_through(release, proxy, tmp_path, victim):
    cache = open_s3(tmp_path / "cache", proxy.endpoint)
    oeid, path, entry = first_experiment(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim, dl.partial_path(path))
    cache.download(ophys_experiment_ids=[oeid])
    ok = untouched(victim) and mf.file_hash(path) == entry["file_hash"] and not path.is_symlink()
    record("link planted at <file>.partial", "ok" if ok else "WRONG", "link removed, victim untouched")
    assert ok


def test_planted_link_at_the_lock_is_not_truncated(release, proxy, tmp_path, victim):
    cache = open_s3(tmp_path / "cache", proxy.endpoint)
    oeid, path, entry = first_experiment(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim, dl.lock_path(path))
    record_lock = dl.lock_path(tmp_path / "cache" / "_downloaded_data.json")
    record_lock.unlink(missing_ok=True)
    os.symlink(victim, record_lock)
    cache.download(ophys_experiment_ids=[oeid])
    ok = untouched(victim) and mf.file_hash(path) == entry["file_hash"]
    record("links planted at <file>.lock and the record's lock", "ok" if ok else "WRONG", "victim untouched")
    assert ok


def test_planted_link_at_the_last_used_record(release, proxy, tmp_path, victim):
    folder = tmp_path / "cache"
    open_s3(folder, proxy.endpoint)
    last = folder / "_manifest_last_used.txt"
    last.unlink()
    os.symlink(victim, last)
    cache = open_s3(folder, proxy.endpoint)
    ok = untouched(victim) and not last.is_symlink() and last.read_text() == NAME
    record("link planted at _manifest_last_used.txt", "ok" if ok else "WRONG", "replaced, never followed")
    assert ok and cache.current_manifest() == NAME
    fifo = folder / "_manifest_last_used.txt"
    fifo.unlink()
    os.mkfifo(fifo)
    cache = quiet(Cache.from_local_cache, folder)  # a FIFO would hang a plain read
    record("FIFO planted at _manifest_last_used.txt", "ok", "ignored, replaced")
    assert cache.current_manifest() == NAME and fifo.is_file()


def test_planted_link_at_a_data_file_is_never_served(release, proxy, tmp_path, tiny_release):
    folder = tmp_path / "cache"
    cache = open_s3(folder, proxy.endpoint)
    oeid, path, entry = first_experiment(cache)
    outside = tmp_path / "outside.nwb"  # same bytes, but outside the cache: still not followed
    outside.write_bytes((tiny_release.root / mf.experiment_nwb_key(oeid)).read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, path)
    offline = quiet(Cache.from_local_cache, folder)
    expect_typed("offline: data file is a link to outside the cache",
                 lambda: offline.get_behavior_ophys_experiment(oeid), E.PlantedLinkError, path.name)
    with cache.get_behavior_ophys_experiment(oeid):
        pass
    ok = not path.is_symlink() and mf.file_hash(path) == entry["file_hash"] and outside.exists()
    record("S3: data file is a link to outside the cache", "ok" if ok else "WRONG", "replaced by a download")
    assert ok


def test_planted_link_as_the_version_folder(release, proxy, tmp_path):
    folder = tmp_path / "cache"
    cache = open_s3(folder, proxy.endpoint)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    version_folder = folder / "visual-behavior-ophys-1.1.0"
    import shutil

    shutil.rmtree(version_folder)
    os.symlink(outside, version_folder)
    oeid = int(cache.get_ophys_experiment_table().index[0])
    expect_typed("version folder is a link to outside the cache",
                 lambda: cache.get_behavior_ophys_experiment(oeid), E.PlantedLinkError, "outside the cache")
    assert list(outside.iterdir()) == []


def test_download_record_pointing_outside_is_not_reused(release, proxy, tmp_path, tiny_release):
    folder = tmp_path / "cache"
    cache = open_s3(folder, proxy.endpoint)
    oeid, path, entry = first_experiment(cache)
    outside = tmp_path / "outside.nwb"
    outside.write_bytes((tiny_release.root / mf.experiment_nwb_key(oeid)).read_bytes())
    dl.DownloadRecord(folder / "_downloaded_data.json").add(outside, entry["file_hash"])
    with cache.get_behavior_ophys_experiment(oeid):
        pass
    ok = not path.is_symlink() and path.is_file() and mf.file_hash(path) == entry["file_hash"]
    record("download record names a file outside the cache", "ok" if ok else "WRONG", "downloaded instead")
    assert ok


def test_reused_file_is_hashed_before_it_is_linked(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    source = folder / "a" / "file.nwb"
    source.parent.mkdir()
    source.write_bytes(b"release bytes" * 1000)
    digest = mf.file_hash(source)
    record_ = dl.DownloadRecord(folder / "_downloaded_data.json")
    record_.add(source, digest)
    flip_bit(source)
    dest = folder / "b" / "file.nwb"
    reused = dl.reuse_identical(record_, digest, dest)
    ok = reused is None and not dest.exists()
    record("reuse of a recorded file whose bytes changed", "ok" if ok else "WRONG", f"reuse -> {reused}")
    assert ok


# --- 4. a read-only complete cache ---------------------------------------------------------------------------


def test_read_only_complete_cache_opens_offline(release, proxy, tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    cache = open_s3(folder, proxy.endpoint)
    oeid, path, entry = first_experiment(cache)
    cache.download(ophys_experiment_ids=[oeid])
    cache.get_raw_natural_movie()
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    prefix = str(folder)

    def refuse(real):
        def call(*args, **kwargs):
            target = str(kwargs.get("dir") or (args[0] if args else ""))
            if target.startswith(prefix):
                raise OSError(errno.EROFS, "Read-only file system", target)
            return real(*args, **kwargs)
        return call

    def refuse_writes(real):
        def call(path, flags, *args, **kwargs):
            if str(path).startswith(prefix) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real(path, flags, *args, **kwargs)
        return call

    # a read-only mount: every write under the folder fails with EROFS (chmod does not stop root)
    for name in ("mkdir", "replace", "unlink", "symlink", "link"):
        monkeypatch.setattr(os, name, refuse(getattr(os, name)))
    monkeypatch.setattr(os, "open", refuse_writes(os.open))
    monkeypatch.setattr(tempfile, "mkstemp", refuse(tempfile.mkstemp))
    for p in sorted(folder.rglob("*"), reverse=True):
        os.chmod(p, 0o555 if p.is_dir() else 0o444, follow_symlinks=False)
    try:
        offline = quiet(Cache.from_local_cache, folder)
        with offline.get_behavior_ophys_experiment(oeid) as experiment:
            assert len(experiment.trials) > 0
        movie = offline.get_raw_natural_movie()
        report = offline.verify(repair=False)
    except Exception as err:  # noqa: BLE001
        record("read-only complete cache, offline", "WRONG", f"{type(err).__name__}: {err}")
        raise
    finally:
        monkeypatch.undo()
        for p in folder.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644, follow_symlinks=False)
    ok = str(path) in report["ok"] and movie.ndim == 3 and \
        {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
    record("read-only complete cache, offline", "ok" if ok else "WRONG", "tables, experiment, movie, verify")
    assert ok


# --- 5. processes: kill -9 mid-download, four processes repairing one release-sized file ---------------------


_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from vbo.cache.stores import S3Store
    endpoint, bucket, folder, key, version, digest, go = sys.argv[1:8]
    while go != "-" and not Path(go).exists():
        time.sleep(0.01)
    store = S3Store(Path(folder), bucket, endpoint)
    manifest = {"project_name": "visual-behavior-ophys", "manifest_version": "1.1.0"}
    entry = {"url": f"{endpoint}/{bucket}/{key}", "version_id": version, "file_hash": digest}
    path = store.fetch(manifest, entry, verify=True)   # what verify(repair=True) and every get_* call do
    print("ok", path, flush=True)
""")


@pytest.fixture(scope="module")
def big_object(release):
    """A release-sized object (seeded random bytes) in the bucket: (key, version, blake2b, bytes)."""
    server, _ = release
    data = np.random.default_rng(11).integers(0, 256, BIG_BYTES, dtype=np.uint8).tobytes()
    key = f"{mf.PROJECT_NAME}/behavior_ophys_experiments/behavior_ophys_experiment_999.nwb"
    return key, server.put(BUCKET, key, data), dl.hash_bytes(data), data


def _children(n, endpoint, folder, big_object, go="-"):
    key, version, digest, _ = big_object
    return [subprocess.Popen([sys.executable, "-c", _CHILD, endpoint, BUCKET, str(folder), key, version, digest,
                              str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(n)]


def test_four_processes_repair_one_corrupt_release_sized_file(release, proxy, tmp_path, big_object):
    key, version, digest, data = big_object
    folder = tmp_path / "cache"
    path = folder / "visual-behavior-ophys-1.1.0" / key.split("/", 1)[1]
    path.parent.mkdir(parents=True)
    corrupt = bytearray(data)
    corrupt[len(data) // 3] ^= 0x40
    path.write_bytes(bytes(corrupt))
    go = tmp_path / "go"
    children = _children(4, proxy.endpoint, folder, big_object, go)
    time.sleep(0.5)
    go.touch()
    outputs = [c.communicate(timeout=240) for c in children]
    codes = [c.returncode for c in children]
    ok = codes == [0, 0, 0, 0] and mf.file_hash(path) == digest
    errors = [o[1].strip().splitlines()[-1] for o in outputs if o[1].strip()]
    record(f"4 processes repair one corrupt {BIG_BYTES >> 20} MB file", "ok" if ok else "WRONG",
           f"exit codes {codes} {errors[:1]}")
    assert ok, outputs
    leftovers = sorted(p.name for p in path.parent.iterdir() if p.name != path.name and not p.name.endswith(".lock"))
    assert leftovers == []
    assert len(proxy.requests("GET", "_999.nwb")) == 1  # repaired once, the other three found it verified


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL on this platform")
def test_kill_9_mid_download_then_a_new_process_finishes(release, proxy, tmp_path, big_object):
    key, version, digest, data = big_object
    folder = tmp_path / "cache"
    path = folder / "visual-behavior-ophys-1.1.0" / key.split("/", 1)[1]
    partial = dl.partial_path(path)
    proxy.inject("stall", match="_999.nwb", after_bytes=BIG_BYTES // 2, stall_seconds=60)
    (child,) = _children(1, proxy.endpoint, folder, big_object)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < BIG_BYTES // 4):
            assert child.poll() is None, child.communicate()
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    assert not path.exists()
    proxy.clear()
    (child,) = _children(1, proxy.endpoint, folder, big_object)
    out, err = child.communicate(timeout=240)
    ok = child.returncode == 0 and mf.file_hash(path) == digest and not partial.exists()
    ranges = [r.range for r in proxy.requests("GET", "_999.nwb")]
    record("kill -9 mid-download, then a new process", "ok" if ok else "WRONG", f"resumed with {ranges}")
    assert ok, err
    assert ranges and ranges[0] and ranges[0].startswith("bytes=")  # resumed, not restarted
