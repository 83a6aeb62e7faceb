"""The README's recipes run as written on the tiny release, and their answers equal vbo's own numbers."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("duckdb", reason="the recipes use duckdb (test extra)")
pytest.importorskip("polars", reason="the recipes use polars (test extra)")

README = Path(__file__).resolve().parents[1] / "README.md"


def recipe(name: str) -> str:
    """The first Python block after ``<!-- recipe: name -->`` in the README."""
    text = README.read_text()
    match = re.search(rf"<!-- recipe: {re.escape(name)} -->.*?```python\n(.*?)```", text, re.S)
    assert match, f"recipe {name} is not in the README"
    return match.group(1)


def test_sst_trials_in_one_duckdb_query(tiny_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"cache": tiny_cache}
    exec(compile(recipe("sst-trials"), "README:sst-trials", "exec"), namespace)
    sst = namespace["sst"]
    sessions = tiny_cache.get_behavior_session_table()
    expected_ids = sessions.index[sessions["cre_line"] == "Sst-IRES-Cre"]
    parts = []
    for session_id in expected_ids:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tiny_cache.get_behavior_session(session_id) as session:
                parts.append(session.trials[session.trials["go"]])
    trials = pd.concat(parts)
    assert len(sst) == len(trials) > 0
    assert set(sst["behavior_session_id"]) <= set(expected_ids)
    expected = trials.groupby("change_image_name")["hit"].mean()
    assert namespace["hit_rate_by_image"].to_dict() == pytest.approx(expected.to_dict())


def test_change_responses_of_all_cells_on_dask(tiny_cache, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.chdir(tmp_path)
    namespace = {"cache": tiny_cache}
    exec(compile(recipe("dask-change-responses"), "README:dask-change-responses", "exec"), namespace)
    changes = namespace["changes"].to_pandas()
    rows = pd.read_parquet(tmp_path / "vbo-export" / "cell_responses")  # pyarrow reads the partitions too
    experiments = tiny_cache.get_ophys_experiment_table()
    assert rows["cell_roi_id"].nunique() == len(tiny_cache.get_ophys_cells_table())
    assert set(rows["ophys_experiment_id"]) == set(experiments.index)
    assert set(changes["cre_line"]) == set(experiments["cre_line"])
    group = changes.dropna(subset=["trial_type"]).iloc[0]
    mine = rows[(rows["event_type"] == "changes") & (rows["cre_line"].astype(str) == group["cre_line"])
                & (rows["targeted_structure"] == group["targeted_structure"])
                & (rows["trial_type"].astype(object) == group["trial_type"])]
    assert group["mean_response"] == pytest.approx(mine["mean_response"].mean())
    assert group["cells"] == mine["cell_roi_id"].nunique()
    assert changes["fraction_significant"].between(0, 1).all()
