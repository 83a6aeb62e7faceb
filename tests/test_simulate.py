"""The synthetic release: bucket layout, manifests, tables, planted truth, determinism, readability."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import vbo
from vbo.cache import manifest as mf
from vbo.simulate import simulate
from vbo.tables import read_metadata_table

PROJECT = "visual-behavior-ophys"


def load_manifest(release, version=None) -> dict:
    return json.loads(release.manifest_path(version).read_text())


def test_bucket_layout(tiny_release):
    root = tiny_release.root / PROJECT
    assert sorted(p.name for p in (root / "manifests").iterdir()) == [
        mf.manifest_name(v) for v in tiny_release.versions]
    for table in mf.METADATA_TABLES:
        assert (root / "project_metadata" / f"{table}.csv").is_file()
    behavior = list((root / "behavior_sessions").glob("behavior_session_*.nwb"))
    experiments = list((root / "behavior_ophys_experiments").glob("behavior_ophys_experiment_*.nwb"))
    assert len(behavior) == tiny_release.n_behavior_files > 0
    assert len(experiments) == tiny_release.n_experiment_files > 0
    assert not list(root.rglob("*.partial*")), "no temporary files left behind"
    assert (tiny_release.root / "ground_truth" / "sessions.parquet").is_file()
    assert not (root / "ground_truth").exists(), "planted truth stays outside the release tree"


def test_manifest_structure_and_hashes(tiny_release):
    manifest = load_manifest(tiny_release)
    assert list(manifest) == sorted(["project_name", "manifest_version", "metadata_file_id_column_name",
                                     "data_pipeline", "metadata_files", "data_files"])
    assert manifest["project_name"] == PROJECT and manifest["manifest_version"] == "1.1.0"
    assert manifest["metadata_file_id_column_name"] == "file_id"
    assert sorted(manifest["metadata_files"]) == sorted(mf.METADATA_TABLES)
    assert len(manifest["data_files"]) == tiny_release.n_behavior_files + tiny_release.n_experiment_files
    for entry in [*manifest["metadata_files"].values(), *manifest["data_files"].values()]:
        assert set(entry) == {"url", "version_id", "file_hash"}
        assert entry["url"].startswith(f"https://{mf.BUCKET_NAME}.s3.us-west-2.amazonaws.com/{PROJECT}/")
        key = entry["url"].split(".amazonaws.com/", 1)[1]
        path = tiny_release.root / key
        assert len(entry["file_hash"]) == 128 and mf.file_hash(path) == entry["file_hash"]


def test_tables_match_the_release_conventions(tiny_release, shared_data):
    folder = tiny_release.root / PROJECT / "project_metadata"
    manifest = load_manifest(tiny_release)
    tables = {name: read_metadata_table(folder / f"{name}.csv", name) for name in mf.METADATA_TABLES}
    behavior, sessions, experiments, cells = (tables[n] for n in mf.METADATA_TABLES)
    real = {n: read_metadata_table(shared_data / "release-tables" / f"{n}.csv", n) for n in mf.METADATA_TABLES[:3]}
    for name in mf.METADATA_TABLES[:3]:
        assert set(real[name].columns) <= set(tables[name].columns), name
        for column in real[name].columns:
            assert str(tables[name][column].dtype) == str(real[name][column].dtype), (name, column)
    # every file_id names a manifest entry of the right kind
    for bsid, file_id in behavior["file_id"].items():
        if file_id >= 0:
            assert manifest["data_files"][str(file_id)]["url"].endswith(f"behavior_session_{bsid}.nwb")
        else:
            assert file_id == -999 and isinstance(behavior.loc[bsid, "ophys_experiment_id"], list)
    for oeid, file_id in experiments["file_id"].items():
        assert manifest["data_files"][str(file_id)]["url"].endswith(f"behavior_ophys_experiment_{oeid}.nwb")
    assert set(cells["ophys_experiment_id"]) == set(experiments.index)
    assert set(experiments["project_code"]) == {"VisualBehavior", "VisualBehaviorTask1B", "VisualBehaviorMultiscope",
                                                "VisualBehaviorMultiscope4areasx2d"}
    assert set(experiments["cre_line"]) == {"Slc17a7-IRES2-Cre", "Sst-IRES-Cre", "Vip-IRES-Cre"}
    assert experiments["session_type"].str.startswith("OPHYS_").all()
    assert behavior["session_type"].str.startswith("TRAINING_0").any()


def test_every_file_opens_with_vbo_and_agrees_with_the_tables(tiny_release):
    folder = tiny_release.root / PROJECT
    behavior = read_metadata_table(folder / "project_metadata" / "behavior_session_table.csv", "behavior_session_table")
    experiments = read_metadata_table(folder / "project_metadata" / "ophys_experiment_table.csv",
                                      "ophys_experiment_table")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(folder.glob("behavior_sessions/*.nwb")):
            with vbo.BehaviorSession.from_nwb_path(path) as session:
                row = behavior.loc[session.behavior_session_id]
                assert session.metadata["session_type"] == row["session_type"]
                assert session.metadata["mouse_id"] == row["mouse_id"]
                assert len(session.trials) == row["trial_count"]
                assert len(session.stimulus_presentations) > 0
        for path in sorted(folder.glob("behavior_ophys_experiments/*.nwb")):
            with vbo.BehaviorOphysExperiment.from_nwb_path(path) as experiment:
                row = experiments.loc[experiment.ophys_experiment_id]
                meta = experiment.metadata
                assert meta["ophys_container_id"] == row["ophys_container_id"]
                assert meta["targeted_structure"] == row["targeted_structure"]
                assert meta["imaging_depth"] == row["imaging_depth"]
                assert len(experiment.dff_traces["dff"].iloc[0]) == len(experiment.ophys_timestamps)


def test_one_experiment_reads_completely(tiny_release):
    folder = tiny_release.root / PROJECT / "behavior_ophys_experiments"
    path = sorted(folder.glob("*.nwb"))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with vbo.BehaviorOphysExperiment.from_nwb_path(path) as experiment:
            for name in experiment.list_data_attributes_and_methods():
                if name == "update_targeted_imaging_depth":
                    continue
                value = getattr(experiment, name)
                if callable(value):
                    value(experiment.cell_specimen_table.index) if name == "get_cell_specimen_indices" else value()
            assert set(experiment.stimulus_presentations["stimulus_block_name"]) >= {
                "initial_gray_screen_5min", "natural_movie_one"}


def test_older_version_differs_in_a_few_files(tiny_release):
    old, new = (load_manifest(tiny_release, v) for v in tiny_release.versions)
    assert old["manifest_version"] == tiny_release.versions[0]
    changed_data = [k for k in new["data_files"] if old["data_files"][k]["file_hash"] != new["data_files"][k]["file_hash"]]
    assert 1 <= len(changed_data) <= 3
    changed_tables = [k for k in new["metadata_files"]
                      if old["metadata_files"][k]["file_hash"] != new["metadata_files"][k]["file_hash"]]
    # v1.0.x tables: no trial counts / publication columns, NaN file_id for imaging sessions (format.md §11)
    assert changed_tables == ["behavior_session_table", "ophys_experiment_table"]
    # the older object versions exist outside the bucket tree, with the hashes the old manifest names
    for key in changed_data:
        url = old["data_files"][key]["url"]
        older = tiny_release.root / "previous_versions" / url.split(".amazonaws.com/", 1)[1]
        assert mf.file_hash(older) == old["data_files"][key]["file_hash"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with vbo.BehaviorOphysExperiment.from_nwb_path(older) as experiment:
                assert experiment.neuropil_traces is None and experiment.demixed_traces is None


def test_ground_truth(tiny_release):
    truth = pd.read_parquet(tiny_release.root / "ground_truth" / "sessions.parquet")
    behavior = read_metadata_table(tiny_release.root / PROJECT / "project_metadata" / "behavior_session_table.csv",
                                   "behavior_session_table")
    assert set(truth["behavior_session_id"]) == set(behavior.index)
    passive = truth[truth["passive"]]
    assert (passive[["hit_probability", "false_alarm_probability"]] == 0).all().all()
    planted = json.loads((tiny_release.root / "ground_truth" / "truth.json").read_text())
    assert set(planted) == {str(b) for b in behavior.index}


def test_same_seed_same_bytes(tmp_path):
    first = simulate(tmp_path / "a", seed=3, mice=1, scale="tiny", workers=1)
    second = simulate(tmp_path / "b", seed=3, mice=1, scale="tiny", workers=2)
    files = sorted(p.relative_to(first.root) for p in first.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second.root) for p in second.root.rglob("*") if p.is_file())
    for rel in files:
        assert (first.root / rel).read_bytes() == (second.root / rel).read_bytes(), rel
    other = simulate(tmp_path / "c", seed=4, mice=1, scale="tiny", workers=1)
    assert load_manifest(other) != load_manifest(first)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="scale"):
        simulate(tmp_path, scale="huge")
    with pytest.raises(ValueError, match="versions"):
        simulate(tmp_path, versions=9)


def _normalised_tree(path) -> dict[str, tuple]:
    """The HDF5 tree with content-dependent names (rig, image set) replaced by placeholders."""
    import re

    from test_write import _tree

    def name(p: str) -> str:
        p = re.sub(r"^/general/devices/[^/]+", "/general/devices/<rig>", p)
        p = re.sub(r"^/stimulus/(templates|presentation)/[^/]+", r"/stimulus/\1/<image set>", p)
        if not re.match(r"^/intervals/(spontaneous|natural_movie_one)_presentations", p):
            p = re.sub(r"^/intervals/[^/]+_presentations", "/intervals/<images>_presentations", p)
        return p

    return {name(p): (kind, name(detail) if kind == "L" else detail, attrs.get("neurodata_type", (None, None))[1])
            for p, (kind, detail, shape, attrs) in _tree(path).items()}


@pytest.mark.parametrize("kind", ["experiment", "session"])
def test_simulated_files_have_the_released_layout_and_validate(tiny_release, shared_data, kind):
    """Everything the AllenSDK-written shared files contain (paths, kinds, dtypes, links, neurodata
    types) is in a simulated file of the same kind; pynwb validation finds no error."""
    import pynwb

    from vbo.tables import read_metadata_table

    folder = tiny_release.root / PROJECT
    if kind == "experiment":
        reference = shared_data / "sdk-files" / "behavior_ophys_experiment_1091765022.nwb"
        table = read_metadata_table(folder / "project_metadata" / "ophys_experiment_table.csv", "ophys_experiment_table")
        chosen = table[(table["session_type"] == "OPHYS_1_images_A") & table["imaging_plane_group"].isna()].index[0]
        path = tiny_release.root / mf.experiment_nwb_key(chosen)
    else:
        reference = shared_data / "sdk-files" / "behavior_session_1089912433.nwb"
        table = read_metadata_table(folder / "project_metadata" / "behavior_session_table.csv", "behavior_session_table")
        chosen = table[table["session_type"].str.startswith("TRAINING_5_images") & (table["file_id"] >= 0)].index[0]
        path = tiny_release.root / mf.behavior_nwb_key(chosen)
    expected, actual = _normalised_tree(reference), _normalised_tree(path)
    missing = sorted(set(expected) - set(actual))
    assert missing == [], f"{path.name} lacks {missing}"
    for p, (kind_, detail, neurodata_type) in expected.items():
        got = actual[p]
        assert got[0] == kind_ and got[2] == neurodata_type, (p, got, expected[p])
        ragged_index = neurodata_type == "VectorIndex"
        if kind_ == "L" or (kind_ == "D" and detail != "object" and not ragged_index):
            assert got[1] == detail, (p, got[1], detail)
        elif ragged_index:  # the index width follows the data size
            assert np.dtype(got[1]).kind == np.dtype(detail).kind == "u", (p, got[1], detail)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        errors = pynwb.validate(path=str(path))
    errors = errors[0] if isinstance(errors, tuple) else errors
    assert list(errors) == []


def test_write_only_the_demo_files(tmp_path):
    """A release with only the files the demo opens: complete tables, manifest of the written files,
    and the demo runs on it (it opens nothing else)."""
    from vbo.demo import demo_files, run_demo

    release = simulate(tmp_path / "partial", seed=5, scale="tiny", write_only=demo_files)
    project = release.root / PROJECT
    behavior = read_metadata_table(project / "project_metadata" / "behavior_session_table.csv",
                                   "behavior_session_table")
    experiments = read_metadata_table(project / "project_metadata" / "ophys_experiment_table.csv",
                                      "ophys_experiment_table")
    written = {str(p.relative_to(release.root)) for p in release.root.rglob("*.nwb")}
    wanted = demo_files({"behavior_session_table": behavior.reset_index(),
                         "ophys_experiment_table": experiments.reset_index()})
    assert written == wanted
    assert 0 < len(written) < release.n_behavior_files + release.n_experiment_files
    manifest = load_manifest(release)
    assert {entry["url"].split(".amazonaws.com/", 1)[1] for entry in manifest["data_files"].values()} == written
    # the tables still describe every session, with trial counts from the simulation
    active = behavior[behavior["behavior_type"].astype(str).str.contains("active")]
    assert (active["trial_count"] > 0).all()
    marker = json.loads((release.root / "ground_truth" / "release.json").read_text())
    assert marker["files"] == "demo_files"
    result = run_demo(tmp_path / "demo", release_dir=release.root)
    assert len(result.figures) == 14 and all(p.is_file() for p in result.figures)
    # the demo looks at active sessions: the passive ones of its mouse and container are the tutorials' extra
    from vbo.demo import tutorial_files
    from vbo.tables import is_passive

    tables = {"behavior_session_table": behavior.reset_index(), "ophys_experiment_table": experiments.reset_index()}
    extra = tutorial_files(tables) - wanted
    passive_keys = {mf.experiment_nwb_key(int(i)) for i in experiments.index[is_passive(experiments)]} | \
        {mf.behavior_nwb_key(int(i)) for i in behavior.index[is_passive(behavior)]}
    assert extra and extra <= passive_keys and not (wanted & passive_keys)
    summary = result.summary.read_text()
    assert "Passive-viewing sessions (no task, left out, not opened)" in summary
    assert "left out of the history" in result.reports["mouse"].read_text()


def test_pynwb_writer_for_a_release(tmp_path):
    """The reference writer still writes a whole release (the benchmark compares the two)."""
    release = simulate(tmp_path / "ref", seed=3, mice=1, scale="tiny", workers=1, writer="pynwb")
    assert len(list(release.root.rglob("*.nwb"))) == release.n_behavior_files + release.n_experiment_files
    with pytest.raises(ValueError, match="writer"):
        simulate(tmp_path / "x", writer="zarr")


def test_demo_targets_on_the_real_release_tables(shared_data):
    """The demo's choices from the real tables: every Cre line in the cell-type figure, the experiments the
    other workflows open anyway (at most two a line) or else exactly one more file per line."""
    from vbo.demo import EXPERIMENTS_PER_CRE_LINE, demo_files, demo_targets

    tables = {name: read_metadata_table(shared_data / "release-tables" / f"{name}.csv", name).reset_index()
              for name in ("behavior_session_table", "ophys_experiment_table")}
    experiments = tables["ophys_experiment_table"].set_index("ophys_experiment_id")
    targets = demo_targets(tables["behavior_session_table"], experiments.reset_index())
    chosen = experiments.loc[list(targets.by_cre_line)]
    assert set(chosen["cre_line"]) == set(experiments["cre_line"])
    assert not chosen["passive"].astype(bool).any()
    opened = set(experiments.index[(experiments["ophys_container_id"] == targets.ophys_container_id)
                                   | experiments["ophys_session_id"].isin([targets.ophys_session_id,
                                                                           targets.novel_vip_multiscope_session])])
    opened |= {targets.first_novel_sst}
    for cre_line, rows in chosen.groupby("cre_line"):
        already = [i for i in rows.index if i in opened]
        assert len(rows) <= EXPERIMENTS_PER_CRE_LINE, cre_line
        assert len(already) == len(rows) or (not already and len(rows) == 1), cre_line
    keys = demo_files(tables)
    assert {mf.experiment_nwb_key(i) for i in targets.by_cre_line} <= keys
