"""The direct h5py writer (``vbo.nwb.fastwrite``) writes the pynwb writer's file, object by object.

The same content (the two AllenSDK-written files turned back into content, their variants, and simulated
sessions and experiments: gratings, passive, Multiscope, no-lick sessions) is written by both writers and
the two HDF5 trees are compared: every group, dataset (dtype incl. string encoding, shape, maxshape,
chunks, compression, shuffle, values), attribute (type, value; references by target path), soft link
and the cached specifications. ``object_id`` values differ (each writer derives its own stable ids) and
are checked for their UUID form and uniqueness. The fast file validates with pynwb and reads in pynwb.
"""

from __future__ import annotations

import dataclasses
import re
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest

from vbo.nwb import layout

pynwb = pytest.importorskip("pynwb")
from vbo.nwb.fastwrite import write_nwb_fast  # noqa: E402
from vbo.nwb.write import ContentError, write_nwb  # noqa: E402

from test_write import EXPERIMENT, SESSION, _small, _validate, contents  # noqa: E402,F401  (fixture)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# --- a full description of an HDF5 file ---------------------------------------------------------

def _type_of(type_id) -> tuple:
    """An HDF5 datatype as (class, size, string encoding, variable length, compound members)."""
    cls = type_id.get_class()
    if cls == h5py.h5t.STRING:
        return ("string", type_id.get_cset(), type_id.is_variable_str(),
                None if type_id.is_variable_str() else type_id.get_size())
    if cls == h5py.h5t.COMPOUND:
        return ("compound", tuple((type_id.get_member_name(i).decode(), _type_of(type_id.get_member_type(i)))
                                  for i in range(type_id.get_nmembers())))
    if cls == h5py.h5t.REFERENCE:
        return ("reference", type_id.get_size())
    return (cls, type_id.get_size(), getattr(type_id, "get_sign", lambda: None)(),
            getattr(type_id, "get_order", lambda: None)())


def _value(h5: h5py.File, value):
    """Values comparable across files: references as target paths, text as str, arrays as lists."""
    if isinstance(value, h5py.Reference):
        return ("ref", h5[value].name) if value else ("ref", None)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.void):
        return tuple(_value(h5, v) for v in value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OV":
            return [_value(h5, v) for v in value.ravel().tolist()] if value.dtype.kind == "O" \
                else [_value(h5, v) for v in value.ravel()]
        return ("array", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, np.generic):
        return (str(value.dtype), value.item() if not (isinstance(value, np.floating) and np.isnan(value))
                else "nan")
    return value


def describe(path) -> tuple[dict, list[str]]:
    """path -> description of every object, link and attribute; and the object ids found."""
    out: dict[str, tuple] = {}
    ids: list[str] = []
    with h5py.File(path, "r") as h5:
        def attrs(obj) -> dict:
            found = {}
            for key in obj.attrs:
                if key == "object_id":
                    ids.append(obj.attrs[key] if isinstance(obj.attrs[key], str) else obj.attrs[key].decode())
                    found[key] = _type_of(obj.attrs.get_id(key).get_type())
                    continue
                found[key] = (_type_of(obj.attrs.get_id(key).get_type()), obj.attrs.get_id(key).shape,
                              _value(h5, obj.attrs[key]))
            return found

        out["/"] = ("G", attrs(h5))

        def walk(group):
            for key in group:
                p = f"{group.name.rstrip('/')}/{key}"
                link = group.get(key, getlink=True)
                if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
                    out[p] = ("L", type(link).__name__, link.path)
                    continue
                obj = group[key]
                if isinstance(obj, h5py.Group):
                    out[p] = ("G", attrs(obj))
                    walk(obj)
                    continue
                values = obj[()]
                out[p] = ("D", _type_of(obj.id.get_type()), obj.shape, obj.maxshape, obj.chunks, obj.compression,
                          obj.compression_opts, obj.shuffle, obj.fletcher32, attrs(obj), _value(h5, values))

        walk(h5)
    return out, ids


def assert_same_tree(reference, fast) -> None:
    expected, expected_ids = describe(reference)
    actual, actual_ids = describe(fast)
    assert sorted(actual) == sorted(expected), (sorted(set(actual) ^ set(expected)))
    for key in expected:
        assert actual[key] == expected[key], f"{key}:\n pynwb {expected[key]!r:.600}\n fast  {actual[key]!r:.600}"
    assert len(actual_ids) == len(expected_ids)
    assert all(UUID.match(i) for i in actual_ids) and len(set(actual_ids)) == len(actual_ids)


def _both(content, tmp_path, name):
    reference = write_nwb(content, tmp_path / f"{name}.pynwb.nwb")
    fast = write_nwb_fast(content, tmp_path / f"{name}.fast.nwb")
    return reference, fast


# --- the shared files' content and its variants -------------------------------------------------

def _variants(contents) -> dict:
    session, experiment = _small(contents[SESSION]), _small(contents[EXPERIMENT])
    passive = dataclasses.replace(session, licks=None, rewards=None)
    trials = passive.trials.copy()
    trials["lick_times"] = [np.zeros(0) for _ in range(len(trials))]
    passive = dataclasses.replace(passive, trials=trials)
    one_lick = session.trials.copy()
    one_lick["lick_times"] = [np.array([t]) for t in one_lick["start_time"]]
    meta = dict(experiment.behavior.metadata, equipment_name="MESO.1", imaging_plane_group=2,
                imaging_plane_group_count=4)
    rois = experiment.rois.copy()
    rois.loc[rois.index[:3], "cell_specimen_id"] = -1  # unmatched ROIs
    keep = np.asarray([0, 2, 5])
    return {
        "session": session,
        "experiment": experiment,
        "passive": passive,
        "one_lick_per_trial": dataclasses.replace(session, trials=one_lick),
        "no_eye_tracking": dataclasses.replace(experiment, behavior=dataclasses.replace(
            experiment.behavior, eye_tracking=None, rig_geometry=None)),
        "multiplane_unmatched": dataclasses.replace(experiment, rois=rois, behavior=dataclasses.replace(
            experiment.behavior, metadata=meta)),
        "event_subset_no_optional": dataclasses.replace(
            experiment, events=experiment.events[:, :3] * 0 + experiment.dff[:, keep], event_rows=keep,
            event_lambdas=experiment.event_lambdas[:3], event_noise_stds=experiment.event_noise_stds[:3],
            demixed=None, neuropil=None, r=None, rmse=None),
    }


VARIANTS = ("session", "experiment", "passive", "one_lick_per_trial", "no_eye_tracking", "multiplane_unmatched",
            "event_subset_no_optional")


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_tree_as_pynwb_writer(variant, contents, tmp_path):
    content = _variants(contents)[variant]
    reference, fast = _both(content, tmp_path, variant)
    assert_same_tree(reference, fast)


def test_full_size_shared_experiment(contents, tmp_path):
    """The whole shared experiment (compressed traces, 8 full-size templates, eye tracking)."""
    reference, fast = _both(contents[EXPERIMENT], tmp_path, "experiment_full")
    assert_same_tree(reference, fast)
    assert _validate(fast) == []


@pytest.mark.parametrize("variant", ["session", "passive", "multiplane_unmatched"])
def test_fast_file_validates_and_reads_in_pynwb(variant, contents, tmp_path):
    content = _variants(contents)[variant]
    path = write_nwb_fast(content, tmp_path / f"{variant}.nwb")
    assert _validate(path) == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pynwb.NWBHDF5IO(str(path), "r") as io:
            nwbfile = io.read()
            trials = nwbfile.trials.to_dataframe()
    behavior = content.behavior if hasattr(content, "behavior") else content
    assert len(trials) == len(behavior.trials)
    np.testing.assert_array_equal(trials["start_time"].to_numpy(), behavior.trials["start_time"].to_numpy())


# --- simulated content: what the simulator writes -----------------------------------------------

@pytest.fixture(scope="module")
def simulated():
    """One session of each kind the tiny release holds (images, gratings, passive, Multiscope)."""
    from vbo.simulate import release
    from vbo.simulate.mice import plan_release
    from vbo.simulate.neurons import make_container, simulate_ophys
    from vbo.simulate.plan import SCALES
    from vbo.simulate.task import simulate_behavior

    scale = SCALES["tiny"]
    sessions = plan_release(release._seed(0, 0), scale.default_mice, scale)
    release._assign_file_ids(sessions)
    picks = {
        "gratings": next(s for s in sessions if s.image_set is None),
        "images_training": next(s for s in sessions if s.image_set and not s.is_imaging),
        "passive_imaging": next((s for s in sessions if s.passive and s.is_imaging), None),
        "multiscope": next((s for s in sessions if s.is_imaging and len(s.experiments) > 1), None),
    }
    out = {}
    for name, session in picks.items():
        if session is None:
            continue
        behavior, _ = simulate_behavior(session, scale, release._seed(0, session.behavior_session_id))
        if not session.is_imaging:
            out[name] = behavior
            continue
        experiment = session.experiments[0]
        container = make_container(experiment.ophys_container_id, session.mouse, experiment, scale,
                                   release._seed(0, 1, experiment.ophys_container_id))
        out[name], _ = simulate_ophys(session, experiment, container, behavior, scale,
                                      release._seed(0, session.behavior_session_id, experiment.ophys_experiment_id))
    return out


@pytest.mark.parametrize("kind", ["gratings", "images_training", "passive_imaging", "multiscope"])
def test_simulated_files_same_tree(kind, simulated, tmp_path):
    if kind not in simulated:
        pytest.skip(f"the tiny plan has no {kind} session")
    reference, fast = _both(simulated[kind], tmp_path, kind)
    assert_same_tree(reference, fast)
    assert _validate(fast) == []


# --- failures ----------------------------------------------------------------------------------

def test_inconsistent_content_writes_nothing(contents, tmp_path):
    content = _small(contents[SESSION])
    bad = dataclasses.replace(content, running_speed=content.running_speed[:-1])
    target = tmp_path / "bad.nwb"
    with pytest.raises(ContentError, match="running_speed"):
        write_nwb_fast(bad, target)
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_leaves_no_file(contents, tmp_path, monkeypatch):
    from vbo.nwb import fastwrite

    def failing(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fastwrite, "_ophys", failing)
    with pytest.raises(OSError, match="disk full"):
        write_nwb_fast(_small(contents[EXPERIMENT]), tmp_path / "x.nwb")
    assert [p for p in tmp_path.iterdir()] == []


def test_comparison_notices_a_difference(contents, tmp_path):
    """The tree comparison fails on one changed attribute value (it can fail)."""
    reference, fast = _both(_small(contents[SESSION]), tmp_path, "changed")
    with h5py.File(fast, "a") as h5:
        h5[layout.TRIALS].attrs["description"] = "changed"
    with pytest.raises(AssertionError, match="intervals/trials"):
        assert_same_tree(reference, fast)


def test_presentations_keep_row_order(contents, tmp_path):
    """Rows of every presentation table in the stored order of start times (as the reference)."""
    content = _small(contents[SESSION])
    path = write_nwb_fast(content, tmp_path / "order.nwb")
    with h5py.File(path, "r") as h5:
        for name in h5[layout.INTERVALS]:
            if name.endswith(layout.PRESENTATIONS_SUFFIX):
                start = h5[f"{layout.INTERVALS}/{name}/{layout.START_TIME}"][:]
                assert (np.diff(start) >= 0).all()
    assert isinstance(content.presentations, pd.DataFrame)


@pytest.mark.parametrize("shape, dtype", [((20011, 31), np.float64), ((3, 301, 407), np.uint8), ((5000, 3), bool),
                                          ((7, 5), np.int64)])
def test_threaded_chunks_are_the_filter_pipelines(shape, dtype, tmp_path):
    """Chunks deflated in threads are byte for byte the chunks of h5py's gzip + shuffle pipeline
    (edge chunks padded as HDF5 pads them)."""
    from vbo.nwb.fastwrite import _write_compressed_chunks

    rng = np.random.default_rng(1)
    array = (np.cumsum(rng.normal(0, 1, shape), axis=0) * 7).astype(dtype)
    with h5py.File(tmp_path / "a.h5", "w") as h5a, h5py.File(tmp_path / "b.h5", "w") as h5b:
        a = h5a.create_dataset("d", data=array, compression="gzip", shuffle=True, chunks=True)
        b = h5b.create_dataset("d", shape=shape, dtype=dtype, compression="gzip", shuffle=True, chunks=True)
        _write_compressed_chunks(b, array)
        assert a.id.get_num_chunks() == b.id.get_num_chunks() > 0
        for i in range(a.id.get_num_chunks()):
            offset = a.id.get_chunk_info(i).chunk_offset
            assert a.id.read_direct_chunk(offset) == b.id.read_direct_chunk(offset), offset
        np.testing.assert_array_equal(b[()], array)
