"""The five official VBO tutorial workflows, step by step, on the demo release (only the imports are vbo's).

Each test follows one AllenSDK tutorial notebook (users.md §4): the same calls on the project cache and on the
session and experiment objects, in the same order, with the same filters, time windows and trial types, and the
same figures drawn (to files). Where a notebook picks a released id (mouse 445002, experiment 957759562, ...), the
test picks the demo release's equivalent with the notebook's own filter. Where a notebook line relies on
pandas < 2 (``fillna(method=...)``, ``float(series)``), the modern equivalent documented in
``docs/tutorials.md`` is used.

The release is the demo's with the passive sessions the notebooks also open (``vbo.demo.ensure_release(...,
files="tutorials")``), published to a real S3 protocol server under the real
bucket name, so the data-access notebook's ``from_s3_cache(cache_dir=...)`` call runs unchanged (the endpoint
comes from ``AWS_ENDPOINT_URL_S3``, as for any mirror). Set ``VBO_TUTORIAL_RELEASE`` to reuse a release folder.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from s3_server import moto_s3  # noqa: E402

from vbo import VisualBehaviorOphysProjectCache  # noqa: E402  (the notebooks' only import that changes)
from vbo.cache import manifest as mf  # noqa: E402
from vbo.cache.publish import publish  # noqa: E402
from vbo.errors import BehaviorCloudCacheVersionException  # noqa: E402

# the notebooks' plotting windows (s): load-one-experiment and mouse-history draw 775-860 s of a session
WINDOW = (775.0, 860.0)


@pytest.fixture(scope="module")
def demo_release(tmp_path_factory) -> Path:
    """The demo's synthetic release (the same seed, scale and code path as ``vbo demo``) plus the passive
    sessions of its mouse and container, which the mouse-history and manifest notebooks open."""
    if os.environ.get("VBO_TUTORIAL_RELEASE"):
        return Path(os.environ["VBO_TUTORIAL_RELEASE"])
    from vbo.demo import ensure_release

    release_dir, _ = ensure_release(tmp_path_factory.mktemp("demo-cache"), files="tutorials")
    return release_dir


@pytest.fixture(scope="module")
def targets(demo_release):
    """The demo release's stand-ins for the ids the notebooks hard-code (mouse 445002, experiment 1085840400, ...)."""
    from vbo.demo import demo_targets

    tables = demo_release / mf.PROJECT_NAME / mf.METADATA_PREFIX
    return demo_targets(pd.read_csv(tables / "behavior_session_table.csv"),
                        pd.read_csv(tables / "ophys_experiment_table.csv"))


@pytest.fixture(scope="module")
def s3_endpoint(demo_release) -> str:
    """The demo release published to a moto S3 server under the real bucket name."""
    server = moto_s3()
    server.create_bucket(mf.BUCKET_NAME)
    publish(demo_release, mf.BUCKET_NAME, client=server.admin)
    return server.endpoint


@pytest.fixture
def cache(s3_endpoint, tmp_path, monkeypatch):
    """``VisualBehaviorOphysProjectCache.from_s3_cache(cache_dir=...)`` exactly as the notebooks build it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VisualBehaviorOphysProjectCache.from_s3_cache(cache_dir=tmp_path / "visual_behavior_ophys_cache_dir")


def _save(fig, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    assert path.stat().st_size > 5_000, f"{name}: an empty figure"
    return path


# --- 1. visual_behavior_ophys_data_access ------------------------------------------------------------------------

def test_data_access(cache, targets, tmp_path):
    # versions: list the manifests, find the latest, load an old incompatible one, compare two, reload the latest
    names = cache.list_manifest_file_names()
    assert len(names) >= 3, "the tutorial walks through several dataset versions"
    latest = cache.latest_manifest_file()
    assert cache.current_manifest() == latest
    versions = sorted(names, key=lambda n: tuple(int(p) for p in n.rsplit("_v", 1)[1][:-5].split(".")))
    assert latest == versions[-1]
    pre_release = [n for n in names if n.rsplit("_v", 1)[1].startswith("0.")]
    assert pre_release, "the tutorial shows the version exception on a pre-1.0 manifest"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OutdatedManifestWarning, as in the notebook
        with pytest.raises(BehaviorCloudCacheVersionException, match="compatible only with manifest versions"):
            cache.load_manifest(pre_release[0])
    assert cache.current_manifest() == latest, "a refused version changes nothing"
    released = [n for n in versions if not n.rsplit("_v", 1)[1].startswith("0.")]
    changes = cache.compare_manifests(released[0], released[-1])
    assert changes.startswith("Changes going from") and " changed" in changes, "the versions really differ"
    cache.load_latest_manifest()
    assert cache.current_manifest() == latest

    # the three tables and their sizes
    behavior_sessions = cache.get_behavior_session_table()
    ophys_sessions = cache.get_ophys_session_table()
    ophys_experiments = cache.get_ophys_experiment_table()
    sizes = {"behavior sessions": len(np.unique(behavior_sessions.index.values)),
             "ophys sessions": len(np.unique(ophys_sessions.index.values)),
             "ophys experiments": len(np.unique(ophys_experiments.index.values))}
    assert sizes["behavior sessions"] > sizes["ophys sessions"] > 0
    assert sizes["ophys experiments"] >= sizes["ophys sessions"]

    # one behavior session (a gratings training session: its templates are gratings) and one experiment
    gratings = behavior_sessions[behavior_sessions.session_type.str.startswith("TRAINING_1_gratings")
                                 & (behavior_sessions.mouse_id == targets.mouse_id)]
    assert len(gratings), "training sessions on gratings exist"
    behavior_session = cache.get_behavior_session(behavior_session_id=gratings.index[0])
    members = behavior_session.list_data_attributes_and_methods()
    assert len(members) == 16
    templates = behavior_session.stimulus_templates
    assert templates.index.str.startswith("gratings").all()
    fig, axes = plt.subplots(1, len(templates), figsize=(3 * len(templates), 2))
    for ax, name in zip(np.atleast_1d(axes), templates.index):
        ax.imshow(templates.loc[name]["warped"], cmap="gray")
        ax.set_title(name)
    _save(fig, tmp_path, "gratings")

    ophys_experiment = cache.get_behavior_ophys_experiment(ophys_experiment_id=targets.experiment_id)
    assert len(ophys_experiment.list_data_attributes_and_methods()) == 35
    fig = plt.figure()
    plt.imshow(ophys_experiment.max_projection, cmap="gray")
    _save(fig, tmp_path, "max_projection")

    # direct access without the SDK: URL builders, an anonymous listing, every file pinned to its version
    import json

    from vbo.cache.urls import experiment_nwb_url, metadata_url
    from vbo.source import s3
    from vbo.source.remote import open_remote

    assert experiment_nwb_url(targets.experiment_id).endswith(
        f"behavior_ophys_experiment_{targets.experiment_id}.nwb")
    assert metadata_url("ophys_experiment_table").endswith("project_metadata/ophys_experiment_table.csv")
    client = s3.anonymous_client()  # the endpoint from AWS_ENDPOINT_URL_S3, as for any mirror
    keys = s3.list_keys(client, mf.BUCKET_NAME, prefix=f"{mf.PROJECT_NAME}/behavior_ophys_experiments/")
    assert f"{mf.PROJECT_NAME}/behavior_ophys_experiments/behavior_ophys_experiment_{targets.experiment_id}.nwb" in keys
    body = client.get_object(Bucket=mf.BUCKET_NAME, Key=f"{mf.PROJECT_NAME}/manifests/{latest}")["Body"].read()
    manifest = json.loads(body)
    urls = [entry["url"] + "?versionId=" + entry["version_id"]
            for group in ("metadata_files", "data_files") for entry in manifest[group].values()]
    assert all(url.startswith("https://") and "versionId=" in url for url in urls)
    file_ids = set(ophys_experiments.file_id.astype(int).astype(str)) | \
        set(behavior_sessions.file_id.dropna().astype(int).astype(str))
    assert set(manifest["data_files"]) <= file_ids, "every data file is a row of the tables"
    pinned = open_remote(manifest["data_files"][str(int(ophys_experiments.loc[targets.experiment_id,
                                                                                  "file_id"]))]["url"])
    assert pinned.read(8) == b"\x89HDF\r\n\x1a\n"
    pinned.close()


# --- 2. visual_behavior_ophys_dataset_manifest ---------------------------------------------------------------------

def test_dataset_manifest(cache, targets, tmp_path):
    behavior_session_table = cache.get_behavior_session_table()
    ophys_session_table = cache.get_ophys_session_table()
    ophys_experiment_table = cache.get_ophys_experiment_table()

    # the columns and the values the notebook lists
    assert {"mouse_id", "cre_line", "session_type", "experience_level", "equipment_name"} <= \
        set(ophys_experiment_table.columns)
    rigs = ophys_experiment_table.equipment_name.unique()
    assert any(r.startswith("MESO") for r in rigs) and any(r.startswith("CAM2P") for r in rigs)
    assert set(ophys_experiment_table.cre_line.unique()) == {"Slc17a7-IRES2-Cre", "Sst-IRES-Cre", "Vip-IRES-Cre"}
    assert len(ophys_experiment_table.reporter_line.unique()) >= 2
    assert len(ophys_experiment_table.indicator.unique()) >= 1
    session_types = np.sort(behavior_session_table.session_type.unique())
    assert any(s.startswith("TRAINING_0") for s in session_types) and any(s.startswith("OPHYS_6") for s in session_types)
    mice_per_genotype = behavior_session_table.groupby("full_genotype").mouse_id.nunique()
    assert mice_per_genotype.sum() == behavior_session_table.mouse_id.nunique()
    assert isinstance(behavior_session_table.mouse_id.iloc[0], str), "mouse_id is a string, as in the SDK"

    # project_code of every mouse, filled in for its training sessions
    project_of_mouse = ophys_session_table.groupby("mouse_id").project_code.first()
    behavior_session_table = behavior_session_table.assign(
        project_code=behavior_session_table.mouse_id.map(project_of_mouse))
    assert behavior_session_table.project_code.notna().all()

    # the order of one mouse's sessions, retakes, and mice that saw omissions before the first imaging session
    mouse_id = targets.mouse_id
    order = behavior_session_table[behavior_session_table.mouse_id == mouse_id].sort_values("date_of_acquisition")
    assert order.session_type.iloc[0].startswith("TRAINING_0") and order.session_type.iloc[-1].startswith("OPHYS")
    imaging = ophys_session_table.sort_values("date_of_acquisition")
    retakes = imaging[imaging.prior_exposures_to_session_type > 0]
    assert (retakes.session_type.str.startswith("OPHYS")).all()
    saw_omissions = ophys_session_table[ophys_session_table.session_type.str.startswith("OPHYS_1")
                                        & (ophys_session_table.prior_exposures_to_omissions > 0)].mouse_id.unique()
    assert set(saw_omissions) <= set(ophys_session_table.mouse_id)

    # depths and areas per project
    depths = ophys_experiment_table.groupby("project_code").imaging_depth.describe()
    areas = ophys_experiment_table.groupby("project_code").targeted_structure.unique()
    assert (depths["min"] > 0).all() and all(len(a) >= 1 for a in areas)

    # follow one container across its sessions: the max projections of its experiments
    container_id = targets.ophys_container_id
    container = ophys_experiment_table[ophys_experiment_table.ophys_container_id == container_id] \
        .sort_values("date_of_acquisition")
    assert container.session_type.nunique() == len(container) or container.prior_exposures_to_session_type.max() > 0
    fig, axes = plt.subplots(1, len(container), figsize=(2 * len(container), 2))
    for ax, oeid in zip(np.atleast_1d(axes), container.index):
        ax.imshow(cache.get_behavior_ophys_experiment(oeid).max_projection, cmap="gray")
        ax.set_title(container.loc[oeid, "session_type"][:7], fontsize=6)
        ax.axis("off")
    _save(fig, tmp_path, "container")

    # a Vip Multiscope session with a novel image set: mean dF/F of every plane
    novel = ophys_experiment_table[(ophys_experiment_table.project_code == "VisualBehaviorMultiscope")
                                   & (ophys_experiment_table.cre_line == "Vip-IRES-Cre")
                                   & (ophys_experiment_table.experience_level == "Novel 1")]
    assert len(novel), "a Vip Multiscope novel session exists"
    assert targets.novel_vip_multiscope_session in set(novel.ophys_session_id)
    session_experiments = ophys_experiment_table[ophys_experiment_table.ophys_session_id
                                                 == targets.novel_vip_multiscope_session]
    assert len(session_experiments) > 1, "a Multiscope session has several planes"
    fig, axes = plt.subplots(len(session_experiments), 1, figsize=(8, 1.2 * len(session_experiments)), sharex=True)
    plane_means = []
    for ax, oeid in zip(axes, session_experiments.sort_values(["targeted_structure", "imaging_depth"]).index):
        experiment = cache.get_behavior_ophys_experiment(oeid)
        mean_dff = np.vstack(experiment.dff_traces.dff.values).mean(axis=0)
        plane_means.append(mean_dff)
        ax.plot(experiment.ophys_timestamps, mean_dff, linewidth=0.5)
        ax.set_ylabel(f"{session_experiments.loc[oeid, 'targeted_structure']} "
                      f"{session_experiments.loc[oeid, 'imaging_depth']}", fontsize=6)
    _save(fig, tmp_path, "planes")
    n = min(len(m) for m in plane_means)
    correlation = np.corrcoef(np.vstack([m[:n] for m in plane_means]))
    assert np.nanmean(correlation[np.triu_indices(len(plane_means), 1)]) < 0.9, "planes have their own activity"

    # cells per experiment, from the cells table alone: histogram, against depth, by Cre line
    ophys_cells_table = cache.get_ophys_cells_table()
    cells_per_experiment = ophys_cells_table.groupby("ophys_experiment_id").size().rename("n_cells")
    counted = ophys_experiment_table.join(cells_per_experiment)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    axes[0].hist(counted.n_cells.dropna(), bins=20)
    axes[1].scatter(counted.imaging_depth, counted.n_cells)
    by_cre = [g.n_cells.dropna().values for _, g in counted.groupby("cre_line")]
    axes[2].boxplot(by_cre)
    _save(fig, tmp_path, "cells_per_experiment")
    median = counted.groupby("cre_line").n_cells.median()
    assert median["Slc17a7-IRES2-Cre"] > 2 * median["Sst-IRES-Cre"], "excitatory planes hold many more cells"
    assert median["Slc17a7-IRES2-Cre"] > 2 * median["Vip-IRES-Cre"]


# --- 3. visual_behavior_load_ophys_data ----------------------------------------------------------------------------

def _stimulus_spans(ax, presentations: pd.DataFrame, start: float, stop: float) -> int:
    """Colour each image presentation of the window by its image, as the notebook's helper does."""
    window = presentations[(presentations.start_time >= start) & (presentations.end_time <= stop)]
    images = sorted(presentations.image_name.dropna().unique())
    colors = dict(zip(images, plt.cm.tab10(np.linspace(0, 1, max(len(images), 1)))))
    for row in window.itertuples():
        if row.image_name in colors and row.image_name != "omitted":
            ax.axvspan(row.start_time, row.end_time, color=colors[row.image_name], alpha=0.3)
    return len(window)


def test_load_ophys_data(cache, targets, tmp_path):
    ophys_experiment_table = cache.get_ophys_experiment_table()
    selected = ophys_experiment_table[(ophys_experiment_table.cre_line == "Sst-IRES-Cre")
                                      & (ophys_experiment_table.session_number == 4)
                                      & (ophys_experiment_table.prior_exposures_to_image_set == 0)]
    assert len(selected), "an Sst first-novel-session experiment exists"
    assert selected.ophys_session_id.nunique() <= len(selected)
    assert targets.first_novel_sst in selected.index  # the notebook's 957759562 is one of these
    ophys_experiment = cache.get_behavior_ophys_experiment(targets.first_novel_sst)

    metadata = ophys_experiment.metadata
    assert metadata["cre_line"] == "Sst-IRES-Cre" and metadata["ophys_experiment_id"] == targets.first_novel_sst
    fig = plt.figure()
    plt.imshow(ophys_experiment.max_projection, cmap="gray")
    _save(fig, tmp_path, "max_projection")

    cell_specimen_table = ophys_experiment.cell_specimen_table
    cell_specimen_id = cell_specimen_table.index[0]
    roi_mask = cell_specimen_table.loc[cell_specimen_id].roi_mask
    assert roi_mask.dtype == bool and roi_mask.any()
    fig = plt.figure()
    plt.imshow(roi_mask)
    _save(fig, tmp_path, "roi_mask")

    dff_traces = ophys_experiment.dff_traces
    events = ophys_experiment.events
    ophys_timestamps = ophys_experiment.ophys_timestamps
    assert len(dff_traces) == len(cell_specimen_table) == len(events)
    assert len(dff_traces.loc[cell_specimen_id].dff) == len(ophys_timestamps)
    running_speed = ophys_experiment.running_speed
    eye_tracking = ophys_experiment.eye_tracking
    stimulus_presentations = ophys_experiment.stimulus_presentations
    trials = ophys_experiment.trials
    assert "pupil_area" in eye_tracking.columns
    assert len(trials) > 100 and trials.start_time.is_monotonic_increasing, "an hour of trials, in order"
    assert stimulus_presentations.omitted.sum() > 0, "active imaging sessions have omitted flashes"
    assert len(stimulus_presentations) > 4_000, "a 60-minute change-detection block holds ~4,800 flashes"

    # "one cell plus behavior" in the notebook's window
    start, stop = WINDOW
    assert ophys_timestamps[-1] > stop and running_speed.timestamps.max() > stop, "the window exists"
    fig, ax = plt.subplots(figsize=(10, 3))
    in_window = (ophys_timestamps >= start) & (ophys_timestamps <= stop)
    ax.plot(ophys_timestamps[in_window], dff_traces.loc[cell_specimen_id].dff[in_window])
    speed = running_speed[(running_speed.timestamps >= start) & (running_speed.timestamps <= stop)]
    ax.plot(speed.timestamps, speed.speed / speed.speed.abs().max())
    licks = ophys_experiment.licks
    rewards = ophys_experiment.rewards
    window_licks = licks[(licks.timestamps >= start) & (licks.timestamps <= stop)]
    ax.plot(window_licks.timestamps, np.zeros(len(window_licks)) - 0.5, "|")
    window_rewards = rewards[(rewards.timestamps >= start) & (rewards.timestamps <= stop)]
    ax.plot(window_rewards.timestamps, np.zeros(len(window_rewards)) - 0.6, "o")
    assert _stimulus_spans(ax, stimulus_presentations, start, stop) > 50, "flashes fill the window"
    _save(fig, tmp_path, "cell_and_behavior")


# --- 4. visual_behavior_mouse_history ------------------------------------------------------------------------------

def test_mouse_history(cache, targets, tmp_path):
    behavior_session_table = cache.get_behavior_session_table()
    mouse_id = targets.mouse_id
    mouse_sessions = behavior_session_table[behavior_session_table.mouse_id == mouse_id] \
        .sort_values("date_of_acquisition")
    assert mouse_sessions.session_type.iloc[0].startswith("TRAINING") and \
        mouse_sessions.session_type.str.startswith("OPHYS").any()
    assert len(behavior_session_table[behavior_session_table.mouse_id == int(mouse_id)]) == 0, \
        "as in the SDK, an integer never equals the string mouse_id"

    # one session, every behavior stream, the notebook's window
    session = cache.get_behavior_session(mouse_sessions.index[-3])
    task_parameters = session.task_parameters
    assert {"reward_volume", "response_window_sec", "stimulus", "session_type"} <= set(task_parameters)
    stimulus_presentations = session.stimulus_presentations
    licks, rewards, running_speed, trials = session.licks, session.rewards, session.running_speed, session.trials
    start, stop = WINDOW
    assert running_speed.timestamps.max() > stop, "sessions last about an hour"
    fig, ax = plt.subplots(figsize=(10, 3))
    speed = running_speed[(running_speed.timestamps >= start) & (running_speed.timestamps <= stop)]
    ax.plot(speed.timestamps, speed.speed)
    ax.plot(licks.timestamps[(licks.timestamps >= start) & (licks.timestamps <= stop)],
            np.zeros(((licks.timestamps >= start) & (licks.timestamps <= stop)).sum()), "|")
    ax.plot(rewards.timestamps[(rewards.timestamps >= start) & (rewards.timestamps <= stop)],
            np.zeros(((rewards.timestamps >= start) & (rewards.timestamps <= stop)).sum()) + 5, "o")
    assert _stimulus_spans(ax, stimulus_presentations, start, stop) > 0
    for change in trials[(trials.change_time > start) & (trials.change_time < stop)].change_time:
        ax.axvline(change, color="k")
    _save(fig, tmp_path, "session_window")

    # performance of every session of the mouse, and max d' by session type
    rows = []
    for behavior_session_id in mouse_sessions.index:
        each = cache.get_behavior_session(behavior_session_id)
        performance = each.get_performance_metrics()
        performance["behavior_session_id"] = behavior_session_id
        performance["session_type"] = mouse_sessions.loc[behavior_session_id, "session_type"]
        rows.append(performance)
    performance_df = pd.DataFrame(rows).set_index("behavior_session_id")
    assert len(performance_df) == len(mouse_sessions)
    assert {"max_dprime", "hit_trial_count", "engaged_trial_count"} <= set(performance_df.columns)
    passive = performance_df.session_type.str.contains("passive")
    if passive.any():
        assert (performance_df[passive].hit_trial_count == 0).all(), "no licks, no hits in passive replay"
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(np.arange(len(performance_df)), performance_df.max_dprime.values, "o-")
    ax.set_xticks(np.arange(len(performance_df)), performance_df.session_type.values, rotation=90, fontsize=5)
    _save(fig, tmp_path, "max_dprime_by_session")
    trained = performance_df[performance_df.session_type.str.startswith(("TRAINING_4", "TRAINING_5", "OPHYS_1"))]
    assert trained.max_dprime.max() > 1.0, "a trained mouse discriminates"


# --- 5. visual_behavior_compare_across_trial_types ------------------------------------------------------------------

def test_compare_across_trial_types(cache, targets, tmp_path):
    ophys_experiment_table = cache.get_ophys_experiment_table()
    assert not ophys_experiment_table.loc[targets.experiment_id, "passive"], "an active session"
    experiment = cache.get_behavior_ophys_experiment(targets.experiment_id)

    performance_metrics = experiment.get_performance_metrics()
    assert performance_metrics["trial_count"] > 100
    rolling_performance_df = experiment.get_rolling_performance_df()
    trials = experiment.trials
    trials_df = trials.merge(rolling_performance_df, left_index=True, right_index=True)
    assert len(trials_df) == len(trials)
    # the notebook's fillna(method="ffill") is .ffill() on pandas >= 2 (docs/tutorials.md)
    filled = trials_df[["hit_rate", "false_alarm_rate", "rolling_dprime"]].ffill()
    fig, axes = plt.subplots(2, 1, figsize=(8, 4), sharex=True)
    axes[0].plot(trials_df.start_time, filled.hit_rate, color="darkgreen")
    axes[0].plot(trials_df.start_time, filled.false_alarm_rate, color="darkred")
    axes[1].plot(trials_df.start_time, filled.rolling_dprime, color="black")
    _save(fig, tmp_path, "rolling_performance")

    # dF/F in long format: one row per cell and frame
    dff = experiment.dff_traces
    timestamps = experiment.ophys_timestamps
    long_dff = pd.concat([pd.DataFrame({"timestamps": timestamps, "dff": row.dff, "cell_specimen_id": csid})
                          for csid, row in dff.iterrows()], ignore_index=True)
    assert len(long_dff) == len(dff) * len(timestamps)

    # one trial of each type: running, licks and rewards, pupil, every cell's dF/F around the change
    eye_tracking = experiment.eye_tracking
    running_speed = experiment.running_speed
    licks = experiment.licks
    fig, axes = plt.subplots(4, 4, figsize=(14, 8), sharex="col")
    for column, trial_type in enumerate(("hit", "miss", "false_alarm", "correct_reject")):
        chosen = trials_df[trials_df[trial_type]]
        assert len(chosen), f"{trial_type} trials exist"
        trial = chosen.sample(1, random_state=0)
        change_time = float(trial.change_time.iloc[0])  # float(series) needs .iloc[0] on pandas >= 2
        start, stop = change_time - 3, change_time + 6
        run = running_speed[(running_speed.timestamps >= start) & (running_speed.timestamps <= stop)]
        axes[0, column].plot(run.timestamps, run.speed)
        lick_times = licks.timestamps[(licks.timestamps >= start) & (licks.timestamps <= stop)]
        axes[1, column].plot(lick_times, np.zeros(len(lick_times)), "|")
        eye = eye_tracking[(eye_tracking.timestamps >= start) & (eye_tracking.timestamps <= stop)]
        axes[2, column].plot(eye.timestamps, eye.pupil_area)
        frames = (timestamps >= start) & (timestamps <= stop)
        axes[3, column].imshow(np.vstack(dff.dff.values)[:, frames], aspect="auto",
                               extent=[start, stop, len(dff), 0])
        axes[0, column].set_title(trial_type)
        assert len(run) and frames.sum() > 50  # 9 s at ~11 Hz (Multiscope) to ~31 Hz
    _save(fig, tmp_path, "trial_types")
