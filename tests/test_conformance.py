"""Acceptance: every member of vbo's session objects equals what AllenSDK 2.16.2 returned on the same file.

Exact for integers, strings, booleans, ids and indexes; floats within 1e-9 relative; dtypes and column
order checked. Deliberate divergences (spec/api.md §9) are asserted as divergences.
"""

from __future__ import annotations

import datetime as dt
import uuid
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest

import vbo
from vbo.values import Coordinates, Image

RTOL = 1e-9
EXPERIMENT = "behavior_ophys_experiment_1091765022"
SESSION = "behavior_session_1089912433"
# stimulus_presentations: AllenSDK orders these through a Python set; vbo fixes this order (Q23)
PRESENTATION_FIXED = 16
PRESENTATION_TAIL = ["active", "stimulus_name", "is_sham_change"]
# members whose AllenSDK value is a bug that vbo fixes (Q35)
DIVERGENT = {"neuropil_traces"}


def assert_values_equal(actual, expected, where: str) -> None:
    """Recursive comparison with the tolerance and type rules of the acceptance criteria."""
    if isinstance(expected, pd.DataFrame):
        assert isinstance(actual, pd.DataFrame), f"{where}: {type(actual)} is not a DataFrame"
        assert_frames_equal(actual, expected, where)
    elif isinstance(expected, dict) and set(expected) == {"data", "spacing", "unit"}:
        assert isinstance(actual, Image), f"{where}: {type(actual)} is not an Image"
        assert_values_equal(actual.data, expected["data"], f"{where}.data")
        assert list(actual.spacing) == pytest.approx(expected["spacing"], rel=RTOL), where
        assert actual.unit == expected["unit"], where
        np.testing.assert_array_equal(np.asarray(actual), expected["data"])
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {type(actual)} is not a dict"
        assert list(actual) == list(expected), f"{where}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_values_equal(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_values_equal(a, e, f"{where}[{i}]")
    elif isinstance(expected, np.ndarray):
        actual = np.asarray(actual)
        assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != {expected.shape}"
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=0, equal_nan=True, err_msg=where)
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=where)
    elif isinstance(expected, list):
        assert list(actual) == expected if not any(isinstance(v, float) for v in expected) \
            else list(actual) == pytest.approx(expected, rel=RTOL, nan_ok=True), f"{where}: {actual} != {expected}"
        if isinstance(actual, Coordinates):
            assert (actual.x, actual.y, actual.z) == tuple(actual)
        else:
            assert isinstance(actual, list), f"{where}: {type(actual)} is not a list"
    elif isinstance(expected, float):
        assert isinstance(actual, (float, np.floating)), f"{where}: {type(actual)} is not a float"
        assert type(actual) is type(expected), f"{where}: type {type(actual)} != {type(expected)}"
        if np.isnan(expected):
            assert np.isnan(actual), where
        else:
            assert actual == pytest.approx(expected, rel=RTOL), f"{where}: {actual} != {expected}"
    elif isinstance(expected, dt.datetime):
        assert isinstance(actual, dt.datetime) and actual.tzinfo is not None, where
        assert actual == expected, f"{where}: {actual} != {expected}"
        assert actual.utcoffset() == dt.timedelta(0), f"{where}: not UTC (Q32)"
    else:
        assert type(actual) is type(expected), f"{where}: type {type(actual)} != {type(expected)}"
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def assert_series_equal(actual: pd.Series, expected: pd.Series, where: str) -> None:
    assert str(actual.dtype) == str(expected.dtype), f"{where}: dtype {actual.dtype} != {expected.dtype}"
    if expected.dtype == object:
        for i, (a, e) in enumerate(zip(actual.to_list(), expected.to_list())):
            if isinstance(e, np.ndarray):
                assert_values_equal(a, e, f"{where}[{i}]")
            elif e is None or (isinstance(e, float) and np.isnan(e)):
                assert a is None if e is None else (isinstance(a, float) and np.isnan(a)), f"{where}[{i}]: {a!r} != {e!r}"
            else:
                assert type(a) is type(e) and a == e, f"{where}[{i}]: {a!r} != {e!r}"
    elif expected.dtype.kind == "f":
        np.testing.assert_allclose(actual.to_numpy(), expected.to_numpy(), rtol=RTOL, atol=0, equal_nan=True,
                                   err_msg=where)
    else:
        pd.testing.assert_series_equal(actual, expected, check_names=False, obj=where)


def assert_frames_equal(actual: pd.DataFrame, expected: pd.DataFrame, where: str) -> None:
    assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != {expected.shape}"
    assert actual.index.name == expected.index.name, f"{where}: index name {actual.index.name!r}"
    assert str(actual.index.dtype) == str(expected.index.dtype), f"{where}: index dtype {actual.index.dtype}"
    np.testing.assert_array_equal(actual.index.to_numpy(), expected.index.to_numpy(), err_msg=f"{where}.index")
    # the SDK names some frames through a plain attribute (stimulus_templates: the image set)
    assert vars(actual).get("name") == vars(expected).get("name"), f"{where}: DataFrame.name"
    if where.endswith("stimulus_presentations"):
        fixed = list(expected.columns[:PRESENTATION_FIXED])
        assert list(actual.columns[:PRESENTATION_FIXED]) == fixed, where
        assert set(actual.columns) == set(expected.columns), where
        assert list(actual.columns[PRESENTATION_FIXED:PRESENTATION_FIXED + 3]) == PRESENTATION_TAIL, where
    else:
        assert list(actual.columns) == list(expected.columns), f"{where}: columns {list(actual.columns)}"
    for column in expected.columns:
        assert_series_equal(actual[column].reset_index(drop=True), expected[column].reset_index(drop=True),
                            f"{where}.{column}")


def call_member(obj, name: str, truth_entry: dict):
    """Read a property, or call a method the way the truth was recorded."""
    value = getattr(obj, name)
    if not callable(value):
        return value
    if name == "get_cell_specimen_indices":
        return value(cell_specimen_ids=obj.cell_specimen_table.index.values)
    return value()


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
    from vbo.derive import likely_blinks

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
        expected = likely_blinks(ours["eye_area_raw"].to_numpy(), ours["pupil_area_raw"].to_numpy(), 2.0, 1)
        np.testing.assert_array_equal(ours["likely_blink"].to_numpy(), expected)
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
        np.testing.assert_array_equal(traces, np.stack(exp.dff_traces["dff"].iloc[[5, 2]]))
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
