"""vbo export / vbo tables on the tiny release: DuckDB and polars answers equal vbo's per-session numbers;
exports are incremental and resume after a real interruption (a killed process)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

duckdb = pytest.importorskip("duckdb", reason="the export tests query with duckdb (test extra)")
pl = pytest.importorskip("polars", reason="the export tests query with polars (test extra)")

from vbo import export as vexport  # noqa: E402

N_SHUFFLES = 200  # fewer gray-screen shuffles than the default keeps the tests fast; p-values still compared


def _selection(cache):
    """Every session of the Sst mouse and three sessions of a Vip mouse; the Sst experiments and one Vip one."""
    sessions = cache.get_behavior_session_table()
    experiments = cache.get_ophys_experiment_table()
    sst = sessions.index[sessions["cre_line"] == "Sst-IRES-Cre"].tolist()
    vip_mouse = sessions.loc[sessions["cre_line"] == "Vip-IRES-Cre", "mouse_id"].iloc[0]
    vip = sessions.index[sessions["mouse_id"] == vip_mouse].tolist()[-3:]
    planes = experiments.index[experiments["cre_line"] == "Sst-IRES-Cre"].tolist()
    vip_planes = experiments.index[(experiments["mouse_id"] == vip_mouse) & ~experiments["passive"]].tolist()[:1]
    return sst + vip, planes + vip_planes


@pytest.fixture(scope="module")
def exported(tiny_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    sessions, planes = _selection(tiny_cache)
    result = vexport.export(tiny_cache, out, behavior_session_ids=sessions, ophys_experiment_ids=planes,
                            workers=2, n_shuffles=N_SHUFFLES)
    return out, sessions, planes, result


def _scan(out: Path, dataset: str) -> str:
    return f"read_parquet('{out}/{dataset}/**/*.parquet', hive_partitioning = true)"


def _open_session(cache, session_id):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cache.get_behavior_session(session_id)


def test_export_writes_hive_partitioned_datasets(exported, tiny_cache):
    out, sessions, planes, result = exported
    assert len(result.computed) == len(sessions) + len(planes) and not result.reused
    for dataset in vexport.DATASETS:
        files = list((out / dataset).rglob("*.parquet"))
        assert files, dataset
        for path in files:
            keys = [part.split("=")[0] for part in path.relative_to(out / dataset).parts[:-1]]
            assert keys == list(vexport.PARTITIONS[dataset])
    state = vexport.export_state(out)
    assert state["manifest"] == tiny_cache.current_manifest()
    assert state["exports"][-1]["computed"] == len(result.computed)


def test_duckdb_trials_and_hit_rate_by_image_equal_vbo(exported, tiny_cache):
    out, sessions, _, _ = exported
    con = duckdb.connect()
    counts = con.sql(f"SELECT behavior_session_id, count(*) AS n, sum(hit::INT) AS hits FROM {_scan(out, 'trials')} "
                     "GROUP BY 1").df().set_index("behavior_session_id")
    assert sorted(counts.index) == sorted(sessions)
    by_image = con.sql(f"""
        SELECT behavior_session_id, change_image_name,
               sum(hit::INT) / sum(go::INT) AS hit_rate
        FROM {_scan(out, 'trials')} WHERE go GROUP BY 1, 2""").df()
    assert len(by_image) > 0
    for session_id in sessions:
        with _open_session(tiny_cache, session_id) as session:
            trials = session.trials
            metrics = session.get_performance_metrics()
        assert counts.loc[session_id, "n"] == len(trials) == metrics["trial_count"]
        assert counts.loc[session_id, "hits"] == metrics["hit_trial_count"]
        go = trials[trials["go"]]
        expected = go.groupby("change_image_name")["hit"].mean()
        got = by_image[by_image["behavior_session_id"] == session_id].set_index("change_image_name")["hit_rate"]
        assert got.to_dict() == pytest.approx(expected.astype(float).to_dict())


def test_polars_performance_and_cell_counts_equal_vbo(exported, tiny_cache):
    from vbo import population
    from vbo.history import performance_table

    out, sessions, _, _ = exported
    performance = pl.scan_parquet(f"{out}/performance/**/*.parquet", hive_partitioning=True).collect().to_pandas()
    expected = performance_table(tiny_cache, sessions, workers=1, use_disk_cache=False)
    got = performance.set_index("behavior_session_id").loc[expected.index]
    for column in ("trial_count", "hit_trial_count", "max_dprime", "mean_hit_rate", "engaged_trial_count"):
        np.testing.assert_allclose(got[column].to_numpy(float), expected[column].to_numpy(float), equal_nan=True)
    cre = tiny_cache.get_behavior_session_table().loc[expected.index, "cre_line"]
    assert (got["cre_line"].astype(str) == cre.astype(str)).all()

    cells = pl.scan_parquet(f"{out}/cells/**/*.parquet", hive_partitioning=True)
    by_cre = cells.group_by("cre_line").agg(pl.len().alias("n")).collect().to_pandas().set_index("cre_line")["n"]
    reference = population.cells_table(tiny_cache).groupby("cre_line").size()
    assert by_cre.sort_index().to_dict() == reference.sort_index().to_dict()


def test_cell_responses_equal_vbo_per_experiment(exported, tiny_cache):
    from vbo.responses import stimulus_responses

    out, _, planes, _ = exported
    experiment_id = planes[0]
    rows = duckdb.sql(f"SELECT * FROM {_scan(out, 'cell_responses')} WHERE ophys_experiment_id = {experiment_id} "
                      "AND event_type = 'changes' ORDER BY cell_roi_id, stimulus_presentations_id").df()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tiny_cache.get_behavior_ophys_experiment(experiment_id) as experiment:
            table = stimulus_responses(experiment, "changes", n_shuffles=N_SHUFFLES).table
            trials = experiment.trials
            cre_line = experiment.metadata["cre_line"]
    table = table.sort_values(["cell_roi_id", "stimulus_presentations_id"]).reset_index(drop=True)
    assert len(rows) == len(table) > 0
    np.testing.assert_allclose(rows["mean_response"], table["mean_response"])
    np.testing.assert_allclose(rows["p_value_gray_screen"], table["p_value_gray_screen"])
    assert (rows["image_name"] == table["image_name"]).all()
    hits = set(trials.index[trials["hit"]])
    assert ((rows["trial_type"] == "hit") == rows["trials_id"].isin(hits)).all()
    assert (rows["cre_line"] == cre_line).all()


def test_second_export_recomputes_only_the_new_session(exported, tiny_cache, tmp_path):
    _, sessions, planes, _ = exported
    first = vexport.export(tiny_cache, tmp_path, behavior_session_ids=sessions[:-1], workers=1,
                           ophys_experiment_ids=planes[:1], n_shuffles=N_SHUFFLES)
    assert len(first.computed) == len(sessions)
    again = vexport.export(tiny_cache, tmp_path, behavior_session_ids=sessions, workers=1,
                           ophys_experiment_ids=planes[:1], n_shuffles=N_SHUFFLES)
    assert again.computed == [f"session-{sessions[-1]}"]
    assert len(again.reused) == len(sessions)
    unchanged = vexport.export(tiny_cache, tmp_path, behavior_session_ids=sessions, workers=1,
                               ophys_experiment_ids=planes[:1], n_shuffles=N_SHUFFLES)
    assert unchanged.computed == []
    # a session left out of the selection stays; one the release no longer has is removed
    fewer = vexport.export(tiny_cache, tmp_path, behavior_session_ids=sessions[1:], workers=1,
                           ophys_experiment_ids=planes[:1], n_shuffles=N_SHUFFLES)
    assert fewer.removed == [] and fewer.computed == []
    units = tmp_path / vexport.STATE_FOLDER / "units"
    gone = tmp_path / "trials" / "cre_line=Sst-IRES-Cre" / "session_type=OPHYS_9" / "part-1.parquet"
    gone.parent.mkdir(parents=True)
    shutil.copy(tmp_path / first_file(tmp_path, sessions[0]), gone)
    stale = {"key": "x", "files": {"trials": str(gone.relative_to(tmp_path))}}
    (units / "session-1.json").write_text(json.dumps(stale))
    pruned = vexport.export(tiny_cache, tmp_path, behavior_session_ids=sessions[1:], workers=1,
                            ophys_experiment_ids=planes[:1], n_shuffles=N_SHUFFLES)
    assert pruned.removed == ["session-1"] and not gone.exists() and not (units / "session-1.json").exists()
    assert len(vexport.export_state(tmp_path)["exports"]) == 5


def first_file(out: Path, session_id) -> Path:
    """The trials file of one session in an export (relative path)."""
    return next((out / "trials").rglob(f"part-{session_id}.parquet")).relative_to(out)


def test_changed_file_is_recomputed(exported, tiny_cache, tmp_path):
    _, sessions, _, _ = exported
    vexport.export(tiny_cache, tmp_path, behavior_session_ids=sessions[:2], ophys_experiment_ids=[], workers=1)
    marker = tmp_path / vexport.STATE_FOLDER / "units" / f"session-{sessions[0]}.json"
    stored = json.loads(marker.read_text())
    stored["key"] = "made from another version of the file"
    marker.write_text(json.dumps(stored))
    again = vexport.export(tiny_cache, tmp_path, behavior_session_ids=sessions[:2], ophys_experiment_ids=[],
                           workers=1)
    assert again.computed == [f"session-{sessions[0]}"]


_INTERRUPTED = """
import sys, warnings
warnings.simplefilter("ignore")
from vbo.cache.project import VisualBehaviorOphysProjectCache
from vbo.export import export
cache = VisualBehaviorOphysProjectCache.from_local_cache(sys.argv[1], use_static_cache=True)
sessions = [int(i) for i in sys.argv[3].split(",")]
export(cache, sys.argv[2], behavior_session_ids=sessions, ophys_experiment_ids=[], workers=1, batch_size=1)
"""


def test_interrupted_export_resumes(exported, tiny_release, tiny_cache, tmp_path):
    _, sessions, _, _ = exported
    out = tmp_path / "export"
    env = {**os.environ, "PYTHONPATH": str(Path(vexport.__file__).parents[1])}
    process = subprocess.Popen([sys.executable, "-c", _INTERRUPTED, str(tiny_release.root), str(out),
                                ",".join(map(str, sessions))], env=env)
    units = out / vexport.STATE_FOLDER / "units"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if units.is_dir() and len(list(units.glob("*.json"))) >= 3:
                break
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    done = {p.stem for p in units.glob("*.json")}
    assert 3 <= len(done) < len(sessions), "the export should have been interrupted part-way"
    assert not (out / vexport.STATE_FOLDER / "state.json").exists()
    resumed = vexport.export(tiny_cache, out, behavior_session_ids=sessions, ophys_experiment_ids=[], workers=1)
    assert set(resumed.reused) == done
    assert set(resumed.computed) == {f"session-{i}" for i in sessions} - done
    n = duckdb.sql(f"SELECT count(*) FROM {_scan(out, 'trials')}").fetchall()[0][0]
    reference = duckdb.sql(f"SELECT count(*) FROM {_scan(exported[0], 'trials')}").fetchall()[0][0]
    assert n == reference
    assert not list(out.rglob("*.tmp"))


def test_export_on_a_dask_cluster_matches_processes(exported, tiny_cache, tmp_path):
    distributed = pytest.importorskip("distributed")
    out, sessions, planes, _ = exported
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        result = vexport.export(tiny_cache, tmp_path, behavior_session_ids=sessions[:2],
                                ophys_experiment_ids=planes[:1], client=client, n_shuffles=N_SHUFFLES)
    assert len(result.computed) == 3
    for dataset in ("trials", "cell_responses"):
        for path in (tmp_path / dataset).rglob("*.parquet"):
            mine = pd.read_parquet(path)
            theirs = pd.read_parquet(out / path.relative_to(tmp_path))
            pd.testing.assert_frame_equal(mine, theirs)


def test_tables_command_writes_the_four_tables(tiny_release, tiny_cache, tmp_path):
    from typer.testing import CliRunner

    from vbo.cli import app

    for fmt in ("csv", "parquet"):
        result = CliRunner().invoke(app, ["tables", str(tiny_release.root), "--static", "--format", fmt,
                                          "--out", str(tmp_path)])
        assert result.exit_code == 0, result.output
    experiments = tiny_cache.get_ophys_experiment_table()
    parquet = pd.read_parquet(tmp_path / "ophys_experiment_table.parquet").set_index("ophys_experiment_id")
    csv = pd.read_csv(tmp_path / "ophys_experiment_table.csv", index_col=0)
    assert list(parquet.index) == list(experiments.index) == list(csv.index)
    assert (parquet["cre_line"] == experiments["cre_line"]).all()
    for name in vexport.METADATA_TABLES:
        assert (tmp_path / f"{name}.parquet").is_file() and (tmp_path / f"{name}.csv").is_file()
    sessions = duckdb.sql(f"SELECT ophys_session_id, ophys_experiment_id FROM "
                          f"'{tmp_path}/ophys_session_table.parquet'").df()
    assert all(isinstance(v, (list, np.ndarray)) for v in sessions["ophys_experiment_id"])
    bad = CliRunner().invoke(app, ["tables", str(tiny_release.root), "--static", "--format", "xlsx"])
    assert bad.exit_code != 0


def test_export_command(tiny_release, tmp_path):
    from typer.testing import CliRunner

    from vbo.cli import app

    missing = CliRunner().invoke(app, ["export", str(tmp_path / "nowhere"), str(tmp_path / "out"), "--static"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    with pytest.raises(Exception, match="no vbo export"):
        vexport.export_state(tmp_path)


def test_export_streamed_from_s3_equals_the_static_export(exported, tiny_release, tmp_path):
    pytest.importorskip("moto.server", reason="the S3 case needs moto[server] (test extra)")
    sys.path.insert(0, str(Path(__file__).parent))
    from s3_server import publish_release

    from vbo.cache.project import VisualBehaviorOphysProjectCache as Cache

    out, sessions, planes, _ = exported
    server, _ = publish_release(tiny_release.root, "vbo-export-test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s3 = Cache.from_s3_cache(tmp_path / "cache", bucket_name_override="vbo-export-test",
                                 endpoint_url=server.endpoint)
    result = vexport.export(s3, tmp_path / "out", behavior_session_ids=sessions[-1:], ophys_experiment_ids=planes[:1],
                            workers=2, stream=True, n_shuffles=N_SHUFFLES)
    assert len(result.computed) == 2
    assert not list((tmp_path / "cache").rglob("*.nwb"))  # read by byte ranges, nothing downloaded
    for dataset in ("trials", "stimulus_presentations", "performance", "cell_responses"):
        for path in (tmp_path / "out" / dataset).rglob("*.parquet"):
            reference = out / path.relative_to(tmp_path / "out")
            pd.testing.assert_frame_equal(pd.read_parquet(path), pd.read_parquet(reference))
