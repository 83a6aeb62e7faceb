"""VisualBehaviorOphysProjectCache on a simulated release: static copy, S3 (moto server), offline cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import vbo
from vbo.cache import manifest as mf
from vbo.errors import (BehaviorCloudCacheVersionException, OutdatedManifestWarning, ReleaseLookupError, UnknownIdError,
                        UnsupportedCacheOperationError,
                        UnsafeKeyError, UpdatedStimulusPresentationTableWarning)

pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (test extra)")
from quiet import quiet  # noqa: E402
from s3_server import moto_s3, publish_release  # noqa: E402

Cache = vbo.VisualBehaviorOphysProjectCache
BUCKET = "vbo-test-release"


@pytest.fixture(scope="module")
def static(tiny_release):
    return quiet(Cache.from_local_cache, tiny_release.root, use_static_cache=True)


@pytest.fixture(scope="module")
def bucket(tiny_release):
    return publish_release(tiny_release.root, BUCKET)


@pytest.fixture
def s3_cache(bucket, tmp_path):
    server, _ = bucket
    return quiet(Cache.from_s3_cache, tmp_path / "cache", bucket_name_override=BUCKET, endpoint_url=server.endpoint)


def test_static_cache_tables_and_sessions(static, tiny_release):
    assert static.list_manifest_file_names() == [mf.manifest_name("1.1.0")]
    assert static.current_manifest() == mf.manifest_name("1.1.0")
    behavior = static.get_behavior_session_table()
    experiments = static.get_ophys_experiment_table()
    cells = static.get_ophys_cells_table()
    assert behavior.index.name == "behavior_session_id" and cells.index.name == "cell_roi_id"
    assert len(experiments) == tiny_release.n_experiment_files
    assert (behavior["file_id"] > 0).sum() == tiny_release.n_behavior_files  # never 0: AllenSDK reads 0 as "no file"
    imaging = behavior[behavior["file_id"] == -999].iloc[0]
    with static.get_behavior_session(str(imaging.name)) as session:  # id as str works
        assert session.behavior_session_id == imaging.name
        assert session.metadata["session_type"] == imaging["session_type"]
    oeid = experiments.index[0]
    with static.get_behavior_ophys_experiment(int(oeid)) as experiment:
        assert experiment.ophys_experiment_id == oeid
        assert len(experiment.cell_specimen_table) == (cells["ophys_experiment_id"] == oeid).sum()
    with pytest.raises(UnknownIdError):
        static.get_behavior_session(1)
    with pytest.raises(RuntimeError, match="1 and only 1") as unknown:  # AllenSDK's class, as a typed vbo error
        static.get_behavior_ophys_experiment(1)
    assert isinstance(unknown.value, ReleaseLookupError)
    with pytest.raises(RuntimeError, match="only its latest manifest") as comparing:  # AllenSDK's class
        static.compare_manifests(*tiny_release.versions)
    assert isinstance(comparing.value, UnsupportedCacheOperationError)
    with pytest.raises(NotImplementedError):
        static.construct_local_manifest()


def test_every_construction_warns_about_the_presentations(tiny_release):
    with pytest.warns(UpdatedStimulusPresentationTableWarning):
        Cache.from_local_cache(tiny_release.root, use_static_cache=True)


def test_ignored_arguments_warn(static):
    with pytest.warns(UserWarning, match="ignored"):
        table = static.get_ophys_session_table(index_column="ophys_experiment_id")
    assert table.index.name == "ophys_session_id"


def test_s3_cache_downloads_verifies_and_reuses(s3_cache, tiny_release, bucket):
    server, published = bucket
    cache_dir = s3_cache._store.cache_dir
    assert s3_cache.list_manifest_file_names() == [mf.manifest_name(v) for v in tiny_release.versions]
    assert s3_cache.current_manifest() == mf.manifest_name("1.1.0")
    assert (cache_dir / "_manifest_last_used.txt").read_text() == mf.manifest_name("1.1.0")
    experiments = s3_cache.get_ophys_experiment_table()
    oeid = int(experiments.index[0])
    with s3_cache.get_behavior_ophys_experiment(oeid) as experiment:
        local = experiment.dff_traces
    path = cache_dir / "visual-behavior-ophys-1.1.0" / mf.experiment_nwb_key(oeid).split("/", 1)[1]
    assert path.is_file()
    record = json.loads((cache_dir / "_downloaded_data.json").read_text())
    assert record[str(path)] == mf.file_hash(path)
    # streaming gives the same values without downloading
    with s3_cache.get_behavior_ophys_experiment(oeid, stream=True) as streamed:
        for a, b in zip(streamed.dff_traces["dff"], local["dff"]):
            np.testing.assert_array_equal(a, b)
    # a corrupted cached file is noticed and replaced (AllenSDK never re-hashes, Q6)
    path.write_bytes(b"garbage" + path.read_bytes()[7:])
    fresh = quiet(Cache.from_s3_cache, cache_dir, bucket_name_override=BUCKET, endpoint_url=server.endpoint)
    with fresh.get_behavior_ophys_experiment(oeid) as experiment:
        assert len(experiment.dff_traces) == len(local)
    assert mf.file_hash(path) == record[str(path)]


def test_switching_versions_reuses_unchanged_files(s3_cache, tiny_release):
    old, new = (mf.manifest_name(v) for v in tiny_release.versions)
    oeids = s3_cache.get_ophys_experiment_table().index
    unchanged = int(oeids[-1])
    with s3_cache.get_behavior_ophys_experiment(unchanged):
        pass
    with pytest.warns(OutdatedManifestWarning):
        s3_cache.load_manifest(old)
    assert s3_cache.current_manifest() == old
    behavior = s3_cache.get_behavior_session_table()
    assert behavior["file_id"].isna().any(), "older releases left file_id empty for imaging sessions"
    with s3_cache.get_behavior_ophys_experiment(unchanged):
        pass
    old_path = s3_cache._store.cache_dir / f"visual-behavior-ophys-{tiny_release.versions[0]}" / \
        mf.experiment_nwb_key(unchanged).split("/", 1)[1]
    assert old_path.is_symlink(), "an unchanged file is linked, not downloaded again"
    text = s3_cache.compare_manifests(old, new)
    assert text.startswith(f"Changes going from\n{old}\nto\n{new}\n\n")
    assert "project_metadata/behavior_session_table.csv changed" in text
    assert sum(line.endswith(" changed") for line in text.splitlines()) >= 2
    s3_cache.load_latest_manifest()
    assert s3_cache.current_manifest() == new


def test_incompatible_version_changes_nothing(s3_cache, bucket, tmp_path):
    server, _ = bucket
    cache_dir = s3_cache._store.cache_dir
    before = (s3_cache.current_manifest(), (cache_dir / "_manifest_last_used.txt").read_text())
    old = json.loads((cache_dir / mf.manifest_name("1.1.0")).read_text())
    old["manifest_version"] = "0.3.0"
    name = mf.manifest_name("0.3.0")
    key = f"visual-behavior-ophys/manifests/{name}"
    version = server.put(BUCKET, key, json.dumps(old).encode())  # the server's manifests are checked on use
    try:
        s3_cache._store.manifest_names = lambda: [name, mf.manifest_name("1.1.0")]
        with pytest.raises(BehaviorCloudCacheVersionException, match="0.3.0"):
            s3_cache.load_manifest(name)
    finally:
        server.admin.delete_object(Bucket=BUCKET, Key=key, VersionId=version)
    assert (s3_cache.current_manifest(), (cache_dir / "_manifest_last_used.txt").read_text()) == before


def test_offline_cache_never_touches_the_network(s3_cache, tmp_path):
    experiments = s3_cache.get_ophys_experiment_table()
    with s3_cache.get_behavior_ophys_experiment(int(experiments.index[0])):
        pass
    cache_dir = s3_cache._store.cache_dir
    offline = quiet(Cache.from_local_cache, cache_dir)
    assert offline.current_manifest() == s3_cache.current_manifest()
    pd.testing.assert_frame_equal(offline.get_ophys_experiment_table(), experiments)
    with offline.get_behavior_ophys_experiment(int(experiments.index[0])) as experiment:
        assert len(experiment.trials) > 0
    with pytest.raises(FileNotFoundError, match="without a connection to s3"):
        offline.get_behavior_ophys_experiment(int(experiments.index[-1]))


def test_unsafe_manifest_keys_are_refused(tiny_release, tmp_path):
    copy = tmp_path / "bucket"
    shutil.copytree(tiny_release.root / "visual-behavior-ophys", copy / "visual-behavior-ophys")
    path = copy / mf.manifest_key("1.1.0")
    manifest = json.loads(path.read_text())
    first = next(iter(manifest["data_files"]))
    manifest["data_files"][first]["url"] = mf.object_url("visual-behavior-ophys/../../etc/passwd")
    path.write_text(json.dumps(manifest))
    with pytest.raises(UnsafeKeyError):
        quiet(Cache.from_local_cache, copy, use_static_cache=True)


def test_published_manifests_point_at_the_bucket(bucket, tiny_release):
    server, published = bucket
    for name, manifest in published.items():
        local = json.loads((tiny_release.root / "visual-behavior-ophys" / "manifests" / name).read_text())
        for file_id, entry in manifest["data_files"].items():
            assert entry["url"].startswith(f"https://{BUCKET}.s3.us-west-2.amazonaws.com/visual-behavior-ophys/")
            assert entry["file_hash"] == local["data_files"][file_id]["file_hash"]
            assert entry["version_id"] != local["data_files"][file_id]["version_id"]  # the server's, not ours
    # each manifest's version ids fetch exactly the bytes it names
    old = published[mf.manifest_name(tiny_release.versions[0])]
    entry = old["metadata_files"]["behavior_session_table"]
    key = "visual-behavior-ophys/project_metadata/behavior_session_table.csv"
    body = server.admin.get_object(Bucket=BUCKET, Key=key, VersionId=entry["version_id"])["Body"].read()
    from vbo.cache.download import hash_bytes

    assert hash_bytes(body) == entry["file_hash"]
    latest = server.admin.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert hash_bytes(latest) == published[mf.manifest_name("1.1.0")]["metadata_files"]["behavior_session_table"][
        "file_hash"] != entry["file_hash"]


def test_demo_runs_on_a_release(tiny_release, tmp_path):
    from vbo.demo import run_demo

    result = run_demo(tmp_path / "demo", release_dir=tiny_release.root)
    assert result.summary.is_file() and "# vbo demo" in result.summary.read_text()
    assert {"container_projections.png", "plane_population_traces.png"} <= {f.name for f in result.figures}
    for figure in result.figures:
        assert figure.stat().st_size > 10_000 and figure.read_bytes()[:4] == b"\x89PNG"
    history = pd.read_csv(tmp_path / "demo" / "training_history.csv")
    assert history["session_type"].iloc[0].startswith("TRAINING_0")


def test_cli_publish_download_verify(tiny_release, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from vbo.cli import app

    server = moto_s3()
    server.create_bucket("vbo-cli-release")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    runner = CliRunner()
    result = runner.invoke(app, ["publish", str(tiny_release.root), "s3://vbo-cli-release",
                                 "--endpoint-url", server.endpoint])
    assert result.exit_code == 0, result.output
    cache_dir = tmp_path / "cache"
    common = ["--bucket", "vbo-cli-release", "--endpoint-url", server.endpoint]
    experiments = quiet(Cache.from_local_cache, tiny_release.root, use_static_cache=True).get_ophys_experiment_table()
    chosen = [int(i) for i in experiments.index[:2]]
    result = runner.invoke(app, ["download", str(cache_dir), "--experiments", ",".join(map(str, chosen)), *common])
    assert result.exit_code == 0, result.output
    folder = cache_dir / "visual-behavior-ophys-1.1.0" / "behavior_ophys_experiments"
    assert sorted(p.name for p in folder.glob("*.nwb")) == sorted(f"behavior_ophys_experiment_{i}.nwb" for i in chosen)
    result = runner.invoke(app, ["verify", str(cache_dir), *common])
    assert result.exit_code == 0 and "0 corrupt" in result.output, result.output
    victim = folder / f"behavior_ophys_experiment_{chosen[0]}.nwb"
    good = victim.read_bytes()
    victim.write_bytes(good[:-10] + b"0123456789")
    result = runner.invoke(app, ["verify", str(cache_dir), "--offline"])
    assert result.exit_code == 1 and "CORRUPT" in result.output
    result = runner.invoke(app, ["verify", str(cache_dir), *common])
    assert result.exit_code == 0 and "1 repaired" in result.output, result.output
    assert victim.read_bytes() == good
    result = runner.invoke(app, ["download", str(cache_dir), "--experiments", "12345", *common])
    assert result.exit_code == 2 and "12345" in result.output


def test_cache_survives_network_faults(bucket, tmp_path):
    from s3_server import FaultProxy

    server, _ = bucket
    with FaultProxy(server.endpoint) as proxy:
        cache = quiet(Cache.from_s3_cache, tmp_path / "cache", bucket_name_override=BUCKET, endpoint_url=proxy.endpoint)
        oeid = int(cache.get_ophys_experiment_table().index[1])
        proxy.inject("reset", count=1, match="behavior_ophys_experiment", after_bytes=50_000)
        proxy.inject("status", count=2, match="behavior_ophys_experiment", status=503)
        proxy.inject("truncate", count=1, match="behavior_ophys_experiment")
        with cache.get_behavior_ophys_experiment(oeid) as experiment:
            assert len(experiment.dff_traces) > 0
        path = cache._store.cache_dir / "visual-behavior-ophys-1.1.0" / mf.experiment_nwb_key(oeid).split("/", 1)[1]
        record = json.loads((cache._store.cache_dir / "_downloaded_data.json").read_text())
        assert mf.file_hash(path) == record[str(path)]
        assert any(r.fault for r in proxy.requests("GET", "behavior_ophys_experiment"))


def test_from_nwb_path_streams_an_s3_url(bucket, monkeypatch, tiny_release):
    server, published = bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
    manifest = published[mf.manifest_name("1.1.0")]
    entry = next(e for e in manifest["data_files"].values() if "behavior_sessions/" in e["url"])
    key = entry["url"].split(".amazonaws.com/", 1)[1]
    url = f"s3://{BUCKET}/{key}?versionId={entry['version_id']}"
    with vbo.BehaviorSession.from_nwb_path(url) as streamed, \
            vbo.BehaviorSession.from_nwb_path(tiny_release.root / key) as local:
        pd.testing.assert_frame_equal(streamed.stimulus_presentations, local.stimulus_presentations)
        assert streamed.metadata == local.metadata
        n_trials = len(local.trials)
    with vbo.open_nwb(url) as session:
        assert isinstance(session, vbo.BehaviorSession) and len(session.trials) == n_trials


def test_s3_cache_refuses_foreign_hosts(bucket, tmp_path):
    from vbo.errors import ForeignHostError

    server, _ = bucket
    cache = quiet(Cache.from_s3_cache, tmp_path / "cache", bucket_name_override=BUCKET, endpoint_url=server.endpoint)
    name = mf.manifest_name("1.1.0")
    path = cache._store.cache_dir / name
    good = path.read_text()
    manifest = json.loads(good)
    first = next(iter(manifest["data_files"]))
    manifest["data_files"][first]["url"] = "https://evil.example.com/visual-behavior-ophys/x.nwb"
    path.write_text(json.dumps(manifest))
    cache.load_manifest(name)  # a local copy that differs from the server's is fetched again
    assert path.read_text() == good
    key = f"visual-behavior-ophys/manifests/{name}"
    version = server.put(BUCKET, key, json.dumps(manifest).encode())  # now the server itself names a foreign host
    try:
        with pytest.raises(ForeignHostError, match=f"{name}.*data_files"):
            cache.load_manifest(name)
    finally:
        server.admin.delete_object(Bucket=BUCKET, Key=key, VersionId=version)
    assert cache.current_manifest() == name


def test_malformed_manifest_is_a_clear_error(tiny_release, tmp_path):
    from vbo.errors import ManifestError

    copy = tmp_path / "bucket"
    shutil.copytree(tiny_release.root / "visual-behavior-ophys", copy / "visual-behavior-ophys")
    path = copy / mf.manifest_key("1.1.0")
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        quiet(Cache.from_local_cache, copy, use_static_cache=True)
    manifest = json.loads((tiny_release.root / mf.manifest_key("1.1.0")).read_text())
    del manifest["metadata_files"]["ophys_cells_table"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="exactly the metadata files"):
        quiet(Cache.from_local_cache, copy, use_static_cache=True)


def test_natural_movie(static, s3_cache, tiny_release, tmp_path):
    from vbo.simulate.plan import SCALES

    movie = static.get_raw_natural_movie()
    assert movie.dtype == np.uint8 and movie.ndim == 3 and len(movie) == SCALES["tiny"].movie_frames
    downloaded = s3_cache.get_raw_natural_movie()
    np.testing.assert_array_equal(downloaded, movie)
    assert (s3_cache._store.cache_dir / "resources" / "Movie_TOE1.npy").is_file()
    offline = quiet(Cache.from_local_cache, s3_cache._store.cache_dir)
    np.testing.assert_array_equal(offline.get_raw_natural_movie(), movie)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / mf.manifest_name("1.1.0")).write_text((tiny_release.root / mf.manifest_key("1.1.0")).read_text())
    shutil.copytree(s3_cache._store.cache_dir / "visual-behavior-ophys-1.1.0", empty / "visual-behavior-ophys-1.1.0")
    with pytest.raises(FileNotFoundError, match="without a connection"):
        quiet(Cache.from_local_cache, empty).get_raw_natural_movie()


def test_natural_movie_template(static, s3_cache, tiny_release):
    from vbo import screen

    movie = static.get_raw_natural_movie()
    before = sorted(p.name for p in (tiny_release.root / mf.NATURAL_MOVIE_KEY).parent.iterdir())
    part = static.get_natural_movie_template(frames=[0, len(movie) - 1])
    assert list(part.index) == [0, len(movie) - 1] and part.index.name == "movie_frame_index"
    placed = screen.movie_frames_to_screen(movie[-1])
    np.testing.assert_array_equal(part.loc[len(movie) - 1, "warped"], screen.warp(placed))
    np.testing.assert_array_equal(part.loc[0, "unwarped"], screen.unwarped(screen.movie_frames_to_screen(movie[0])))
    # a static cache is a read-only mirror: nothing is written into it
    assert sorted(p.name for p in (tiny_release.root / mf.NATURAL_MOVIE_KEY).parent.iterdir()) == before

    s3_cache.get_raw_natural_movie()
    resources = s3_cache._store.cache_dir / "resources"
    np.save(resources / "Movie_TOE1.npy", movie[:3])  # a short movie keeps the full template small
    from vbo.cache.download import DownloadRecord  # ... recorded as trusted, or it would be fetched again

    DownloadRecord(resources / "_downloaded_data.json").add(resources / "Movie_TOE1.npy",
                                                            mf.file_hash(resources / "Movie_TOE1.npy"))
    full = s3_cache.get_natural_movie_template(n_workers=2)
    assert list(full.index) == [0, 1, 2]
    cached = list(resources.glob("Movie_TOE1.warped.*.npy"))
    assert len(cached) == 1
    offline = quiet(Cache.from_local_cache, s3_cache._store.cache_dir)
    again = offline.get_natural_movie_template(frames=[1])
    assert isinstance(again.loc[1, "warped"], np.memmap)  # served from the stored warp
    np.testing.assert_array_equal(again.loc[1, "warped"], full.loc[1, "warped"])
    np.testing.assert_array_equal(again.loc[1, "unwarped"], full.loc[1, "unwarped"])
    with pytest.raises(ValueError, match="n_workers"):
        offline.get_natural_movie_template(n_workers=0)


def test_population_tables_stream_from_s3(static, s3_cache):
    from vbo import population

    experiments = static.get_ophys_experiment_table()
    ids = list(experiments[~experiments["passive"]].index[:2])
    streamed = population.roi_table(s3_cache, ids, stream=True, workers=2)  # worker processes read by range
    pd.testing.assert_frame_equal(streamed, population.roi_table(static, ids, workers=1))
    assert not list(s3_cache._store.cache_dir.rglob("*.nwb"))  # nothing was downloaded
    responses = population.population_responses(s3_cache, ids[:1], "changes", stream=True, workers=1,
                                                 window=(-0.5, 0.75))
    local = population.population_responses(static, ids[:1], "changes", workers=1, window=(-0.5, 0.75))
    pd.testing.assert_frame_equal(responses, local)


def test_compare_manifests_names_every_kind_of_change():
    """Changed, renamed (same hash, new path), deleted and created files; metadata before data; equal → equivalent."""
    def manifest(version, data):
        tables = {t: (mf.metadata_key(t), "v", "a" * 128) for t in mf.METADATA_TABLES}
        return mf.build_manifest(version, tables, data, [])

    old = manifest("1.0.0", {1: (mf.experiment_nwb_key(1), "v", "1" * 128), 2: (mf.experiment_nwb_key(2), "v", "2" * 128),
                             3: (mf.experiment_nwb_key(3), "v", "3" * 128)})
    new = manifest("1.1.0", {1: (mf.experiment_nwb_key(1), "v", "9" * 128), 2: (mf.experiment_nwb_key(20), "v", "2" * 128),
                             4: (mf.experiment_nwb_key(4), "v", "4" * 128)})
    new["metadata_files"]["ophys_cells_table"]["file_hash"] = "b" * 128
    changes = mf.compare_manifests(old, new)
    name = "behavior_ophys_experiments/behavior_ophys_experiment_{}.nwb".format
    assert changes["metadata_changes"] == [("project_metadata/ophys_cells_table.csv",
                                            "project_metadata/ophys_cells_table.csv changed")]
    assert changes["data_changes"] == [(name(1), f"{name(1)} changed"), (name(2), f"{name(2)} renamed {name(20)}"),
                                       (name(3), f"{name(3)} deleted"), (name(4), f"{name(4)} created")]
    text = mf.format_comparison("a", "b", changes)
    assert text.splitlines()[5:] == [msg for group in changes.values() for _, msg in group]
    assert mf.format_comparison("a", "b", mf.compare_manifests(old, old)) == \
        "The two manifests are equivalent"
