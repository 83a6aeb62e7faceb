"""Project-level tables and population analyses on the tiny release, locally and on a real Dask LocalCluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vbo import population
from vbo import responses as R
from vbo.errors import UnknownIdError
from vbo.parallel import map_files

distributed = pytest.importorskip("distributed", reason="the Dask tests need distributed (test extra)")


@pytest.fixture(scope="module")
def client():
    """A real two-process Dask cluster on this machine, started by the test itself."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as dask_client:
        yield dask_client


def _size(path: str, scale: int) -> int:
    import os

    return os.path.getsize(path) * scale


def test_map_files_in_every_mode(tiny_release, client):
    paths = sorted(str(p) for p in tiny_release.root.rglob("*.nwb"))[:5]
    expected = [_size(p, 2) for p in paths]
    assert map_files(_size, paths, 2, workers=1) == expected
    assert map_files(_size, paths, 2, workers=2) == expected
    assert map_files(_size, paths, 2, client=client) == expected
    assert map_files(_size, [], 2, client=client) == []
    with pytest.raises(FileNotFoundError):
        map_files(_size, ["/no/such/file.nwb"], 1, client=client)


def test_cells_table_answers_population_queries_without_files(tiny_cache):
    cells = population.cells_table(tiny_cache)
    raw = tiny_cache.get_ophys_cells_table()
    experiments = tiny_cache.get_ophys_experiment_table()
    assert cells.index.equals(raw.index) and cells.index.name == "cell_roi_id"
    assert {"mouse_id", "cre_line", "targeted_structure", "imaging_depth", "session_type"} <= set(cells.columns)
    some = cells.iloc[len(cells) // 2]
    assert some["targeted_structure"] == experiments.loc[some["ophys_experiment_id"], "targeted_structure"]
    matched = cells["cell_specimen_id"].dropna()
    specimen = matched.value_counts().index[0]  # a cell seen in the most sessions
    seen = population.experiments_of_cell(tiny_cache, str(specimen))  # id as str works
    assert set(seen["ophys_experiment_id"]) == set(raw.loc[raw["cell_specimen_id"] == specimen,
                                                          "ophys_experiment_id"])
    assert len(seen) > 1 and seen["ophys_container_id"].nunique() == 1 and seen["mouse_id"].nunique() == 1
    assert seen["date_of_acquisition"].is_monotonic_increasing
    with pytest.raises(UnknownIdError, match="cell_specimen_id 1 "):
        population.experiments_of_cell(tiny_cache, 1)


def test_roi_table_matches_each_file_and_runs_on_dask(tiny_cache, client):
    experiments = tiny_cache.get_ophys_experiment_table()
    ids = list(experiments.index[:4])
    local = population.roi_table(tiny_cache, ids, workers=1)
    on_dask = population.roi_table(tiny_cache, [str(i) for i in ids], client=client)
    pd.testing.assert_frame_equal(on_dask, local)
    assert set(local["ophys_experiment_id"]) == set(ids)
    assert {"x", "y", "width", "height", "valid_roi", "cre_line", "imaging_depth"} <= set(local.columns)
    with tiny_cache.get_behavior_ophys_experiment(int(ids[1])) as experiment:
        table = experiment.cell_specimen_table.reset_index().set_index("cell_roi_id")
    rows = local.loc[table.index]
    np.testing.assert_array_equal(rows["x"].to_numpy(), table["x"].to_numpy())
    np.testing.assert_array_equal(rows["height"].to_numpy(), table["height"].to_numpy())
    assert (rows["imaging_depth"] == experiments.loc[ids[1], "imaging_depth"]).all()


def test_population_responses_on_dask_equal_one_by_one(tiny_cache, client):
    experiments = tiny_cache.get_ophys_experiment_table()
    ids = list(experiments[~experiments["passive"]].groupby("cre_line").head(1).index)
    table = population.population_responses(tiny_cache, ids, "changes", client=client, window=(-0.5, 0.75))
    assert list(pd.unique(table["ophys_experiment_id"])) == ids
    assert {"mean_response", "baseline_response", "n_events", "cre_line", "targeted_structure"} <= set(table.columns)
    with tiny_cache.get_behavior_ophys_experiment(int(ids[0])) as experiment:
        direct = R.experiment_summary(R.stimulus_responses(experiment, "changes", window=(-0.5, 0.75)))
    mine = table[table["ophys_experiment_id"] == ids[0]].reset_index(drop=True)
    np.testing.assert_allclose(mine["mean_response"].to_numpy(), direct["mean_response"].to_numpy())
    assert set(table.groupby("cre_line")["ophys_experiment_id"].nunique()) == {1}
    # the same over local processes
    again = population.population_responses(tiny_cache, ids[:2], "changes", workers=2, window=(-0.5, 0.75))
    pd.testing.assert_frame_equal(again, table[table["ophys_experiment_id"].isin(ids[:2])].reset_index(drop=True))


def test_training_histories_on_dask(tiny_cache, client, tmp_path):
    from vbo.history import project_history

    sessions = tiny_cache.get_behavior_session_table().index[:6]
    local = project_history(tiny_cache, sessions, workers=1, use_disk_cache=False)
    on_dask = project_history(tiny_cache, sessions, client=client, cache_path=tmp_path / "perf.parquet")
    pd.testing.assert_frame_equal(on_dask, local)
    assert (tmp_path / "perf.parquet").is_file()


def test_cli_cell_lists_where_a_cell_was_imaged(tiny_release, tiny_cache):
    from typer.testing import CliRunner

    from vbo.cli import app

    cells = tiny_cache.get_ophys_cells_table()
    specimen = int(cells["cell_specimen_id"].dropna().value_counts().index[0])
    expected = set(cells.loc[cells["cell_specimen_id"] == specimen, "ophys_experiment_id"])
    runner = CliRunner()
    result = runner.invoke(app, ["cell", str(tiny_release.root), str(specimen), "--static"])
    assert result.exit_code == 0, result.output
    assert f"cell_specimen_id {specimen}: {len(expected)} experiments" in result.output
    assert all(str(e) in result.output for e in expected) and "targeted_structure" in result.output
    result = runner.invoke(app, ["cell", str(tiny_release.root), "1", "--static"])
    assert result.exit_code == 2 and "cell_specimen_id '1' is not in" in result.output
