"""vbo.history: per-mouse and project training histories, computed in parallel and cached on disk."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from vbo import history


@pytest.fixture(scope="module")
def cache(tiny_cache):
    return tiny_cache


@pytest.fixture(scope="module")
def mouse(cache):
    return cache.get_ophys_experiment_table()["mouse_id"].iloc[0]


def test_history_of_one_mouse(cache, mouse, tmp_path):
    path = tmp_path / "perf.parquet"
    table = cache.get_behavior_session_table()
    h = history.training_history(cache, int(mouse), cache_path=path, workers=2)
    expected = table.index[table["mouse_id"] == mouse]
    assert sorted(h.index) == sorted(expected) and h.index.name == "behavior_session_id"
    assert h["date_of_acquisition"].is_monotonic_increasing
    assert h["session_type"].iloc[0].startswith("TRAINING_0")
    assert set(history.METRIC_KEYS) <= set(h.columns) and "session_type" in h and "equipment_name" in h
    assert h.columns.is_unique
    # the numbers are exactly those of the session objects
    for session_id in h.index[[0, len(h) // 2, -1]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with cache.get_behavior_session(session_id) as session:
                metrics = session.get_performance_metrics()
        for key, value in metrics.items():
            got = h.loc[session_id, key]
            assert (np.isnan(value) and np.isnan(got)) if isinstance(value, float) and np.isnan(value) \
                else got == value, (session_id, key, got, value)
    # the mouse as str gives the same, read back from the disk cache (no recomputation)
    assert path.is_file()
    import vbo.history as module

    def no_recomputation(func, paths, *args, **kwargs):
        if paths:
            raise AssertionError("recomputed")
        return []

    original = module.map_files
    module.map_files = no_recomputation
    try:
        again = history.training_history(cache, str(mouse), cache_path=path)
    finally:
        module.map_files = original
    pd.testing.assert_frame_equal(again, h)


def test_history_without_passive_sessions(cache, mouse, tmp_path):
    """``passive=False`` leaves the passive-viewing sessions out, with the same numbers for the others, and
    never opens their files."""
    from vbo.tables import is_passive

    table = cache.get_behavior_session_table()
    sessions = table[table["mouse_id"] == mouse]
    passive = sessions.index[is_passive(sessions)]
    assert len(passive) and (sessions.loc[passive, "session_type"].str.contains("passive")).all()
    everything = history.training_history(cache, mouse, cache_path=tmp_path / "all.parquet", workers=1)
    import vbo.history as module

    opened = []
    original = module.map_files

    def recording(func, paths, *args, **kwargs):
        opened.extend(str(p) for p in paths)
        return original(func, paths, *args, **kwargs)

    module.map_files = recording
    try:
        active = history.training_history(cache, mouse, passive=False, cache_path=tmp_path / "active.parquet",
                                          workers=1)
    finally:
        module.map_files = original
    assert list(active.index) == [i for i in everything.index if i not in set(passive)]
    pd.testing.assert_frame_equal(active, everything.loc[active.index])
    assert len(opened) == len(active) and not any(str(i) in path for i in passive for path in opened)


def test_is_passive_on_the_release_tables(shared_data):
    """One rule for the three session tables of the real release: the ``passive`` column where it exists,
    else ``behavior_type``."""
    from vbo.tables import is_passive, read_metadata_table

    folder = shared_data / "release-tables"
    experiments = read_metadata_table(folder / "ophys_experiment_table.csv", "ophys_experiment_table")
    behavior = read_metadata_table(folder / "behavior_session_table.csv", "behavior_session_table")
    flags = is_passive(experiments)
    assert flags.any() and not flags.all()
    assert (experiments.loc[flags, "session_type"].str.contains("passive")).all()
    by_type = is_passive(behavior)
    assert by_type.any() and (behavior.loc[by_type, "behavior_type"] == "passive_viewing").all()
    assert not behavior.loc[~by_type, "session_type"].str.contains("OPHYS_.*passive").any()
    no_columns = behavior[["session_type"]]
    assert (is_passive(no_columns) == by_type).all()


def test_cache_is_keyed_by_file_hash_and_version(cache, mouse, tmp_path):
    path = tmp_path / "perf.parquet"
    first = history.training_history(cache, mouse, cache_path=path, workers=1)
    stored = pd.read_parquet(path)
    assert len(stored) == len(first)
    assert set(stored.columns) >= {"behavior_session_id", "file_hash", "metrics_version"}
    # a stale row (other file hash) and an old metrics version are recomputed, not reused
    stale = stored.copy()
    stale.loc[0, "file_hash"] = "0" * 128
    stale.loc[0, "max_dprime"] = 99.0
    stale.loc[1, "metrics_version"] = history.METRICS_VERSION - 1
    stale.loc[1, "max_dprime"] = 99.0
    stale.to_parquet(path, index=False)
    second = history.training_history(cache, mouse, cache_path=path, workers=1)
    assert (second["max_dprime"] != 99.0).all()
    pd.testing.assert_frame_equal(second, first)
    # without the disk cache: nothing written
    other = tmp_path / "none.parquet"
    pd.testing.assert_frame_equal(history.training_history(cache, mouse, cache_path=other, use_disk_cache=False),
                                  first)
    assert not other.exists()


def test_default_cache_lives_next_to_the_data(cache, tiny_release):
    assert history.default_cache_path(cache) == tiny_release.root.resolve() / "vbo-derived" / \
        "behavior_performance.parquet"


def test_unwritable_cache_warns(cache, mouse, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="could not write"):
        h = history.training_history(cache, mouse, cache_path=blocker / "sub" / "perf.parquet", workers=1)
    assert len(h)


def test_project_history_and_unknown_mouse(cache, tmp_path):
    path = tmp_path / "perf.parquet"
    table = cache.get_behavior_session_table()
    everything = history.project_history(cache, cache_path=path)
    assert len(everything) == len(table) and set(everything.index) == set(table.index)
    assert everything.groupby("mouse_id")["date_of_acquisition"].apply(lambda s: s.is_monotonic_increasing).all()
    some = history.project_history(cache, table.index[:3], cache_path=path)
    assert len(some) == 3
    # trial counts agree with the release table (same definitions)
    for column in ("trial_count", "go_trial_count", "hit_trial_count", "catch_trial_count"):
        np.testing.assert_array_equal(everything.loc[table.index, column].to_numpy(), table[column].to_numpy())
    with pytest.raises(KeyError):
        history.training_history(cache, 999999, cache_path=path)
