"""Acceptance: every member of vbo's session objects equals what AllenSDK 2.16.2 returned on the same file.

Exact for integers, strings, booleans, ids and indexes; floats within 1e-9 relative; dtypes and column
order checked. Deliberate divergences (spec/api.md §9) are asserted as divergences.
"""

from __future__ import annotations

import uuid
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest

import vbo
from truth_compare import (DIVERGENT, PRESENTATION_FIXED, PRESENTATION_TAIL, RTOL,  # noqa: F401 (re-exported)
                           assert_frames_equal, assert_series_equal, assert_values_equal, call_member)

EXPERIMENT = "behavior_ophys_experiment_1091765022"
SESSION = "behavior_session_1089912433"


@pytest.fixture(scope="module", params=[EXPERIMENT, SESSION])
def loaded(request, shared_data, load_truth):
    stem = request.param
    truth_dir = shared_data / "sdk-files" / "truth" / stem
    truth = load_truth(truth_dir)
    import json
    manifest = json.loads((truth_dir / "manifest.json").read_text())
    cls = vbo.BehaviorOphysExperiment if stem.startswith("behavior_ophys") else vbo.BehaviorSession
    obj = cls.from_nwb_path(shared_data / "sdk-files" / f"{stem}.nwb")
    yield stem, obj, truth, manifest
    obj.close()


def test_member_list(loaded):
    stem, obj, truth, manifest = loaded
    assert obj.list_data_attributes_and_methods() == manifest["list_data_attributes_and_methods"]
    assert len(obj.list_data_attributes_and_methods()) == (35 if stem == EXPERIMENT else 16)


def test_every_member_matches_allensdk(loaded):
    stem, obj, truth, manifest = loaded
    checked = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, entry in manifest["entries"].items():
            if name in DIVERGENT:
                continue
            assert_values_equal(call_member(obj, name, entry), truth[name], f"{stem}.{name}")
            checked.append(name)
    skipped = set(manifest.get("skipped", {}))
    members = set(manifest["list_data_attributes_and_methods"])
    assert set(checked) | (DIVERGENT & members) | skipped == members


def test_performance_metrics_threshold(loaded):
    stem, obj, truth, _ = loaded
    from vbo.behavior import PERFORMANCE_METRIC_KEYS

    actual = obj.get_performance_metrics(engaged_trial_reward_rate_threshold=1.0)
    assert tuple(actual) == PERFORMANCE_METRIC_KEYS
    assert_values_equal(actual, truth["get_performance_metrics__threshold_1.0"], f"{stem}.threshold_1.0")
    # a threshold above every reward rate leaves no engaged trial
    high = obj.get_performance_metrics(engaged_trial_reward_rate_threshold=1e9)
    assert high["engaged_trial_count"] == 0
    assert np.isnan(high["mean_dprime_engaged"])


def test_member_types(loaded):
    stem, obj, truth, manifest = loaded
    assert isinstance(obj.behavior_session_id, (int, np.integer))
    meta = obj.metadata
    assert isinstance(meta["mouse_id"], str)
    assert isinstance(meta["behavior_session_uuid"], uuid.UUID)
    assert meta["driver_line"] == sorted(meta["driver_line"])
    if stem == EXPERIMENT:
        assert type(obj.ophys_experiment_id) is int
        assert meta["imaging_plane_group"] is None and meta["imaging_plane_group_count"] == 0


def test_variant_arguments(shared_data, load_truth):
    """Non-default event-filter arguments match AllenSDK; eye-tracking arguments are forwarded (Q18 divergence)."""
    truth = load_truth(shared_data / "sdk-files" / "truth" / EXPERIMENT)
    kwargs = dict(eye_tracking_z_threshold=2.0, eye_tracking_dilation_frames=1,
                  events_filter_scale_seconds=0.12903225806451613, events_filter_n_time_steps=10)
    with vbo.BehaviorOphysExperiment.from_nwb_path(shared_data / "sdk-files" / f"{EXPERIMENT}.nwb", **kwargs) as exp:
        events = truth["variant__events"]
        assert_frames_equal(exp.events[list(events.columns)], events, "variant__events")
        default = truth["events"]["filtered_events"].iloc[0]
        assert not np.allclose(exp.events["filtered_events"].iloc[0], default), "filter arguments were ignored"

        # AllenSDK ignores the eye-tracking arguments: its "variant" equals its default output
        sdk_variant = truth["variant__eye_tracking"]
        pd.testing.assert_frame_equal(sdk_variant, truth["eye_tracking"][list(sdk_variant.columns)])
        # vbo applies them: more frames flagged with a lower threshold, and exactly the documented rule
        ours = exp.eye_tracking
        assert ours["likely_blink"].sum() > truth["eye_tracking"]["likely_blink"].sum()
        # the documented rule (format.md §8.7), written independently of vbo.derive: NaN or |z| > 2 in the eye or
        # pupil area (population SD, NaN skipped), widened by one frame on each side
        def outlier(area: pd.Series) -> pd.Series:
            return ((area - area.mean()) / area.std(ddof=0)).abs() > 2.0

        eye, pupil = ours["eye_area_raw"], ours["pupil_area_raw"]
        core = eye.isna() | pupil.isna() | outlier(eye) | outlier(pupil)
        widened = core.astype(float).rolling(3, center=True, min_periods=1).max().astype(bool)
        assert widened.sum() > core.sum() > 0  # the example exercises both the threshold and the widening
        np.testing.assert_array_equal(ours["likely_blink"].to_numpy(), widened.to_numpy())
        assert ours.loc[ours["likely_blink"], "pupil_area"].isna().all()
        np.testing.assert_array_equal(ours["timestamps"], sdk_variant["timestamps"])


def test_neuropil_traces_fix_the_sdk_bug(shared_data, load_truth):
    """Q35: AllenSDK returns the demixed traces as neuropil traces; vbo returns the stored neuropil traces."""
    path = shared_data / "sdk-files" / f"{EXPERIMENT}.nwb"
    truth = load_truth(shared_data / "sdk-files" / "truth" / EXPERIMENT)
    sdk = truth["neuropil_traces"]
    with vbo.BehaviorOphysExperiment.from_nwb_path(path) as exp:
        ours = exp.neuropil_traces
        assert list(ours.columns) == ["cell_roi_id", "neuropil_trace"]
        assert list(sdk.columns) == ["cell_roi_id", "demixed_trace"]
        pd.testing.assert_index_equal(ours.index, sdk.index)
        with h5py.File(path, "r") as f:
            stored = f["/processing/ophys/neuropil_trace/traces/data"][()].T
            rows = f["/processing/ophys/neuropil_trace/traces/rois"][()]
            roi_ids = f["/processing/ophys/image_segmentation/cell_specimen_table/id"][()][rows]
        by_roi = dict(zip(roi_ids, stored))
        for roi, trace in zip(ours["cell_roi_id"], ours["neuropil_trace"]):
            np.testing.assert_array_equal(trace, by_roi[roi])
        # and it really differs from what the SDK returned
        assert not np.allclose(np.stack(ours["neuropil_trace"]), np.stack(sdk["demixed_trace"]))
        assert_frames_equal(exp.demixed_traces, truth["demixed_traces"], "demixed_traces")


def test_legacy_methods_warn(experiment_nwb):
    with vbo.BehaviorOphysExperiment.from_nwb_path(experiment_nwb) as exp:
        for call in (exp.get_cell_specimen_ids, lambda: exp.get_cell_specimen_indices([exp.cell_specimen_table.index[3]]),
                     exp.get_dff_traces):
            with pytest.warns(np.exceptions.VisibleDeprecationWarning):
                call()
        with pytest.warns(np.exceptions.VisibleDeprecationWarning):
            timestamps, traces = exp.get_dff_traces(cell_specimen_ids=list(exp.cell_specimen_table.index[[5, 2]]))
        # AllenSDK returns the selected rows in cell-table order, not in the order asked for
        np.testing.assert_array_equal(traces, np.stack(exp.dff_traces["dff"].iloc[[2, 5]]))
        with pytest.raises(NotImplementedError):
            exp.update_targeted_imaging_depth()


def test_behavior_ophys_session_is_a_deprecated_alias(experiment_nwb):
    with pytest.warns(DeprecationWarning):
        alias = vbo.BehaviorOphysSession.from_nwb_path(experiment_nwb)
    with alias:
        assert isinstance(alias, vbo.BehaviorOphysExperiment)
        assert alias.ophys_experiment_id == 1091765022


def test_image_behaves_as_array(experiment_nwb):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with vbo.BehaviorOphysExperiment.from_nwb_path(experiment_nwb) as exp:
        image = exp.max_projection
        assert np.asarray(image) is image.data
        fig, ax = plt.subplots()
        artist = ax.imshow(image)
        np.testing.assert_array_equal(artist.get_array(), image.data)
        plt.close(fig)
        data, spacing, unit = image
        assert unit == "mm" and spacing == image.spacing
        # the segmentation mask is the union of the ROI masks, even where ROIs overlap
        overlap = np.sum(np.stack(exp.roi_masks["roi_mask"]), axis=0)
        assert overlap.max() >= 2
        np.testing.assert_array_equal(exp.segmentation_mask_image.data, (overlap > 0).astype(np.int64))


def test_running_acquisition(session_nwb):
    with vbo.BehaviorSession.from_nwb_path(session_nwb) as session:
        raw = session.running_acquisition
        assert list(raw.columns) == ["dx", "v_in", "v_sig"]
        assert raw.index.name == "timestamps"
        assert len(raw) == len(session.stimulus_timestamps)
        assert "running_acquisition" not in session.list_data_attributes_and_methods()
