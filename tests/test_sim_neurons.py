"""Synthetic neurons (``vbo.simulate.neurons``): shapes, geometry, clocks, and planted effects recovered the
way users measure them (mean ΔF/F in a window after stimulus onsets)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from vbo.nwb.content import BehaviorContent, OphysContent
from vbo.simulate import neurons as N
from vbo.simulate.plan import SCALES, ExperimentPlan, MousePlan, SessionPlan, example_mouse

IMAGES = ["im065", "im077", "im066", "im085", "im061", "im062", "im063", "im069"]
SMALL = SCALES["small"]
TINY = SCALES["tiny"]


# --- a small behaviour session, built here (independent of task.py) -----------------------------------


def fake_behavior(task_s: float = 600.0, gray_s: float = 30.0, movie_frames: int = 300, seed: int = 0,
                  t0: float = 9.0, omit_p: float = 0.05) -> BehaviorContent:
    """Gray screen, change-detection flashes (0.25 s on, 0.5 s gray, changes every 4-11 flashes, ~5 %
    omissions), gray screen, one movie repeat; running bouts at 60 Hz; on a sync-like clock starting at t0."""
    rng = np.random.default_rng(seed)

    def row(block, block_name, start, duration, stimulus_name, image_index=-99, image_name=None,
            movie_frame_index=-99, is_change=False, omitted=pd.NA):
        return dict(stimulus_block=block, stimulus_block_name=block_name, image_index=image_index,
                    image_name=image_name, movie_frame_index=movie_frame_index, duration=duration,
                    start_time=start, end_time=start + duration, is_change=is_change, omitted=omitted,
                    stimulus_name=stimulus_name)

    rows = [row(0, "initial_gray_screen_5min", t0, gray_s, "spontaneous")]
    t = t0 + gray_s
    end = t + task_s
    current, left, first = int(rng.integers(8)), int(rng.integers(4, 12)), True
    while t < end:
        change = left == 0
        if change:
            current, left = int((current + rng.integers(1, 8)) % 8), int(rng.integers(4, 12))
        if not change and not first and left > 1 and rng.random() < omit_p:
            rows.append(row(1, "change_detection_behavior", t, 0.25, "Natural_Images", 8, "omitted",
                            omitted=True))
        else:
            rows.append(row(1, "change_detection_behavior", t, 0.25, "Natural_Images", current, IMAGES[current],
                            is_change=change, omitted=False))
            left -= 1
        first = False
        t += 0.75
    rows.append(row(2, "post_behavior_gray_screen_5min", t, gray_s, "spontaneous"))
    t += gray_s
    for k in range(movie_frames):
        rows.append(row(3, "natural_movie_one", t, 1 / 30, "natural_movie_one", movie_frame_index=k))
        t += 1 / 30
    presentations = pd.DataFrame(rows)
    presentations["omitted"] = presentations["omitted"].astype("boolean")
    presentations.index.name = "stimulus_presentations_id"
    stimulus_timestamps = np.arange(t0, t, 1 / 60.0)
    speed = np.zeros(len(stimulus_timestamps))
    for start in rng.uniform(t0, t, size=max(1, int((t - t0) / 40))):
        bout = (stimulus_timestamps >= start) & (stimulus_timestamps < start + rng.uniform(5, 15))
        speed[bout] = rng.uniform(15, 40)
    speed = np.convolve(speed, np.ones(30) / 30, mode="same") + rng.normal(0, 1, len(speed))
    n = len(stimulus_timestamps)
    trials = pd.DataFrame({"start_time": [t0 + gray_s], "stop_time": [t0 + gray_s + task_s]})
    trials.index.name = "trials_id"
    return BehaviorContent(
        identifier="1091562010", session_start_time=dt.datetime(2021, 3, 9, 9, 47, tzinfo=dt.timezone.utc),
        session_type="OPHYS_1_images_A", experiment_description="test session",
        metadata={"behavior_session_id": 1091562010, "behavior_session_uuid": "3c62d629-93db-45dc-9700-c113ec94cef6",
                  "equipment_name": "CAM2P.4", "project_code": "VisualBehavior", "session_type": "OPHYS_1_images_A",
                  "stimulus_frame_rate": 60.0},
        subject={"age": "P140D", "description": "mouse", "genotype": "Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt",
                 "sex": "F", "species": "Mus musculus", "subject_id": "453911",
                 "driver_line": ["Camk2a-tTA", "Slc17a7-IRES2-Cre"], "reporter_line": "Ai93(TITL-GCaMP6f)"},
        task_parameters={"blank_duration_sec": [0.5, 0.5], "response_window_sec": [0.15, 0.75],
                         "stimulus_distribution": "geometric", "auto_reward_volume": 0.005,
                         "omitted_flash_fraction": 0.05, "task": "change detection", "n_stimulus_frames": n,
                         "stimulus": "images", "session_type": "OPHYS_1_images_A", "reward_volume": 0.007,
                         "stimulus_duration_sec": 0.25, "stimulus_name": "Natural_Images"},
        stimulus_timestamps=stimulus_timestamps, running_timestamps=stimulus_timestamps.copy(),
        running_speed=speed, running_speed_unfiltered=speed.copy(), running_dx=np.zeros(n, np.float32),
        v_in=np.full(n, 5.0), v_sig=np.zeros(n), trials=trials, presentations=presentations)


def make_mouse(cre: str = "Slc17a7-IRES2-Cre", rig: str = "CAM2P.4", indicator: str = "GCaMP6f") -> MousePlan:
    return example_mouse(cre, equipment_name=rig, indicator=indicator, driver_line=[cre])


def make_experiment(eid: int = 1091765022, cid: int = 1018028080, group: int | None = None,
                    count: int = 0) -> ExperimentPlan:
    return ExperimentPlan(ophys_experiment_id=eid, ophys_container_id=cid, targeted_structure="VISp",
                          imaging_depth=175, targeted_imaging_depth=175, imaging_plane_group=group,
                          imaging_plane_group_count=count)


def make_session(mouse: MousePlan, experiments: list[ExperimentPlan], novel: bool = False,
                 ophys_session_id: int = 1091493411, behavior_session_id: int = 1091562010,
                 session_index: int = 20) -> SessionPlan:
    return SessionPlan(behavior_session_id=behavior_session_id, mouse=mouse, session_type="OPHYS_1_images_A",
                       date_of_acquisition=dt.datetime(2021, 3, 9, tzinfo=dt.timezone.utc),
                       equipment_name=mouse.equipment_name, session_index=session_index, stage="OPHYS_1", image_set="A",
                       passive=False, is_imaging=True, has_omissions=True, novel_images=novel,
                       experience_level="Novel 1" if novel else "Familiar", prior_exposures_to_image_set=0 if novel else 10,
                       ophys_session_id=ophys_session_id, experiments=experiments)


def window_mean(dff: np.ndarray, t: np.ndarray, onsets: np.ndarray, start: float = 0.0, stop: float = 0.75) -> np.ndarray:
    """Mean ΔF/F (events × ROIs) over [onset + start, onset + stop), through cumulative sums."""
    i0 = np.searchsorted(t, onsets + start)
    i1 = np.searchsorted(t, onsets + stop)
    cs = np.vstack([np.zeros((1, dff.shape[1])), np.cumsum(dff, axis=0)])
    ok = i1 > i0
    return (cs[i1[ok]] - cs[i0[ok]]) / (i1[ok] - i0[ok])[:, None]


def roi_truth(content: OphysContent, truth: dict, key: str) -> np.ndarray:
    return np.array([truth["rois"][str(r)][key] for r in content.rois["cell_roi_id"]], dtype=object)


@dataclasses.dataclass
class Sim:
    mouse: MousePlan
    experiment: ExperimentPlan
    session: SessionPlan
    container: N.Container
    behavior: BehaviorContent
    content: OphysContent
    truth: dict


def simulate(cre: str = "Slc17a7-IRES2-Cre", rig: str = "CAM2P.4", novel: bool = False, seed: int = 2,
             scale=SMALL, behavior: BehaviorContent | None = None, group: int | None = None,
             container_seed: int = 1) -> Sim:
    mouse = make_mouse(cre, rig)
    meso = rig.startswith("MESO")
    experiment = make_experiment(group=(group if group is not None else 1) if meso else None, count=4 if meso else 0)
    session = make_session(mouse, [experiment], novel=novel)
    container = N.make_container(experiment.ophys_container_id, mouse, experiment, scale,
                                 np.random.default_rng(container_seed))
    behavior = behavior or fake_behavior(task_s=scale.task_s, gray_s=scale.initial_gray_s)
    content, truth = N.simulate_ophys(session, experiment, container, behavior, scale, np.random.default_rng(seed))
    return Sim(mouse, experiment, session, container, behavior, content, truth)


@pytest.fixture(scope="module")
def behavior() -> BehaviorContent:
    return fake_behavior()


@pytest.fixture(scope="module")
def slc(behavior) -> Sim:
    return simulate(behavior=behavior)


@pytest.fixture(scope="module")
def slc_novel(behavior) -> Sim:
    return simulate(behavior=behavior, novel=True)


@pytest.fixture(scope="module")
def vip(behavior) -> Sim:
    return simulate("Vip-IRES-Cre", "MESO.1", behavior=behavior)


@pytest.fixture(scope="module")
def sst(behavior) -> Sim:
    return simulate("Sst-IRES-Cre", "MESO.1", behavior=behavior)


# --- container -------------------------------------------------------------------------------------


def test_container_ids_geometry_and_classes():
    mouse, experiment = make_mouse(), make_experiment()
    c = N.make_container(experiment.ophys_container_id, mouse, experiment, SMALL, np.random.default_rng(0))
    ids = c.cell_specimen_ids
    assert ids.dtype == np.int64 and len(set(ids)) == len(ids)
    assert all(1_000_000_000 <= i < 2**31 for i in ids)
    lo, hi = SMALL.cells_per_plane
    assert lo <= len(c) <= hi
    rows, cols = SMALL.field_of_view
    assert c.field_of_view == (rows, cols)
    assert c.cells["center_y"].between(0, rows - 1).all() and c.cells["center_x"].between(0, cols - 1).all()
    diameter = c.cells["radius_y"] + c.cells["radius_x"]
    assert diameter.between(3.0 * 0.8, 15 * 1.2 * max(rows, cols) / 512 + 1e-9).all()
    assert set(c.cells["cell_class"]) <= {N.IMAGE_SELECTIVE, N.UNRESPONSIVE}
    sel = c.cells["cell_class"] == N.IMAGE_SELECTIVE
    assert sel.mean() > 0.4
    assert c.cells.loc[sel, "preferred_image"].between(0, 7).all()
    assert (c.tuning[np.flatnonzero(sel), c.cells.loc[sel, "preferred_image"]] == 1.0).all()
    assert (c.cells.loc[sel, "change_factor"] > 1).all() and (c.cells.loc[sel, "novelty_gain"] > 1).all()
    # the class mix follows the cre line
    for cre, cls in (("Sst-IRES-Cre", N.IMAGE_RESPONSIVE), ("Vip-IRES-Cre", N.OMISSION_RAMPING)):
        other = N.make_container(7, make_mouse(cre), experiment, SMALL, np.random.default_rng(0))
        assert (other.cells["cell_class"] == cls).mean() > 0.4
    json.dumps(N.container_truth(c))
    # distinct containers never share cell_specimen_ids
    c2 = N.make_container(experiment.ophys_container_id + 1, mouse, experiment, SMALL, np.random.default_rng(0))
    assert not set(c2.cell_specimen_ids) & set(ids)


# --- shapes, tables, images ------------------------------------------------------------------------


def test_shapes_and_dtypes(slc):
    o = slc.content
    n_frames, n_rois = len(o.ophys_timestamps), len(o.rois)
    rows, cols = SMALL.field_of_view
    assert o.ophys_timestamps.dtype == np.float64 and np.all(np.diff(o.ophys_timestamps) > 0)
    for name in ("dff", "corrected_fluorescence", "neuropil", "demixed"):
        arr = getattr(o, name)
        assert arr.shape == (n_frames, n_rois) and arr.dtype == np.float64 and np.isfinite(arr).all(), name
    assert o.events.shape == (n_frames, len(o.event_rows))
    assert list(o.event_rows) == list(range(n_rois))
    for name in ("r", "rmse", "event_lambdas", "event_noise_stds"):
        assert getattr(o, name).shape == (n_rois,), name
    assert (o.r > 0).all() and (o.r < 1).all() and (o.rmse > 0).all()
    assert (o.event_lambdas >= 0).all() and (o.event_lambdas <= 0.2).all()
    assert (o.event_noise_stds > 0.01).all() and (o.event_noise_stds < 0.2).all()
    assert o.motion_x.shape == o.motion_y.shape == (n_frames,) and o.motion_x.dtype.kind == "i"
    assert np.abs(o.motion_x).max() <= 12 and np.abs(o.motion_y).max() <= 12
    assert o.roi_masks.shape == (n_rois, rows, cols) and o.roi_masks.dtype == bool
    assert o.max_projection.shape == o.average_projection.shape == (rows, cols)
    assert o.max_projection.dtype == o.average_projection.dtype == np.uint8
    assert o.segmentation_mask.shape == (rows, cols) and o.segmentation_mask.dtype.kind == "i"
    assert list(o.rois.columns) == ["cell_roi_id", "cell_specimen_id", "height", "mask_image_plane",
                                    "max_correction_down", "max_correction_left", "max_correction_right",
                                    "max_correction_up", "valid_roi", "width", "x", "y"]
    for col in ("cell_roi_id", "cell_specimen_id", "height", "width", "x", "y", "mask_image_plane"):
        assert o.rois[col].dtype == np.int64, col
    for col in ("max_correction_down", "max_correction_left", "max_correction_right", "max_correction_up"):
        assert o.rois[col].dtype == np.float64 and (o.rois[col] >= 0).all()
    assert o.rois["max_correction_left"].iloc[0] == max(0, -o.motion_x.min())
    assert o.rois["max_correction_up"].iloc[0] == max(0, o.motion_y.max())
    assert o.rois["valid_roi"].dtype == bool and o.rois["valid_roi"].all()
    roi_ids = o.rois["cell_roi_id"].to_numpy()
    assert len(set(roi_ids)) == n_rois and all(1_000_000_000 <= i < 10_000_000_000 for i in roi_ids)
    assert (np.diff(roi_ids) > 0).all()  # rows in ROI-id order
    assert (o.rois["cell_specimen_id"] == -1).sum() >= 1  # a few unmatched ROIs
    assert (o.rois["cell_specimen_id"] == -1).mean() < 0.25


def test_masks_match_bounding_boxes_and_segmentation(slc):
    o = slc.content
    for mask, (x, y, w, h) in zip(o.roi_masks, o.rois[["x", "y", "width", "height"]].itertuples(index=False)):
        ys, xs = np.nonzero(mask)
        assert len(ys) > 0
        assert (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == (x, y, w, h)
    np.testing.assert_array_equal(o.segmentation_mask, o.roi_masks.any(axis=0).astype(int))
    # overlapping ROIs sit on different mask planes
    flat = o.roi_masks.reshape(len(o.roi_masks), -1).astype(int)
    overlap = flat @ flat.T
    planes = o.rois["mask_image_plane"].to_numpy()
    i, j = np.nonzero(np.triu(overlap, 1))
    assert (planes[i] != planes[j]).all()


def test_projections_brighter_inside_masks(slc):
    o = slc.content
    inside = o.roi_masks.any(axis=0)
    for image in (o.max_projection, o.average_projection):
        assert image[inside].mean() > image[~inside].mean() + 10
    assert o.max_projection[inside].mean() > o.average_projection[inside].mean()
    assert 30 < o.average_projection[~inside].mean() < 100


def test_trace_relations(slc):
    o, truth = slc.content, slc.truth
    f0 = roi_truth(o, truth, "f0").astype(float)
    # the traces carry float32 precision, as the released ones do: the relations hold to that precision
    for trace in (o.dff, o.corrected_fluorescence, o.neuropil, o.demixed, o.events):
        assert trace.dtype == np.float64 and np.array_equal(trace, trace.astype(np.float32))
    np.testing.assert_allclose(o.corrected_fluorescence, o.demixed - o.r * o.neuropil, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(o.dff, o.corrected_fluorescence / f0 - 1.0, rtol=1e-6, atol=1e-6)
    assert (o.neuropil > 0).all() and (o.demixed > o.corrected_fluorescence).all()
    assert 50 < np.median(o.corrected_fluorescence) < 1500
    assert 0.05 < np.median(o.dff.std(axis=0)) < 0.4


def test_metadata_and_imaging_plane(slc):
    o, exp, session = slc.content, slc.experiment, slc.session
    meta = o.behavior.metadata
    assert meta["imaging_plane_group"] == -1 and meta["imaging_plane_group_count"] == 0
    assert meta["field_of_view_height"] == SMALL.field_of_view[0]
    assert meta["field_of_view_width"] == SMALL.field_of_view[1]
    assert meta["ophys_experiment_id"] == exp.ophys_experiment_id
    assert meta["ophys_container_id"] == exp.ophys_container_id
    assert meta["ophys_session_id"] == session.ophys_session_id
    assert meta["imaging_depth"] == 175 and meta["targeted_imaging_depth"] == 175
    assert meta["behavior_session_id"] == slc.behavior.metadata["behavior_session_id"]
    assert o.behavior.identifier == str(exp.ophys_experiment_id)
    assert o.behavior.keywords == ("2-photon", "calcium imaging", "visual cortex", "behavior", "task")
    # the input is not mutated
    assert "ophys_experiment_id" not in slc.behavior.metadata and slc.behavior.identifier == "1091562010"
    assert o.behavior.presentations is slc.behavior.presentations or o.behavior.presentations.equals(
        slc.behavior.presentations)
    plane = o.imaging_plane
    rows, cols = SMALL.field_of_view
    assert plane.description == f"({cols}, {rows}) field of view in VISp at depth 175 um"
    assert (plane.excitation_lambda, plane.emission_lambda, plane.imaging_rate) == (910.0, 520.0, 31.0)
    assert plane.indicator == "GCaMP6f" and plane.location == "VISp"
    assert o.pixel_size_mm == pytest.approx(0.00078125 * 512 / max(rows, cols))


def test_truth_is_json_and_complete(slc):
    truth = slc.truth
    text = json.dumps(truth)
    assert "NaN" not in text
    o = slc.content
    assert set(truth["rois"]) == {str(r) for r in o.rois["cell_roi_id"]}
    assert truth["frame_rate_hz"] == pytest.approx(31.0, abs=0.01) and truth["imaging_rate"] == 31.0
    assert set(truth["present_cell_specimen_ids"]) == set(o.rois["cell_specimen_id"][o.rois["cell_specimen_id"] > 0])
    assert set(truth["present_cell_specimen_ids"]) | set(truth["absent_cell_specimen_ids"]) == set(
        slc.container.cell_specimen_ids.tolist())
    entry = next(v for v in truth["rois"].values() if v["class"] == N.IMAGE_SELECTIVE)
    for key in ("class", "preferred_image_index", "preferred_image_name", "image_amplitude", "change_factor",
                "omission_ramp", "running_dff_per_cm_s", "novelty_gain", "novelty_gain_applied", "tau_s",
                "cell_roi_id", "cell_specimen_id"):
        assert key in entry, key
    assert entry["preferred_image_name"] == IMAGES[entry["preferred_image_index"]]
    assert 0.3 <= entry["tau_s"] <= 0.7


# --- clocks -----------------------------------------------------------------------------------------


def test_clock_spans_session_on_behavior_clock(slc):
    t = slc.content.ophys_timestamps
    stim = slc.behavior.stimulus_timestamps
    assert stim[0] - 6.5 <= t[0] < stim[0]
    assert t[-1] > slc.behavior.presentations["end_time"].max()
    assert np.mean(np.diff(t)) == pytest.approx(1 / 31, rel=1e-4)


def test_mesoscope_planes_share_a_frame_clock(behavior):
    mouse = make_mouse("Sst-IRES-Cre", "MESO.1")
    experiments = [make_experiment(eid=1000 + g, group=g, count=4) for g in range(4)]
    session = make_session(mouse, experiments)
    container = N.make_container(1018028080, mouse, experiments[0], TINY, np.random.default_rng(0))
    clocks = [N.frame_clock(session, e, behavior)[0] for e in experiments]
    for t in clocks:
        rate = 1 / np.mean(np.diff(t))
        assert rate == pytest.approx(10.73, abs=0.05)
    # plane group g is offset by g rig frames (1 / (4 × 10.73) s)
    n = min(len(t) for t in clocks)
    offsets = [np.median(t[:n] - clocks[0][:n]) for t in clocks]
    np.testing.assert_allclose(offsets, np.arange(4) / (4 * 10.73), atol=2e-4)
    content, truth = N.simulate_ophys(session, experiments[2], container, behavior, TINY, np.random.default_rng(3))
    assert content.imaging_plane.imaging_rate == 11.0
    assert truth["frame_rate_hz"] == pytest.approx(10.73, abs=0.05)
    assert content.behavior.metadata["imaging_plane_group"] == 2
    assert content.behavior.metadata["imaging_plane_group_count"] == 4
    np.testing.assert_array_equal(content.ophys_timestamps, clocks[2])


# --- container across sessions ------------------------------------------------------------------------


def test_same_container_across_sessions(behavior):
    mouse = make_mouse()
    e1, e2 = make_experiment(eid=111), make_experiment(eid=222)
    container = N.make_container(e1.ophys_container_id, mouse, e1, SMALL, np.random.default_rng(0))
    s1 = make_session(mouse, [e1], ophys_session_id=11)
    s2 = make_session(mouse, [e2], ophys_session_id=22, behavior_session_id=33, session_index=21)
    o1, _ = N.simulate_ophys(s1, e1, container, behavior, SMALL, np.random.default_rng(1))
    o2, _ = N.simulate_ophys(s2, e2, container, behavior, SMALL, np.random.default_rng(2))
    c1 = set(o1.rois["cell_specimen_id"]) - {-1}
    c2 = set(o2.rois["cell_specimen_id"]) - {-1}
    shared = c1 & c2
    assert len(shared) >= 0.6 * len(container) and c1 <= set(container.cell_specimen_ids)
    assert c1 != set(container.cell_specimen_ids) or c2 != set(container.cell_specimen_ids) or len(container) < 15
    assert not set(o1.rois["cell_roi_id"]) & set(o2.rois["cell_roi_id"])
    # the same cell sits at (nearly) the same place
    for csid in list(shared)[:10]:
        m1 = o1.roi_masks[np.flatnonzero(o1.rois["cell_specimen_id"] == csid)[0]]
        m2 = o2.roi_masks[np.flatnonzero(o2.rois["cell_specimen_id"] == csid)[0]]
        c1y, c1x = np.argwhere(m1).mean(axis=0)
        c2y, c2x = np.argwhere(m2).mean(axis=0)
        assert np.hypot(c1y - c2y, c1x - c2x) < 2.5


def test_deterministic_with_seed(behavior):
    a = simulate(behavior=behavior, scale=TINY, seed=5)
    b = simulate(behavior=behavior, scale=TINY, seed=5)
    c = simulate(behavior=behavior, scale=TINY, seed=6)
    np.testing.assert_array_equal(a.content.dff, b.content.dff)
    np.testing.assert_array_equal(a.content.roi_masks, b.content.roi_masks)
    np.testing.assert_array_equal(a.content.max_projection, b.content.max_projection)
    pd.testing.assert_frame_equal(a.content.rois, b.content.rois)
    assert json.dumps(a.truth) == json.dumps(b.truth)
    assert not np.array_equal(a.content.dff, c.content.dff)


# --- planted effects, measured as a user would --------------------------------------------------------


def _image_rows(behavior: BehaviorContent) -> pd.DataFrame:
    p = behavior.presentations
    return p[(p["image_index"] >= 0) & (p["image_index"] < 8)]


def test_preferred_image_recovered(slc):
    o, truth = slc.content, slc.truth
    images = _image_rows(slc.behavior)
    responses = window_mean(o.dff, o.ophys_timestamps, images["start_time"].to_numpy())
    names = images["image_name"].to_numpy()
    means = np.stack([responses[names == name].mean(axis=0) for name in IMAGES])  # images × ROIs
    cls = roi_truth(o, truth, "class")
    preferred = roi_truth(o, truth, "preferred_image_name")
    selective = np.flatnonzero(cls == N.IMAGE_SELECTIVE)
    assert len(selective) >= 5
    recovered = np.array(IMAGES)[means.argmax(axis=0)]
    assert (recovered[selective] == preferred[selective]).mean() >= 0.8
    # the preferred image's response exceeds the others' mean response
    best = means.max(axis=0)
    others = (means.sum(axis=0) - best) / 7
    assert (best[selective] > others[selective]).all()


def test_change_response_exceeds_repeated(slc):
    o, truth = slc.content, slc.truth
    images = _image_rows(slc.behavior)
    responses = window_mean(o.dff, o.ophys_timestamps, images["start_time"].to_numpy())
    change = images["is_change"].to_numpy(bool)
    index = images["image_index"].to_numpy()
    cls = roi_truth(o, truth, "class")
    pref = roi_truth(o, truth, "preferred_image_index")
    ratio = []
    for j in np.flatnonzero(cls == N.IMAGE_SELECTIVE):
        on_pref = index == pref[j]
        ratio.append(responses[on_pref & change, j].mean() / responses[on_pref & ~change, j].mean())
    ratio = np.array(ratio)
    assert np.nanmedian(ratio) > 1.2 and (ratio > 1).mean() >= 0.75


def test_sst_broadly_image_responsive(sst):
    o, truth = sst.content, sst.truth
    images = _image_rows(sst.behavior)
    onsets = images["start_time"].to_numpy()
    after = window_mean(o.dff, o.ophys_timestamps, onsets).mean(axis=0)
    before = window_mean(o.dff, o.ophys_timestamps, onsets, -0.3, 0.0).mean(axis=0)
    names = images["image_name"].to_numpy()
    responses = window_mean(o.dff, o.ophys_timestamps, onsets)
    means = np.stack([responses[names == n].mean(axis=0) for n in IMAGES])
    responsive = roi_truth(o, truth, "class") == N.IMAGE_RESPONSIVE
    assert (after[responsive] > before[responsive]).mean() >= 0.8
    # broad: most images evoke at least a third of the best image's response
    breadth = (means[:, responsive] > means[:, responsive].max(axis=0) / 3).mean(axis=0)
    assert np.median(breadth) >= 0.6


def test_vip_ramps_after_omissions_and_follows_running(vip):
    o, truth, b = vip.content, vip.truth, vip.behavior
    p = b.presentations
    omissions = p.loc[p["omitted"].fillna(False).astype(bool), "start_time"].to_numpy()
    assert len(omissions) >= 20
    t = o.ophys_timestamps
    early = window_mean(o.dff, t, omissions, 0.0, 0.25).mean(axis=0)
    late = window_mean(o.dff, t, omissions, 0.5, 0.75).mean(axis=0)
    before = window_mean(o.dff, t, omissions, -0.5, 0.0).mean(axis=0)
    ramping = roi_truth(o, truth, "class") == N.OMISSION_RAMPING
    assert ramping.sum() >= 3
    assert (late[ramping] > early[ramping]).mean() >= 0.8
    assert (late[ramping] - before[ramping]).mean() > 0.15
    assert np.abs(late[~ramping] - before[~ramping]).mean() < (late[ramping] - before[ramping]).mean() / 2
    speed = np.interp(t, b.running_timestamps, b.running_speed)
    corr = np.array([np.corrcoef(speed, o.dff[:, j])[0, 1] for j in np.flatnonzero(ramping)])
    assert np.median(corr) > 0.2
    assert truth["frame_rate_hz"] == pytest.approx(10.73, abs=0.05)


def test_novelty_gain(slc, slc_novel):
    images = _image_rows(slc.behavior)
    onsets = images["start_time"].to_numpy()
    familiar = window_mean(slc.content.dff, slc.content.ophys_timestamps, onsets)
    novel = window_mean(slc_novel.content.dff, slc_novel.content.ophys_timestamps, onsets)
    # the same container and seed: same ROIs and ids, only the gain differs
    pd.testing.assert_frame_equal(slc.content.rois, slc_novel.content.rois)
    selective = roi_truth(slc.content, slc.truth, "class") == N.IMAGE_SELECTIVE
    gain = novel.mean(axis=0)[selective] / familiar.mean(axis=0)[selective]
    assert np.median(gain) > 1.4
    assert all(v["novelty_gain_applied"] for v in slc_novel.truth["rois"].values() if v["class"] != N.UNRESPONSIVE)
    assert not any(v["novelty_gain_applied"] for v in slc.truth["rois"].values())


def test_events_sparse_and_aligned(slc, vip):
    for sim in (slc, vip):
        o = sim.content
        assert (o.events >= 0).all()
        nonzero = o.events > 0
        assert 0.001 < nonzero.mean() < 0.1
        assert (nonzero.sum(axis=0) > 0).mean() > 0.8
        # ΔF/F rises after an event: mean dF/F a few frames after events ≫ the ROI's overall mean
        lag = max(1, int(round(0.1 / np.mean(np.diff(o.ophys_timestamps)))))
        rises = []
        for j in range(o.events.shape[1]):
            k = np.flatnonzero(nonzero[:, j])
            k = k[k + lag < len(o.dff)]
            if len(k) >= 5:
                rises.append(o.dff[k + lag, j].mean() - o.dff[:, j].mean())
        assert np.mean(np.array(rises) > 0) > 0.9
        # event size tracks the response size: bigger events → bigger dF/F peaks
        j = int(np.argmax(nonzero.sum(axis=0)))
        k = np.flatnonzero(nonzero[:, j])
        k = k[k + lag < len(o.dff)]
        assert np.corrcoef(o.events[k, j], o.dff[k + lag, j])[0, 1] > 0.3


def test_small_scale_session_length(behavior):
    sim = simulate(behavior=behavior, scale=SMALL, seed=9)
    assert sim.content.dff.shape[0] > 18000


# --- round trip through the NWB writer and vbo's reader -------------------------------------------------


def test_round_trip_write_read(tmp_path, behavior):
    write = pytest.importorskip("vbo.nwb.write")
    pytest.importorskip("pynwb")
    import vbo

    sim = simulate(behavior=fake_behavior(task_s=60.0, gray_s=5.0, movie_frames=60), scale=TINY, seed=4)
    o = sim.content
    path = write.write_nwb(o, tmp_path / "behavior_ophys_experiment_1091765022.nwb")
    exp = vbo.BehaviorOphysExperiment.from_nwb_path(str(path))
    assert exp.ophys_experiment_id == sim.experiment.ophys_experiment_id
    np.testing.assert_allclose(exp.ophys_timestamps, o.ophys_timestamps)
    table = exp.cell_specimen_table
    stored = o.rois["cell_specimen_id"].to_numpy()
    assert (stored == -1).any() and not (stored == -1).all()  # some unmatched: float64 with NaN (api.md Q38)
    np.testing.assert_array_equal(table.index.to_numpy(), np.where(stored == -1, np.nan, stored.astype(float)))
    np.testing.assert_array_equal(table["cell_roi_id"].to_numpy(), o.rois["cell_roi_id"].to_numpy())
    for col in ("x", "y", "width", "height", "mask_image_plane", "max_correction_up", "valid_roi"):
        np.testing.assert_array_equal(table[col].to_numpy(), o.rois[col].to_numpy(), err_msg=col)
    np.testing.assert_array_equal(np.stack(table["roi_mask"].to_list()), o.roi_masks)
    np.testing.assert_allclose(np.stack(exp.dff_traces["dff"].to_list()), o.dff.T)
    events = exp.events
    np.testing.assert_allclose(np.stack(events["events"].to_list()), o.events.T)
    np.testing.assert_allclose(events["lambda"].to_numpy(), o.event_lambdas)
    np.testing.assert_allclose(events["noise_std"].to_numpy(), o.event_noise_stds)
    np.testing.assert_array_equal(np.asarray(exp.max_projection), o.max_projection)
    np.testing.assert_array_equal(np.asarray(exp.average_projection), o.average_projection)
    assert exp.max_projection.spacing[0] == pytest.approx(o.pixel_size_mm)
    np.testing.assert_array_equal(np.asarray(exp.segmentation_mask_image), o.segmentation_mask)
    cf = exp.corrected_fluorescence_traces
    np.testing.assert_allclose(np.stack(cf["corrected_fluorescence"].to_list()), o.corrected_fluorescence.T)
    np.testing.assert_allclose(cf["r"].to_numpy(), o.r)
    np.testing.assert_allclose(np.stack(exp.neuropil_traces["neuropil_trace"].to_list()), o.neuropil.T)
    np.testing.assert_array_equal(exp.motion_correction["x"].to_numpy(), o.motion_x)
    meta = exp.metadata
    assert meta["ophys_frame_rate"] == 31.0
    assert meta["imaging_plane_group"] is None and meta["imaging_plane_group_count"] == 0
    assert meta["ophys_container_id"] == sim.experiment.ophys_container_id
    assert meta["field_of_view_width"] == TINY.field_of_view[1]


def test_ids_unique_over_a_planned_release():
    """Workers never see each other's experiments: the id blocks alone must keep ids release-unique."""
    mice = pytest.importorskip("vbo.simulate.mice")
    sessions = mice.plan_release(np.random.default_rng(5), 40, SCALES["full"])
    experiments = [(s, e) for s in sessions for e in s.experiments]
    containers = {e.ophys_container_id for _, e in experiments}
    assert len({N.cell_specimen_id_block(c) for c in containers}) == len(containers)
    roi_blocks = [N.cell_roi_id_block(e.ophys_container_id, s.session_index) for s, e in experiments]
    assert len(set(roi_blocks)) == len(roi_blocks)


def test_with_simulated_behavior_and_plan(tmp_path):
    """The whole chain on a planned tiny release: mice.plan_release → task.simulate_behavior → neurons."""
    mice = pytest.importorskip("vbo.simulate.mice")
    task = pytest.importorskip("vbo.simulate.task")
    sessions = [s for s in mice.plan_release(np.random.default_rng(0), 4, TINY) if s.is_imaging]
    assert sessions
    containers, seen = {}, set()
    for session in sessions:
        for e in session.experiments:
            if e.ophys_container_id not in containers:
                containers[e.ophys_container_id] = N.make_container(e.ophys_container_id, session.mouse, e, TINY,
                                                                    np.random.default_rng(e.ophys_container_id))
    checked = []
    for session in sessions:
        meso = session.equipment_name.startswith("MESO")
        if meso in seen:
            continue
        seen.add(meso)
        behavior, _ = task.simulate_behavior(session, TINY, np.random.default_rng(1))
        e = session.experiments[0]
        content, truth = N.simulate_ophys(session, e, containers[e.ophys_container_id], behavior, TINY,
                                          np.random.default_rng(2))
        json.dumps(truth)
        t = content.ophys_timestamps
        assert t[0] < behavior.stimulus_timestamps[0] and t[-1] > behavior.stimulus_timestamps[-1]
        assert truth["frame_rate_hz"] == pytest.approx(10.73 if meso else 31.0, abs=0.05)
        assert content.imaging_plane.imaging_rate == (11.0 if meso else 31.0)
        assert content.behavior.metadata["imaging_plane_group"] == (e.imaging_plane_group if meso else -1)
        names = set(behavior.presentations["image_name"].dropna()) - {"omitted"}
        assert set(truth["image_names"].values()) <= names
        checked.append((content, session))
    # the writer accepts the content and vbo reads it back
    write = pytest.importorskip("vbo.nwb.write")
    pytest.importorskip("pynwb")
    import vbo

    content, session = checked[-1]
    path = write.write_nwb(content, tmp_path / "experiment.nwb")
    exp = vbo.BehaviorOphysExperiment.from_nwb_path(str(path))
    np.testing.assert_allclose(np.stack(exp.dff_traces["dff"].to_list()), content.dff.T)
    assert len(exp.ophys_timestamps) == len(content.ophys_timestamps)
    assert exp.metadata["ophys_frame_rate"] == content.imaging_plane.imaging_rate
    assert exp.metadata["ophys_session_id"] == session.ophys_session_id


def test_rare_event_subset(monkeypatch, tmp_path):
    """A few experiments' event series lack one ROI; vbo's reader drops it from ``events`` with a warning."""
    monkeypatch.setattr(N, "EVENT_SUBSET_PROBABILITY", 1.0)
    sim = simulate(behavior=fake_behavior(task_s=60.0, gray_s=5.0, movie_frames=60), scale=TINY, seed=4)
    o, truth = sim.content, sim.truth
    n = len(o.rois)
    assert len(o.event_rows) == n - 1 and o.events.shape == (len(o.ophys_timestamps), n - 1)
    assert len(o.event_lambdas) == len(o.event_noise_stds) == n - 1
    missing = sorted(set(range(n)) - set(o.event_rows.tolist()))
    assert truth["cell_roi_ids_without_events"] == [int(o.rois["cell_roi_id"].iloc[missing[0]])]
    write = pytest.importorskip("vbo.nwb.write")
    pytest.importorskip("pynwb")
    import vbo

    exp = vbo.BehaviorOphysExperiment.from_nwb_path(str(write.write_nwb(o, tmp_path / "e.nwb")))
    with pytest.warns(UserWarning, match="no events"):
        events = exp.events
    assert len(events) == n - 1
    assert int(o.rois["cell_roi_id"].iloc[missing[0]]) not in set(events["cell_roi_id"])
