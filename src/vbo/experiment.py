"""BehaviorOphysExperiment: one imaging plane of one session — behavior plus cells, traces and images."""

from __future__ import annotations

import warnings
from functools import cached_property
from typing import Any, Iterable

import h5py
import numpy as np
import pandas as pd

from vbo import derive
from vbo.errors import InvalidDataError, MissingDataError
from vbo.nwb import layout
from vbo.nwb import read as nwb
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

    def __init__(self, h5: h5py.File, *, eye_tracking_z_threshold: float = 3.0,
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

    @cached_property
    def ophys_experiment_id(self) -> int:
        """Ophys experiment id (one imaging plane in one session)."""
        return int(nwb.read(self._h5, layout.IDENTIFIER))

    @property
    def ophys_session_id(self) -> int:
        """Ophys session id."""
        return self._metadata_attrs["ophys_session_id"]

    @property
    def _is_multiplane(self) -> bool:
        return int(self._metadata_attrs.get("imaging_plane_group_count", 0)) > 1

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """Session metadata (14 keys) plus the imaging plane's (14 more): 28 keys, as in AllenSDK."""
        h5 = self._h5
        meta = self._metadata_attrs
        out = dict(BehaviorSession.metadata.func(self))
        multiplane = self._is_multiplane
        out.update({
            "indicator": derive.indicator(out["reporter_line"]),
            "emission_lambda": nwb.read(h5, layout.EMISSION_LAMBDA),
            "excitation_lambda": nwb.read(h5, layout.EXCITATION_LAMBDA),
            "ophys_container_id": meta["ophys_container_id"],
            "field_of_view_height": meta["field_of_view_height"],
            "field_of_view_width": meta["field_of_view_width"],
            "imaging_depth": meta["imaging_depth"],
            "targeted_imaging_depth": meta["targeted_imaging_depth"],
            "imaging_plane_group": int(meta["imaging_plane_group"]) if multiplane else None,
            "imaging_plane_group_count": int(meta["imaging_plane_group_count"]) if multiplane else 0,
            "ophys_experiment_id": self.ophys_experiment_id,
            "ophys_frame_rate": nwb.read(h5, layout.IMAGING_RATE),
            "ophys_session_id": meta["ophys_session_id"],
            "targeted_structure": nwb.read(h5, layout.IMAGING_LOCATION),
        })
        if "project_code" in meta:
            out["project_code"] = meta["project_code"]
        return out

    def update_targeted_imaging_depth(self, *args, **kwargs):
        """Not available: needs the Allen Institute's internal database."""
        raise NotImplementedError("update_targeted_imaging_depth needs the Allen Institute's internal database")

    # --- time base --------------------------------------------------------------------------

    @cached_property
    def _n_frames(self) -> int:
        """Number of ophys frames (rows of the dF/F data; shape only, nothing read)."""
        return int(self._h5[f"{layout.DFF}/{layout.DATA}"].shape[0])

    @cached_property
    def ophys_timestamps(self) -> np.ndarray:
        """Time of every ophys frame of this plane (s), aligned with every trace."""
        timestamps = np.asarray(nwb.read(self._h5, f"{layout.DFF}/{layout.TIMESTAMPS}"), dtype=np.float64)
        n = self._n_frames
        if len(timestamps) == n:
            return timestamps
        if self._is_multiplane or len(timestamps) < n:
            raise InvalidDataError(self._name, f"{len(timestamps)} ophys timestamps for {n} dF/F frames "
                                               f"({'multi-plane: lengths must be equal' if self._is_multiplane else 'too few timestamps'})")
        return timestamps[:n]

    # --- ROIs ---------------------------------------------------------------------------------

    @cached_property
    def _rois(self) -> pd.DataFrame:
        """Light ROI index of the stored table: cell_roi_id, cell_specimen_id, valid_roi, stored row."""
        h5 = self._h5
        roi_ids = nwb.read(h5, f"{layout.CELL_TABLE}/{layout.ID}").astype(np.int64)
        specimen = nwb.read(h5, layout.CELL_SPECIMEN_ID)
        valid = nwb.read(h5, layout.VALID_ROI).astype(bool)
        specimen_ids = [None if s == layout.NULL_CELL_SPECIMEN_ID else int(s) for s in specimen]
        rois = pd.DataFrame({"cell_roi_id": roi_ids, "cell_specimen_id": pd.Series(specimen_ids, dtype=object),
                             "valid_roi": valid,
                             "row": np.arange(len(roi_ids))})
        if self._exclude_invalid_rois:
            rois = rois[rois["valid_roi"]]
        return rois.reset_index(drop=True)

    @cached_property
    def _cell_index(self) -> pd.Index:
        ids = self._rois["cell_specimen_id"].tolist()
        if any(i is None for i in ids):
            return pd.Index(ids, dtype=object, name="cell_specimen_id")
        return pd.Index(np.asarray(ids, dtype=np.int64), name="cell_specimen_id")

    @cached_property
    def _roi_masks(self) -> np.ndarray:
        """Boolean masks (ROI, rows, columns) of the retained ROIs, full field of view."""
        masks = nwb.read(self._h5, f"{layout.CELL_TABLE}/{layout.CELL_TABLE_MASK}").astype(bool, copy=False)
        rows = self._rois["row"].to_numpy()
        return masks if len(rows) == len(masks) else masks[rows]

    @cached_property
    def cell_specimen_table(self) -> pd.DataFrame:
        """ROIs of this plane (index ``cell_specimen_id``, None when unmatched): ROI id, bounding box (px),
        motion-correction borders (px), validity and full-field boolean ``roi_mask``."""
        h5 = self._h5
        group = h5[layout.CELL_TABLE]
        rows = self._rois["row"].to_numpy()
        index = self._cell_index
        data: dict[str, pd.Series] = {"cell_roi_id": pd.Series(self._rois["cell_roi_id"].to_numpy(), index=index)}
        for name in nwb.table_columns(group):
            if name in (layout.CELL_SPECIMEN_ID_COLUMN, layout.CELL_TABLE_MASK):
                continue
            values = np.asarray(nwb.read_column(group, name))[rows]
            if values.dtype.kind in "iu":
                values = values.astype(np.int64)
            data[name] = pd.Series(values, index=index)
        data["roi_mask"] = _object_column(self._roi_masks, index)
        return pd.DataFrame(data, index=index)

    @cached_property
    def roi_masks(self) -> pd.DataFrame:
        """``cell_roi_id`` and the boolean full-field ``roi_mask`` of each ROI (index ``cell_specimen_id``)."""
        return self.cell_specimen_table[["cell_roi_id", "roi_mask"]]

    # --- traces -------------------------------------------------------------------------------

    def _series_rows(self, series: str, required: bool = True) -> np.ndarray | None:
        """Stored ROI-table rows of a RoiResponseSeries' ``rois`` region; None when absent and optional."""
        if series not in self._h5:
            if required:
                raise MissingDataError(self._name, f"missing {series}")
            return None
        return nwb.region_rows(self._h5, series)

    def _trace_block(self, series: str, rows: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Data of a RoiResponseSeries as one C-contiguous ROI × frame block, ROIs taken in ``order``
        (positions in the stored ROI axis), read once without intermediate full-size copies."""
        ds = self._h5[f"{series}/{layout.DATA}"]
        if ds.ndim == 1:  # one ROI stored as a plain vector of frames
            return np.asarray(ds[()])[None, :][order]
        if ds.ndim == 2 and ds.shape[1] != len(rows) and ds.shape[0] == len(rows):  # stored ROI × frame
            data = ds[()]
            return data if np.array_equal(order, np.arange(len(rows))) else data[order]
        return nwb.read_transposed(ds, order, **self._prefetch_options())

    def _prefetch_options(self) -> dict:
        """For a streamed file: fetch the chunks of coming slabs on parallel connections while HDF5 decodes."""
        remote = getattr(self, "_remote", None)
        prefetch = getattr(remote, "prefetch", None)
        if prefetch is None:
            return {}
        return {"prefetch": prefetch, "prefetch_window": remote.cache_bytes // 2}

    def _n_series_frames(self, series: str, rows: np.ndarray) -> int:
        """Frames of a RoiResponseSeries (shape only, nothing read)."""
        shape = self._h5[f"{series}/{layout.DATA}"].shape
        if len(shape) == 2 and shape[1] != len(rows) and shape[0] == len(rows):
            return int(shape[1])
        return int(shape[0])

    def _per_roi_values(self, series: str) -> np.ndarray | None:
        """One float64 value per retained ROI (cell-table order) of an optional 1-D RoiResponseSeries."""
        rows = self._series_rows(series, required=False)
        if rows is None:
            return None
        order = self._align(series, rows, None, drop_missing=False)
        values = np.asarray(nwb.read(self._h5, f"{series}/{layout.DATA}"), dtype=np.float64).reshape(-1)
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
        self.ophys_timestamps  # validates the time base as dff_traces does
        rows = self._series_rows(layout.DFF)
        order = self._align(layout.DFF, rows, self._n_series_frames(layout.DFF, rows), drop_missing=False)
        if len(positions) == 0:
            return np.zeros((0, self._n_frames))
        return self._trace_block(layout.DFF, rows, order[positions])

    @cached_property
    def dff_traces(self) -> pd.DataFrame:
        """ΔF/F per ROI (array, one value per ophys frame), index ``cell_specimen_id``."""
        self.ophys_timestamps  # validates the time base as the SDK does
        return self._trace_frame(layout.DFF, "dff")

    @cached_property
    def corrected_fluorescence_traces(self) -> pd.DataFrame:
        """Neuropil-corrected fluorescence per ROI (a.u.), with the fit's ``r`` and ``RMSE`` where stored."""
        frame = self._trace_frame(layout.CORRECTED_FLUORESCENCE, "corrected_fluorescence")
        for name, path in (("r", layout.CORRECTED_FLUORESCENCE_R), ("RMSE", layout.CORRECTED_FLUORESCENCE_RMSE)):
            values = self._per_roi_values(path)
            if values is not None:
                frame[name] = values
        return frame

    @cached_property
    def demixed_traces(self) -> pd.DataFrame | None:
        """Demixed fluorescence per ROI (a.u.); None in files that predate it."""
        return self._trace_frame(layout.DEMIXED, "demixed_trace", required=False)

    @cached_property
    def neuropil_traces(self) -> pd.DataFrame | None:
        """Neuropil fluorescence per ROI (a.u.); None in files that predate it.

        AllenSDK 2.16.2 returns the demixed traces here (a bug); vbo returns the neuropil traces.
        """
        return self._trace_frame(layout.NEUROPIL, "neuropil_trace", required=False)

    @cached_property
    def events(self) -> pd.DataFrame:
        """Detected events per ROI (array per ophys frame), causally ``filtered_events``, and the detection's
        ``lambda`` and ``noise_std``. ROIs absent from the event series are dropped with a warning."""
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
        lambdas = np.asarray(nwb.read(h5, layout.EVENT_LAMBDAS), dtype=np.float64)[order]
        noise = np.asarray(nwb.read(h5, layout.EVENT_NOISE_STDS), dtype=np.float64)[order]
        return pd.DataFrame({
            "cell_roi_id": pd.Series(self._rois["cell_roi_id"].to_numpy()[present], index=index),
            "events": _object_column(events, index),
            "filtered_events": _object_column(filtered, index),
            "lambda": pd.Series(lambdas, index=index),
            "noise_std": pd.Series(noise, index=index),
        }, index=index)

    @cached_property
    def motion_correction(self) -> pd.DataFrame:
        """Rigid motion-correction offsets ``x``, ``y`` (px), one row per ophys frame."""
        h5 = self._h5
        return pd.DataFrame({"x": nwb.read(h5, layout.MOTION_X).astype(np.int64, copy=False),
                             "y": nwb.read(h5, layout.MOTION_Y).astype(np.int64, copy=False)})

    # --- images -------------------------------------------------------------------------------

    def _image(self, path: str) -> Image:
        h5 = self._h5
        if path not in h5:
            raise MissingDataError(self._name, f"missing image {path}")
        resolution = float(h5[path].attrs[layout.IMAGE_RESOLUTION_ATTR]) * layout.RESOLUTION_TO_MM
        return Image(nwb.read(h5, path), (resolution, resolution), "mm")

    @cached_property
    def max_projection(self) -> Image:
        """Maximum-intensity projection of the motion-corrected movie (spacing in mm)."""
        return self._image(layout.MAX_PROJECTION)

    @cached_property
    def average_projection(self) -> Image:
        """Average-intensity projection of the motion-corrected movie (spacing in mm)."""
        return self._image(layout.AVERAGE_PROJECTION)

    @cached_property
    def segmentation_mask_image(self) -> Image:
        """1 where any retained ROI covers the pixel, else 0 (int64), with the max projection's spacing.

        Computed from the ROI masks, as AllenSDK 2.16.2 does (its recorded output is binary, not the
        overlap count that its documentation suggests).
        """
        mask = self._roi_masks.any(axis=0).astype(np.int64)
        return Image(mask, self.max_projection.spacing, "mm")

    def get_segmentation_mask_image(self) -> Image:
        """Same as :attr:`segmentation_mask_image`."""
        return self.segmentation_mask_image

    # --- legacy methods -----------------------------------------------------------------------

    def get_cell_specimen_ids(self) -> np.ndarray:
        """Legacy: the ``cell_specimen_table`` index values. Raises ValueError if every id is null."""
        warnings.warn("get_cell_specimen_ids is a legacy method; use cell_specimen_table.index",
                      VisibleDeprecationWarning, stacklevel=2)
        ids = self._cell_index
        if all(i is None for i in ids):
            raise ValueError(f"{self._name}: no ROI of this experiment has a cell_specimen_id")
        return ids.to_numpy()

    def get_cell_specimen_indices(self, cell_specimen_ids) -> list[int]:
        """Legacy: positions of ``cell_specimen_ids`` in ``cell_specimen_table``."""
        warnings.warn("get_cell_specimen_indices is a legacy method; use cell_specimen_table.index.get_indexer",
                      VisibleDeprecationWarning, stacklevel=2)
        position: dict = {}
        for i, cell in enumerate(self._cell_index):  # a dict also finds None (unmatched ROIs)
            position.setdefault(cell, i)
        unknown = [c for c in cell_specimen_ids if c not in position]
        if unknown:
            raise KeyError(f"cell_specimen_ids {unknown} are not in {self._name}")
        return [position[c] for c in cell_specimen_ids]

    def get_dff_traces(self, cell_specimen_ids=None) -> tuple[np.ndarray, np.ndarray]:
        """Legacy: ``(ophys_timestamps, dF/F array cells × frames)`` for all or the given cells."""
        warnings.warn("get_dff_traces is a legacy method; use dff_traces and ophys_timestamps",
                      VisibleDeprecationWarning, stacklevel=2)
        if cell_specimen_ids is not None and "dff_traces" not in self.__dict__:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", VisibleDeprecationWarning)
                positions = self.get_cell_specimen_indices(cell_specimen_ids)
            return self.ophys_timestamps, self._dff_rows(np.asarray(positions, dtype=np.int64))
        dff = self.dff_traces
        if cell_specimen_ids is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", VisibleDeprecationWarning)
                dff = dff.iloc[self.get_cell_specimen_indices(cell_specimen_ids)]
        traces = np.stack(dff["dff"].to_list()) if len(dff) else np.zeros((0, self._n_frames))
        return self.ophys_timestamps, traces


class BehaviorOphysSession(BehaviorOphysExperiment):
    """Deprecated alias of :class:`BehaviorOphysExperiment` (as in AllenSDK)."""

    def __init__(self, *args, **kwargs):
        warnings.warn("BehaviorOphysSession is deprecated; use BehaviorOphysExperiment",
                      DeprecationWarning, stacklevel=2)
        super().__init__(*args, **kwargs)
