"""BehaviorOphysExperiment: one imaging plane of one session — behavior plus cells, traces and images."""

from __future__ import annotations

import warnings
from typing import Any, Iterable

import h5py
import numpy as np
import pandas as pd

from vbo import derive
from vbo.errors import InvalidDataError, MalformedDataError, MissingDataError, UnknownIdError
from vbo.members import data_member
from vbo.nwb import layout
from vbo.nwb import read as nwb
from vbo.nwb.pool import FileHandle
from vbo.session import BehaviorSession
from vbo.values import Image

try:  # numpy >= 1.25
    from numpy.exceptions import VisibleDeprecationWarning
except ImportError:  # pragma: no cover
    VisibleDeprecationWarning = np.VisibleDeprecationWarning


def _object_column(rows: Iterable, index: pd.Index) -> pd.Series:
    """A column holding one array per row (traces, masks)."""
    cells = np.empty(len(index), dtype=object)
    for i, row in enumerate(rows):
        cells[i] = row
    return pd.Series(cells, index=index, dtype=object)


def _index_has(index: pd.Index, value) -> bool:
    """Whether ``index.get_loc(value)`` finds ``value`` (NaN and None find the unmatched ROIs)."""
    try:
        index.get_loc(value)
    except (KeyError, TypeError):
        return False
    return True


def _per_roi_doc(what: str, columns: str, note: str = "", aside: str = "") -> str:
    """Documentation of a member returning one row per ROI: ``what`` it holds, its ``columns`` after
    ``cell_roi_id`` (numpy-style entries, four-space indented descriptions) and a closing ``note``."""
    return f"""{what}: a ``pandas.DataFrame``, one row per ROI{aside}.

Index: ``cell_specimen_id`` (cross-session cell id; null for ROIs not matched across sessions), rows in
the order of :attr:`cell_specimen_table`.

Columns
-------
cell_roi_id : int64
    ROI id (unique within the segmentation run).
{columns}
{note}"""


def _trace_doc(what: str, column: str, values: str, more_columns: str = "", note: str = "") -> str:
    """Documentation of a trace member: :func:`_per_roi_doc` whose ``column`` holds one array per ROI of
    ``values`` (their meaning and unit), one per ophys frame."""
    trace = (f"{column} : object\n    float64 array per ROI, one value per ophys frame (aligned with "
             f":attr:`ophys_timestamps`):\n    {values}")
    return _per_roi_doc(what, trace + more_columns, note)


class BehaviorOphysExperiment(BehaviorSession):
    """One imaging plane of a Visual Behavior imaging session: everything of :class:`BehaviorSession`
    plus ROIs, fluorescence traces (one value per ophys frame), events and projection images.
    """

    _DATA_MEMBERS = BehaviorSession._DATA_MEMBERS + (
        "average_projection", "cell_specimen_table", "corrected_fluorescence_traces", "demixed_traces",
        "dff_traces", "events", "get_cell_specimen_ids", "get_cell_specimen_indices", "get_dff_traces",
        "get_segmentation_mask_image", "max_projection", "motion_correction", "neuropil_traces",
        "ophys_experiment_id", "ophys_session_id", "ophys_timestamps", "roi_masks", "segmentation_mask_image",
        "update_targeted_imaging_depth",
    )
    _REQUIRED = layout.REQUIRED_BEHAVIOR + layout.REQUIRED_OPHYS
    _KIND = "imaging experiment (behavior + ophys)"

    def __init__(self, h5: h5py.File | FileHandle, *, eye_tracking_z_threshold: float = 3.0,
                 eye_tracking_dilation_frames: int = 2, events_filter_scale_seconds: float = 2 / 31,
                 events_filter_n_time_steps: int = 20, exclude_invalid_rois: bool = True,
                 add_is_change_to_stimulus_presentations_table: bool = True):
        super().__init__(h5, eye_tracking_z_threshold=eye_tracking_z_threshold,
                         eye_tracking_dilation_frames=eye_tracking_dilation_frames,
                         add_is_change_to_stimulus_presentations_table=add_is_change_to_stimulus_presentations_table)
        self._events_filter_scale_seconds = events_filter_scale_seconds
        self._events_filter_n_time_steps = events_filter_n_time_steps
        self._exclude_invalid_rois = exclude_invalid_rois

    # --- ids and metadata -------------------------------------------------------------------

    @data_member
    def ophys_experiment_id(self) -> int:
        """Id of this imaging plane in this session (an ``int``; index of ``ophys_experiment_table``)."""
        return nwb.integer_text(self._h5, layout.IDENTIFIER)

    @property
    def ophys_session_id(self) -> int:
        """Id of the imaging session this plane belongs to (an ``int``; index of ``ophys_session_table``)."""
        nwb.integer_attr(self._metadata_attrs, "ophys_session_id", self._h5, layout.METADATA)
        return self._metadata_attrs["ophys_session_id"]  # as stored (numpy int64, as AllenSDK returns it)

    @property
    def _is_multiplane(self) -> bool:
        meta = self._metadata_attrs
        if "imaging_plane_group_count" not in meta:
            return False
        return nwb.integer_attr(meta, "imaging_plane_group_count", self._h5, layout.METADATA) > 1

    @data_member
    def metadata(self) -> dict[str, Any]:
        """Session and imaging-plane metadata: a ``dict`` of 28 keys, in this order, as AllenSDK returns them.

        The 14 keys of :attr:`BehaviorSession.metadata` (``equipment_name``, ``sex``, ``age_in_days``,
        ``stimulus_frame_rate``, ``session_type``, ``date_of_acquisition``, ``reporter_line``, ``cre_line``,
        ``behavior_session_uuid``, ``driver_line``, ``mouse_id``, ``project_code``, ``full_genotype``,
        ``behavior_session_id``), then:

        Keys
        ----
        indicator : str
            Calcium indicator, e.g. ``GCaMP6f``.
        emission_lambda, excitation_lambda : float
            Emission and two-photon excitation wavelengths (nm), e.g. 520.0 and 910.0.
        ophys_container_id : int
            Container of the same imaging plane across sessions.
        field_of_view_height, field_of_view_width : int
            Size of the imaged field (px), e.g. 512.
        imaging_depth, targeted_imaging_depth : int
            Depth below the brain surface (µm).
        imaging_plane_group : int or None
            Pair of planes imaged together (multi-plane sessions); None for single-plane.
        imaging_plane_group_count : int
            Number of plane groups; 0 for single-plane sessions.
        ophys_experiment_id, ophys_session_id : int
            As :attr:`ophys_experiment_id`, :attr:`ophys_session_id`.
        ophys_frame_rate : float
            Imaging frame rate of this plane (Hz), rounded to a whole number as in AllenSDK.
        targeted_structure : str
            Visual area, e.g. ``VISp``, ``VISl``.
        """
        h5 = self._h5
        meta = self._metadata_attrs
        out = dict(BehaviorSession.metadata.fget(self))
        multiplane = self._is_multiplane
        for key in ("ophys_container_id", "field_of_view_height", "field_of_view_width", "imaging_depth",
                    "targeted_imaging_depth", "ophys_session_id") + (("imaging_plane_group",) if multiplane else ()):
            nwb.integer_attr(meta, key, h5, layout.METADATA)  # checked here, returned as stored
        out.update({
            "indicator": derive.indicator(out["reporter_line"]),
            "emission_lambda": nwb.read_numeric(h5, layout.EMISSION_LAMBDA, ndim=0)[()],
            "excitation_lambda": nwb.read_numeric(h5, layout.EXCITATION_LAMBDA, ndim=0)[()],
            "ophys_container_id": meta["ophys_container_id"],
            "field_of_view_height": meta["field_of_view_height"],
            "field_of_view_width": meta["field_of_view_width"],
            "imaging_depth": meta["imaging_depth"],
            "targeted_imaging_depth": meta["targeted_imaging_depth"],
            # multi-plane: the stored numpy integers, as AllenSDK returns them; single plane: None and int 0
            "imaging_plane_group": meta["imaging_plane_group"] if multiplane else None,
            "imaging_plane_group_count": meta["imaging_plane_group_count"] if multiplane else 0,
            "ophys_experiment_id": self.ophys_experiment_id,
            "ophys_frame_rate": nwb.read_numeric(h5, layout.IMAGING_RATE, ndim=0)[()],
            "ophys_session_id": meta["ophys_session_id"],
            "targeted_structure": nwb.text(h5, layout.IMAGING_LOCATION),
        })
        if "project_code" in meta:
            out["project_code"] = meta["project_code"]
        return out

    def update_targeted_imaging_depth(self, *args, **kwargs):
        """Not available outside the Allen Institute: AllenSDK looks the depth up in its internal database.

        Raises
        ------
        NotImplementedError
            Always; ``metadata["targeted_imaging_depth"]`` holds the released value.
        """
        raise NotImplementedError("update_targeted_imaging_depth needs the Allen Institute's internal database")

    # --- time base --------------------------------------------------------------------------

    @data_member
    def _n_frames(self) -> int:
        """Number of ophys frames (rows of the dF/F data; shape only, nothing read)."""
        path = f"{layout.DFF}/{layout.DATA}"
        shape = nwb.dataset(self._h5, path).shape
        if not shape or len(shape) > 2:
            raise MalformedDataError(self._name, path, f"dF/F must be frames × ROIs, found shape {shape}")
        return int(shape[0])

    @data_member
    def ophys_timestamps(self) -> np.ndarray:
        """Time of every ophys frame of this plane: a float64 ``numpy.ndarray`` in seconds.

        Every trace array has one value per entry (≈ 31 Hz single-plane, ≈ 11 Hz per plane for multi-plane
        sessions). As in AllenSDK, single-plane timestamps longer than the traces are truncated; fewer
        timestamps than frames (or any mismatch for multi-plane) raise ``vbo.errors.InvalidDataError``.
        """
        timestamps = np.asarray(nwb.read_numeric(self._h5, f"{layout.DFF}/{layout.TIMESTAMPS}"), dtype=np.float64)
        n = self._n_frames
        if len(timestamps) == n:
            return timestamps
        if self._is_multiplane or len(timestamps) < n:
            raise InvalidDataError(self._name, f"{len(timestamps)} ophys timestamps for {n} dF/F frames "
                                               f"({'multi-plane: lengths must be equal' if self._is_multiplane else 'too few timestamps'})")
        return timestamps[:n]

    # --- ROIs ---------------------------------------------------------------------------------

    @data_member
    def _rois(self) -> pd.DataFrame:
        """Light ROI index of the retained ROIs: cell_roi_id, cell_specimen_id, valid_roi, stored row."""
        rois = self._stored_rois
        if self._exclude_invalid_rois:
            rois = rois[rois["valid_roi"]]
        return rois.reset_index(drop=True)

    @data_member
    def _stored_rois(self) -> pd.DataFrame:
        """Light ROI index of every stored ROI, valid or not (each column read once)."""
        h5 = self._h5
        table = nwb.group(h5, layout.CELL_TABLE)
        id_path = f"{layout.CELL_TABLE}/{layout.ID}"
        roi_ids = nwb.integer_ids(h5, id_path, nwb.read(h5, id_path))
        specimen = nwb.read_column(table, layout.CELL_SPECIMEN_ID_COLUMN, len(roi_ids))
        specimen = nwb.integer_ids(h5, layout.CELL_SPECIMEN_ID, specimen)
        valid = nwb.booleans(h5, layout.VALID_ROI, nwb.read_column(table, "valid_roi", len(roi_ids)))
        return pd.DataFrame({"cell_roi_id": roi_ids, "cell_specimen_id": np.asarray(specimen, dtype=np.int64),
                             "valid_roi": valid, "row": np.arange(len(roi_ids))})

    @data_member
    def _n_rois(self) -> int:
        """Rows of the stored ROI table (valid or not)."""
        path = f"{layout.CELL_TABLE}/{layout.ID}"
        shape = nwb.dataset(self._h5, path).shape
        if shape is None or len(shape) != 1:
            raise MalformedDataError(self._name, path, f"ROI ids must be 1-D, found shape {shape}")
        return int(shape[0])

    @data_member
    def _cell_index(self) -> pd.Index:
        """``cell_specimen_id`` of the retained ROIs as AllenSDK 2.16.2 builds it (docs/quirks.md; null ids:
        docs/format.md §10).

        AllenSDK replaces −1 by None in the stored table's column and lets pandas infer its dtype **before**
        it leaves out invalid ROIs, so the dtype follows every stored ROI: int64 when all are matched;
        float64 (NaN for the unmatched) when some are; object holding None when none is.
        """
        stored = self._stored_rois["cell_specimen_id"].to_numpy()
        stored_unmatched = stored == layout.NULL_CELL_SPECIMEN_ID
        ids = stored[self._rois["row"].to_numpy()]
        unmatched = ids == layout.NULL_CELL_SPECIMEN_ID
        if not stored_unmatched.any():
            return pd.Index(ids, dtype=np.int64, name="cell_specimen_id")
        if stored_unmatched.all():
            return pd.Index([None] * len(ids), dtype=object, name="cell_specimen_id")
        return pd.Index(np.where(unmatched, np.nan, ids.astype(np.float64)), dtype=np.float64,
                        name="cell_specimen_id")

    @data_member
    def _roi_masks(self) -> np.ndarray:
        """Boolean masks (ROI, rows, columns) of the retained ROIs, full field of view."""
        path = f"{layout.CELL_TABLE}/{layout.CELL_TABLE_MASK}"
        masks = nwb.read_numeric(self._h5, path, ndim=3).astype(bool, copy=False)
        nwb.same_length(self._h5, path, masks, self._n_rois, "ROIs of the cell table")
        rows = self._rois["row"].to_numpy()
        return masks if len(rows) == len(masks) else masks[rows]

    @data_member
    def cell_specimen_table(self) -> pd.DataFrame:
        """The segmented ROIs (cells) of this plane: a ``pandas.DataFrame``, one row per ROI.

        Index: ``cell_specimen_id`` (cross-session cell id). As in AllenSDK, its dtype is int64 when every ROI is
        matched, float64 with NaN for the unmatched ROIs when some are, and object holding None when none is.

        Columns
        -------
        cell_roi_id : int64
            ROI id (unique within the segmentation run).
        height, width : int64
            Size of the ROI's bounding box (px).
        mask_image_plane : int64
            Stored mask-plane index of the ROI.
        max_correction_down, max_correction_left, max_correction_right, max_correction_up : float64
            Motion-correction border on each side (px).
        valid_roi : bool
            The ROI passed classification (True for all released ROIs).
        x, y : int64
            Top-left corner of the bounding box (px, field-of-view coordinates).
        roi_mask : object
            Boolean array of the full field of view (e.g. 512 × 512), True inside the ROI.

        With ``exclude_invalid_rois=True`` (default) only valid ROIs are kept.
        """
        h5 = self._h5
        group = nwb.group(h5, layout.CELL_TABLE)
        rows = self._rois["row"].to_numpy()
        index = self._cell_index
        data: dict[str, pd.Series] = {"cell_roi_id": pd.Series(self._rois["cell_roi_id"].to_numpy(), index=index)}
        for name in nwb.table_columns(group):
            if name in (layout.CELL_SPECIMEN_ID_COLUMN, layout.CELL_TABLE_MASK):
                continue
            column = nwb.read_column(group, name, self._n_rois)
            nwb.check_column_kinds(group, {name: column}, numbers=layout.CELL_TABLE_NUMBER_COLUMNS)
            values = np.asarray(column)[rows]
            if values.dtype.kind in "iu":
                values = values.astype(np.int64)
            data[name] = pd.Series(values, index=index)
        data["roi_mask"] = _object_column(self._roi_masks, index)
        return pd.DataFrame(data, index=index)

    @data_member(doc=_per_roi_doc(
        "The mask of every ROI", aside=" (two columns of :attr:`cell_specimen_table`)",
        columns="roi_mask : object\n"
                "    Boolean array of the full field of view (e.g. 512 × 512 px), True inside the ROI."))
    def roi_masks(self) -> pd.DataFrame:
        return self.cell_specimen_table[["cell_roi_id", "roi_mask"]]

    # --- traces -------------------------------------------------------------------------------

    def _series_rows(self, series: str, required: bool = True) -> np.ndarray | None:
        """Stored ROI-table rows of a RoiResponseSeries' ``rois`` region; None when absent and optional."""
        if not nwb.exists(self._h5, series):
            if required:
                raise MissingDataError(self._name, f"missing {series}")
            return None
        return nwb.region_rows(self._h5, series, self._n_rois)

    def _trace_block(self, series: str, rows: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Data of a RoiResponseSeries as one C-contiguous ROI × frame block, ROIs taken in ``order``
        (positions in the stored ROI axis), read once without intermediate full-size copies."""
        path = f"{series}/{layout.DATA}"
        ds = self._checked_series_data(series, rows)
        if ds.ndim == 1:  # one ROI stored as a plain vector of frames
            return nwb.read_numeric(self._h5, path)[None, :][order]
        if ds.shape[1] != len(rows) and ds.shape[0] == len(rows):  # stored ROI × frame
            data = nwb.read_numeric(self._h5, path, ndim=2)
            return data if np.array_equal(order, np.arange(len(rows))) else data[order]
        return nwb.read_transposed(ds, order, **self._prefetch_options())

    def _checked_series_data(self, series: str, rows: np.ndarray) -> h5py.Dataset:
        """A RoiResponseSeries' data (not read): numbers, frames × its ROIs (or ROIs × frames, or one ROI's vector)."""
        path = f"{series}/{layout.DATA}"
        ds = nwb.checked_dataset(self._h5, path)
        if ds.dtype.kind not in "biuf":
            raise MalformedDataError(self._name, path, f"must hold numbers, found {ds.dtype}")
        if ds.ndim == 1:
            nwb.same_length(self._h5, path, ds, len(rows), f"ROIs of {series}/{layout.ROIS}")
        elif ds.ndim != 2 or len(rows) not in ds.shape:
            raise MalformedDataError(self._name, path, f"must be frames × {len(rows)} ROIs (its {layout.ROIS}), "
                                                       f"found shape {ds.shape}")
        return ds

    def _prefetch_options(self) -> dict:
        """For a streamed file: fetch the chunks of coming slabs on parallel connections while HDF5 decodes."""
        prefetch = self._stream_prefetch()
        if prefetch is None:
            return {}
        return {"prefetch": prefetch, "prefetch_window": self._handle.source.remote.cache_bytes // 2}

    def _n_series_frames(self, series: str, rows: np.ndarray) -> int:
        """Frames of a RoiResponseSeries (shape only, nothing read)."""
        shape = self._checked_series_data(series, rows).shape
        if len(shape) == 2 and shape[1] != len(rows) and shape[0] == len(rows):
            return int(shape[1])
        return int(shape[0])

    def _per_roi_values(self, series: str) -> np.ndarray | None:
        """One float64 value per retained ROI (cell-table order) of an optional 1-D RoiResponseSeries."""
        rows = self._series_rows(series, required=False)
        if rows is None:
            return None
        order = self._align(series, rows, None, drop_missing=False)
        path = f"{series}/{layout.DATA}"
        values = np.asarray(nwb.read_numeric(self._h5, path, ndim=None), dtype=np.float64).reshape(-1)
        nwb.same_length(self._h5, path, values, len(rows), f"ROIs of {series}/{layout.ROIS}")
        return values[order]

    def _align(self, series: str, rows: np.ndarray, n_frames: int | None, drop_missing: bool) -> np.ndarray:
        """Positions in ``rows`` of each retained ROI, in cell-table order; checks ids and frame counts."""
        wanted = self._rois["row"].to_numpy()
        position = {row: i for i, row in enumerate(rows)}
        missing = [r for r in wanted if r not in position]
        if n_frames is not None and n_frames != self._n_frames:
            raise InvalidDataError(self._name, f"{series} has {n_frames} frames, dF/F has {self._n_frames}")
        if missing and not drop_missing:
            roi_ids = self._rois.set_index("row").loc[missing, "cell_roi_id"].tolist()
            raise InvalidDataError(self._name, f"{series} lacks ROIs {roi_ids} of the cell table")
        return np.array([position.get(r, -1) for r in wanted], dtype=np.int64)

    def _trace_frame(self, series: str, column: str, required: bool = True) -> pd.DataFrame | None:
        """``cell_roi_id`` and one trace per ROI; the traces are row views of one ROI × frame block."""
        rows = self._series_rows(series, required)
        if rows is None:
            return None
        order = self._align(series, rows, self._n_series_frames(series, rows), drop_missing=False)
        block = self._trace_block(series, rows, order)
        index = self._cell_index
        return pd.DataFrame({"cell_roi_id": pd.Series(self._rois["cell_roi_id"].to_numpy(), index=index),
                             column: _object_column(block, index)}, index=index)

    def _dff_rows(self, positions: np.ndarray) -> np.ndarray:
        """dF/F of the cell-table rows ``positions`` (cells × frames), reading only the stored columns that
        span them (for a streamed file: only their chunks), without loading ``dff_traces``."""
        with self._reading("dff_rows"):  # one phase of a streamed file's read plan
            self.ophys_timestamps  # validates the time base as dff_traces does
            rows = self._series_rows(layout.DFF)
            order = self._align(layout.DFF, rows, self._n_series_frames(layout.DFF, rows), drop_missing=False)
            if len(positions) == 0:
                return np.zeros((0, self._n_frames))
            return self._trace_block(layout.DFF, rows, order[positions])

    @data_member(doc=_trace_doc("ΔF/F (change of fluorescence over baseline) of every ROI", "dff",
                                "ΔF/F (unitless)."))
    def dff_traces(self) -> pd.DataFrame:
        self.ophys_timestamps  # validates the time base as the SDK does
        return self._trace_frame(layout.DFF, "dff")

    @data_member(doc=_trace_doc(
        "Neuropil-corrected fluorescence of every ROI", "corrected_fluorescence", "fluorescence (a.u.).",
        more_columns="\nr : float64\n    Neuropil contamination ratio of the fit (files of release 1.1.0 on)."
                     "\nRMSE : float64\n    Root-mean-square error of the fit (a.u.; files of release 1.1.0 on)."))
    def corrected_fluorescence_traces(self) -> pd.DataFrame:
        frame = self._trace_frame(layout.CORRECTED_FLUORESCENCE, "corrected_fluorescence")
        for name, path in (("r", layout.CORRECTED_FLUORESCENCE_R), ("RMSE", layout.CORRECTED_FLUORESCENCE_RMSE)):
            values = self._per_roi_values(path)
            if values is not None:
                frame[name] = values
        return frame

    @data_member(doc=_trace_doc("Fluorescence of every ROI after demixing overlapping ROIs", "demixed_trace",
                                "fluorescence (a.u.).", note="\nNone in files that predate demixing."))
    def demixed_traces(self) -> pd.DataFrame | None:
        return self._trace_frame(layout.DEMIXED, "demixed_trace", required=False)

    @data_member(doc=_trace_doc(
        "Fluorescence of the neuropil around every ROI", "neuropil_trace", "fluorescence (a.u.).",
        note="\nNone in files that predate it. AllenSDK 2.16.2 returns the demixed traces here (a bug); vbo\n"
             "returns the neuropil traces."))
    def neuropil_traces(self) -> pd.DataFrame | None:
        return self._trace_frame(layout.NEUROPIL, "neuropil_trace", required=False)

    @data_member(doc=_trace_doc(
        "Detected calcium events of every ROI", "events", "event magnitude (a.u., 0 where no event).",
        more_columns="""
filtered_events : object
    ``events`` smoothed by a causal half-Gaussian filter (``events_filter_scale_seconds``, default 2/31 s,
    over ``events_filter_n_time_steps``, default 20 frames), computed on read as in AllenSDK.
lambda : float64
    Sparsity penalty of the event detection.
noise_std : float64
    Estimated noise standard deviation of the ROI's trace (ΔF/F).""",
        note="\nROIs missing from the stored events are left out, with a warning."))
    def events(self) -> pd.DataFrame:
        h5 = self._h5
        rows = self._series_rows(layout.EVENTS)
        order = self._align(layout.EVENTS, rows, self._n_series_frames(layout.EVENTS, rows), drop_missing=True)
        present = order >= 0
        if not present.all():
            dropped = self._rois.loc[~present, "cell_roi_id"].tolist()
            warnings.warn(f"{self._name}: ROIs {dropped} have no events and are left out of the events table",
                          UserWarning, stacklevel=2)
        order = order[present]
        index = self._cell_index[present]
        events = self._trace_block(layout.EVENTS, rows, order)
        filtered = derive.filter_events(events, float(self.metadata["ophys_frame_rate"]),
                                        self._events_filter_scale_seconds, self._events_filter_n_time_steps)
        lambdas = nwb.read_numeric(h5, layout.EVENT_LAMBDAS)
        noise = nwb.read_numeric(h5, layout.EVENT_NOISE_STDS)
        for path, values in ((layout.EVENT_LAMBDAS, lambdas), (layout.EVENT_NOISE_STDS, noise)):
            nwb.same_length(h5, path, values, len(rows), f"ROIs of {layout.EVENTS}/{layout.ROIS}")
        lambdas = lambdas.astype(np.float64)[order]
        noise = noise.astype(np.float64)[order]
        return pd.DataFrame({
            "cell_roi_id": pd.Series(self._rois["cell_roi_id"].to_numpy()[present], index=index),
            "events": _object_column(events, index),
            "filtered_events": _object_column(filtered, index),
            "lambda": pd.Series(lambdas, index=index),
            "noise_std": pd.Series(noise, index=index),
        }, index=index)

    @data_member
    def motion_correction(self) -> pd.DataFrame:
        """Rigid motion correction of every ophys frame: a ``pandas.DataFrame``, one row per frame.

        Index: ``RangeIndex`` (ophys frame).

        Columns
        -------
        x, y : int64
            Offset applied to the frame (px).
        """
        h5 = self._h5
        x, y = nwb.read_numeric(h5, layout.MOTION_X), nwb.read_numeric(h5, layout.MOTION_Y)
        nwb.same_length(h5, layout.MOTION_Y, y, len(x), f"frames of {layout.MOTION_X}")
        for path, values in ((layout.MOTION_X, x), (layout.MOTION_Y, y)):
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                raise MalformedDataError(self._name, path, "offsets must be finite whole pixels")
        return pd.DataFrame({"x": x.astype(np.int64, copy=False), "y": y.astype(np.int64, copy=False)})

    # --- images -------------------------------------------------------------------------------

    def _image(self, path: str) -> Image:
        h5 = self._h5
        if not nwb.exists(h5, path):
            raise MissingDataError(self._name, f"missing image {path}")
        resolution = nwb.number_attr(nwb.attrs(h5, path), layout.IMAGE_RESOLUTION_ATTR, h5, path)
        resolution *= layout.RESOLUTION_TO_MM
        return Image(nwb.read_numeric(h5, path, ndim=2), (resolution, resolution), "mm")

    @data_member
    def max_projection(self) -> Image:
        """Maximum-intensity projection of the motion-corrected movie: a ``vbo.values.Image``.

        ``.data`` is the 2-D image (field-of-view pixels, e.g. 512 × 512), ``.spacing`` the (row, column) pixel size
        and ``.unit`` ``"mm"``; ``numpy.asarray(image)`` and ``plt.imshow(image)`` work on it directly.
        """
        return self._image(layout.MAX_PROJECTION)

    @data_member
    def average_projection(self) -> Image:
        """Average-intensity projection of the motion-corrected movie: a ``vbo.values.Image``.

        ``.data`` is the 2-D image (field-of-view pixels, e.g. 512 × 512), ``.spacing`` the (row, column) pixel size
        and ``.unit`` ``"mm"``; ``numpy.asarray(image)`` and ``plt.imshow(image)`` work on it directly.
        """
        return self._image(layout.AVERAGE_PROJECTION)

    @data_member
    def segmentation_mask_image(self) -> Image:
        """Where the ROIs are: a ``vbo.values.Image`` of the field of view, 1 where any retained ROI covers the pixel.

        ``.data`` is an int64 array (e.g. 512 × 512) of 0 and 1, ``.spacing`` the max projection's pixel size in mm.
        Computed from :attr:`roi_masks`, as AllenSDK 2.16.2 does (its output is binary, not the overlap count its
        documentation suggests).
        """
        mask = self._roi_masks.any(axis=0).astype(np.int64)
        return Image(mask, self.max_projection.spacing, "mm")

    def get_segmentation_mask_image(self) -> Image:
        """Image of where the ROIs are: 1 where any retained ROI covers the pixel, else 0.

        Returns
        -------
        vbo.values.Image
            int64 array of the field of view (e.g. 512 × 512 px), spacing in mm (the max projection's); the value of
            :attr:`segmentation_mask_image`.
        """
        return self.segmentation_mask_image

    # --- legacy methods -----------------------------------------------------------------------

    def get_cell_specimen_ids(self) -> np.ndarray:
        """Legacy: the cell specimen ids of this plane's ROIs (warns ``VisibleDeprecationWarning``).

        Returns
        -------
        numpy.ndarray
            The index of :attr:`cell_specimen_table`, in its order (float64 with NaN when some ROIs are unmatched).

        Raises
        ------
        ValueError
            Every ROI's ``cell_specimen_id`` is null (as AllenSDK does).
        """
        warnings.warn("get_cell_specimen_ids is a legacy method; use cell_specimen_table.index",
                      VisibleDeprecationWarning, stacklevel=2)
        ids = self._cell_index
        if pd.isna(ids).all():
            raise InvalidDataError(self._name, "no ROI of this experiment has a cell_specimen_id (every ROI is "
                                               "unmatched); use cell_specimen_table['cell_roi_id']")
        return ids.to_numpy()

    def get_cell_specimen_indices(self, cell_specimen_ids) -> list:
        """Legacy: row positions of cells in :attr:`cell_specimen_table` (warns ``VisibleDeprecationWarning``).

        Parameters
        ----------
        cell_specimen_ids : iterable of int
            Cell specimen ids of this plane.

        Returns
        -------
        list
            ``cell_specimen_table.index.get_loc`` of each id, in the given order, as AllenSDK returns it: the row
            position of an id found once; a boolean row mask for an id found several times (NaN, the unmatched
            ROIs).

        Raises
        ------
        KeyError
            An id is not in this plane.
        """
        warnings.warn("get_cell_specimen_indices is a legacy method; use cell_specimen_table.index.get_indexer",
                      VisibleDeprecationWarning, stacklevel=2)
        index = self._cell_index
        unknown = [c for c in cell_specimen_ids if not _index_has(index, c)]
        if unknown:
            raise UnknownIdError(f"cell_specimen_ids {unknown} are not in {self._name}")
        return [index.get_loc(c) for c in cell_specimen_ids]

    def get_dff_traces(self, cell_specimen_ids=None) -> tuple[np.ndarray, np.ndarray]:
        """Legacy: ΔF/F traces as one matrix (warns ``VisibleDeprecationWarning``).

        Parameters
        ----------
        cell_specimen_ids : iterable of int, optional
            Cells to return (default all). Rows come in :attr:`cell_specimen_table` order, whatever the order
            asked for, as AllenSDK orders them.

        Returns
        -------
        tuple of numpy.ndarray
            ``(ophys_timestamps, traces)``: timestamps (s, one per ophys frame) and a float64 array of cells × frames
            (ΔF/F, unitless).

        Raises
        ------
        ValueError
            Without ``cell_specimen_ids`` when no ROI has a ``cell_specimen_id`` (as AllenSDK does).
        KeyError
            If the given ids do not select exactly one row each.
        """
        warnings.warn("get_dff_traces is a legacy method; use dff_traces and ophys_timestamps",
                      VisibleDeprecationWarning, stacklevel=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VisibleDeprecationWarning)
            ids = self.get_cell_specimen_ids() if cell_specimen_ids is None else list(cell_specimen_ids)
        selected = self._cell_index.isin(ids)  # NaN selects the unmatched ROIs
        if selected.sum() != len(ids):
            raise KeyError(f"cell_specimen_ids {ids} select {selected.sum()} rows of {self._name}, "
                           "not one row each; use dff_traces (indexed by cell_specimen_id)")
        if cell_specimen_ids is not None and not type(self).dff_traces.is_read(self):
            # only those cells' columns (chunks) are read; rows in cell-table order, as with the full table
            return self.ophys_timestamps, self._dff_rows(np.flatnonzero(selected))
        dff = self.dff_traces[selected]  # the same rows, in the same order as the cell table
        traces = np.stack(dff["dff"].to_list()) if len(dff) else np.zeros((0, self._n_frames))
        return self.ophys_timestamps, traces


class BehaviorOphysSession(BehaviorOphysExperiment):
    """Deprecated alias of :class:`BehaviorOphysExperiment` (as in AllenSDK)."""

    def __init__(self, *args, **kwargs):
        warnings.warn("BehaviorOphysSession is deprecated; use BehaviorOphysExperiment",
                      DeprecationWarning, stacklevel=2)
        super().__init__(*args, **kwargs)
