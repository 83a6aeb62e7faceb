"""Write a :class:`~vbo.nwb.content.BehaviorContent` / :class:`~vbo.nwb.content.OphysContent` as an NWB file
with the exact layout of the released Visual Behavior files (``docs/format.md`` §7).

Only the synthetic-release simulator needs this module; the reader never imports it. It uses pynwb, with
the four extension namespaces (YAML in :mod:`vbo.nwb.extensions`) loaded into a *private* copy of pynwb's
type map on the first write: nothing is registered globally, so importing vbo (or this module) has no
side effect on other pynwb users.

Every HDF5 name comes from :mod:`vbo.nwb.layout`. Descriptions, units and dtypes are those of the files
written by AllenSDK 2.16.2; so is the choice of which ``timestamps`` are soft links (the ellipse series,
``likely_blink``) and which are copies (rewards, ophys series other than dF/F).

The helpers without a leading underscore (``float_values``, ``column_values``, ``check_behavior``, ...) are
shared with :mod:`vbo.nwb.fastwrite`, so both writers store the same values and refuse the same content.

Example
-------
>>> from vbo.nwb.write import write_nwb
>>> write_nwb(content, "behavior_session_123.nwb")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vbo.errors import ContentError
from vbo.nwb import layout
from vbo.nwb.content import BehaviorContent, OphysContent

__all__ = ["write_nwb", "ContentError"]

EXTENSIONS_DIR = Path(__file__).with_name("extensions")
COMPRESS_BYTES = 256 * 1024  # gzip every array at least this big (as the shared reference files do)

# --- descriptions written by the SDK (values, not names: they live here, not in layout) -------
STIMULUS_MODULE_DESCRIPTION = "Stimulus Times processing"
RUNNING_MODULE_DESCRIPTION = "Running speed processing module"
LICKING_MODULE_DESCRIPTION = "Licking behavior processing module"  # also the rewards module's
OPHYS_MODULE_DESCRIPTION = "Ophys processing module"
EYE_RIG_MODULE_DESCRIPTION = "Eye tracking rig metadata module"
DX_DESCRIPTION = "Running wheel angular change, computed during data collection"
V_SIG_DESCRIPTION = "Voltage signal from the running wheel encoder"
V_IN_DESCRIPTION = (
    'The theoretical maximum voltage that the running wheel encoder will reach prior to "wrapping". This '
    "should theoretically be 5V (after crossing 5V goes to 0V, or vice versa). In practice the encoder does "
    'not always reach this value before wrapping, which can cause transient spikes in speed at the voltage '
    '"wraps".'
)
LICKS_DESCRIPTION = "Timestamps and stimulus presentation frame indices for lick events"
LIKELY_BLINK_DESCRIPTION = "blinks"
TRIALS_DESCRIPTION = "experimental trials"
TRIALS_COLUMN_DESCRIPTION = "NOT IMPLEMENTED: {}"
PRESENTATIONS_DESCRIPTION = ("Presentation times and stimuli details for '{}' stimuli. \n"
                             "Note: image_name references control_description in stimulus/templates")
PRESENTATION_COLUMN_DESCRIPTIONS = {
    layout.START_TIME: "Start time of epoch, in seconds",
    layout.STOP_TIME: "Stop time of epoch, in seconds",
    "stimulus_block": "Index of contiguous presentations of one stimulus type",
    "stimulus_name": "Name of stimulus",
    layout.PRESENTATION_TAGS: "user-defined tags",
    layout.PRESENTATION_TIMESERIES: "index into a TimeSeries object",
}
NO_DESCRIPTION = "No description"
CELL_TABLE_DESCRIPTION = "Segmented rois"
CELL_COLUMN_DESCRIPTIONS = {
    "cell_specimen_id": "Unified id of segmented cell across experiments (after cell matching)",
    "height": "Height of ROI in pixels",
    "mask_image_plane": ("Which image plane an ROI resides on. Overlapping ROIs are stored on different mask "
                         "image planes."),
    "max_correction_down": "Max motion correction in down direction in pixels",
    "max_correction_left": "Max motion correction in left direction in pixels",
    "max_correction_right": "Max motion correction in right direction in pixels",
    "max_correction_up": "Max motion correction in up direction in pixels",
    "valid_roi": "Indicates if cell classification found the ROI to be a cell or not",
    "width": "Width of ROI in pixels",
    "x": "x position of ROI in Image Plane in pixels (top left corner)",
    "y": "y position of ROI in Image Plane in pixels (top left corner)",
    layout.CELL_TABLE_MASK: "Image masks for each ROI",
}
DFF_ROIS_DESCRIPTION = "segmented cells labeled by cell_specimen_id"
EVENT_ROIS_DESCRIPTION = "Cells with detected events"
IMAGE_DESCRIPTION = "{} image at pixels/cm resolution"
OPTICAL_CHANNEL_DESCRIPTION = "2P Optical Channel"
SCIENTIFICA_DEVICE = {"description": "Allen Brain Observatory - Scientifica 2P Rig", "manufacturer": "Scientifica"}
MESOSCOPE_DEVICE = {"description": "Allen Brain Observatory - Mesoscope 2P Rig"}
TRACE_UNIT = "NA"
EVENT_UNIT = "N/A"
MOTION_UNIT = "pixels"
RIG_UNITS = {"monitor_position": "mm", "camera_position": "mm", "led_position": "mm",
             "monitor_rotation": "deg", "camera_rotation": "deg"}
TEMPLATE_FORMAT = "raw"
TEMPLATE_UNIT = "NA"


# --- private pynwb type map (loaded on first write) --------------------------------------------

@dataclass(frozen=True)
class _Types:
    type_map: Any
    classes: dict[str, type]


_TYPES: _Types | None = None
_TYPES_LOCK = threading.Lock()
_EXTENSION_TYPES = {
    layout.NS_BEHAVIOR_OPHYS: ("BehaviorTaskParameters", "BehaviorSubject", "BehaviorMetadata",
                               "OphysBehaviorMetadata", "OphysEyeTrackingRigMetadata"),
    layout.NS_ELLIPSE_EYE_TRACKING: ("EllipseSeries", "EllipseEyeTracking"),
    layout.NS_STIMULUS_TEMPLATE: ("StimulusTemplate",),
    layout.NS_EVENT_DETECTION: ("OphysEventDetection",),
}


def namespace_path(namespace: str) -> Path:
    """The namespace YAML of one of the four extension namespaces."""
    return EXTENSIONS_DIR / f"{namespace}.namespace.yaml"


def nwb_types() -> _Types:
    """pynwb's core type map, copied, with the four extensions loaded and their classes generated."""
    global _TYPES
    with _TYPES_LOCK:
        if _TYPES is None:
            import pynwb

            try:
                type_map = pynwb.get_type_map(copy=True)  # newer pynwb: copying is a choice
            except TypeError:  # pynwb 3.0 always returns a copy and has no such argument
                type_map = pynwb.get_type_map()
            for namespace in _EXTENSION_TYPES:
                type_map.load_namespaces(str(namespace_path(namespace)))
            classes = {name: type_map.get_dt_container_cls(name, namespace)
                       for namespace, names in _EXTENSION_TYPES.items() for name in names}
            _TYPES = _Types(type_map, classes)
        return _TYPES


# --- small helpers ----------------------------------------------------------------------------

def _compressed(values, *, always: bool = False, shuffle: bool = True):
    """``values`` wrapped for gzip when big (or ``always``), else the plain array."""
    from hdmf.backends.hdf5 import H5DataIO

    array = np.asarray(values)
    if array.size and (always or array.nbytes >= COMPRESS_BYTES):
        return H5DataIO(array, compression="gzip", shuffle=shuffle)
    return array


def float_values(values) -> np.ndarray:
    """``values`` as float64 (how every float dataset is stored)."""
    return np.asarray(values, dtype=np.float64)


def text_values(values, na: str = layout.FILE_STRING_NA) -> np.ndarray:
    """Object array of ``str``; missing values (None / NaN / NA) become ``na``."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value if isinstance(value, str) else (na if _is_missing(value) else str(value))
    return out


def _is_missing(value) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(np.isnan(value))
    except (TypeError, ValueError):
        return False


def index_dtype(total: int) -> np.dtype:
    """Smallest unsigned dtype holding ``total`` (how ragged-column indexes are stored)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if total <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def is_text(series: pd.Series) -> bool:
    """True for a string column, or an object column whose present values are all ``str``."""
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        return True
    if series.dtype == object:
        present = series.dropna()
        return len(present) > 0 and all(isinstance(v, str) for v in present)
    return False


def is_ragged(series: pd.Series) -> bool:
    """True for an object column holding arrays, lists or tuples (stored ragged, with an index)."""
    return series.dtype == object and any(isinstance(v, (np.ndarray, list, tuple)) for v in series)


def column_values(series: pd.Series, *, nullable_bool: bool = False) -> np.ndarray:
    """A frame column as the array the SDK stored: bool, int64, float64 (nullable → NaN) or text."""
    dtype = series.dtype
    present = series.dropna() if dtype == object else None
    object_bools = present is not None and len(present) > 0 and all(isinstance(v, (bool, np.bool_))
                                                                    for v in present)
    if isinstance(dtype, pd.BooleanDtype) or object_bools or (nullable_bool and dtype == bool):
        return series.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    if dtype == bool:
        return series.to_numpy(dtype=bool)
    if pd.api.types.is_integer_dtype(dtype):
        if series.isna().any():  # nullable integers with NA: float with NaN
            return series.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        return series.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    if is_text(series) or series.isna().all():
        return text_values(series.to_numpy(dtype=object))
    values = series.to_numpy()
    if values.dtype == object:  # e.g. Python bools mixed with None
        raise ContentError(f"column {series.name!r}: cannot store values of mixed types")
    return values


def ragged_values(cells) -> tuple[np.ndarray, np.ndarray]:
    """(flat float values, cumulative end offsets) of a column of arrays."""
    arrays = [np.atleast_1d(np.asarray(c, dtype=np.float64)) for c in cells]
    counts = np.array([a.size for a in arrays], dtype=np.int64)
    ends = np.cumsum(counts)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.float64)
    total = int(ends[-1]) if len(ends) else 0
    return flat, ends.astype(index_dtype(total))


def no_licks_column(n_trials: int) -> tuple[np.ndarray, np.ndarray]:
    """``lick_times`` of a session without a single lick, as the SDK's writer stores it (docs/format.md §7.6):
    flat data one empty string (not float), every index entry 0."""
    return np.array([""], dtype=object), np.zeros(n_trials, dtype=index_dtype(0))


def _vector_columns(name: str, description: str, values, ragged: bool = False) -> list:
    """VectorData (and its VectorIndex when ragged) for one table column."""
    from hdmf.common import VectorData, VectorIndex

    if not ragged:
        return [VectorData(name=name, description=description, data=_compressed(values))]
    flat, ends = values
    data = VectorData(name=name, description=description, data=_compressed(flat))
    return [data, VectorIndex(name=name + layout.INDEX_SUFFIX, data=ends, target=data)]


def _table(cls, name: str, description: str, ids, columns: list, colnames: list[str], **kwargs):
    """A DynamicTable subclass built column-wise (fast: no per-row ``add_row``)."""
    from hdmf.common import ElementIdentifiers

    return cls(name=name, description=description,
               id=ElementIdentifiers(name=layout.ID, data=np.asarray(ids, dtype=np.int64)),
               columns=columns, colnames=colnames, **kwargs)


# --- content checks (before anything is written) ----------------------------------------------

def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContentError(message)


def check_behavior(b: BehaviorContent) -> None:
    """Raise :class:`ContentError` when the behavior streams' lengths or tables do not fit together."""
    n_run = len(b.running_timestamps)
    for name in ("running_speed", "running_speed_unfiltered", "running_dx", "v_in", "v_sig"):
        _require(len(getattr(b, name)) == n_run,
                 f"{name} has {len(getattr(b, name))} samples, running_timestamps has {n_run}")
    for key in ("behavior_session_id", "equipment_name", "session_type", "stimulus_frame_rate"):
        _require(key in b.metadata, f"metadata lacks {key!r}")
    for column in (layout.START_TIME, layout.STOP_TIME):
        _require(column in b.trials.columns, f"trials lacks {column!r}")
    for column in (layout.START_TIME, "end_time", "stimulus_name"):
        _require(column in b.presentations.columns, f"presentations lack {column!r}")
    for template in b.templates:
        n = len(template.image_names)
        _require(template.warped.ndim == 3 and template.warped.shape[0] == n
                 and template.unwarped.shape == template.warped.shape,
                 f"template {template.name!r}: {n} names, warped {template.warped.shape}, "
                 f"unwarped {template.unwarped.shape}")
    if b.licks is not None:
        _require({"timestamps", "frame"} <= set(b.licks.columns), "licks need columns timestamps, frame")
    if b.rewards is not None:
        _require({"volume", "timestamps", "auto_rewarded"} <= set(b.rewards.columns),
                 "rewards need columns volume, timestamps, auto_rewarded")
    eye = b.eye_tracking
    if eye is not None:
        n = len(eye.timestamps)
        _require(len(eye.likely_blink) == n, f"likely_blink has {len(eye.likely_blink)} frames, eye tracking {n}")
        for label, ellipse in (("eye", eye.eye), ("pupil", eye.pupil), ("corneal_reflection", eye.corneal_reflection)):
            _require(np.shape(ellipse.center) == (n, 2), f"{label} center has shape {np.shape(ellipse.center)}, "
                                                          f"expected ({n}, 2)")
            for field in ("area", "area_raw", "width", "height", "angle"):
                _require(len(getattr(ellipse, field)) == n, f"{label} {field} has {len(getattr(ellipse, field))} "
                                                             f"frames, eye tracking {n}")


def check_ophys(o: OphysContent) -> None:
    """Raise :class:`ContentError` when the traces, ROI table and masks do not fit together."""
    n_roi = len(o.rois)
    n_frames = len(o.ophys_timestamps)
    for column in ("cell_roi_id",) + layout.CELL_TABLE_COLUMNS:
        _require(column in o.rois.columns, f"rois lack column {column!r}")
    _require(np.ndim(o.roi_masks) == 3 and len(o.roi_masks) == n_roi,
             f"roi_masks has shape {np.shape(o.roi_masks)}, expected ({n_roi}, rows, columns)")
    for name in ("dff", "corrected_fluorescence", "neuropil", "demixed"):
        value = getattr(o, name)
        if value is not None:
            _require(np.shape(value) == (n_frames, n_roi),
                     f"{name} has shape {np.shape(value)}, expected (frames={n_frames}, ROIs={n_roi})")
    for name in ("r", "rmse"):
        value = getattr(o, name)
        if value is not None:
            _require(np.shape(value) == (n_roi,), f"{name} has shape {np.shape(value)}, expected ({n_roi},)")
    rows = np.asarray(o.event_rows)
    _require(rows.ndim == 1 and (rows.size == 0 or (rows.min() >= 0 and rows.max() < n_roi)),
             "event_rows must be rows of the ROI table")
    _require(np.shape(o.events) == (n_frames, len(rows)),
             f"events has shape {np.shape(o.events)}, expected (frames={n_frames}, event ROIs={len(rows)})")
    for name in ("event_lambdas", "event_noise_stds"):
        _require(len(getattr(o, name)) == len(rows), f"{name} has {len(getattr(o, name))} values, "
                                                      f"event_rows {len(rows)}")
    for name in ("motion_x", "motion_y"):
        _require(len(getattr(o, name)) == n_frames, f"{name} has {len(getattr(o, name))} frames, "
                                                     f"ophys_timestamps {n_frames}")
    for name in ("max_projection", "average_projection", "segmentation_mask"):
        _require(np.ndim(getattr(o, name)) == 2, f"{name} must be a 2-D image")
    for key in ("field_of_view_height", "field_of_view_width", "targeted_imaging_depth", "ophys_session_id",
                "imaging_depth", "ophys_container_id", "ophys_experiment_id"):
        _require(key in o.behavior.metadata, f"metadata lacks {key!r}")


# --- the NWB file -----------------------------------------------------------------------------

def _time_series(name: str, data, timestamps, unit: str, description: str | None = None, **kwargs):
    from pynwb import TimeSeries

    if description is not None:
        kwargs["description"] = description
    if not isinstance(timestamps, TimeSeries):
        timestamps = _compressed(float_values(timestamps))
    return TimeSeries(name=name, data=_compressed(data), timestamps=timestamps, unit=unit, **kwargs)


def _nwbfile(content: BehaviorContent, keywords: tuple[str, ...]):
    from pynwb import NWBFile

    start = content.session_start_time
    if start.tzinfo is None:  # naive times are UTC (as readers assume), never the writer's local zone
        start = start.replace(tzinfo=dt.timezone.utc)
    return NWBFile(session_description=content.session_type, identifier=content.identifier,
                   session_start_time=start, file_create_date=[start],
                   experiment_description=content.experiment_description,
                   institution=content.institution, keywords=list(keywords))


def _add_device(nwbfile, equipment_name: str):
    config = MESOSCOPE_DEVICE if equipment_name.startswith(layout.MESOSCOPE_PREFIX) else SCIENTIFICA_DEVICE
    return nwbfile.create_device(name=equipment_name, **config)


def _add_general(nwbfile, content: BehaviorContent, ophys: OphysContent | None, types: _Types) -> None:
    cls = types.classes
    subject = dict(content.subject)
    driver_line = subject.pop("driver_line", None)
    reporter_line = subject.pop("reporter_line", None)
    if driver_line is not None:
        driver_line = [str(d) for d in np.atleast_1d(driver_line)]
    nwbfile.subject = cls["BehaviorSubject"](
        driver_line=driver_line or None,
        reporter_line=layout.NONE_STRING if reporter_line is None else str(reporter_line),
        **{k: (None if v is None else str(v)) for k, v in subject.items()})

    meta = content.metadata
    uuid_value = meta.get("behavior_session_uuid")
    fields = {
        "behavior_session_id": np.int64(meta["behavior_session_id"]),
        "behavior_session_uuid": layout.NONE_STRING if uuid_value is None else str(uuid_value),
        "equipment_name": str(meta["equipment_name"]),
        "project_code": str(meta.get("project_code") or layout.MISSING_PROJECT_CODE),
        "session_type": str(meta["session_type"]),
        "stimulus_frame_rate": float(meta["stimulus_frame_rate"]),
    }
    if ophys is None:
        nwbfile.add_lab_meta_data(cls["BehaviorMetadata"](name=layout.METADATA_NAME, **fields))
    else:
        group = meta.get("imaging_plane_group")
        fields.update({key: np.int64(meta[key]) for key in (
            "field_of_view_height", "field_of_view_width", "targeted_imaging_depth", "ophys_session_id",
            "imaging_depth", "ophys_container_id", "ophys_experiment_id")})
        fields["imaging_plane_group"] = np.int64(layout.NO_PLANE_GROUP if group is None else group)
        fields["imaging_plane_group_count"] = np.int64(meta.get("imaging_plane_group_count") or 0)
        nwbfile.add_lab_meta_data(cls["OphysBehaviorMetadata"](name=layout.METADATA_NAME, **fields))

    params = {}
    for key, value in content.task_parameters.items():
        if key == "image_set":  # derived by readers, never stored
            continue
        if key in ("blank_duration_sec", "response_window_sec"):
            value = [v if isinstance(v, str) else str(float(v)) for v in value]
        elif key == "n_stimulus_frames":
            value = np.int64(value)
        elif isinstance(value, (float, np.floating)):
            value = float(value)
        elif isinstance(value, np.generic):
            value = value.item()
        if value is None:
            continue
        params[key] = value
    nwbfile.add_lab_meta_data(cls["BehaviorTaskParameters"](name=layout.TASK_PARAMETERS_NAME, **params))


def _add_behavior_streams(nwbfile, b: BehaviorContent):
    """Stimulus times, running, licks, rewards; returns the stimulus-times TimeSeries."""
    from pynwb import ProcessingModule

    stimulus = ProcessingModule(name=layout.STIMULUS_MODULE, description=STIMULUS_MODULE_DESCRIPTION)
    stimulus_ts = _time_series(layout.STIMULUS_TIMESTAMPS_SERIES, float_values(b.stimulus_timestamps),
                               b.stimulus_timestamps, unit="s")
    stimulus.add(stimulus_ts)
    nwbfile.add_processing_module(stimulus)

    running = ProcessingModule(name=layout.RUNNING_MODULE, description=RUNNING_MODULE_DESCRIPTION)
    running.add(_time_series(layout.RUNNING_SPEED_SERIES, float_values(b.running_speed), b.running_timestamps, "cm/s"))
    running.add(_time_series(layout.RAW_RUNNING_SPEED_SERIES, float_values(b.running_speed_unfiltered),
                             b.running_timestamps, "cm/s"))
    running.add(_time_series(layout.RUNNING_DX_SERIES, np.asarray(b.running_dx, dtype=np.float32),
                             b.running_timestamps, "cm", DX_DESCRIPTION))
    nwbfile.add_processing_module(running)
    nwbfile.add_acquisition(_time_series(layout.V_SIG_SERIES, float_values(b.v_sig), b.running_timestamps, "V",
                                         V_SIG_DESCRIPTION))
    nwbfile.add_acquisition(_time_series(layout.V_IN_SERIES, float_values(b.v_in), b.running_timestamps, "V",
                                         V_IN_DESCRIPTION))

    if b.licks is not None:
        licking = ProcessingModule(name=layout.LICKING_MODULE, description=LICKING_MODULE_DESCRIPTION)
        licking.add(_time_series(layout.LICKS_SERIES, b.licks["frame"].to_numpy(dtype=np.int64),
                                 b.licks["timestamps"].to_numpy(dtype=np.float64), "N/A", LICKS_DESCRIPTION))
        nwbfile.add_processing_module(licking)
    if b.rewards is not None:
        rewards = ProcessingModule(name=layout.REWARDS_MODULE, description=LICKING_MODULE_DESCRIPTION)
        times = b.rewards["timestamps"].to_numpy(dtype=np.float64)
        rewards.add(_time_series(layout.REWARD_VOLUME_SERIES, b.rewards["volume"].to_numpy(dtype=np.float64),
                                 times, "mL"))
        rewards.add(_time_series(layout.REWARD_AUTOREWARDED_SERIES,
                                 b.rewards["auto_rewarded"].to_numpy(dtype=bool), times.copy(), "mL"))
        nwbfile.add_processing_module(rewards)
    return stimulus_ts


def _trials_table(trials: pd.DataFrame):
    from pynwb.epoch import TimeIntervals

    columns, colnames = [], []
    ordered = [layout.START_TIME, layout.STOP_TIME] + [c for c in trials.columns
                                                       if c not in (layout.START_TIME, layout.STOP_TIME)]
    for name in ordered:
        series = trials[name]
        description = TRIALS_COLUMN_DESCRIPTION.format(name)
        if name in (layout.START_TIME, layout.STOP_TIME):
            description = PRESENTATION_COLUMN_DESCRIPTIONS[name]
            columns += _vector_columns(name, description, series.to_numpy(dtype=np.float64))
        elif name == layout.LICK_TIMES and len(trials) and not any(np.size(v) for v in series):
            columns += _vector_columns(name, description, no_licks_column(len(trials)), ragged=True)
        elif name == layout.LICK_TIMES or is_ragged(series):
            # always ragged, even when every trial has exactly one lick (the SDK's quirk is not reproduced)
            columns += _vector_columns(name, description, ragged_values(series.to_list()), ragged=True)
        elif name == "change_frame" and series.dtype.kind == "f":
            columns += _vector_columns(name, description,
                                       series.fillna(layout.INT_NA).to_numpy(dtype=np.int64))
        elif is_text(series):
            columns += _vector_columns(name, description, text_values(series.to_numpy(dtype=object), na=""))
        else:
            columns += _vector_columns(name, description, column_values(series))
        colnames.append(name)
    ids = trials.index.to_numpy(dtype=np.int64) if len(trials) else np.zeros(0, np.int64)
    return _table(TimeIntervals, layout.TRIALS_TABLE, TRIALS_DESCRIPTION, ids, columns, colnames)


def presentation_order(columns) -> list[str]:
    """The stored column order of a presentation table (the SDK's, then any others)."""
    known = [c for c in layout.PRESENTATION_STORED_ORDER if c in columns]
    extras = [c for c in columns if c not in known and c not in (layout.START_TIME, "end_time", layout.STOP_TIME,
                                                                 layout.PRESENTATION_LAST, "index")]
    last = [layout.PRESENTATION_LAST] if layout.PRESENTATION_LAST in columns else []
    return known + extras + last


def _presentation_tables(presentations: pd.DataFrame, stimulus_ts, stimulus_times: np.ndarray) -> list:
    """One TimeIntervals per ``stimulus_name``, in first-appearance order (docs/format.md §7.5); the
    ``timeseries`` column points into ``stimulus_ts`` (frame times ``stimulus_times``) as pynwb would."""
    from hdmf.common import VectorIndex
    from pynwb.base import TimeSeriesReference, TimeSeriesReferenceVectorData
    from pynwb.epoch import TimeIntervals

    frame = presentations.reset_index(drop=True)
    if layout.OMITTED in frame and "is_change" in frame and frame["is_change"].dtype == bool:
        # is_change is a nullable boolean in the file: no value where omitted has none (gray screen, movie)
        is_change = frame["is_change"].astype("boolean")
        is_change[frame[layout.OMITTED].isna().to_numpy()] = pd.NA
        frame["is_change"] = is_change
    timestamps = float_values(stimulus_times)
    order = presentation_order(frame.columns)
    tables = []
    for stimulus_name in pd.unique(frame["stimulus_name"]):
        rows = frame[frame["stimulus_name"] == stimulus_name]
        start = rows[layout.START_TIME].to_numpy(dtype=np.float64)
        stop = rows["end_time"].to_numpy(dtype=np.float64)
        columns = (_vector_columns(layout.START_TIME, PRESENTATION_COLUMN_DESCRIPTIONS[layout.START_TIME], start)
                   + _vector_columns(layout.STOP_TIME, PRESENTATION_COLUMN_DESCRIPTIONS[layout.STOP_TIME], stop))
        colnames = [layout.START_TIME, layout.STOP_TIME]
        for name in order:
            series = rows[name]
            if series.isna().all():  # all-NaN within this stimulus: not stored
                continue
            values = column_values(series, nullable_bool=name in layout.PRESENTATION_NULLABLE_BOOLS)
            columns += _vector_columns(name, PRESENTATION_COLUMN_DESCRIPTIONS.get(name, NO_DESCRIPTION), values)
            colnames.append(name)
        n = len(rows)
        tags = np.full(n, layout.PRESENTATION_TAG_VALUE, dtype=object)
        columns += _vector_columns(layout.PRESENTATION_TAGS, PRESENTATION_COLUMN_DESCRIPTIONS[layout.PRESENTATION_TAGS],
                                   (tags, np.arange(1, n + 1, dtype=index_dtype(n))), ragged=True)
        first = np.searchsorted(timestamps, start, side="left")
        count = np.searchsorted(timestamps, stop, side="left") - first
        references = TimeSeriesReferenceVectorData(
            name=layout.PRESENTATION_TIMESERIES,
            description=PRESENTATION_COLUMN_DESCRIPTIONS[layout.PRESENTATION_TIMESERIES],
            data=[TimeSeriesReference(int(i), int(c), stimulus_ts) for i, c in zip(first, count)])
        columns += [references, VectorIndex(name=layout.PRESENTATION_TIMESERIES + layout.INDEX_SUFFIX,
                                            data=np.arange(1, n + 1, dtype=index_dtype(n)), target=references)]
        colnames += [layout.PRESENTATION_TAGS, layout.PRESENTATION_TIMESERIES]
        tables.append(_table(TimeIntervals, f"{stimulus_name}{layout.PRESENTATIONS_SUFFIX}",
                             PRESENTATIONS_DESCRIPTION.format(stimulus_name), np.arange(n), columns, colnames))
    return tables


def _add_stimulus(nwbfile, b: BehaviorContent, types: _Types) -> None:
    """``/stimulus/templates/<name>`` and the IndexSeries ``/stimulus/presentation/<name>``."""
    from pynwb.image import IndexSeries

    frame = b.presentations
    for template in b.templates:
        n = len(template.image_names)
        stored = types.classes["StimulusTemplate"](
            name=template.name, data=_compressed(np.asarray(template.warped, dtype=np.uint8)),
            unwarped=_compressed(float_values(template.unwarped)), control=np.arange(n, dtype=np.uint64),
            control_description=np.asarray([str(x) for x in template.image_names], dtype=object),
            timestamps=np.full(n, np.nan), format=TEMPLATE_FORMAT, unit=TEMPLATE_UNIT)
        nwbfile.add_stimulus_template(stored)
        if layout.PRESENTATION_IMAGE_SET not in frame:
            continue
        rows = frame[(frame[layout.PRESENTATION_IMAGE_SET] == template.name).fillna(False).to_numpy(bool)]
        if not len(rows):
            continue
        # the released files link the legacy `indexed_timeseries`; pynwb refuses it on new objects, so the
        # object is built the way pynwb builds objects read from a file
        series = IndexSeries.__new__(IndexSeries, in_construct_mode=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            series.__init__(name=template.name, data=rows["image_index"].to_numpy(dtype=np.uint64),
                            indexed_timeseries=stored, unit="N/A",
                            timestamps=rows[layout.START_TIME].to_numpy(dtype=np.float64))
        series._in_construct_mode = False
        nwbfile.add_stimulus(series)


def _add_eye_tracking(nwbfile, b: BehaviorContent, types: _Types) -> None:
    from pynwb import ProcessingModule, TimeSeries

    cls = types.classes
    eye = b.eye_tracking
    if eye is not None:
        def ellipse(name: str, e, timestamps):
            if not isinstance(timestamps, TimeSeries):
                timestamps = _compressed(float_values(timestamps))
            return cls["EllipseSeries"](
                name=name, data=_compressed(float_values(e.center)), area=_compressed(float_values(e.area)),
                area_raw=_compressed(float_values(e.area_raw)), width=_compressed(float_values(e.width)),
                height=_compressed(float_values(e.height)), angle=_compressed(float_values(e.angle)),
                reference_frame=layout.ELLIPSE_REFERENCE_FRAME, timestamps=timestamps)

        eye_series = ellipse(layout.ELLIPSE_SERIES["eye"], eye.eye, eye.timestamps)
        tracking = cls["EllipseEyeTracking"](
            name=layout.EYE_TRACKING_NAME,
            eye_tracking=eye_series,
            pupil_tracking=ellipse(layout.ELLIPSE_SERIES["pupil"], eye.pupil, eye_series),
            corneal_reflection_tracking=ellipse(layout.ELLIPSE_SERIES["cr"], eye.corneal_reflection, eye_series),
            likely_blink=TimeSeries(name=layout.LIKELY_BLINK_SERIES,
                                    data=_compressed(np.asarray(eye.likely_blink, dtype=bool)),
                                    timestamps=eye_series, unit="N/A", description=LIKELY_BLINK_DESCRIPTION))
        nwbfile.add_acquisition(tracking)
    rig = b.rig_geometry
    if rig is not None:
        module = ProcessingModule(name=layout.EYE_RIG_MODULE, description=EYE_RIG_MODULE_DESCRIPTION)
        vectors = {}
        for name, unit in RIG_UNITS.items():
            vectors[name] = float_values(getattr(rig, name)).reshape(3)
            vectors[f"{name}__{layout.EYE_RIG_UNIT_ATTR}"] = unit
        module.add(cls["OphysEyeTrackingRigMetadata"](name=layout.EYE_RIG_NAME, equipment=str(rig.equipment),
                                                      **vectors))
        nwbfile.add_processing_module(module)


def _add_ophys(nwbfile, o: OphysContent, types: _Types, device) -> None:
    from hdmf.common import DynamicTableRegion
    from pynwb import ProcessingModule, TimeSeries
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage
    from pynwb.ophys import (DfOverF, Fluorescence, ImageSegmentation, OpticalChannel, PlaneSegmentation,
                             RoiResponseSeries)

    plane = o.imaging_plane
    channel = OpticalChannel(name=layout.OPTICAL_CHANNEL_NAME, description=OPTICAL_CHANNEL_DESCRIPTION,
                             emission_lambda=float(plane.emission_lambda))
    imaging_plane = nwbfile.create_imaging_plane(
        name=layout.IMAGING_PLANE_NAME, optical_channel=channel, description=plane.description, device=device,
        excitation_lambda=float(plane.excitation_lambda), imaging_rate=float(plane.imaging_rate),
        indicator=plane.indicator, location=plane.location)

    module = ProcessingModule(name=layout.OPHYS_MODULE, description=OPHYS_MODULE_DESCRIPTION)
    nwbfile.add_processing_module(module)

    rois = o.rois.reset_index(drop=True)
    columns = []
    for name in layout.CELL_TABLE_COLUMNS:
        series = rois[name]
        if name == layout.CELL_SPECIMEN_ID_COLUMN:
            values = series.astype(object).where(series.notna(), layout.NULL_CELL_SPECIMEN_ID).to_numpy(np.int64)
        else:
            values = column_values(series)
        columns += _vector_columns(name, CELL_COLUMN_DESCRIPTIONS[name], values)
    columns += _vector_columns(layout.CELL_TABLE_MASK, CELL_COLUMN_DESCRIPTIONS[layout.CELL_TABLE_MASK],
                               np.asarray(o.roi_masks, dtype=bool))
    cells = _table(PlaneSegmentation, layout.CELL_TABLE_NAME, CELL_TABLE_DESCRIPTION,
                   rois["cell_roi_id"].to_numpy(dtype=np.int64), columns,
                   list(layout.CELL_TABLE_COLUMNS) + [layout.CELL_TABLE_MASK], imaging_plane=imaging_plane)
    module.add(ImageSegmentation(name=layout.IMAGE_SEGMENTATION, plane_segmentations=[cells]))

    n_roi = len(rois)
    region = DynamicTableRegion(name=layout.ROIS, data=np.arange(n_roi, dtype=np.int64),
                                description=DFF_ROIS_DESCRIPTION, table=cells)
    timestamps = float_values(o.ophys_timestamps)

    def traces(data, name=layout.TRACES_SERIES, ts=None):
        return RoiResponseSeries(name=name, data=_compressed(float_values(data)), rois=region, unit=TRACE_UNIT,
                                 timestamps=_compressed(timestamps.copy() if ts is None else ts))

    module.add(DfOverF(name=layout.DFF_INTERFACE, roi_response_series=[traces(o.dff)]))
    corrected = [traces(o.corrected_fluorescence)]
    dummy_times = np.arange(n_roi, dtype=np.float64)  # per-ROI values get dummy timestamps 0..N-1
    if o.r is not None:
        corrected.append(traces(o.r, layout.R_SERIES, dummy_times.copy()))
    if o.rmse is not None:
        corrected.append(traces(o.rmse, layout.RMSE_SERIES, dummy_times.copy()))
    module.add(Fluorescence(name=layout.CORRECTED_FLUORESCENCE_INTERFACE, roi_response_series=corrected))
    if o.demixed is not None:
        module.add(Fluorescence(name=layout.DEMIXED_INTERFACE, roi_response_series=[traces(o.demixed)]))
    if o.neuropil is not None:
        module.add(Fluorescence(name=layout.NEUROPIL_INTERFACE, roi_response_series=[traces(o.neuropil)]))

    event_region = DynamicTableRegion(name=layout.ROIS, data=np.asarray(o.event_rows, dtype=np.int64),
                                      description=EVENT_ROIS_DESCRIPTION, table=cells)
    module.add(types.classes["OphysEventDetection"](
        data=_compressed(float_values(o.events), always=True, shuffle=False), unit=EVENT_UNIT, rois=event_region,
        lambdas=float_values(o.event_lambdas), noise_stds=float_values(o.event_noise_stds),
        timestamps=_compressed(timestamps.copy())))

    for name, values in ((layout.MOTION_X_SERIES, o.motion_x), (layout.MOTION_Y_SERIES, o.motion_y)):
        module.add(TimeSeries(name=name, data=_compressed(np.asarray(values, dtype=np.int64)), unit=MOTION_UNIT,
                              timestamps=_compressed(timestamps.copy())))

    resolution = float(o.pixel_size_mm) / layout.RESOLUTION_TO_MM
    images = [GrayscaleImage(name=name, data=np.asarray(data), resolution=resolution,  # never gzip (as AllenSDK)
                             description=IMAGE_DESCRIPTION.format(name))
              for name, data in ((layout.MAX_PROJECTION_NAME, o.max_projection),
                                 (layout.AVERAGE_PROJECTION_NAME, o.average_projection),
                                 (layout.SEGMENTATION_MASK_NAME, o.segmentation_mask))]
    module.add(Images(name=layout.IMAGES_INTERFACE, images=images))


def build_nwbfile(content: BehaviorContent | OphysContent):
    """The pynwb ``NWBFile`` of ``content`` (not written), and the BuildManager to write it with."""
    from hdmf.build import BuildManager

    ophys = content if isinstance(content, OphysContent) else None
    behavior = ophys.behavior if ophys is not None else content
    if not isinstance(behavior, BehaviorContent):
        raise TypeError(f"write_nwb needs a BehaviorContent or an OphysContent, got {type(content)!r}")
    check_behavior(behavior)
    if ophys is not None:
        check_ophys(ophys)
    types = nwb_types()

    keywords = tuple(behavior.keywords)
    if ophys is not None and keywords == layout.BEHAVIOR_KEYWORDS:
        keywords = layout.EXPERIMENT_KEYWORDS  # experiment files carry the imaging keywords
    nwbfile = _nwbfile(behavior, keywords)
    device = _add_device(nwbfile, str(behavior.metadata["equipment_name"]))
    _add_general(nwbfile, behavior, ophys, types)
    stimulus_ts = _add_behavior_streams(nwbfile, behavior)
    nwbfile.trials = _trials_table(behavior.trials)
    for table in _presentation_tables(behavior.presentations, stimulus_ts, behavior.stimulus_timestamps):
        nwbfile.add_time_intervals(table)
    _add_stimulus(nwbfile, behavior, types)
    _add_eye_tracking(nwbfile, behavior, types)
    if ophys is not None:
        _add_ophys(nwbfile, ophys, types, device)
    return nwbfile, BuildManager(types.type_map)


def _ignore_layout_warnings() -> None:
    """Silence pynwb's warnings about choices the released layout makes on purpose."""
    # Device@manufacturer (deprecated in NWB 2.9 in favour of DeviceModel) is what the released files hold
    warnings.filterwarnings("ignore", message=".*'manufacturer' field is deprecated", category=DeprecationWarning)
    # the ROI regions are built before their RoiResponseSeries is placed in the ophys module
    warnings.filterwarnings("ignore", message="The linked table for DynamicTableRegion", category=UserWarning)


def _stable_object_ids(nwbfile, content: BehaviorContent | OphysContent) -> None:
    """Give every container an ``object_id`` derived from the file identifier and its place in the file
    (hdmf draws random uuid4s), so the same content always gives the same bytes."""
    identifier = (content.behavior if isinstance(content, OphysContent) else content).identifier
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"vbo:{identifier}")
    for container in nwbfile.all_children():
        chain, node = [], container
        while node is not None:
            chain.append(f"{type(node).__name__}:{node.name}")
            node = node.parent
        # hdmf offers no setter; the id is only read when the file is built
        container._AbstractContainer__object_id = str(uuid.uuid5(namespace, "/".join(reversed(chain))))
    nwbfile.all_children()  # rebuild the id → object map under the new ids


def write_nwb(content: BehaviorContent | OphysContent, path: str | os.PathLike) -> Path:
    """Write ``content`` as a released-layout Visual Behavior NWB file at ``path``.

    A :class:`~vbo.nwb.content.BehaviorContent` gives a behavior-session file, an
    :class:`~vbo.nwb.content.OphysContent` an ophys-experiment file. The file is written under a temporary
    name in the same folder and renamed to ``path`` only when complete, so a failed write never leaves a
    file (or a partial one) at ``path``; an existing file at ``path`` is replaced only on success.

    Parameters
    ----------
    content
        What the file holds. ``presentations`` is split by ``stimulus_name`` into
        ``/intervals/<stimulus_name>_presentations``; its nullable booleans (``omitted``, ``is_image_novel``,
        ``is_change``) should be pandas ``boolean`` with NA where they do not apply (a plain-bool ``is_change``
        gets NA where ``omitted`` is NA); the ``image_set`` column selects the rows of each template's
        ``/stimulus/presentation`` IndexSeries. Experiment files get the imaging keywords when
        ``keywords`` is left at the behavior default.
    path
        Target file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ContentError
        Inconsistent shapes or missing fields (nothing written).
    """
    from pynwb import NWBHDF5IO

    path = Path(path)
    with partial_file(path) as tmp, warnings.catch_warnings():
        _ignore_layout_warnings()
        nwbfile, manager = build_nwbfile(content)
        _stable_object_ids(nwbfile, content)
        with NWBHDF5IO(str(tmp), mode="w", manager=manager) as io:
            io.write(nwbfile, **_fixed_shape_option(io))
    return path


def _fixed_shape_option(io) -> dict:
    """The ``write`` argument that keeps hdmf from making table columns expandable (chunked, unlimited
    ``maxshape``): AllenSDK's writer (hdmf 3) stored every column contiguous, as the released files are. Older
    hdmf has no such argument and writes contiguous columns already; hdmf 4-5 take a bool, hdmf 6 a tuple of
    types."""
    from hdmf.utils import get_docval

    for argument in get_docval(type(io).write):
        if argument["name"] == "expandable":
            return {"expandable": False if argument.get("default") is True else ()}
    return {}


@contextlib.contextmanager
def partial_file(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write the file to: renamed to ``path`` when the block completes,
    removed when it fails, so ``path`` never holds a partial file (used by both writers)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial.nwb")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
