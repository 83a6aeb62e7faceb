"""The NWB writer (``vbo.nwb.write``): the released layout, exactly, from ``vbo.nwb.content``.

The two AllenSDK-written files are read with vbo, turned into content (``content_from_file.py``), written
again and compared: every member read back equals AllenSDK's answers, the HDF5 tree (paths, kinds, dtypes,
neurodata types, namespaces, links, attributes) is the shared file's, and pynwb validates the result.
Variants change the content (passive, no eye tracking, Multiscope, events on a subset of ROIs, one lick per
trial) and a failing write leaves nothing at the target path.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest

import vbo
from vbo.nwb import layout

from conftest import EXPERIMENT_NWB, SESSION_NWB
from content_from_file import content_from_file
from test_conformance import DIVERGENT, assert_values_equal, call_member

pynwb = pytest.importorskip("pynwb")
from vbo.nwb.write import ContentError, write_nwb  # noqa: E402  (needs pynwb at write time)

EXPERIMENT = "behavior_ophys_experiment_1091765022"
SESSION = "behavior_session_1089912433"
SOURCES = {EXPERIMENT: EXPERIMENT_NWB, SESSION: SESSION_NWB}
# stored values that differ on purpose: vbo's content holds flashes_since_change as recomputed on read
# (docs/format.md §8.3), the SDK stored -99 outside image blocks; every reader recomputes it
RECOMPUTED_ON_READ = ("flashes_since_change",)
NOT_LAYOUT = ("/specifications", "/file_create_date")


@pytest.fixture(scope="module")
def contents(shared_data):
    return {stem: content_from_file(path) for stem, path in SOURCES.items()}


@pytest.fixture(scope="module")
def written(contents, tmp_path_factory):
    folder = tmp_path_factory.mktemp("written")
    return {stem: write_nwb(content, folder / f"{stem}.nwb") for stem, content in contents.items()}


def _open(path):
    with h5py.File(path, "r") as h5:
        is_experiment = layout.OPHYS in h5
    cls = vbo.BehaviorOphysExperiment if is_experiment else vbo.BehaviorSession
    return cls.from_nwb_path(path)


# --- round trip: every member equals AllenSDK's answer ------------------------------------------

@pytest.mark.parametrize("stem", [EXPERIMENT, SESSION])
def test_round_trip_matches_allensdk(stem, written, shared_data, load_truth):
    truth_dir = shared_data / "sdk-files" / "truth" / stem
    truth = load_truth(truth_dir)
    manifest = json.loads((truth_dir / "manifest.json").read_text())
    checked = []
    with _open(written[stem]) as obj, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert obj.list_data_attributes_and_methods() == manifest["list_data_attributes_and_methods"]
        for name, entry in manifest["entries"].items():
            if name in DIVERGENT:
                continue
            assert_values_equal(call_member(obj, name, entry), truth[name], f"written {stem}.{name}")
            checked.append(name)
        assert_values_equal(obj.get_performance_metrics(engaged_trial_reward_rate_threshold=1.0),
                            truth["get_performance_metrics__threshold_1.0"], f"written {stem}.threshold_1.0")
        assert_values_equal(obj.running_acquisition, _open(SOURCES[stem]).running_acquisition,
                            f"written {stem}.running_acquisition")
        if stem == EXPERIMENT:  # the member AllenSDK gets wrong: equal to vbo on the original file
            with _open(SOURCES[stem]) as original:
                assert_values_equal(obj.neuropil_traces, original.neuropil_traces, "written neuropil_traces")
    members = set(manifest["list_data_attributes_and_methods"])
    assert set(checked) | (DIVERGENT & members) | set(manifest.get("skipped", {})) == members


# --- layout: the HDF5 tree of the shared file, exactly ------------------------------------------

def _attr(h5: h5py.File, obj, key: str):
    value = obj.attrs[key]
    kind = obj.attrs.get_id(key).dtype
    if isinstance(value, h5py.Reference):
        return str(kind), ("ref", h5[value].name)
    if isinstance(value, bytes):
        value = value.decode()
    elif isinstance(value, np.ndarray):
        value = tuple(v.decode() if isinstance(v, bytes) else v for v in value.tolist())
    elif isinstance(value, np.generic):
        value = value.item()
    return str(kind), value


def _tree(path) -> dict[str, tuple]:
    """path -> (kind, dtype/link target, shape, {attribute: (dtype, value)}) for every object and link."""
    out: dict[str, tuple] = {}
    with h5py.File(path, "r") as h5:
        out["/"] = ("G", None, None, {k: _attr(h5, h5, k) for k in h5.attrs
                                       if k not in ("object_id", layout.NWB_VERSION_ATTR)})

        def walk(group):
            for key in group:
                p = f"{group.name.rstrip('/')}/{key}"
                if p.startswith(NOT_LAYOUT):
                    continue
                link = group.get(key, getlink=True)
                if isinstance(link, h5py.SoftLink):
                    out[p] = ("L", link.path, None, {})
                    continue
                if isinstance(link, h5py.ExternalLink):
                    out[p] = ("X", link.path, None, {})
                    continue
                obj = group[key]
                attrs = {k: _attr(h5, obj, k) for k in obj.attrs if k != "object_id"}
                if isinstance(obj, h5py.Group):
                    out[p] = ("G", None, None, attrs)
                    walk(obj)
                else:
                    out[p] = ("D", str(obj.dtype), obj.shape, attrs)

        walk(h5)
    return out


@pytest.mark.parametrize("stem", [EXPERIMENT, SESSION])
def test_layout_is_the_shared_files(stem, written):
    """Same paths, kinds, dtypes, shapes, soft-link targets, attributes (neurodata_type, namespace,
    colnames order, descriptions, units, ...) and nothing more."""
    expected, actual = _tree(SOURCES[stem]), _tree(written[stem])
    assert sorted(set(expected) - set(actual)) == [], "paths missing from the written file"
    assert sorted(set(actual) - set(expected)) == [], "paths the shared file does not have"
    for path, (kind, detail, shape, attrs) in expected.items():
        got = actual[path]
        assert got[:3] == (kind, detail, shape), f"{path}: {got[:3]} != {(kind, detail, shape)}"
        assert sorted(got[3]) == sorted(attrs), f"{path}: attributes {sorted(got[3])} != {sorted(attrs)}"
        for key, (dtype, value) in attrs.items():
            got_dtype, got_value = got[3][key]
            assert got_dtype == dtype, f"{path}@{key}: dtype {got_dtype} != {dtype}"
            same = (got_value == value) or (isinstance(value, float) and np.isnan(value) and np.isnan(got_value))
            assert same, f"{path}@{key}: {got_value!r} != {value!r}"


def _storage(path) -> dict[str, tuple]:
    """path -> (chunk shape, filter, level, shuffle, maxshape) of every dataset outside NOT_LAYOUT."""
    out = {}
    with h5py.File(path, "r") as h5:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not f"/{name}".startswith(NOT_LAYOUT):
                out[name] = (obj.chunks, obj.compression, obj.compression_opts, obj.shuffle, obj.maxshape)
        h5.visititems(visit)
    return out


@pytest.mark.parametrize("stem", [EXPERIMENT, SESSION])
def test_storage_is_the_shared_files(stem, written):
    """Each dataset stored as AllenSDK's writer stored it: table columns contiguous with a fixed shape (not
    hdmf's expandable chunks), images never compressed, the same gzip datasets in the same chunks."""
    expected, actual = _storage(SOURCES[stem]), _storage(written[stem])
    assert sorted(expected) == sorted(actual)
    differ = {path: (expected[path], actual[path]) for path in expected if expected[path] != actual[path]}
    assert differ == {}
    assert any(chunks is None for chunks, *_ in expected.values()), "contiguous datasets are compared"
    assert any(level == 4 for _, _, level, *_ in expected.values()), "gzip datasets are compared"


@pytest.mark.parametrize("stem", [EXPERIMENT, SESSION])
def test_stored_values_are_the_shared_files(stem, written):
    """Built from what vbo returns, the written datasets hold the shared file's values."""
    with h5py.File(SOURCES[stem], "r") as a, h5py.File(written[stem], "r") as b:
        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset) or f"/{name}".startswith(NOT_LAYOUT):
                return
            if name.rsplit("/", 1)[-1] in RECOMPUTED_ON_READ:
                return
            x, y = obj[()], b[name][()]
            if obj.dtype.names:  # presentation `timeseries` references: (idx_start, count, target)
                for field in ("idx_start", "count"):
                    np.testing.assert_array_equal(y[field], x[field], err_msg=name)
                assert {b[r].name for r in y["timeseries"]} <= {"/processing/stimulus/timestamps"}
            elif obj.dtype.kind == "f":
                np.testing.assert_array_equal(y, x, err_msg=name)  # NaN == NaN here
            else:
                assert np.array_equal(np.asarray(y), np.asarray(x)), name

        a.visititems(visit)


@pytest.mark.parametrize("stem", [EXPERIMENT, SESSION])
def test_pynwb_validates_and_reads(stem, written):
    assert pynwb.validate(path=str(written[stem])) == []
    with pynwb.NWBHDF5IO(str(written[stem]), "r", load_namespaces=True) as io, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Device@manufacturer, as released
        nwb = io.read()
        assert type(nwb.subject).__name__ == "BehaviorSubject"
        assert list(nwb.subject.driver_line) == ["Camk2a-tTA", "Slc17a7-IRES2-Cre"]
        assert type(nwb.lab_meta_data[layout.TASK_PARAMETERS_NAME]).__name__ == "BehaviorTaskParameters"
        template = next(iter(nwb.stimulus_template.values()))
        assert type(template).__name__ == "StimulusTemplate" and template.unwarped.shape[0] == 8
        if stem == EXPERIMENT:
            events = nwb.processing[layout.OPHYS_MODULE][layout.EVENTS_NAME]
            assert type(events).__name__ == "OphysEventDetection" and len(events.lambdas) == 120
            eye = nwb.acquisition[layout.EYE_TRACKING_NAME]
            assert type(eye).__name__ == "EllipseEyeTracking"
            assert eye.pupil_tracking.timestamps.shape == eye.eye_tracking.timestamps.shape


def test_no_global_registration(written):
    """Writing loaded the extensions into a private type map only, not pynwb's global one."""
    for namespace in layout.EXTENSION_NAMESPACES:
        assert namespace not in pynwb.available_namespaces()
    code = ("import sys, vbo, vbo.nwb.write, vbo.nwb.content; "
            "assert 'pynwb' not in sys.modules and 'hdmf' not in sys.modules, 'import side effect'; "
            "s = vbo.BehaviorSession.from_nwb_path(sys.argv[1]); s.trials; s.stimulus_presentations; "
            "assert 'pynwb' not in sys.modules, 'the reader imported pynwb'")
    subprocess.run([sys.executable, "-c", code, str(written[SESSION])], check=True)


_OPHYS = f"/processing/{layout.OPHYS_MODULE}"
_CORRECTED = f"{_OPHYS}/{layout.CORRECTED_FLUORESCENCE_INTERFACE}"
# Each full path of the layout and the names it is joined from.
LAYOUT_PATHS = [
    (layout.RUNNING_SPEED, "/processing", layout.RUNNING_MODULE, layout.RUNNING_SPEED_SERIES),
    (layout.RAW_RUNNING_SPEED, "/processing", layout.RUNNING_MODULE, layout.RAW_RUNNING_SPEED_SERIES),
    (layout.RUNNING_DX, "/processing", layout.RUNNING_MODULE, layout.RUNNING_DX_SERIES),
    (layout.STIMULUS_TIMESTAMPS, "/processing", layout.STIMULUS_MODULE, layout.STIMULUS_TIMESTAMPS_SERIES,
     layout.TIMESTAMPS),
    (layout.LICKS, "/processing", layout.LICKING_MODULE, layout.LICKS_SERIES),
    (layout.REWARD_VOLUME, "/processing", layout.REWARDS_MODULE, layout.REWARD_VOLUME_SERIES),
    (layout.REWARD_AUTOREWARDED, "/processing", layout.REWARDS_MODULE, layout.REWARD_AUTOREWARDED_SERIES),
    (layout.V_IN, layout.ACQUISITION, layout.V_IN_SERIES),
    (layout.EYE_TRACKING, layout.ACQUISITION, layout.EYE_TRACKING_NAME),
    (layout.EYE_RIG_GEOMETRY, "/processing", layout.EYE_RIG_MODULE, layout.EYE_RIG_NAME),
    (layout.TRIALS, layout.INTERVALS, layout.TRIALS_TABLE),
    (layout.OPHYS, _OPHYS),
    (layout.CELL_TABLE, _OPHYS, layout.IMAGE_SEGMENTATION, layout.CELL_TABLE_NAME),
    (layout.DFF, _OPHYS, layout.DFF_INTERFACE, layout.TRACES_SERIES),
    (layout.CORRECTED_FLUORESCENCE_RMSE, _CORRECTED, layout.RMSE_SERIES),
    (layout.DEMIXED, _OPHYS, layout.DEMIXED_INTERFACE, layout.TRACES_SERIES),
    (layout.NEUROPIL, _OPHYS, layout.NEUROPIL_INTERFACE, layout.TRACES_SERIES),
    (layout.EVENTS, _OPHYS, layout.EVENTS_NAME),
    (layout.MOTION_X, _OPHYS, layout.MOTION_X_SERIES, layout.DATA),
    (layout.AVERAGE_PROJECTION, _OPHYS, layout.IMAGES_INTERFACE, layout.AVERAGE_PROJECTION_NAME),
    (layout.STORED_SEGMENTATION_MASK, _OPHYS, layout.IMAGES_INTERFACE, layout.SEGMENTATION_MASK_NAME),
    (layout.EMISSION_LAMBDA, "/general/optophysiology", layout.IMAGING_PLANE_NAME, layout.OPTICAL_CHANNEL_NAME,
     "emission_lambda"),
    (layout.METADATA, "/general", layout.METADATA_NAME),
    (layout.TASK_PARAMETERS, "/general", layout.TASK_PARAMETERS_NAME),
]


@pytest.mark.parametrize("path,parts", [(row[0], row[1:]) for row in LAYOUT_PATHS],
                         ids=[row[0] for row in LAYOUT_PATHS])
def test_layout_names_agree_with_paths(path, parts):
    assert "/".join(parts) == path


# --- variants through content -------------------------------------------------------------------

def _small(content):
    """A cheap copy: tiny templates and (for experiments) the first 10 ROIs."""
    content = copy.copy(content)
    behavior = content.behavior if hasattr(content, "behavior") else content
    behavior = dataclasses.replace(behavior, templates=[
        dataclasses.replace(t, warped=t.warped[:, :12, :20], unwarped=t.unwarped[:, :12, :20])
        for t in behavior.templates])
    if not hasattr(content, "behavior"):
        return behavior
    k, n = 10, 3000  # ROIs, ophys frames
    keep = np.flatnonzero(np.asarray(content.event_rows) < k)
    return dataclasses.replace(
        content, behavior=behavior, rois=content.rois.iloc[:k].reset_index(drop=True),
        roi_masks=content.roi_masks[:k], ophys_timestamps=content.ophys_timestamps[:n], dff=content.dff[:n, :k],
        corrected_fluorescence=content.corrected_fluorescence[:n, :k], neuropil=content.neuropil[:n, :k],
        demixed=content.demixed[:n, :k], r=content.r[:k], rmse=content.rmse[:k], events=content.events[:n, keep],
        event_lambdas=content.event_lambdas[keep], event_noise_stds=content.event_noise_stds[keep],
        event_rows=content.event_rows[keep], motion_x=content.motion_x[:n], motion_y=content.motion_y[:n])


_VALIDATORS: dict = {}


def _specifications(path) -> dict[str, bytes]:
    with h5py.File(path, "r") as h5:
        out = {}
        h5["specifications"].visititems(lambda name, obj: out.__setitem__(name, bytes(obj[()]))
                                        if isinstance(obj, h5py.Dataset) else None)
        return out


def _validate(path) -> list:
    """What ``pynwb.validate(path=...)`` does, with the cached namespaces loaded once per test module
    (loading them is most of its time); every file checked caches exactly the same specifications."""
    from hdmf.build import BuildManager, TypeMap
    from hdmf.validate import ValidatorMap
    from pynwb.validation import get_cached_namespaces_to_validate

    if not _VALIDATORS:
        namespaces, manager, _ = get_cached_namespaces_to_validate(path=str(path))
        catalog = manager.namespace_catalog
        _VALIDATORS.update(specs=_specifications(path), catalog=catalog,
                           maps=[ValidatorMap(catalog.get_namespace(ns)) for ns in namespaces])
    assert _specifications(path) == _VALIDATORS["specs"]
    with pynwb.NWBHDF5IO(str(path), "r", manager=BuildManager(TypeMap(namespaces=_VALIDATORS["catalog"]))) as io:
        builder = io.read_builder()
        return [error for validator in _VALIDATORS["maps"] for error in validator.validate(builder)]


def _write_and_validate(content, path):
    write_nwb(content, path)
    assert _validate(path) == []
    return path


def test_passive_session(contents, tmp_path):
    content = dataclasses.replace(_small(contents[SESSION]), licks=None, rewards=None)
    trials = content.trials.copy()
    trials["lick_times"] = [np.zeros(0) for _ in range(len(trials))]  # no lick at all: empty ragged column
    content = dataclasses.replace(content, trials=trials)
    path = _write_and_validate(content, tmp_path / "passive.nwb")
    with h5py.File(path, "r") as h5:
        assert "/processing/licking" not in h5 and "/processing/rewards" not in h5
        # as the SDK's writer stores it (docs/format.md §7.6): flat data one empty string, every index entry 0
        assert list(h5[f"{layout.TRIALS}/lick_times"][()]) == [b""]
        index = h5[f"{layout.TRIALS}/lick_times_index"][()]
        assert len(index) == len(content.trials) and (index == 0).all()
    with vbo.BehaviorSession.from_nwb_path(path) as session:
        assert list(session.licks.columns) == ["timestamps", "frame"] and session.licks.empty
        assert list(session.rewards.columns) == ["volume", "timestamps", "auto_rewarded"] and session.rewards.empty
        assert all(len(x) == 0 for x in session.trials["lick_times"])
        assert_values_equal(session.stimulus_presentations, _open(SESSION_NWB).stimulus_presentations,
                            "passive.stimulus_presentations")


def test_one_lick_per_trial_is_still_ragged(contents, tmp_path):
    content = _small(contents[SESSION])
    trials = content.trials.copy()
    trials["lick_times"] = [np.array([t + 0.5]) for t in trials["start_time"]]
    start = content.session_start_time  # a naive start time is written as UTC
    content = dataclasses.replace(content, trials=trials, session_start_time=start.replace(tzinfo=None))
    path = _write_and_validate(content, tmp_path / "one_lick.nwb")
    with h5py.File(path, "r") as h5:
        index = h5[f"{layout.TRIALS}/lick_times_index"][()]
        np.testing.assert_array_equal(index, np.arange(1, len(trials) + 1))
        assert index.dtype == np.uint8
    with vbo.BehaviorSession.from_nwb_path(path) as session:
        assert session.metadata["date_of_acquisition"] == start
        for got, expected in zip(session.trials["lick_times"], trials["lick_times"]):
            np.testing.assert_array_equal(got, expected)


def test_experiment_without_eye_tracking(contents, tmp_path):
    content = _small(contents[EXPERIMENT])
    behavior = dataclasses.replace(content.behavior, eye_tracking=None, rig_geometry=None)
    path = _write_and_validate(dataclasses.replace(content, behavior=behavior), tmp_path / "no_eye.nwb")
    with h5py.File(path, "r") as h5:
        assert layout.EYE_TRACKING not in h5 and f"/processing/{layout.EYE_RIG_MODULE}" not in h5
    with vbo.BehaviorOphysExperiment.from_nwb_path(path) as exp:
        with pytest.warns(UserWarning, match="no eye tracking"):
            assert exp.eye_tracking.empty
        assert exp.eye_tracking_rig_geometry == {}
        assert len(exp.dff_traces) == 10


def test_multiplane_metadata(contents, tmp_path):
    content = _small(contents[EXPERIMENT])
    metadata = dict(content.behavior.metadata, equipment_name="MESO.1", imaging_plane_group=2,
                    imaging_plane_group_count=4)
    behavior = dataclasses.replace(content.behavior, metadata=metadata)
    path = _write_and_validate(dataclasses.replace(content, behavior=behavior), tmp_path / "meso.nwb")
    with h5py.File(path, "r") as h5:
        device = h5[f"{layout.DEVICES}/MESO.1"]
        assert device.attrs["description"] == "Allen Brain Observatory - Mesoscope 2P Rig"
        assert "manufacturer" not in device.attrs
        assert h5.get(f"{layout.IMAGING_PLANE}/device", getlink=True).path == f"{layout.DEVICES}/MESO.1"
    with vbo.BehaviorOphysExperiment.from_nwb_path(path) as exp:
        meta = exp.metadata
        assert (meta["equipment_name"], meta["imaging_plane_group"], meta["imaging_plane_group_count"]) == \
            ("MESO.1", 2, 4)
        assert len(exp.ophys_timestamps) == len(exp.dff_traces["dff"].iloc[0])


def test_events_on_a_subset_of_rois(contents, tmp_path):
    content = _small(contents[EXPERIMENT])
    rows = np.array([0, 3, 4, 8])
    subset = dataclasses.replace(content, events=content.dff[:, rows] * 0.5, event_rows=rows,
                                 event_lambdas=np.arange(4.0), event_noise_stds=np.arange(4.0) + 10)
    path = _write_and_validate(subset, tmp_path / "events.nwb")
    with h5py.File(path, "r") as h5:
        np.testing.assert_array_equal(h5[f"{layout.EVENTS}/{layout.ROIS}"][()], rows)
        assert h5[f"{layout.EVENTS}/{layout.DATA}"].compression == "gzip"
    with vbo.BehaviorOphysExperiment.from_nwb_path(path) as exp:
        with pytest.warns(UserWarning, match="no events"):
            events = exp.events
        np.testing.assert_array_equal(events["cell_roi_id"], content.rois["cell_roi_id"].to_numpy()[rows])
        np.testing.assert_array_equal(events["lambda"], np.arange(4.0))
        np.testing.assert_array_equal(np.stack(events["events"].to_list()), (content.dff[:, rows] * 0.5).T)
        assert len(exp.dff_traces) == 10


def test_optional_traces_absent(contents, tmp_path):
    content = dataclasses.replace(_small(contents[EXPERIMENT]), neuropil=None, demixed=None, r=None, rmse=None)
    path = _write_and_validate(content, tmp_path / "old_traces.nwb")
    with h5py.File(path, "r") as h5:
        for stored in (layout.NEUROPIL, layout.DEMIXED, layout.CORRECTED_FLUORESCENCE_R,
                       layout.CORRECTED_FLUORESCENCE_RMSE):
            assert stored not in h5
    with vbo.BehaviorOphysExperiment.from_nwb_path(path) as exp:
        assert exp.neuropil_traces is None and exp.demixed_traces is None
        assert list(exp.corrected_fluorescence_traces.columns) == ["cell_roi_id", "corrected_fluorescence"]


def test_grating_like_presentations(contents, tmp_path):
    """String columns with gaps are written "N/A"; all-NaN columns of a stimulus are not stored."""
    content = _small(contents[SESSION])
    frame = content.presentations.copy()
    images = frame["stimulus_name"] == frame.loc[frame["image_name"].notna(), "stimulus_name"].iloc[0]
    frame["orientation"] = np.where(images, 90.0, np.nan)
    frame.loc[frame.index[images][:3], "stimulus_block_name"] = np.nan
    path = _write_and_validate(dataclasses.replace(content, presentations=frame), tmp_path / "extra.nwb")
    with h5py.File(path, "r") as h5:
        tables = {name: h5[f"{layout.INTERVALS}/{name}"] for name in h5[layout.INTERVALS]}
        image_table = next(t for name, t in tables.items() if "image_set" in t)
        colnames = list(image_table.attrs["colnames"])
        assert colnames[-4:] == ["orientation", "stimulus_name", "tags", "timeseries"]
        assert list(image_table["stimulus_block_name"].asstr()[:3]) == [layout.FILE_STRING_NA] * 3
        assert all("orientation" not in t for t in tables.values() if t is not image_table)
    with vbo.BehaviorSession.from_nwb_path(path) as session:
        presentations = session.stimulus_presentations
        assert list(presentations.columns[-1:]) == ["orientation"]
        assert (presentations.loc[images.to_numpy(), "orientation"] == 90.0).all()


# --- atomicity ----------------------------------------------------------------------------------

def test_inconsistent_content_writes_nothing(contents, tmp_path):
    content = _small(contents[EXPERIMENT])
    broken = dataclasses.replace(content, dff=content.dff[:, :-1])
    target = tmp_path / "broken.nwb"
    with pytest.raises(ContentError, match="dff"):
        write_nwb(broken, target)
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_leaves_no_file(contents, tmp_path, monkeypatch):
    from hdmf.backends.hdf5 import h5tools

    original = h5tools.HDF5IO.write_dataset
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 40:
            raise RuntimeError("disk full (simulated)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(h5tools.HDF5IO, "write_dataset", failing)
    target = tmp_path / "midway.nwb"
    with pytest.raises(RuntimeError, match="simulated"):
        write_nwb(_small(contents[SESSION]), target)
    assert calls["n"] == 40
    assert list(tmp_path.iterdir()) == []

    target.write_bytes(b"previous file")  # an existing file is replaced only by a complete one
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="simulated"):
        write_nwb(_small(contents[SESSION]), target)
    assert target.read_bytes() == b"previous file"
    assert list(tmp_path.iterdir()) == [target]
