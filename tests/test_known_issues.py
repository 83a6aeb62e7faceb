"""Documented data issues: the curated table, the checks of the release tables, the cache's warnings."""

from __future__ import annotations

import warnings

import pytest

from vbo import known_issues
from vbo.errors import KnownIssueWarning


def test_curated_issues_name_their_report():
    table = known_issues.curated()
    assert list(table.columns) == known_issues.COLUMNS
    assert {(r.id_column, r.id) for r in table.itertuples()} >= {("behavior_session_id", 875471358),
                                                                  ("ophys_session_id", 951410079)}
    assert table["source"].str.match(r"AllenSDK#\d+").all()
    with pytest.warns(KnownIssueWarning, match=r"behavior_session_id 875471358: .*AllenSDK#2220"):
        known_issues.warn_if_known(behavior_session_id="875471358", ophys_session_id=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        known_issues.warn_if_known(behavior_session_id=1, ophys_session_id=float("nan"))


def test_the_cache_warns_when_a_known_session_is_opened(tiny_cache, monkeypatch):
    experiments = tiny_cache.get_ophys_experiment_table()
    experiment_id = int(experiments.index[0])
    session_id = int(experiments["ophys_session_id"].iloc[0])
    behavior_id = int(experiments["behavior_session_id"].iloc[0])
    monkeypatch.setattr(known_issues, "CURATED", (("ophys_session_id", session_id, "AllenSDK#0", "a test issue"),))
    with pytest.warns(KnownIssueWarning, match=f"ophys_session_id {session_id}: a test issue"):
        tiny_cache.get_behavior_ophys_experiment(experiment_id).close()
    with pytest.warns(KnownIssueWarning, match=f"ophys_session_id {session_id}"):
        tiny_cache.get_behavior_session(behavior_id).close()
    other = experiments[experiments["ophys_session_id"] != session_id].index[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", KnownIssueWarning)
        tiny_cache.get_behavior_ophys_experiment(int(other)).close()


def test_release_issues_checks_the_tables(tiny_release, tmp_path):
    import shutil

    import pandas as pd

    import vbo
    from vbo.cache import manifest as mf

    clean = _static(tiny_release.root)
    found = known_issues.release_issues(clean)
    assert len(found) == len(known_issues.CURATED)  # the simulated release is consistent
    # a copy whose tables show the AllenSDK#2242 and #1903 inconsistencies
    copy = tmp_path / "release"
    shutil.copytree(tiny_release.root, copy, ignore=shutil.ignore_patterns("*.nwb"))  # the tables suffice
    tables = copy / mf.PROJECT_NAME / "project_metadata"
    experiments = pd.read_csv(tables / "ophys_experiment_table.csv")
    dropped = int(experiments["ophys_experiment_id"].iloc[0])
    experiments.iloc[1:].to_csv(tables / "ophys_experiment_table.csv", index=False)
    behavior = pd.read_csv(tables / "behavior_session_table.csv")
    behavior.loc[0, "session_type"] = None
    behavior.to_csv(tables / "behavior_session_table.csv", index=False)
    _refresh_hashes(copy)
    found = known_issues.release_issues(_static(copy))
    extra = found.iloc[len(known_issues.CURATED):]
    assert ("ophys_experiment_id", dropped, "AllenSDK#2242") in set(zip(extra.id_column, extra.id, extra.source))
    assert ("behavior_session_id", int(behavior.loc[0, "behavior_session_id"]), "AllenSDK#1903") in \
        set(zip(extra.id_column, extra.id, extra.source))
    assert isinstance(vbo.errors.KnownIssueWarning(), UserWarning)


def _static(root):
    from vbo.cache.project import VisualBehaviorOphysProjectCache

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VisualBehaviorOphysProjectCache.from_local_cache(root, use_static_cache=True)


def _refresh_hashes(root):
    """Rewrite the latest manifest's metadata hashes after editing the tables (a static cache verifies them)."""
    import json

    from vbo.cache import manifest as mf

    path = root / mf.manifest_key("1.1.0")
    manifest = json.loads(path.read_text())
    for name, entry in manifest["metadata_files"].items():
        entry["file_hash"] = mf.file_hash(root / mf.PROJECT_NAME / "project_metadata" / f"{name}.csv")
    path.write_text(json.dumps(manifest))
