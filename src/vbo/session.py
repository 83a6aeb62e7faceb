"""BehaviorSession: one behavior session NWB file, read lazily with AllenSDK-compatible values."""

from __future__ import annotations

import datetime as dt
import os
import uuid
import warnings
from functools import cached_property
from typing import IO, Any

import h5py
import numpy as np
import pandas as pd

from vbo import behavior, derive
from vbo.errors import MalformedDataError, SessionClosedError
from vbo.nwb import layout
from vbo.nwb import read as nwb
from vbo.values import Coordinates

NwbSource = str | os.PathLike | IO[bytes]
STREAMED_SCHEMES = ("s3://", "https://", "http://")


def open_source(nwb_path: NwbSource) -> tuple[h5py.File, IO[bytes] | None]:
    """Open a path, URL (streamed by byte ranges) or file object as HDF5; also return the remote file opened."""
    remote = None
    if isinstance(nwb_path, str) and nwb_path.startswith(STREAMED_SCHEMES):
        from vbo.cache.s3 import open_remote

        nwb_path = remote = open_remote(nwb_path)
    try:
        return nwb.open_hdf5(nwb_path), remote
    except BaseException:
        if remote is not None:
            remote.close()
        raise


def adopt(build, h5: h5py.File, remote: IO[bytes] | None):
    """``build(h5)`` a session on an open file, which it then owns; close the file (and remote) if that fails."""
    try:
        session = build(h5)
    except BaseException:
        h5.close()
        if remote is not None:
            remote.close()
        raise
    session._remote = remote
    return session


class BehaviorSession:
    """A Visual Behavior session (behavior data of a training or imaging session).

    Open with :meth:`from_nwb_path`. Construction checks the file and reads nothing else; every
    member is read from the file on first access (whole datasets) and kept on the object. Use as a
    context manager, or call :meth:`close`, to release the file.
    """

    _DATA_MEMBERS = (
        "behavior_session_id", "eye_tracking", "eye_tracking_rig_geometry", "get_performance_metrics",
        "get_reward_rate", "get_rolling_performance_df", "licks", "metadata", "raw_running_speed", "rewards",
        "running_speed", "stimulus_presentations", "stimulus_templates", "stimulus_timestamps",
        "task_parameters", "trials",
    )
    _REQUIRED = layout.REQUIRED_BEHAVIOR
    _KIND = "behavior session"

    def __init__(self, h5: h5py.File, *, eye_tracking_z_threshold: float = 3.0,
                 eye_tracking_dilation_frames: int = 2,
                 add_is_change_to_stimulus_presentations_table: bool = True):
        nwb.require(h5, self._REQUIRED, self._KIND)
        self._file: h5py.File | None = h5
        self._remote = None  # a remote file object this session opened (streaming), closed with it
        self._name = h5.filename
        self._eye_tracking_z_threshold = eye_tracking_z_threshold
        self._eye_tracking_dilation_frames = eye_tracking_dilation_frames
        self._recompute_is_change = add_is_change_to_stimulus_presentations_table

    # --- construction and lifetime ----------------------------------------------------------

    @classmethod
    def from_nwb_path(cls, nwb_path: NwbSource, **kwargs) -> BehaviorSession:
        """Open an NWB file (path or binary file-like object) lazily.

        Parameters
        ----------
        nwb_path
            Path of a released NWB file; an ``s3://``, ``https://`` or ``http://`` URL of one (streamed by
            byte ranges, nothing downloaded; a ``?versionId=`` pins the object version; the endpoint follows
            ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``); or an open binary file-like object.
        **kwargs
            Reading options, as for :meth:`from_nwb`.

        Raises
        ------
        vbo.errors.NwbFileError
            The file is missing, not HDF5, truncated, or not a Visual Behavior file of this kind.
        """
        return adopt(lambda h5: cls(h5, **kwargs), *open_source(nwb_path))

    @classmethod
    def from_nwb(cls, nwbfile, **kwargs) -> BehaviorSession:
        """Wrap an already open file: an ``h5py.File`` or a pynwb ``NWBFile`` read from disk."""
        if isinstance(nwbfile, h5py.File):
            return cls(nwbfile, **kwargs)
        source = getattr(nwbfile, "container_source", None)
        if source is None:
            raise TypeError(f"from_nwb needs an h5py.File or an NWBFile read from a file, got {type(nwbfile)!r}")
        return cls.from_nwb_path(source, **kwargs)

    @classmethod
    def from_lims(cls, *args, **kwargs):
        """Not available: reads the Allen Institute's internal database."""
        raise NotImplementedError("from_lims reads the Allen Institute's internal database; use from_nwb_path")

    @classmethod
    def from_json(cls, *args, **kwargs):
        """Not available: builds a session from the internal pipeline's inputs."""
        raise NotImplementedError("from_json needs the Allen internal pipeline's inputs; use from_nwb_path")

    def to_nwb(self, *args, **kwargs):
        """Not available: vbo reads released files; it does not rewrite them."""
        raise NotImplementedError("vbo reads released NWB files; writing them back is not supported")

    def close(self) -> None:
        """Close the file. Members already read stay available; others raise SessionClosedError."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._remote is not None:
            self._remote.close()
            self._remote = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._file is None else "open"
        return f"<{type(self).__name__} {self._name} ({state})>"

    @property
    def _h5(self) -> h5py.File:
        if self._file is None:
            raise SessionClosedError(f"{self._name}: the session is closed; reopen it to read more members")
        return self._file

    def list_data_attributes_and_methods(self) -> list[str]:
        """The sorted names of the AllenSDK data members of this object (16 for a session)."""
        return sorted(self._DATA_MEMBERS)

    # --- metadata ---------------------------------------------------------------------------

    @cached_property
    def _metadata_attrs(self) -> dict[str, Any]:
        return nwb.attrs(self._h5, layout.METADATA)

    @property
    def behavior_session_id(self) -> int:
        """Behavior session id."""
        nwb.integer_attr(self._metadata_attrs, "behavior_session_id", self._h5, layout.METADATA)
        return self._metadata_attrs["behavior_session_id"]  # as stored (numpy int64, as AllenSDK returns it)

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """Session metadata: 14 keys (mouse, genotype, rig, session type, date ...), as in AllenSDK."""
        h5 = self._h5
        meta = self._metadata_attrs
        subject = nwb.attrs(h5, layout.SUBJECT)
        genotype = nwb.text(h5, layout.SUBJECT_GENOTYPE)
        start = nwb.datetime_text(h5, layout.SESSION_START_TIME)
        driver_line = subject.get("driver_line")
        driver_line = sorted(str(d) for d in np.atleast_1d(driver_line)) if driver_line is not None else []
        age = nwb.text(h5, layout.SUBJECT_AGE) if nwb.exists(h5, layout.SUBJECT_AGE) else None
        nwb.integer_attr(meta, "behavior_session_id", h5, layout.METADATA)  # checked, returned as stored
        nwb.number_attr(meta, "stimulus_frame_rate", h5, layout.METADATA)
        return {
            "equipment_name": nwb.text_attr(meta, "equipment_name", h5, layout.METADATA),
            "sex": nwb.text(h5, layout.SUBJECT_SEX),
            "age_in_days": derive.age_in_days(age),
            "stimulus_frame_rate": meta["stimulus_frame_rate"],
            "session_type": nwb.text_attr(meta, "session_type", h5, layout.METADATA),
            "date_of_acquisition": start.astimezone(dt.timezone.utc),
            "reporter_line": derive.none_if_none_string(
                nwb.text_attr(subject, "reporter_line", h5, layout.SUBJECT) if "reporter_line" in subject else None),
            "cre_line": derive.cre_line(genotype),
            "behavior_session_uuid": self._session_uuid(meta),
            "driver_line": driver_line,
            "mouse_id": nwb.text(h5, layout.SUBJECT_ID),
            "project_code": meta.get("project_code", layout.MISSING_PROJECT_CODE),
            "full_genotype": genotype,
            "behavior_session_id": meta["behavior_session_id"],
        }

    def _session_uuid(self, meta: dict[str, Any]) -> uuid.UUID | None:
        """``behavior_session_uuid`` as a UUID (None when stored as ``"None"`` or absent)."""
        stored = meta.get("behavior_session_uuid")
        if stored is not None and not isinstance(stored, str):
            raise MalformedDataError(self._name, f"{layout.METADATA}@behavior_session_uuid",
                                     f"must be text, found {stored!r:.80}")
        stored = derive.none_if_none_string(stored)
        if not stored:
            return None
        try:
            return uuid.UUID(str(stored))
        except ValueError:
            raise MalformedDataError(self._name, f"{layout.METADATA}@behavior_session_uuid",
                                     f"is not a UUID: {str(stored)[:80]!r}") from None

    @cached_property
    def task_parameters(self) -> dict[str, Any]:
        """Task settings (13 keys, alphabetical): reward volumes (mL), durations and windows (s), stimulus."""
        h5 = self._h5
        stored = nwb.attrs(h5, layout.TASK_PARAMETERS)
        params: dict[str, Any] = {}
        for key, value in stored.items():
            if key in layout.HDMF_BOOKKEEPING_ATTRS:
                continue
            if key in ("blank_duration_sec", "response_window_sec"):
                value = self._two_numbers(key, value)
            elif isinstance(value, np.generic):
                value = value.item()
            params[key] = value
        params.setdefault("omitted_flash_fraction", float("nan"))
        session_type = nwb.text_attr(params, "session_type", h5, layout.TASK_PARAMETERS)
        try:
            params["image_set"] = derive.image_set(session_type)
        except ValueError as err:
            raise MalformedDataError(self._name, f"{layout.TASK_PARAMETERS}@session_type", str(err)) from None
        return dict(sorted(params.items()))

    def _two_numbers(self, key: str, value: Any) -> list[float]:
        """A task-parameter window stored as text numbers (``["0.5", "0.5"]``) as two floats (s)."""
        try:
            numbers = [float(v) for v in np.atleast_1d(value)]
        except (TypeError, ValueError):
            numbers = []
        if len(numbers) != 2:
            raise MalformedDataError(self._name, f"{layout.TASK_PARAMETERS}@{key}",
                                     f"must hold two numbers (s), found {value!r:.80}")
        return numbers

    # --- behavior streams -------------------------------------------------------------------

    @cached_property
    def stimulus_timestamps(self) -> np.ndarray:
        """Time of every displayed stimulus frame (60 Hz), seconds, without monitor delay."""
        return np.asarray(nwb.read_numeric(self._h5, layout.STIMULUS_TIMESTAMPS), dtype=np.float64)

    def _series(self, path: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(timestamps, data) of a numeric TimeSeries, one data row per timestamp; None when absent."""
        h5 = self._h5
        if not nwb.exists(h5, path):
            return None
        timestamps = nwb.read_numeric(h5, f"{path}/{layout.TIMESTAMPS}")
        data = nwb.read_numeric(h5, f"{path}/{layout.DATA}", ndim=None)
        nwb.same_length(h5, f"{path}/{layout.DATA}", data, len(timestamps), f"timestamps of {path}")
        return timestamps, data

    @cached_property
    def licks(self) -> pd.DataFrame:
        """Lick times (s, no monitor delay) and the stimulus frame of each lick."""
        series = self._series(layout.LICKS)
        if series is None:
            return pd.DataFrame({"timestamps": pd.Series(dtype=float), "frame": pd.Series(dtype=float)})
        timestamps, frames = series
        if frames.dtype.kind == "f" and not np.isfinite(frames).all():
            raise MalformedDataError(self._name, f"{layout.LICKS}/{layout.DATA}", "lick frames must be whole numbers")
        return pd.DataFrame({"timestamps": timestamps, "frame": frames.astype(np.int64)})

    @cached_property
    def rewards(self) -> pd.DataFrame:
        """Reward volume (mL), time (s) and whether each reward was automatic."""
        volume = self._series(layout.REWARD_VOLUME)
        if volume is None:
            return pd.DataFrame({name: pd.Series(dtype=float) for name in ("volume", "timestamps", "auto_rewarded")})
        timestamps, volumes = volume
        auto_path = f"{layout.REWARD_AUTOREWARDED}/{layout.DATA}"
        auto = nwb.booleans(self._h5, auto_path, nwb.read(self._h5, auto_path))
        nwb.same_length(self._h5, auto_path, auto, len(volumes), "rewards")
        return pd.DataFrame({"volume": volumes, "timestamps": timestamps, "auto_rewarded": auto})

    def _running(self, path: str) -> pd.DataFrame:
        timestamps, speed = self._series(path) or (np.zeros(0), np.zeros(0))
        speed = np.asarray(speed, dtype=np.float64)
        if speed.size and np.nanmean(speed) < -1.0:  # encoder wired backwards: flip the whole trace
            speed = -speed
        return pd.DataFrame({"timestamps": timestamps, "speed": speed})

    @cached_property
    def running_speed(self) -> pd.DataFrame:
        """Running speed (cm/s, 10 Hz low-pass filtered) at each stimulus frame time (s)."""
        return self._running(layout.RUNNING_SPEED)

    @cached_property
    def raw_running_speed(self) -> pd.DataFrame:
        """Unfiltered running speed (cm/s) at each stimulus frame time (s)."""
        return self._running(layout.RAW_RUNNING_SPEED)

    @cached_property
    def running_acquisition(self) -> pd.DataFrame:
        """Raw wheel-encoder signals (not exposed by AllenSDK): ``dx`` (cm), ``v_in``, ``v_sig`` (V), by time (s)."""
        columns = {}
        timestamps = None
        for name, path in (("dx", layout.RUNNING_DX), ("v_in", layout.V_IN), ("v_sig", layout.V_SIG)):
            series = self._series(path)
            if series is not None:
                timestamps = series[0] if timestamps is None else timestamps
                nwb.same_length(self._h5, f"{path}/{layout.DATA}", series[1], len(timestamps),
                                "samples of the other running signals")
                columns[name] = series[1]
        frame = pd.DataFrame(columns, index=pd.Index(timestamps if timestamps is not None else [], name="timestamps",
                                                     dtype=float))
        return frame

    @cached_property
    def trials(self) -> pd.DataFrame:
        """One row per trial (index ``trials_id``), the 21 columns of AllenSDK; times in s, volumes in mL."""
        h5 = self._h5
        if not nwb.exists(h5, layout.TRIALS):
            return pd.DataFrame(index=pd.Index([], dtype=np.int64, name="trials_id"))
        table = nwb.group(h5, layout.TRIALS)
        ids, columns = nwb.read_table(table)
        nwb.check_column_kinds(table, columns, layout.TRIAL_BOOLEAN_COLUMNS, layout.TRIAL_NUMBER_COLUMNS,
                               layout.TRIAL_TEXT_COLUMNS)
        data = {}
        for name, values in columns.items():
            if name == "lick_events":
                continue
            if isinstance(values, list):
                series = pd.Series([np.asarray(v, dtype=np.float64) for v in values], dtype=object)
            elif name == "lick_times":  # the writer's quirk: one lick per trial stored as a plain column
                series = pd.Series([np.atleast_1d(np.float64(v)) for v in values], dtype=object)
            elif values.dtype == object:
                series = derive.object_strings(values)
            else:
                series = pd.Series(values)
            data[name] = series
        frame = pd.DataFrame(data)
        if "change_frame" in frame and frame["change_frame"].dtype.kind == "f":
            frame["change_frame"] = frame["change_frame"].fillna(layout.INT_NA).astype(np.int64)
        frame.index = pd.Index(ids.astype(np.int64), name="trials_id")
        return frame

    @cached_property
    def stimulus_presentations(self) -> pd.DataFrame:
        """Every stimulus shown (flashes, omissions, gray screens, movie frames), sorted by start time (s)."""
        h5 = self._h5
        tables = []
        for name in sorted(nwb.group(h5, layout.INTERVALS)) if nwb.exists(h5, layout.INTERVALS) else []:
            if name.endswith(layout.PRESENTATIONS_SUFFIX):
                table = nwb.group(h5, f"{layout.INTERVALS}/{name}")
                _, columns = nwb.read_table(table, skip=layout.PRESENTATION_SKIP_COLUMNS)
                nwb.check_column_kinds(table, columns, layout.PRESENTATION_BOOLEAN_COLUMNS,
                                       layout.PRESENTATION_NUMBER_COLUMNS, layout.PRESENTATION_TEXT_COLUMNS)
                tables.append(derive.presentation_frame(columns))
        needs_trials = not all(
            all(c in t for t in tables) for c in ("trials_id", "active", "is_sham_change")
        )
        trials = self.trials if needs_trials and nwb.exists(h5, layout.TRIALS) else None
        return derive.stimulus_presentations(tables, trials, self._recompute_is_change)

    @cached_property
    def stimulus_templates(self) -> pd.DataFrame | None:
        """The images shown, indexed by ``image_name``: ``unwarped`` (float, NaN off-screen) and ``warped`` (uint8)."""
        h5 = self._h5
        if not nwb.exists(h5, layout.STIMULUS_TEMPLATES):
            return None
        names = [n for n in nwb.group(h5, layout.STIMULUS_TEMPLATES) if layout.MOVIE_TEMPLATE_MARKER not in n]
        if not names:
            return None
        path = f"{layout.STIMULUS_TEMPLATES}/{names[0]}"
        image_names = nwb.read(h5, f"{path}/{layout.TEMPLATE_IMAGE_NAMES}")
        warped = nwb.read_numeric(h5, f"{path}/{layout.DATA}", ndim=3)
        unwarped = nwb.read_numeric(h5, f"{path}/{layout.TEMPLATE_UNWARPED}", ndim=3)
        for part, values in ((layout.TEMPLATE_IMAGE_NAMES, np.atleast_1d(image_names)), (layout.DATA, warped),
                             (layout.TEMPLATE_UNWARPED, unwarped)):
            nwb.same_length(h5, f"{path}/{part}", values, len(np.atleast_1d(image_names)), f"images of {path}")
        index = pd.Index(derive.object_strings(np.atleast_1d(image_names)), name="image_name")
        templates = pd.DataFrame({"unwarped": pd.Series(list(unwarped), index=index, dtype=object),
                                  "warped": pd.Series(list(warped), index=index, dtype=object)}, index=index)
        templates.name = names[0]  # the image set, as the SDK names this frame
        return templates

    # --- eye tracking -----------------------------------------------------------------------

    @cached_property
    def eye_tracking(self) -> pd.DataFrame:
        """Eye, pupil and corneal-reflection ellipses per eye-camera frame (px, px², rad; times in s).

        Areas and ``likely_blink`` are recomputed from the raw areas (z-score outliers, dilated);
        blink frames are NaN in the masked columns. Empty frame (and a warning) without eye tracking.
        """
        h5 = self._h5
        if not nwb.exists(h5, layout.EYE_TIMESTAMPS):
            warnings.warn(f"This nwb file with identifier {nwb.read(h5, layout.IDENTIFIER)} has no eye tracking data "
                          f"({self._name})", UserWarning, stacklevel=2)
            return derive.empty_eye_tracking()
        timestamps = nwb.read_numeric(h5, layout.EYE_TIMESTAMPS)
        ellipses = {}
        for prefix, series in layout.ELLIPSE_SERIES.items():
            base = f"{layout.EYE_TRACKING}/{series}"
            ellipses[prefix] = {}
            for name in layout.ELLIPSE_FIELDS:
                path = f"{base}/{name}"
                values = nwb.read_numeric(h5, path, ndim=2 if name == layout.DATA else 1)
                nwb.same_length(h5, path, values, len(timestamps), f"eye-tracking timestamps")
                if name == layout.DATA and values.shape[1] != 2:
                    raise MalformedDataError(self._name, path, f"ellipse centres must be (n, 2), found {values.shape}")
                ellipses[prefix][name] = values
        return derive.eye_tracking_frame(timestamps, ellipses,
                                         self._eye_tracking_z_threshold, self._eye_tracking_dilation_frames)

    @cached_property
    def eye_tracking_rig_geometry(self) -> dict[str, Any]:
        """Positions (mm) and rotations (degrees) of camera, LED and monitor; ``{}`` when absent."""
        h5 = self._h5
        if not nwb.exists(h5, layout.EYE_RIG_GEOMETRY):
            return {}
        geometry: dict[str, Any] = {}
        for key, name in layout.EYE_RIG_VECTORS.items():
            path = f"{layout.EYE_RIG_GEOMETRY}/{name}"
            vector = nwb.read_numeric(h5, path)
            nwb.same_length(h5, path, vector, 3, "coordinates (x, y, z)")
            geometry[key] = Coordinates(*(float(v) for v in vector))
        geometry["equipment"] = nwb.attrs(h5, layout.EYE_RIG_GEOMETRY).get("equipment")
        return dict(sorted(geometry.items()))

    # --- performance ------------------------------------------------------------------------

    @property
    def _response_window_start(self) -> float:
        return nwb.need(self.task_parameters, "response_window_sec", self._h5, layout.TASK_PARAMETERS)[0]

    def get_reward_rate(self) -> np.ndarray:
        """Rewards per minute for every trial (centred window of up to 50 trials; NaN for the first 10)."""
        return behavior.reward_rate(self.trials, self._response_window_start)

    @cached_property
    def _rolling_performance(self) -> pd.DataFrame:
        return behavior.rolling_performance(self.trials, self._response_window_start)

    def get_rolling_performance_df(self) -> pd.DataFrame:
        """Trial-by-trial reward rate, hit/false-alarm rates (raw and corrected) and d′ (index ``trials_id``)."""
        return self._rolling_performance.copy()

    def get_performance_metrics(self, engaged_trial_reward_rate_threshold: float = 2.0) -> dict:
        """Session performance summary (23 keys): trial counts, reward counts and volume (mL), rates, d′.

        Parameters
        ----------
        engaged_trial_reward_rate_threshold
            Reward rate (rewards/min) above which a trial counts as engaged.
        """
        return behavior.performance_metrics(self.trials, self.rewards, self._response_window_start,
                                            engaged_trial_reward_rate_threshold, rolling=self._rolling_performance)
