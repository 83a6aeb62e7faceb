"""Builders of realistic variant NWB files for the vbo tests.

The two AllenSDK-written reference files only cover an active OPHYS_1 single-plane experiment and a
TRAINING_5 behavior-only session.  Each ``make_*`` function here copies one of them (``shutil.copy``)
into a directory and edits the copy with h5py so that it looks like another kind of released file,
keeping the Allen/NWB layout intact: DynamicTable ``colnames`` attributes, ``*_index`` datasets and
their ``target`` references, ``id`` datasets, neurodata_type/namespace/object_id attributes, soft links
and compression settings.  Every builder returns the path of the file it wrote.

The expected reader behaviour for each variant is described in ``spec/format.md`` §7, §8, §10, §11 and
``spec/api.md`` §3–§5, §9; the assertions live in ``test_variants.py``.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import h5py
import numpy as np

STR = h5py.string_dtype("utf-8")

TRIALS = "intervals/trials"
CELL_TABLE = "processing/ophys/image_segmentation/cell_specimen_table"
DFF = "processing/ophys/dff/traces"
EVENTS = "processing/ophys/event_detection"

# Frame-based ophys series (frames along axis 0) that share the ophys time base.
OPHYS_FRAME_SERIES = (
    "processing/ophys/dff/traces",
    "processing/ophys/corrected_fluorescence/traces",
    "processing/ophys/demixed_trace/traces",
    "processing/ophys/neuropil_trace/traces",
    "processing/ophys/event_detection",
    "processing/ophys/ophys_motion_correction_x",
    "processing/ophys/ophys_motion_correction_y",
)

GRATING_ORIENTATIONS = (0.0, 90.0, 180.0, 270.0)

PASSIVE_SESSION_TYPE = "OPHYS_2_images_A_passive"
GRATINGS_SESSION_TYPE = "TRAINING_1_gratings"

PASSIVE_DESCRIPTION = (
    "2-photon calcium imaging in the visual cortex of the mouse brain during passive viewing of a set of "
    "natural images upon which the mouse has been previously trained. The lick spout is retracted and "
    "no rewards are delivered. Image stimuli are displayed for 250 ms with a 500 ms intervening gray "
    "period. 5% of non-change image presentations are randomly omitted. The session is 75 minutes long, "
    "with 5 minutes of gray screen before and after 60 minutes of passive viewing, followed by 10 repeats "
    "of a 30 second natural movie stimulus at the end of the session."
)
GRATINGS_DESCRIPTION = (
    "An operant behavior training session where a mouse must lick a spout following a change in the "
    "orientation of a full-field static square-wave grating to earn rewards. Gratings are flashed for "
    "250 ms with a 500 ms intervening gray period. Delivered rewards are 7ul in volume."
)


# --------------------------------------------------------------------------------------------------
# low-level helpers
# --------------------------------------------------------------------------------------------------


def copy_nwb(src: Path, dst_dir: Path, name: str) -> Path:
    """Copy ``src`` to ``dst_dir/name`` and make the copy writable."""
    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / name
    shutil.copy(src, dst)
    dst.chmod(0o644)
    return dst


def _attr_snapshot(obj) -> list[tuple[str, object, np.dtype]]:
    """All attributes of ``obj`` with their stored HDF5 dtypes (keeps references and vlen strings)."""
    return [(k, obj.attrs[k], obj.attrs.get_id(k).dtype) for k in obj.attrs]


def _restore_attrs(obj, snapshot) -> None:
    for name, value, dtype in snapshot:
        obj.attrs.create(name, value, dtype=dtype)


def replace_dataset(group: h5py.Group, name: str, data, dtype=None) -> h5py.Dataset:
    """Replace ``group[name]`` by a dataset holding ``data``, keeping attributes and compression.

    ``dtype`` defaults to the old dataset's dtype (vlen strings stay vlen strings).
    """
    old = group[name]
    attrs = _attr_snapshot(old)
    old_dtype = old.dtype
    compression, opts, shuffle = old.compression, old.compression_opts, old.shuffle
    del group[name]
    if dtype is None:
        dtype = STR if h5py.check_string_dtype(old_dtype) is not None else old_dtype
    arr = np.asarray(data, dtype=object if dtype is STR else dtype)
    kwargs = {}
    if compression and arr.size > 0 and arr.ndim > 0:
        kwargs = dict(compression=compression, compression_opts=opts, shuffle=shuffle, chunks=True)
    new = group.create_dataset(name, data=arr, dtype=dtype, **kwargs)
    _restore_attrs(new, attrs)
    return new


def set_text_dataset(f: h5py.File, path: str, value: str) -> None:
    """Rewrite a scalar text dataset such as ``/session_description``."""
    parent, name = path.rsplit("/", 1) if "/" in path.strip("/") else ("/", path.strip("/"))
    replace_dataset(f[parent], name, value, dtype=STR)


def set_attr(obj, name: str, value) -> None:
    """Rewrite an attribute keeping its stored dtype (int64 stays int64, text stays vlen text)."""
    dtype = obj.attrs.get_id(name).dtype if name in obj.attrs else None
    if dtype is not None and h5py.check_string_dtype(dtype) is not None:
        obj.attrs.create(name, value, dtype=STR)
    elif dtype is not None:
        obj.attrs.create(name, np.asarray(value, dtype=dtype), dtype=dtype)
    else:
        obj.attrs[name] = value


def decode(values) -> np.ndarray:
    """Text dataset values as a numpy array of ``str``."""
    arr = np.asarray(values, dtype=object)
    return np.array([v.decode() if isinstance(v, bytes) else v for v in arr.ravel()], dtype=object).reshape(
        arr.shape
    )


def colnames(table: h5py.Group) -> list[str]:
    return [c.decode() if isinstance(c, bytes) else str(c) for c in table.attrs["colnames"]]


def set_colnames(table: h5py.Group, names: list[str]) -> None:
    table.attrs.create("colnames", np.array(names, dtype=object), dtype=STR)


def drop_column(table: h5py.Group, name: str) -> None:
    """Remove a DynamicTable column (and its ``_index`` dataset) and update ``colnames``."""
    del table[name]
    if f"{name}_index" in table:
        del table[f"{name}_index"]
    set_colnames(table, [c for c in colnames(table) if c != name])


def add_column(table: h5py.Group, name: str, data, description: str, before: str | None = "tags") -> None:
    """Add a VectorData column; it goes into ``colnames`` just before ``before`` (else at the end)."""
    ds = table.create_dataset(name, data=data)
    ds.attrs["description"] = description
    ds.attrs["namespace"] = "hdmf-common"
    ds.attrs["neurodata_type"] = "VectorData"
    ds.attrs["object_id"] = str(uuid.uuid4())
    names = colnames(table)
    pos = names.index(before) if before in names else len(names)
    set_colnames(table, names[:pos] + [name] + names[pos:])


def presentation_tables(f: h5py.File) -> list[str]:
    return sorted(k for k in f["intervals"] if k.endswith("_presentations"))


def image_presentation_table(f: h5py.File) -> str:
    """Name of the change-detection presentations table (the one with ``image_name``)."""
    (name,) = [k for k in presentation_tables(f) if "image_name" in f["intervals"][k]]
    return name


def set_session_type(f: h5py.File, session_type: str, description: str | None = None) -> None:
    set_attr(f["general/metadata"], "session_type", session_type)
    set_attr(f["general/task_parameters"], "session_type", session_type)
    set_text_dataset(f, "/session_description", session_type)
    if description is not None:
        set_text_dataset(f, "/general/experiment_description", description)


def _replace_ragged(table: h5py.Group, name: str, rows: list[np.ndarray], dtype="f8") -> None:
    """Rewrite a ragged column ``name`` + ``name_index`` from a list of per-row arrays."""
    flat = np.concatenate([np.asarray(r, dtype=dtype) for r in rows]) if rows else np.zeros(0, dtype)
    ends = np.cumsum([len(r) for r in rows])
    data_ds = replace_dataset(table, name, flat, dtype=dtype)
    idx_dtype = table[f"{name}_index"].dtype
    idx_ds = replace_dataset(table, f"{name}_index", ends.astype(idx_dtype), dtype=idx_dtype)
    idx_ds.attrs.create("target", data_ds.ref, dtype=h5py.ref_dtype)


def read_ragged(table: h5py.Group, name: str) -> list[np.ndarray]:
    data = table[name][:]
    idx = table[f"{name}_index"][:]
    starts = np.concatenate([[0], idx[:-1]]).astype(np.int64)
    return [data[s:e] for s, e in zip(starts, idx.astype(np.int64))]


# --------------------------------------------------------------------------------------------------
# 1. passive session
# --------------------------------------------------------------------------------------------------


def make_passive(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    """Passive replay session (``OPHYS_2_images_A_passive``).

    - no ``/processing/licking`` and no ``/processing/rewards`` module (format.md §7.3);
    - ``session_type`` in ``/general/metadata``, ``/general/task_parameters`` and ``/session_description``;
    - trials: no licks (``lick_times`` one empty string as AllenSDK's writer stores it, ``lick_times_index``
      all zeros), ``reward_volume`` 0,
      ``reward_time``/``response_time`` NaN, ``response_latency`` inf (NaN kept on aborted trials),
      hits become misses and false alarms correct rejections (the outcome invariant still holds);
    - the change-detection block is named ``change_detection_passive``.
    """
    dst = copy_nwb(src, dst_dir, name or f"passive_{Path(src).name}")
    with h5py.File(dst, "r+") as f:
        del f["processing/licking"]
        del f["processing/rewards"]
        set_session_type(f, PASSIVE_SESSION_TYPE, PASSIVE_DESCRIPTION)

        t = f[TRIALS]
        n = len(t["id"])
        _replace_ragged(t, "lick_times", [np.zeros(0)] * n)
        # AllenSDK's writer stores a ragged column without any value as one empty string (format.md §7.6)
        data = replace_dataset(t, "lick_times", [""], dtype=STR)
        t["lick_times_index"].attrs.create("target", data.ref, dtype=h5py.ref_dtype)
        aborted = t["aborted"][:]
        replace_dataset(t, "reward_volume", np.zeros(n))
        replace_dataset(t, "reward_time", np.full(n, np.nan))
        replace_dataset(t, "response_time", np.full(n, np.nan))
        replace_dataset(t, "response_latency", np.where(aborted, np.nan, np.inf))
        hit, miss = t["hit"][:], t["miss"][:]
        fa, cr = t["false_alarm"][:], t["correct_reject"][:]
        replace_dataset(t, "hit", np.zeros(n, bool))
        replace_dataset(t, "miss", miss | hit)
        replace_dataset(t, "false_alarm", np.zeros(n, bool))
        replace_dataset(t, "correct_reject", cr | fa)

        for table in presentation_tables(f):
            g = f["intervals"][table]
            names = decode(g["stimulus_block_name"][:])
            names[names == "change_detection_behavior"] = "change_detection_passive"
            replace_dataset(g, "stimulus_block_name", names)
    return dst


# --------------------------------------------------------------------------------------------------
# 2. gratings training session
# --------------------------------------------------------------------------------------------------


def grating_name(orientation: float) -> str:
    return f"gratings_{float(orientation)}"


def grating_images(orientations=GRATING_ORIENTATIONS, shape=(1200, 1920), period_px=160.0):
    """(warped uint8 0/255 square waves, unwarped float sinusoids starting at 127.0)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    warped = np.empty((len(orientations),) + shape, np.uint8)
    unwarped = np.empty((len(orientations),) + shape, np.float64)
    for i, ori in enumerate(orientations):
        th = np.deg2rad(ori)
        phase = np.sin(2 * np.pi * (xx * np.cos(th) + yy * np.sin(th)) / period_px)
        unwarped[i] = 127.0 + 127.0 * phase
        warped[i] = np.where(phase >= 0, 255, 0).astype(np.uint8)
    return warped, unwarped


def make_gratings(src: Path, dst_dir: Path, name: str = "gratings_training.nwb") -> Path:
    """``TRAINING_1_gratings`` behavior session built from the TRAINING_5 images file.

    The image sequence keeps its change structure: every run of identical images (a "run" ends at
    each image change) gets one orientation of ``GRATING_ORIENTATIONS``, always different from the
    previous run, so recomputed ``is_change`` is the same as in the source file.  The presentations
    table becomes ``/intervals/grating_presentations`` with ``stimulus_name`` ``grating``,
    ``image_name`` ``gratings_<ori>``, ``image_index`` = position in ``GRATING_ORIENTATIONS`` and an
    extra float ``orientation`` column (before ``tags``/``timeseries`` in ``colnames``).  Trials get the
    matching ``initial_image_name``/``change_image_name``; the template becomes
    ``/stimulus/templates/grating`` (4 square-wave gratings); task parameters say ``grating``.
    """
    dst = copy_nwb(src, dst_dir, name)
    with h5py.File(dst, "r+") as f:
        old_table = image_presentation_table(f)
        f.move(f"intervals/{old_table}", "intervals/grating_presentations")
        g = f["intervals/grating_presentations"]
        g.attrs["description"] = (
            "Presentation times and stimuli details for 'grating' stimuli. \n"
            "Note: image_name references control_description in stimulus/templates"
        )
        names = decode(g["image_name"][:])
        omitted = g["omitted"][:] == 1
        start = g["start_time"][:]
        order = np.argsort(start, kind="stable")

        # one orientation per run of identical images, never equal to the previous run's
        ori_idx = np.full(len(names), -1)
        prev_img, cur = None, -1
        run = 0
        for i in order:
            if omitted[i] or names[i] == "omitted":
                continue
            if names[i] != prev_img:
                cur = (cur + 1 + (run % 3)) % len(GRATING_ORIENTATIONS) if cur >= 0 else 0
                run += 1
                prev_img = names[i]
            ori_idx[i] = cur
        orientation = np.array([GRATING_ORIENTATIONS[k] if k >= 0 else np.nan for k in ori_idx])
        new_names = np.array(
            [grating_name(o) if k >= 0 else "omitted" for k, o in zip(ori_idx, orientation)], dtype=object
        )
        image_index = np.where(ori_idx >= 0, ori_idx, len(GRATING_ORIENTATIONS)).astype(np.int64)

        replace_dataset(g, "image_name", new_names)
        replace_dataset(g, "image_index", image_index)
        replace_dataset(g, "image_set", np.array(["grating"] * len(names), dtype=object))
        replace_dataset(g, "stimulus_name", np.array(["grating"] * len(names), dtype=object))
        add_column(g, "orientation", orientation, "No description", before="tags")

        # trials: initial image = last flash starting at or before trial start, change image = the
        # flash at the change frame
        t = f[TRIALS]
        t_start = t["start_time"][:]
        change_frame = t["change_frame"][:]
        start_frame = g["start_frame"][:]
        shown = ori_idx >= 0
        shown_order = order[shown[order]]
        initial, change = [], []
        for ts, cf in zip(t_start, change_frame):
            before = shown_order[start[shown_order] <= ts]
            first = shown_order[0] if len(before) == 0 else before[-1]
            init = new_names[first]
            initial.append(init)
            hit_rows = np.flatnonzero((start_frame == cf) & shown) if cf >= 0 else []
            change.append(new_names[hit_rows[0]] if len(hit_rows) else init)
        replace_dataset(t, "initial_image_name", np.array(initial, dtype=object))
        replace_dataset(t, "change_image_name", np.array(change, dtype=object))

        # stimulus template and the index series pointing at it
        (old_tpl,) = [k for k in f["stimulus/templates"] if "movie" not in k]
        f.move(f"stimulus/templates/{old_tpl}", "stimulus/templates/grating")
        tpl = f["stimulus/templates/grating"]
        tpl.attrs["object_id"] = str(uuid.uuid4())
        warped, unwarped = grating_images()
        n_img = len(GRATING_ORIENTATIONS)
        replace_dataset(tpl, "data", warped)
        replace_dataset(tpl, "unwarped", unwarped)
        replace_dataset(tpl, "control", np.arange(n_img, dtype=np.uint64))
        replace_dataset(
            tpl, "control_description", np.array([grating_name(o) for o in GRATING_ORIENTATIONS], dtype=object)
        )
        replace_dataset(tpl, "timestamps", np.full(n_img, np.nan))

        if old_tpl in f["stimulus/presentation"]:
            f.move(f"stimulus/presentation/{old_tpl}", "stimulus/presentation/grating")
            ps = f["stimulus/presentation/grating"]
            del ps["indexed_timeseries"]
            ps["indexed_timeseries"] = h5py.SoftLink("/stimulus/templates/grating")
            rows = shown_order
            replace_dataset(ps, "data", ori_idx[rows].astype(np.uint64))
            replace_dataset(ps, "timestamps", start[rows])

        set_session_type(f, GRATINGS_SESSION_TYPE, GRATINGS_DESCRIPTION)
        tp = f["general/task_parameters"]
        set_attr(tp, "stimulus", "grating")
        set_attr(tp, "stimulus_name", "grating")
    return dst


# --------------------------------------------------------------------------------------------------
# 3. multi-plane (Mesoscope) experiment and timestamp/trace length mismatches
# --------------------------------------------------------------------------------------------------


def _frame_series(f: h5py.File) -> list[h5py.Group]:
    return [f[p] for p in OPHYS_FRAME_SERIES if p in f]


def make_mesoscope(src: Path, dst_dir: Path, name: str = "mesoscope_experiment.nwb", decimate: int = 3) -> Path:
    """Multiscope plane: ``MESO.1``, plane group 2 of 4, ``VisualBehaviorMultiscope``, 11 Hz.

    Every frame-based ophys series (dF/F, corrected fluorescence, demixed, neuropil, events, motion
    correction) keeps every ``decimate``-th frame (31 Hz → ≈10.3 Hz per plane, as a Mesoscope plane is
    sampled) and ``imaging_rate`` is stored rounded to 11.0 Hz.  The device is renamed to ``MESO.1``
    (Mesoscope description, no manufacturer) and the imaging plane's ``device`` link follows it.
    """
    dst = copy_nwb(src, dst_dir, name)
    with h5py.File(dst, "r+") as f:
        md = f["general/metadata"]
        set_attr(md, "imaging_plane_group", 2)
        set_attr(md, "imaging_plane_group_count", 4)
        set_attr(md, "equipment_name", "MESO.1")
        set_attr(md, "project_code", "VisualBehaviorMultiscope")

        (old_dev,) = list(f["general/devices"])
        f.move(f"general/devices/{old_dev}", "general/devices/MESO.1")
        dev = f["general/devices/MESO.1"]
        dev.attrs["description"] = "Allen Brain Observatory - Mesoscope 2P Rig"
        if "manufacturer" in dev.attrs:
            del dev.attrs["manufacturer"]
        plane = f["general/optophysiology/imaging_plane_1"]
        del plane["device"]
        plane["device"] = h5py.SoftLink("/general/devices/MESO.1")
        replace_dataset(plane, "imaging_rate", np.float64(11.0))
        rig = "processing/eye_tracking_rig_metadata/eye_tracking_rig_metadata"
        if rig in f:
            set_attr(f[rig], "equipment", "MESO.1")

        if decimate > 1:
            for series in _frame_series(f):
                replace_dataset(series, "data", series["data"][::decimate])
                replace_dataset(series, "timestamps", series["timestamps"][::decimate])
    return dst


def make_timestamp_mismatch(src: Path, dst_dir: Path, name: str, extra_frames: int) -> Path:
    """Ophys timestamps ``extra_frames`` longer (>0) or shorter (<0) than the dF/F traces.

    All frame-based series get the same modified timestamps (they share the ophys time base); the
    trace data are unchanged.
    """
    dst = copy_nwb(src, dst_dir, name)
    with h5py.File(dst, "r+") as f:
        for series in _frame_series(f):
            ts = series["timestamps"][:]
            if extra_frames > 0:
                step = float(np.median(np.diff(ts)))
                ts = np.concatenate([ts, ts[-1] + step * np.arange(1, extra_frames + 1)])
            else:
                ts = ts[:extra_frames]
            replace_dataset(series, "timestamps", ts)
    return dst


# --------------------------------------------------------------------------------------------------
# 4. experiment without eye tracking
# --------------------------------------------------------------------------------------------------


def make_no_eye_tracking(src: Path, dst_dir: Path, name: str = "no_eye_tracking.nwb") -> Path:
    dst = copy_nwb(src, dst_dir, name)
    with h5py.File(dst, "r+") as f:
        del f["acquisition/EyeTracking"]
        del f["processing/eye_tracking_rig_metadata"]
    return dst


# --------------------------------------------------------------------------------------------------
# 5. older (v1.0.x) experiment
# --------------------------------------------------------------------------------------------------


def make_v1_0(src: Path, dst_dir: Path, name: str = "v1_0_experiment.nwb") -> Path:
    """Release v1.0.x experiment: no demixed/neuropil traces, no corrected-fluorescence ``r``/``RMSE``,
    single-block presentations (only the change-detection table, without ``stimulus_block`` and
    ``stimulus_block_name``)."""
    dst = copy_nwb(src, dst_dir, name)
    with h5py.File(dst, "r+") as f:
        del f["processing/ophys/demixed_trace"]
        del f["processing/ophys/neuropil_trace"]
        del f["processing/ophys/corrected_fluorescence/r"]
        del f["processing/ophys/corrected_fluorescence/RMSE"]
        keep = image_presentation_table(f)
        for table in presentation_tables(f):
            if table != keep:
                del f["intervals"][table]
        g = f["intervals"][keep]
        drop_column(g, "stimulus_block")
        drop_column(g, "stimulus_block_name")
    return dst


# --------------------------------------------------------------------------------------------------
# 6.–9. ROI-level variants and the non-ragged lick_times quirk
# --------------------------------------------------------------------------------------------------


def make_null_cell_specimen_ids(src: Path, dst_dir: Path, rows=(0, 7, 42), name: str = "null_csid.nwb") -> Path:
    """``cell_specimen_id`` = −1 (unmatched ROI) on the given ROI-table rows."""
    dst = copy_nwb(src, dst_dir, name)
    with h5py.File(dst, "r+") as f:
        t = f[CELL_TABLE]
        csid = t["cell_specimen_id"][:]
        csid[list(rows)] = -1
        replace_dataset(t, "cell_specimen_id", csid)
    return dst


def make_events_roi_subset(src: Path, dst_dir: Path, drop_rows=(1, 5, 50, 119), name: str = "events_subset.nwb") -> Path:
    """Event detection restricted to a subset of the ROI table (``rois``, ``data``, ``lambdas``,
    ``noise_stds`` rewritten; the ``rois`` region keeps its ``table`` reference)."""
    dst = copy_nwb(src, dst_dir, name)
    with h5py.File(dst, "r+") as f:
        ev = f[EVENTS]
        rois = ev["rois"][:]
        keep = np.array([i for i in range(len(rois)) if i not in set(drop_rows)])
        replace_dataset(ev, "data", ev["data"][:][:, keep])
        replace_dataset(ev, "lambdas", ev["lambdas"][:][keep])
        replace_dataset(ev, "noise_stds", ev["noise_stds"][:][keep])
        replace_dataset(ev, "rois", rois[keep])
    return dst


def make_nonragged_lick_times(src: Path, dst_dir: Path, name: str = "nonragged_lick_times.nwb") -> Path:
    """The writer quirk of format.md §7.6: when the total number of licks equals the number of trials,
    ``lick_times`` is written as a plain float column (one value per trial, no ``lick_times_index``).

    The file is made consistent with that situation: the trials' licks are reduced so that exactly
    one lick per trial remains (the first lick in the trial, or — for a trial without licks — the
    first lick of the session's ``licks`` series after the trial start), and the flat column holds
    those ``n_trials`` values.
    """
    dst = copy_nwb(src, dst_dir, name)
    with h5py.File(dst, "r+") as f:
        t = f[TRIALS]
        rows = read_ragged(t, "lick_times")
        all_licks = np.sort(f["processing/licking/licks/timestamps"][:])
        start = t["start_time"][:]
        values = []
        for r, s in zip(rows, start):
            if len(r):
                values.append(float(r[0]))
            else:
                later = all_licks[all_licks > s]
                values.append(float(later[0]) if len(later) else float(s))
        replace_dataset(t, "lick_times", np.array(values, dtype=np.float64))
        del t["lick_times_index"]
    return dst


def make_invalid_roi(src: Path, dst_dir: Path, row: int = 3, name: str = "invalid_roi.nwb") -> Path:
    """One ROI flagged ``valid_roi = False``."""
    dst = copy_nwb(src, dst_dir, name)
    with h5py.File(dst, "r+") as f:
        t = f[CELL_TABLE]
        valid = t["valid_roi"][:]
        valid[row] = False
        replace_dataset(t, "valid_roi", valid)
    return dst
