"""BehaviorSession: one behavior session NWB file, read lazily with AllenSDK-compatible values."""

from __future__ import annotations

import datetime as dt
import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import IO, Any

import h5py
import numpy as np
import pandas as pd

from vbo import behavior, derive, source
from vbo.errors import MalformedDataError
from vbo.members import data_member
from vbo.nwb import layout
from vbo.nwb import read as nwb
from vbo.nwb.pool import FileHandle
from vbo.nwb.prefetch import HINT_WINDOW_BYTES, GroupHints
from vbo.values import Coordinates

NwbSource = str | os.PathLike | IO[bytes]
STREAMED_SCHEMES = source.STREAMED_SCHEMES


def open_source(nwb_path: NwbSource) -> FileHandle:
    """Open a path, URL (streamed by byte ranges) or file object as HDF5, as a handle on the file pool.

    A path or URL can be opened again (:func:`vbo.source.open_file`), so the pool (:mod:`vbo.nwb.pool`) may
    close its file between reads and the handle reopens it on the next one; a file object cannot, so its
    handle holds it until closed.

    Raises
    ------
    vbo.errors.NwbFileError
        The file is missing, not HDF5 or truncated.
    """
    if isinstance(nwb_path, (str, os.PathLike)):
        return _pooled_handle(source.open_file(nwb_path))
    return FileHandle(nwb.source_name(nwb_path), None, (nwb.open_hdf5(nwb_path), None))


def _hdf5_of(opened: source.OpenedFile) -> h5py.File:
    """``opened`` as HDF5; what the opening made is released if that fails. A streamed file prefetches the
    blocks that the metadata HDF5 reads points at (:class:`vbo.nwb.prefetch.GroupHints`: a chunk index node's
    children, a group's member headers, heaps and symbol nodes; the interval tables whole)."""
    if opened.remote is not None:
        remote = opened.remote
        remote.read_hint = GroupHints(remote.cached, window=HINT_WINDOW_BYTES, skip=layout.NOT_PREFETCHED,
                                      deeper=layout.PREFETCHED_DEEPER, inside=layout.INSIDE_EXTENTS,
                                      data_of=layout.DATA_PREFETCHED)
    try:
        return nwb.open_hdf5(opened.target)
    except BaseException:
        if opened.release is not None:
            opened.release()
        raise


def _pooled_handle(opened: source.OpenedFile) -> FileHandle:
    """A pooled handle on a local file or remote object; reopening reads the same bytes (a local file must not
    have changed on disk, a remote object is read at the version first seen)."""
    h5 = _hdf5_of(opened)

    def reopen() -> tuple[h5py.File, object]:
        again = opened.reopen()
        file = _hdf5_of(again)
        handle.source = again
        return file, again.release

    name = opened.name if opened.remote is not None else h5.filename
    handle = FileHandle(name, reopen, (h5, opened.release), source=opened)
    return handle


def adopt(build, handle: FileHandle):
    """``build(handle)`` a session on an opened file, which it then owns; close the handle if that fails."""
    try:
        return build(handle)
    except BaseException:
        handle.close()
        raise


def _running_doc(filtering: str, speed: str) -> str:
    """Documentation of a running-speed member: the speed ``filtering`` (how it was filtered) and how its
    ``speed`` column was processed."""
    return f"""Running speed of the mouse on the wheel, {filtering}: a ``pandas.DataFrame``, one row per stimulus frame.

Index: ``RangeIndex`` (unnamed).

Columns
-------
timestamps : float64
    Stimulus frame time (s, without monitor delay), ≈ 60 Hz.
speed : float64
    Running speed (cm/s), {speed}"""


class BehaviorSession:
    """A Visual Behavior session (behavior data of a training or imaging session).

    Open with :meth:`from_nwb_path`. Construction checks the file and reads nothing else; every
    member is read from the file on first access (whole datasets) and kept on the object.

    The object holds no open file: opened from a path or URL, it borrows its file from a bounded,
    process-wide pool (:mod:`vbo.nwb.pool`) while it reads a member, and the pool closes the least
    recently used files when it is full (reopening them transparently), so any number of sessions can be
    alive at once. A session made from an open ``h5py.File`` or file object cannot reopen it and keeps it
    open. Use as a context manager, or call :meth:`close`, to give the file back for good.
    """

    _DATA_MEMBERS = (
        "behavior_session_id", "eye_tracking", "eye_tracking_rig_geometry", "get_performance_metrics",
        "get_reward_rate", "get_rolling_performance_df", "licks", "metadata", "raw_running_speed", "rewards",
        "running_speed", "stimulus_presentations", "stimulus_templates", "stimulus_timestamps",
        "task_parameters", "trials",
    )
    _REQUIRED = layout.REQUIRED_BEHAVIOR
    _KIND = "behavior session"

    def __init__(self, h5: h5py.File | FileHandle, *, eye_tracking_z_threshold: float = 3.0,
                 eye_tracking_dilation_frames: int = 2,
                 add_is_change_to_stimulus_presentations_table: bool = True):
        handle = h5 if isinstance(h5, FileHandle) else FileHandle(h5.filename, None, (h5, None))
        with handle.pinned() as file:
            nwb.require(file, self._REQUIRED, self._KIND)
        self._handle = handle
        self._name = handle.name
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
        return adopt(lambda handle: cls(handle, **kwargs), open_source(nwb_path))

    @classmethod
    def from_nwb(cls, nwbfile, **kwargs) -> BehaviorSession:
        """Wrap an already open file: an ``h5py.File`` (kept open by the object, closed by :meth:`close`)
        or a pynwb ``NWBFile`` read from disk (its file is opened again by path)."""
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
        """Close the file for good. Members already read stay available; others raise SessionClosedError."""
        handle = self.__dict__.get("_handle")
        if handle is not None:
            handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        handle = self.__dict__.get("_handle")
        if handle is not None:
            try:
                handle.close_soon()  # never blocks: a finaliser may run inside another thread's HDF5 call
            except Exception:
                pass

    def __repr__(self) -> str:
        state = "closed" if self._handle.closed else "open"
        return f"<{type(self).__name__} {self._name} ({state})>"

    @property
    def _h5(self) -> h5py.File:
        """The open file; inside :meth:`_reading` (every data member) the pool cannot close it meanwhile."""
        return self._handle.file()

    @contextmanager
    def _reading(self, member: str | None = None) -> Iterator[h5py.File]:
        """Context manager keeping the file open (pinned in the pool) while ``member`` is read, giving the file;
        for a streamed file, also a phase of its read plan (:meth:`vbo.source.remote.RemoteFile.phase`)."""
        with self._handle.pinned() as file:
            remote = getattr(self._handle.source, "remote", None)
            with remote.phase(member) if remote is not None and member else nullcontext():
                yield file

    def _stream_prefetch(self):
        """For a streamed file: its :meth:`~vbo.source.remote.RemoteFile.prefetch` (byte ranges fetched in parallel
        ahead of the reads), else None."""
        remote = getattr(self._handle.source, "remote", None)
        return None if remote is None else remote.prefetch

    def list_data_attributes_and_methods(self) -> list[str]:
        """The sorted names of the AllenSDK data members of this object (16 for a session)."""
        return sorted(self._DATA_MEMBERS)

    # --- metadata ---------------------------------------------------------------------------

    @data_member
    def _metadata_attrs(self) -> dict[str, Any]:
        return nwb.attrs(self._h5, layout.METADATA)

    @property
    def behavior_session_id(self) -> int:
        """Id of this behavior session in the release (an ``int``; index of ``behavior_session_table``).

        Read from the file's metadata attributes (a few bytes), like every id.
        """
        nwb.integer_attr(self._metadata_attrs, "behavior_session_id", self._h5, layout.METADATA)
        return self._metadata_attrs["behavior_session_id"]  # as stored (numpy int64, as AllenSDK returns it)

    @data_member
    def metadata(self) -> dict[str, Any]:
        """Session metadata: a ``dict`` of 14 keys, in this order, as AllenSDK returns them.

        Keys
        ----
        equipment_name : str
            Rig, e.g. ``MESO.1``, ``CAM2P.3``, ``BEH.B-Box2``.
        sex : str
            ``F`` or ``M``.
        age_in_days : int or None
            Age of the mouse at the session (days), from the stored ``P<n>D``.
        stimulus_frame_rate : float
            Stimulus monitor frame rate (Hz), 60.0.
        session_type : str
            Stage of the task, e.g. ``OPHYS_4_images_B``, ``TRAINING_3_images_A_10uL_reward``.
        date_of_acquisition : datetime.datetime
            Session start, time-zone aware, in UTC.
        reporter_line : str or None
            e.g. ``Ai148(TIT2L-GC6f-ICL-tTA2)``.
        cre_line : str or None
            e.g. ``Sst-IRES-Cre``, taken from the full genotype.
        behavior_session_uuid : uuid.UUID or None
            Id of the behavior log.
        driver_line : list of str or None
            Driver lines, sorted; None when the file stores none (as AllenSDK returns).
        mouse_id : str
            Mouse id (a string, as in AllenSDK).
        project_code : str
            e.g. ``VisualBehaviorMultiscope``; ``"Not Available"`` when not stored.
        full_genotype : str
            e.g. ``Sst-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt``.
        behavior_session_id : int
            As :attr:`behavior_session_id`.
        """
        h5 = self._h5
        meta = self._metadata_attrs
        subject = nwb.attrs(h5, layout.SUBJECT)
        genotype = nwb.text(h5, layout.SUBJECT_GENOTYPE)
        start = nwb.datetime_text(h5, layout.SESSION_START_TIME)
        driver_line = subject.get("driver_line")
        # no stored driver line (the attribute is optional): None, as AllenSDK returns
        driver_line = sorted(str(d) for d in np.atleast_1d(driver_line)) if driver_line is not None else None
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

    @data_member
    def task_parameters(self) -> dict[str, Any]:
        """Task settings of the session: a ``dict`` of 13 keys in alphabetical order.

        Keys
        ----
        auto_reward_volume : float
            Volume of an automatic reward (mL), e.g. 0.005.
        blank_duration_sec : list of 2 float
            Gray screen before the first stimulus, range (s).
        image_set : str
            ``images_A`` … ``images_H`` or ``gratings``, from the session type.
        n_stimulus_frames : int
            Number of stimulus frames shown in the change-detection block.
        omitted_flash_fraction : float
            Fraction of flashes omitted; NaN when not applicable.
        response_window_sec : list of 2 float
            Window after a change in which a lick counts as a response (s), e.g. ``[0.15, 0.75]``.
        reward_volume : float
            Volume of an earned reward (mL), e.g. 0.007.
        session_type : str
            As ``metadata["session_type"]``.
        stimulus : str
            ``images`` or ``grating``.
        stimulus_distribution : str
            ``geometric`` or ``exponential`` (distribution of change times).
        stimulus_duration_sec : float
            Flash duration (s), 0.25; NaN for static stimuli.
        stimulus_name : str
            e.g. ``Natural_Images_Lum_Matched_set_ophys_6_2017`` (absent in some older files).
        task : str
            ``change detection``.
        """
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

    @data_member
    def stimulus_timestamps(self) -> np.ndarray:
        """Time of every displayed stimulus frame (≈ 60 Hz): a float64 ``numpy.ndarray`` in seconds.

        Times do not include the monitor delay. ``licks.frame`` and the ``start_frame`` / ``end_frame`` columns of
        :attr:`stimulus_presentations` index into this array.
        """
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

    @data_member
    def licks(self) -> pd.DataFrame:
        """Every lick the lick detector recorded: a ``pandas.DataFrame``, one row per lick.

        Index: ``RangeIndex`` (unnamed).

        Columns
        -------
        timestamps : float64
            Lick time (s, without monitor delay).
        frame : int64
            Stimulus frame of the lick (index into :attr:`stimulus_timestamps`).

        Empty (with both columns) for sessions without a lick record (e.g. passive sessions).
        """
        series = self._series(layout.LICKS)
        if series is None:
            return pd.DataFrame({"timestamps": pd.Series(dtype=float), "frame": pd.Series(dtype=float)})
        timestamps, frames = series
        if frames.dtype.kind == "f" and not np.isfinite(frames).all():
            raise MalformedDataError(self._name, f"{layout.LICKS}/{layout.DATA}", "lick frames must be whole numbers")
        return pd.DataFrame({"timestamps": timestamps, "frame": frames.astype(np.int64)})

    @data_member
    def rewards(self) -> pd.DataFrame:
        """Every water reward given: a ``pandas.DataFrame``, one row per reward.

        Index: ``RangeIndex`` (unnamed).

        Columns
        -------
        volume : float64
            Reward volume (mL); typically 0.005 automatic, 0.007 earned (0.010 in ``10uL_reward`` stages).
        timestamps : float64
            Reward time (s, without monitor delay).
        auto_rewarded : bool
            True for rewards given automatically (not earned by a lick).

        Empty (with the three columns) for sessions without rewards.
        """
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

    @data_member(doc=_running_doc("filtered", "10 Hz low-pass filtered. If its mean is below −1 cm/s (encoder "
                                              "wired backwards)\n    the whole column is negated, as AllenSDK does."))
    def running_speed(self) -> pd.DataFrame:
        return self._running(layout.RUNNING_SPEED)

    @data_member(doc=_running_doc("unfiltered", "not filtered; negated as a whole when its mean is below −1 cm/s."))
    def raw_running_speed(self) -> pd.DataFrame:
        return self._running(layout.RAW_RUNNING_SPEED)

    @data_member
    def running_acquisition(self) -> pd.DataFrame:
        """Raw wheel-encoder signals (a vbo addition, not in AllenSDK): a ``pandas.DataFrame``, one row per sample.

        Index: ``timestamps`` (float64, s).

        Columns
        -------
        dx : float64
            Wheel displacement per sample (cm).
        v_in : float64
            Encoder supply voltage (V).
        v_sig : float64
            Encoder signal voltage (V).

        Columns absent from the file are left out.
        """
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

    @data_member
    def trials(self) -> pd.DataFrame:
        """One row per trial of the change-detection task: a ``pandas.DataFrame`` of 21 columns, as AllenSDK returns it.

        Index: ``trials_id`` (int64).

        Columns
        -------
        start_time, stop_time : float64
            Trial start and end (s, without monitor delay).
        initial_image_name, change_image_name : str
            Image (or ``gratings_<orientation>``) at the trial start, and after the change (the same when none).
        is_change : bool
            The stimulus changed in this trial.
        change_time : float64
            Time of the change (s, with monitor delay); NaN without a change.
        go, catch : bool
            Go trial (not aborted, not catch, not auto-rewarded); catch trial (sham change).
        lick_times : object
            Array of the trial's lick times (s, without monitor delay).
        response_time : float64
            First lick time (s); NaN if aborted or without lick.
        response_latency : float64
            First lick − change time (s); ``inf`` without lick; NaN for aborted trials.
        reward_time : float64
            Reward time (s); NaN without reward.
        reward_volume : float64
            Water given in the trial (mL).
        hit, false_alarm, miss, correct_reject, aborted, auto_rewarded : bool
            Trial outcome; exactly one of these six is True.
        change_frame : int64
            Stimulus frame of the (sham) change; −99 without one.
        trial_length : float64
            ``stop_time − start_time`` (s).
        """
        h5 = self._h5
        if not nwb.exists(h5, layout.TRIALS):
            return pd.DataFrame(index=pd.Index([], dtype=np.int64, name="trials_id"))
        table = nwb.group(h5, layout.TRIALS)
        nwb.prefetch_tables([table], self._stream_prefetch())
        ids, columns = nwb.read_table(table)
        nwb.check_column_kinds(table, columns, layout.TRIAL_BOOLEAN_COLUMNS, layout.TRIAL_NUMBER_COLUMNS,
                               layout.TRIAL_TEXT_COLUMNS)
        data = {}
        for name, values in columns.items():
            if name == "lick_events":
                continue
            if isinstance(values, list):  # ragged; text flat data (no lick at all, docs/format.md §7.6) stays object
                series = pd.Series([v if v.dtype == object else np.asarray(v, dtype=np.float64) for v in values],
                                   dtype=object)
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

    @data_member
    def stimulus_presentations(self) -> pd.DataFrame:
        """Every stimulus shown (image flashes, omissions, gray screens, movie frames): a ``pandas.DataFrame``.

        Index: ``stimulus_presentations_id`` (int64, 0…N−1 in order of start time).

        Columns
        -------
        stimulus_block : int64
            Block number: 0 initial gray screen, 1 change detection, 2 gray screen, 3 natural movie.
        stimulus_block_name : str
            e.g. ``initial_gray_screen_5min``, ``change_detection_behavior``, ``natural_movie_one``.
        image_index : int64
            Position of the image in its set (0–7); 8 for omitted flashes; −99 outside image blocks.
        image_name : str
            e.g. ``im065``, ``omitted``, ``gratings_90.0``; NaN for gray-screen and movie rows.
        movie_frame_index : int64
            Frame of ``natural_movie_one`` (0–899); −99 otherwise.
        duration : float64
            ``end_time − start_time`` (s); 0.25 for omitted flashes.
        start_time, end_time : float64
            Onset and offset (s, with monitor delay).
        start_frame, end_frame : int64
            Stimulus frames (indices into :attr:`stimulus_timestamps`).
        is_change : bool
            The image differs from the previous image flash (recomputed on read, as AllenSDK does).
        is_image_novel : boolean
            The mouse had not seen the image before this session; NA for omissions and non-image rows.
        omitted : boolean
            An omitted flash (gray instead of an image); NA outside image blocks.
        movie_repeat : int64
            Repeat of the movie (0–9); −99 otherwise.
        flashes_since_change : int64
            Flashes since the last change (recomputed on read).
        trials_id : int64
            Trial the flash belongs to; −99 outside trials.
        active : bool
            The row's block is the one in which the mouse performed the task (it has flashes inside trials).
        stimulus_name : str
            ``spontaneous``, the image set name, ``natural_movie_one`` or ``grating``.
        is_sham_change : bool
            The flash is the sham change of a catch trial.

        An imaging session with natural images has these 19 columns; gratings sessions add their stimulus
        columns (``orientation``, …) at the end.
        """
        h5 = self._h5
        tables = []
        names = sorted(nwb.group(h5, layout.INTERVALS)) if nwb.exists(h5, layout.INTERVALS) else []
        groups = [nwb.group(h5, f"{layout.INTERVALS}/{name}") for name in names
                  if name.endswith(layout.PRESENTATIONS_SUFFIX)]
        nwb.prefetch_tables(groups, self._stream_prefetch(), layout.PRESENTATION_SKIP_COLUMNS)
        for table in groups:
            _, columns = nwb.read_table(table, skip=layout.PRESENTATION_SKIP_COLUMNS)
            nwb.check_column_kinds(table, columns, layout.PRESENTATION_BOOLEAN_COLUMNS,
                                   layout.PRESENTATION_NUMBER_COLUMNS, layout.PRESENTATION_TEXT_COLUMNS)
            tables.append(derive.presentation_frame(columns))
        needs_trials = not all(
            all(c in t for t in tables) for c in ("trials_id", "active", "is_sham_change")
        )
        trials = self.trials if needs_trials and nwb.exists(h5, layout.TRIALS) else None
        return derive.stimulus_presentations(tables, trials, self._recompute_is_change)

    @data_member
    def stimulus_templates(self) -> pd.DataFrame | None:
        """The images of the session's image set as shown on the monitor: a ``pandas.DataFrame``, or None.

        Index: ``image_name`` (str, e.g. ``im065`` or ``gratings_90.0``), in the stored order. The frame's ``name``
        is the image set.

        Columns
        -------
        unwarped : object
            Image as a float array of 1200 × 1920 monitor pixels (pixel intensity 0–255), NaN where not visible.
        warped : object
            Image as displayed, spherically warped: uint8 array of 1200 × 1920 pixels.

        None when the file holds no image template.
        """
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

    @data_member
    def eye_tracking(self) -> pd.DataFrame:
        """Eye, pupil and corneal-reflection ellipses fitted to each eye-camera frame: a ``pandas.DataFrame``.

        Index: ``frame`` (eye-camera frame, 0…n−1; ≈ 30 Hz).

        Columns
        -------
        timestamps : float64
            Frame time (s).
        cr_area, eye_area, pupil_area : float64
            Ellipse areas (px²), NaN on likely blinks.
        likely_blink : bool
            Frame is part of a likely blink: an area is NaN or a z-score outlier (``eye_tracking_z_threshold``,
            default 3), dilated by ``eye_tracking_dilation_frames`` (default 2). Recomputed on read.
        pupil_area_raw, cr_area_raw, eye_area_raw : float64
            Areas (px²) without blink masking.
        cr_center_x, cr_center_y, cr_width, cr_height : float64
            Corneal reflection ellipse (px, eye-camera coordinates, origin upper left).
        cr_phi : float64
            Its rotation (rad).
        eye_center_x, eye_center_y, eye_width, eye_height : float64
            Eye ellipse (px); width and height NaN on blinks.
        eye_phi : float64
            Its rotation (rad), NaN on blinks.
        pupil_center_x, pupil_center_y, pupil_width, pupil_height : float64
            Pupil ellipse (px); width and height NaN on blinks.
        pupil_phi : float64
            Its rotation (rad), NaN on blinks.

        Empty (with these columns), and a warning, when the file has no eye tracking.
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

    @data_member
    def eye_tracking_rig_geometry(self) -> dict[str, Any]:
        """Geometry of the eye-tracking rig: a ``dict``, ``{}`` when the file has none.

        Keys
        ----
        camera_position_mm, monitor_position_mm, led_position : Coordinates
            Positions (mm) as (x, y, z) with ``.x``, ``.y``, ``.z``.
        camera_rotation_deg, monitor_rotation_deg : Coordinates
            Rotations (degrees) about x, y, z.
        equipment : str
            Rig name, e.g. ``CAM2P.3``.
        """
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
        """Reward rate around every trial (rewards/min), as AllenSDK computes it.

        Returns
        -------
        numpy.ndarray
            float64, one value per row of :attr:`trials`: rewards (responses within the response window) per minute
            over a centred window of up to ±25 trials; NaN for the first 10 trials.
        """
        return behavior.reward_rate(self.trials, self._response_window_start)

    @data_member
    def _rolling_performance(self) -> pd.DataFrame:
        return behavior.rolling_performance(self.trials, self._response_window_start)

    def get_rolling_performance_df(self) -> pd.DataFrame:
        """Rolling performance of the mouse, trial by trial.

        Returns
        -------
        pandas.DataFrame
            Index ``trials_id`` (as :attr:`trials`). Columns: ``reward_rate`` (rewards/min), ``hit_rate_raw``,
            ``hit_rate``, ``false_alarm_rate_raw``, ``false_alarm_rate`` (fractions 0–1 over a rolling window; the
            non-raw ones corrected for the trial count), ``rolling_dprime`` (d′, unitless). NaN on aborted trials
            except ``reward_rate``.
        """
        return self._rolling_performance.copy()

    def get_performance_metrics(self, engaged_trial_reward_rate_threshold: float = 2.0) -> dict:
        """Summary of the mouse's performance in the session, as AllenSDK computes it.

        Parameters
        ----------
        engaged_trial_reward_rate_threshold : float, default 2.0
            Reward rate (rewards/min, :meth:`get_reward_rate`) above which a trial counts as engaged.

        Returns
        -------
        dict
            23 keys in this order: ``trial_count``, ``go_trial_count``, ``catch_trial_count``,
            ``hit_trial_count``, ``miss_trial_count``, ``false_alarm_trial_count``, ``correct_reject_trial_count``,
            ``auto_reward_count``, ``earned_reward_count``, ``total_reward_count`` (counts, int);
            ``total_reward_volume`` (mL); ``maximum_reward_rate`` (rewards/min); ``engaged_trial_count`` (int);
            ``mean_hit_rate``, ``mean_hit_rate_uncorrected``, ``mean_hit_rate_engaged``, ``mean_false_alarm_rate``,
            ``mean_false_alarm_rate_uncorrected``, ``mean_false_alarm_rate_engaged`` (fractions 0–1);
            ``mean_dprime``, ``mean_dprime_engaged``, ``max_dprime``, ``max_dprime_engaged`` (d′, unitless).
            "engaged" values use only trials whose reward rate exceeds the threshold.
        """
        return behavior.performance_metrics(self.trials, self.rewards, self._response_window_start,
                                            engaged_trial_reward_rate_threshold, rolling=self._rolling_performance)
