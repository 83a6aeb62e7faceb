"""The simulator writes the release as it is: versions, manifests, session structure, cells, cohort, quirks."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

import vbo
from vbo.cache import manifest as mf
from vbo.errors import BehaviorCloudCacheVersionException
from vbo.simulate import simulate
from vbo.simulate.mice import plan_release
from vbo.simulate.neurons import cells_in_plane, make_container, simulate_ophys
from vbo.simulate.plan import REAL_DURATION_SCALES, SCALES, ExperimentPlan, example_mouse, example_session
from vbo.simulate.release import ALLENSDK_VERSIONS, FILE_PATH_VERSIONS, RELEASE_VERSIONS
from vbo.simulate.task import simulate_behavior

from quiet import quiet

PROJECT = mf.PROJECT_NAME
THREE_CSVS = ["behavior_session_table", "ophys_experiment_table", "ophys_session_table"]


@pytest.fixture(scope="module")
def every_version(tmp_path_factory):
    """A one-mouse tiny release with all six manifest versions."""
    return simulate(tmp_path_factory.mktemp("versions"), seed=11, mice=1, scale="tiny", versions=6, workers=1)


def _manifest(release, version):
    return json.loads(release.manifest_path(version).read_text())


def _hashes(manifest, group):
    return {k: v["file_hash"] for k, v in manifest[group].items()}


# --- manifests and versions ------------------------------------------------------------------------


def test_versions_are_the_release_sequence(every_version):
    assert every_version.versions == list(RELEASE_VERSIONS)
    assert RELEASE_VERSIONS == ("0.1.0", "0.2.0", "0.3.0", "1.0.0", "1.0.1", "1.1.0")
    names = sorted(p.name for p in (every_version.root / PROJECT / "manifests").glob("*.json"))
    assert names == sorted(mf.manifest_name(v) for v in RELEASE_VERSIONS)


def test_every_manifest_names_its_allensdk(every_version):
    for version in RELEASE_VERSIONS:
        pipeline = _manifest(every_version, version)["data_pipeline"]
        allensdk = [p for p in pipeline if p["name"] == "AllenSDK"]
        assert allensdk and pipeline[0] is allensdk[0], "AllenSDK reads the first AllenSDK entry"
        assert allensdk[0]["version"] == ALLENSDK_VERSIONS[version]
        assert set(allensdk[0]) == {"name", "version", "comment"}
    assert ALLENSDK_VERSIONS["0.1.0"] == "2.10.0"  # the published v0.1.0 manifest names it (docs/format.md §3)


def test_consecutive_versions_really_differ(every_version):
    manifests = [_manifest(every_version, v) for v in RELEASE_VERSIONS]
    for older, newer in zip(manifests, manifests[1:]):
        assert _hashes(older, "metadata_files") != _hashes(newer, "metadata_files"), newer["manifest_version"]
    first, second = manifests[0], manifests[1]
    changed = sorted(k for k, h in _hashes(first, "metadata_files").items()
                     if _hashes(second, "metadata_files")[k] != h)
    assert changed == THREE_CSVS  # docs/format.md §3.5; reference: v0.1.0 → v0.2.0 changes only these three
    assert _hashes(first, "data_files") == _hashes(second, "data_files")
    latest, previous = manifests[-1], manifests[-2]
    changed_data = [k for k, h in _hashes(latest, "data_files").items() if _hashes(previous, "data_files")[k] != h]
    assert 1 <= len(changed_data) <= 3  # a few experiment files gained the newest streams in v1.1.0


def test_older_csvs_are_written_as_released(every_version):
    for version in RELEASE_VERSIONS:
        folder = every_version.root if version == RELEASE_VERSIONS[-1] else \
            every_version.root / "previous_versions" / f"v{version}"
        experiments = pd.read_csv(folder / mf.metadata_key("ophys_experiment_table"))
        behavior = pd.read_csv(folder / mf.metadata_key("behavior_session_table"))
        assert ("file_path" in experiments) == (version in FILE_PATH_VERSIONS)
        assert ("published_at" in experiments) == (version == "1.1.0")
        assert ("hit_trial_count" in behavior) == (version == "1.1.0")
        imaging = behavior["ophys_session_id"].notna()
        if version == "1.1.0":
            assert (behavior.loc[imaging, "file_id"] == -999).all()
        else:
            assert behavior.loc[imaging, "file_id"].isna().all()


def test_vbo_opens_every_compatible_version_and_refuses_pre_1_0(every_version, tmp_path):
    pytest.importorskip("moto.server", reason="needs moto[server] (test extra)")
    from s3_server import publish_release

    server, _ = publish_release(every_version.root, "vbo-every-version")
    cache = quiet(vbo.VisualBehaviorOphysProjectCache.from_s3_cache, tmp_path / "cache",
                  bucket_name_override="vbo-every-version", endpoint_url=server.endpoint)
    for version in RELEASE_VERSIONS:
        name = mf.manifest_name(version)
        if version.startswith("0."):
            with pytest.raises(BehaviorCloudCacheVersionException, match=ALLENSDK_VERSIONS[version]):
                quiet(cache.load_manifest, name)
            continue
        quiet(cache.load_manifest, name)
        assert cache.current_manifest() == name
        experiments = cache.get_ophys_experiment_table()
        assert len(experiments) and "file_path" not in experiments
        assert len(cache.get_behavior_session_table()) == len(
            pd.read_csv(every_version.root / mf.metadata_key("behavior_session_table")))


# --- the writer's quirks, at the HDF5 level ---------------------------------------------------------


def _experiment_files(release, passive: bool):
    behavior = pd.read_csv(release.root / mf.metadata_key("ophys_experiment_table"))
    rows = behavior[behavior["passive"] == passive]
    return [release.root / mf.experiment_nwb_key(e) for e in rows["ophys_experiment_id"]]


def test_passive_sessions_store_no_licks_as_the_sdk_does(tiny_release):
    files = _experiment_files(tiny_release, passive=True)
    assert files
    for path in files:
        with h5py.File(path, "r") as f:
            trials = f["intervals/trials"]
            assert trials["lick_times"].dtype.kind == "O" and list(trials["lick_times"][()]) == [b""]
            index = trials["lick_times_index"][()]
            assert len(index) == len(trials["id"]) > 0 and (index == 0).all()
            assert "licking" not in f["processing"]


def test_active_sessions_store_licks_as_floats(tiny_release):
    path = _experiment_files(tiny_release, passive=False)[0]
    with h5py.File(path, "r") as f:
        trials = f["intervals/trials"]
        assert trials["lick_times"].dtype == np.float64 and trials["lick_times_index"][-1] > 0


def test_unmatched_rois_are_minus_one_in_the_file(tiny_release):
    cells = pd.read_csv(tiny_release.root / mf.metadata_key("ophys_cells_table"))
    n_minus_one = 0
    for path in sorted((tiny_release.root / PROJECT / "behavior_ophys_experiments").glob("*.nwb")):
        with h5py.File(path, "r") as f:
            specimen = f["processing/ophys/image_segmentation/cell_specimen_table/cell_specimen_id"][()]
        assert specimen.dtype.kind == "i"
        n_minus_one += int((specimen == -1).sum())
    assert n_minus_one > 0 and n_minus_one == int(cells["cell_specimen_id"].isna().sum())


# --- session structure ---------------------------------------------------------------------------------


def _block_spans(presentations: pd.DataFrame) -> dict[str, float]:
    """Duration (s) of each named stimulus block, first start to last stop."""
    spans = presentations.groupby("stimulus_block_name").agg(start=("start_time", "min"), stop=("end_time", "max"))
    return (spans["stop"] - spans["start"]).to_dict()


@pytest.mark.parametrize("scale", REAL_DURATION_SCALES)
@pytest.mark.parametrize("session_type, passive", [("OPHYS_1_images_A", False), ("OPHYS_2_images_A_passive", True),
                                                   ("OPHYS_6_images_B", False)])
def test_imaging_sessions_have_the_real_structure(scale, session_type, passive):
    image_set = session_type.split("_images_")[1][0]
    plan = example_session(session_type, passive=passive, image_set=image_set,
                           hit_probability=0.0 if passive else 0.8, false_alarm_probability=0.0 if passive else 0.2)
    content, _ = simulate_behavior(plan, SCALES[scale], np.random.default_rng(3))
    spans = _block_spans(content.presentations)
    task = "change_detection_passive" if passive else "change_detection_behavior"
    assert spans["initial_gray_screen_5min"] == pytest.approx(300, abs=10)  # from 0 s, the clock starts at 8-9 s
    assert spans[task] == pytest.approx(3600, abs=30)
    assert spans["post_behavior_gray_screen_5min"] == pytest.approx(300, abs=5)
    movie = content.presentations[content.presentations["stimulus_block_name"] == "natural_movie_one"]
    assert sorted(movie["movie_repeat"].unique()) == list(range(10)) and len(movie) == 9000
    assert spans["natural_movie_one"] == pytest.approx(300, abs=3)
    # the tutorials' windows (775-860 s) fall inside the task block, and trials run for the whole hour
    task_rows = content.presentations[content.presentations["stimulus_block_name"] == task]
    assert task_rows["start_time"].min() < 775 and task_rows["end_time"].max() > 3700
    assert content.trials["stop_time"].max() - content.trials["start_time"].min() > 3500


@pytest.mark.parametrize("scale", REAL_DURATION_SCALES)
def test_training_sessions_last_an_hour(scale):
    mouse = example_mouse()
    plan = example_session("TRAINING_4_images_A_training", mouse=mouse, stage="TRAINING_4", is_imaging=False,
                           has_omissions=False, experience_level="Training")
    content, _ = simulate_behavior(plan, SCALES[scale], np.random.default_rng(4))
    spans = _block_spans(content.presentations)
    assert spans["change_detection_behavior"] == pytest.approx(3600, abs=30)


# --- cells, planes and cohort --------------------------------------------------------------------------


@pytest.mark.parametrize("scale", list(SCALES))
def test_cells_per_plane_follow_the_cre_line(scale):
    sc = SCALES[scale]
    rng = np.random.default_rng(8)
    counts = {family: np.array([cells_in_plane(family, sc, rng) for _ in range(300)])
              for family in ("Slc17a7", "Sst", "Vip")}
    lo, hi = sc.interneuron_cells_per_plane
    for family in ("Sst", "Vip"):
        assert counts[family].min() >= lo and counts[family].max() <= hi
    assert np.median(counts["Slc17a7"]) >= 2.5 * max(np.median(counts["Sst"]), np.median(counts["Vip"]))
    if scale == "full":  # the release: Sst and Vip ~10-20 per plane, Slc17a7 ~100
        assert (lo, hi) == (10, 20)
        assert 80 <= np.median(counts["Slc17a7"]) <= 125 and counts["Slc17a7"].max() > 180


def test_containers_use_the_cre_line_counts():
    sc = SCALES["small"]
    for cre, bounds in (("Sst-IRES-Cre", sc.interneuron_cells_per_plane), ("Slc17a7-IRES2-Cre", sc.cells_per_plane)):
        mouse = example_mouse(cre)
        n = [len(make_container(1, mouse, _plane(), sc, np.random.default_rng(k)))
             for k in range(20)]
        assert bounds[0] <= min(n) and max(n) <= bounds[1]


def _plane():
    return ExperimentPlan(951980471, 1018028339, "VISp", 175, 175, None, 0)


@pytest.mark.parametrize("scale", list(SCALES))
def test_the_cohort_covers_every_cre_line_reporter_and_rig(scale):
    sessions = plan_release(np.random.default_rng(1), SCALES[scale].default_mice, SCALES[scale])
    imaged = [s for s in sessions if s.experiments]
    assert {s.mouse.cre_line for s in imaged} == {"Slc17a7-IRES2-Cre", "Sst-IRES-Cre", "Vip-IRES-Cre"}
    assert {s.mouse.reporter_line for s in imaged} == {"Ai93(TITL-GCaMP6f)", "Ai94(TITL-GCaMP6s)",
                                                       "Ai148(TIT2L-GC6f-ICL-tTA2)"}
    assert {s.equipment_name.split(".")[0] for s in imaged} == {"CAM2P", "MESO"}
    assert {s.mouse.indicator for s in imaged} == {"GCaMP6f", "GCaMP6s"}


def test_mesoscope_planes_have_their_own_population_activity():
    """Two planes of one Multiscope session, ~100 Slc17a7 cells each (as released): their plane-mean ΔF/F
    traces share the stimulus but not the population state (without it: ~0.83; released planes were 0.91)."""
    import dataclasses

    sc = dataclasses.replace(SCALES["small"], cells_per_plane=(100, 100))
    sessions = plan_release(np.random.default_rng(2), sc.default_mice, sc)
    session = next(s for s in sessions if s.equipment_name == "MESO.1" and len(s.experiments) >= 2
                   and not s.passive and s.mouse.cre_line.startswith("Slc17a7"))
    behavior, _ = simulate_behavior(session, sc, np.random.default_rng(5))
    means = []
    for k, experiment in enumerate(session.experiments[:2]):
        container = make_container(experiment.ophys_container_id, session.mouse, experiment, sc,
                                   np.random.default_rng([9, k]))
        ophys, _ = simulate_ophys(session, experiment, container, behavior, sc, np.random.default_rng([10, k]))
        means.append((ophys.ophys_timestamps, ophys.dff.mean(axis=1)))
    (t0, m0), (t1, m1) = means
    correlation = np.corrcoef(m0, np.interp(t0, t1, m1))[0, 1]
    assert correlation < 0.7
