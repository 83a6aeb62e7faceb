"""Edge-case files written as AllenSDK 2.16.2's writer writes them: vbo returns AllenSDK's recorded answer.

Each folder of ``tests/data/allensdk-truth/`` holds one small NWB file (``tests/allensdk_cases.py`` says how
it was made and what it exercises) and ``truth/<stem>/``, what AllenSDK 2.16.2 returned for every member
(``../shared/oracle/dump_allen_truth.py``). Every member is compared with the rules of
``test_conformance.py``; where AllenSDK raised, vbo must raise the same exception type, except for the
deliberate differences of ``docs/differences.md`` listed in :data:`DELIBERATE`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import vbo
from truth_compare import assert_frames_equal, assert_values_equal, call_member

CASES_DIR = Path(__file__).resolve().parent / "data" / "allensdk-truth"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "truth").is_dir())

# (case, member) -> why vbo answers where AllenSDK 2.16.2 raised or returned something else (differences.md)
DELIBERATE = {
    ("passive_nolick_experiment", "get_dff_traces"):
        "AllenSDK joins on the NaN ids of two unmatched ROIs, duplicates rows and fails its own assertion",
    ("training_1_gratings_aborted_only", "get_performance_metrics"):
        "AllenSDK's rolling performance fails on a session without go or catch trials",
    ("training_1_gratings_aborted_only", "get_rolling_performance_df"): "same",
    ("training_1_gratings_aborted_only", "get_performance_metrics__threshold_1.0"): "same",
    ("training_4_one_lick_per_trial", "trials"):
        "lick_times stored as a plain column: AllenSDK returns floats, vbo one-lick arrays (Q26)",
    ("training_4_one_lick_per_trial", "get_performance_metrics"):
        "AllenSDK's metrics iterate the float lick_times and fail",
    ("training_4_one_lick_per_trial", "get_reward_rate"): "same",
    ("training_4_one_lick_per_trial", "get_rolling_performance_df"): "same",
    ("training_4_one_lick_per_trial", "get_performance_metrics__threshold_1.0"): "same",
}
# the second load with non-default arguments that the oracle records for experiments
VARIANT_ARGUMENTS = dict(eye_tracking_z_threshold=2.0, eye_tracking_dilation_frames=1,
                         events_filter_scale_seconds=4.0 / 31.0, events_filter_n_time_steps=10)


def _stem(case: str) -> str:
    return next((CASES_DIR / case).glob("*.nwb")).stem


def _open(path: Path, **kwargs):
    cls = vbo.BehaviorOphysExperiment if path.stem.startswith("behavior_ophys_experiment") else vbo.BehaviorSession
    return cls.from_nwb_path(path, **kwargs)


def _load(name: str, load_truth):
    stem = _stem(name)
    truth_dir = CASES_DIR / name / "truth" / stem
    manifest = json.loads((truth_dir / "manifest.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = load_truth(truth_dir)
    path = CASES_DIR / name / f"{stem}.nwb"
    return name, path, _open(path), truth, manifest


@pytest.fixture(scope="module", params=CASES)
def case(request, load_truth):
    loaded = _load(request.param, load_truth)
    yield loaded
    loaded[2].close()


@pytest.fixture(scope="module", params=sorted({name for name, _ in DELIBERATE}))
def deliberate_case(request, load_truth):
    loaded = _load(request.param, load_truth)
    yield loaded
    loaded[2].close()


def _raised(skipped: str) -> str | None:
    """The exception type AllenSDK raised, from the truth's ``skipped`` text (None: not called)."""
    return skipped.split()[1].rstrip(":") if skipped.startswith("raised ") else None


def _extra_value(path: Path, obj, name: str, expected):
    """vbo's value for one of the oracle's extra entries: a non-default threshold, or a second load with
    :data:`VARIANT_ARGUMENTS` of which the recorded columns are kept."""
    if name == "get_performance_metrics__threshold_1.0":
        return obj.get_performance_metrics(engaged_trial_reward_rate_threshold=1.0)
    with _open(path, **VARIANT_ARGUMENTS) as variant:
        return getattr(variant, name.removeprefix("variant__"))[list(expected.columns)]


def _check_member(name: str, actual, expected, path: Path, where: str) -> None:
    # Q35: vbo returns the file's neuropil traces where AllenSDK returns the demixed ones (None in v1.0.x files)
    if name == "neuropil_traces" and expected is not None:
        with h5py.File(path, "r") as f:
            stored = f["/processing/ophys/neuropil_trace/traces/data"][()].T
            roi_ids = f["/processing/ophys/image_segmentation/cell_specimen_table/id"][()][
                f["/processing/ophys/neuropil_trace/traces/rois"][()]]
        by_roi = dict(zip(roi_ids.tolist(), stored))
        expected = expected.rename(columns={"demixed_trace": "neuropil_trace"})
        expected["neuropil_trace"] = pd.Series([by_roi[r] for r in expected["cell_roi_id"]], index=expected.index,
                                               dtype=object)
    if name == "variant__eye_tracking":  # Q18: AllenSDK ignores the arguments, vbo applies them
        expected = expected[["timestamps"]]
        actual = actual[["timestamps"]]
    assert_values_equal(actual, expected, where)


def test_every_member_matches_allensdk(case):
    name, path, obj, truth, manifest = case
    assert obj.list_data_attributes_and_methods() == manifest["list_data_attributes_and_methods"]
    failures, checked = [], set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for member, entry in {**manifest["entries"], **manifest.get("extra_entries", {})}.items():
            where = f"{name}.{member}"
            if (name, member) in DELIBERATE:
                continue
            try:
                if member in manifest["entries"]:
                    actual = call_member(obj, member, entry)
                else:
                    actual = _extra_value(path, obj, member, truth[member])
                _check_member(member, actual, truth[member], path, where)
            except AssertionError as err:
                failures.append(str(err).splitlines()[0])
            except Exception as err:  # noqa: BLE001 - a raising member is a failure, with its text
                failures.append(f"{where}: raised {type(err).__name__}: {err}")
            checked.add(member)
        for member, why in manifest["skipped"].items():
            expected_error = _raised(why)
            if expected_error is None or (name, member.replace("(1.0)", "__threshold_1.0")) in DELIBERATE:
                continue
            try:
                call_member(obj, member, {})
                failures.append(f"{name}.{member}: AllenSDK raised {expected_error}, vbo did not")
            except Exception as err:  # noqa: BLE001
                # the same class, or a typed vbo error that is one (vbo.errors.InvalidDataError is a ValueError)
                if expected_error not in {cls.__name__ for cls in type(err).__mro__}:
                    failures.append(f"{name}.{member}: raised {type(err).__name__}, AllenSDK {expected_error}")
            checked.add(member)
    assert not failures, "\n".join(failures)
    assert checked, name


def test_deliberate_differences_are_sound(deliberate_case):
    """Where vbo answers instead of failing like AllenSDK, the answer is the one the rest of vbo implies."""
    name, path, obj, truth, manifest = deliberate_case
    members = {m for (c, m) in DELIBERATE if c == name}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "get_dff_traces" in members:
            timestamps, traces = obj.get_dff_traces()
            np.testing.assert_array_equal(timestamps, truth["ophys_timestamps"])
            np.testing.assert_array_equal(traces, np.stack(truth["dff_traces"]["dff"].to_list()))
        if "trials" in members:
            trials, sdk = obj.trials, truth["trials"]
            assert sdk["lick_times"].dtype == np.float64  # AllenSDK: the plain column, one float per trial
            assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in trials["lick_times"])
            np.testing.assert_array_equal(np.concatenate(trials["lick_times"].to_list()), sdk["lick_times"])
            others = [c for c in sdk.columns if c != "lick_times"]
            assert list(trials.columns) == list(sdk.columns)
            assert_frames_equal(trials[others], sdk[others], f"{name}.trials")
        if "get_performance_metrics" in members:
            metrics = obj.get_performance_metrics()
            assert metrics["trial_count"] == len(obj.trials)
            rolling = obj.get_rolling_performance_df()
            assert rolling.index.name == "trials_id" and len(rolling) == len(obj.trials)
            if "get_reward_rate" not in members:  # AllenSDK's reward rate worked: the same one is used
                np.testing.assert_array_equal(rolling["reward_rate"].to_numpy(), truth["get_reward_rate"])
            if not (obj.trials["go"] | obj.trials["catch"]).any():
                assert metrics["go_trial_count"] == metrics["catch_trial_count"] == 0
                assert np.isnan(metrics["mean_dprime"]) and rolling["rolling_dprime"].isna().all()


# --- the quirks these files pin: they must really be in the files --------------------------------------


def _trials_group(case: str) -> h5py.Group:
    return h5py.File(CASES_DIR / case / f"{_stem(case)}.nwb", "r")["/intervals/trials"]


@pytest.mark.parametrize("case", ["passive_nolick_experiment", "passive_nolick_session_retake",
                                  "mesoscope_passive_all_unmatched"])
def test_no_lick_files_carry_the_sdk_encoding(case):
    """docs/format.md §7.6: no lick in any trial → ``lick_times`` is one empty string, every index entry 0;
    vbo reads every trial as an empty object array, as AllenSDK does."""
    trials = _trials_group(case)
    assert h5py.check_string_dtype(trials["lick_times"].dtype) is not None
    assert trials["lick_times"].asstr()[()].tolist() == [""]
    assert not trials["lick_times_index"][()].any()
    with _open(CASES_DIR / case / f"{_stem(case)}.nwb") as session:
        cells = session.trials["lick_times"]
        assert len(cells) == len(trials["id"])
        assert all(isinstance(v, np.ndarray) and v.size == 0 and v.dtype == object for v in cells)
        assert session.get_performance_metrics()["trial_count"] == len(cells)


@pytest.mark.parametrize(("case", "dtype", "n_stored", "n_missing"), [
    ("passive_nolick_experiment", "float64", 2, 2),  # some unmatched: float64 with NaN (Q38)
    ("mesoscope_active_experiment", "float64", 1, 1),
    ("mesoscope_passive_all_unmatched", "object", 4, 4),  # all unmatched: object holding None
    ("single_unmatched_roi", "object", 1, 1),
    ("single_roi_no_eye_tracking", "int64", 0, 0),  # all matched: int64
    # the only unmatched ROI is invalid and left out: the index stays float64 (dtype inferred before filtering)
    ("v1_0_events_subset_invalid_roi", "float64", 1, 0),
])
def test_cell_index_dtype_follows_the_unmatched_rois(case, dtype, n_stored, n_missing):
    path = CASES_DIR / case / f"{_stem(case)}.nwb"
    with h5py.File(path, "r") as f:
        stored = f["/processing/ophys/image_segmentation/cell_specimen_table/cell_specimen_id"][()]
    assert (stored == -1).sum() == n_stored
    with warnings.catch_warnings(), vbo.BehaviorOphysExperiment.from_nwb_path(path) as exp:
        warnings.simplefilter("ignore")
        for member in ("cell_specimen_table", "roi_masks", "dff_traces", "corrected_fluorescence_traces",
                       "demixed_traces", "neuropil_traces", "events"):
            frame = getattr(exp, member)
            if frame is None:  # files of release v1.0.x: no demixed / neuropil traces
                continue
            index = frame.index
            assert str(index.dtype) == dtype and index.name == "cell_specimen_id", member
            assert int(pd.isna(index).sum()) == n_missing, member
            if dtype == "object":
                assert all(v is None for v in index), member
