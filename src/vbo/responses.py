"""Stimulus-locked responses: event-triggered tensors, response tables, significance and summaries.

The core is :func:`event_locked`: one vectorised gather of a cells × samples trace matrix around many
events, returning an :class:`xarray.DataArray` with dims ``("cell", "event", "time")``. Everything else builds
on it:

* :func:`stimulus_responses` — the responses of one experiment to changes, omissions, image flashes or any
  boolean column of ``stimulus_presentations`` / ``trials``, for dF/F, events, filtered events, running
  speed, pupil size or lick rate; restricted by default to the change-detection block. Returns a
  :class:`StimulusResponses` (the tensor plus a tidy table with ``mean_response``, ``baseline_response``,
  ``p_value_gray_screen`` and the stimulus/trial metadata).
* summaries: :func:`condition_summary`, :func:`condition_traces`, :func:`preferred_image`,
  :func:`fraction_significant`, :func:`lifetime_sparseness`, :func:`population_average`;
* trial types: :func:`trial_type_responses`, :func:`compare_trial_types`;
* containers: :func:`match_cells`, :func:`novelty_comparison` (over the rows of
  :func:`vbo.population.container_responses`).

Conventions (``spec/analysis.md`` §3):

* the sampling rate of a stream is its empirical rate ``1 / mean(diff(timestamps))`` (:func:`empirical_rate`),
  computed from that stream's own timestamps;
* the relative timebase of a window ``[t0, t1]`` at rate ``r`` is ``t0 + i / r`` for ``i = 0 … floor((t1 − t0)·r)``
  (endpoint included; :func:`relative_timebase`);
* samples whose time lies outside the recording are NaN — never the edge value, never wrapped around;
* response window ``[0, rwd)`` and baseline window ``[−rwd, 0)`` (half-open; ``closed_windows=True`` gives the
  legacy closed windows that count the ``t = 0`` sample in both);
* p-values against shuffled spontaneous gray-screen windows of ``round(rwd · rate)`` native samples, drawn
  with a seedable generator; response and null on the same native basis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from vbo import behavior

TIME_TOLERANCE = 1e-9
TRACE_COLUMNS = ("dff", "events", "filtered_events", "corrected_fluorescence", "demixed_trace", "neuropil_trace")
NEURAL_DATA_TYPES = ("dff", "events", "filtered_events")
PUPIL_DATA_TYPES = ("pupil_area", "pupil_width", "pupil_diameter", "pupil_radius")
BEHAVIOR_DATA_TYPES = ("running_speed",) + PUPIL_DATA_TYPES + ("lick_rate",)
DATA_TYPES = NEURAL_DATA_TYPES + BEHAVIOR_DATA_TYPES
TRIAL_TYPES = behavior.TRIAL_OUTCOMES  # the one outcome vocabulary (vbo.behavior)
SPONTANEOUS_BEFORE_S = 240.0  # the last 4 min of the pre-task gray screen
LICK_RATE_BIN_FRAMES = behavior.LICK_RATE_BIN_FRAMES  # kept here for old imports; defined in vbo.behavior


# --- time bases ------------------------------------------------------------------------------------


def empirical_rate(timestamps) -> float:
    """Sampling rate (Hz) of one stream: ``1 / mean(diff(timestamps))``.

    Use one experiment's (or one stream's) timestamps — never timestamps concatenated over cells.
    """
    t = np.asarray(timestamps, dtype=np.float64)
    if t.ndim != 1 or len(t) < 2:
        raise ValueError("need at least two timestamps to infer a sampling rate")
    step = (t[-1] - t[0]) / (len(t) - 1)  # == mean(diff(t))
    if not step > 0:
        raise ValueError("timestamps must increase to infer a sampling rate")
    return float(1.0 / step)


def _window(window) -> tuple[float, float]:
    t0, t1 = (float(w) for w in window)
    if not t1 > t0:
        raise ValueError(f"window end must follow its start, got {window!r}")
    return t0, t1


def relative_timebase(window=(-1.0, 2.0), rate: float = 30.0) -> np.ndarray:
    """Times relative to the event, ``t0 + i / rate`` for ``i = 0 … floor((t1 − t0)·rate)`` (endpoint included).

    >>> len(relative_timebase((-3, 3), 11)), len(relative_timebase((-0.5, 0.75), 30))
    (67, 38)
    """
    t0, t1 = _window(window)
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate}")
    k = int(math.floor((t1 - t0) * rate + TIME_TOLERANCE))
    return t0 + np.arange(k + 1) / rate


def _trunc(x: float) -> int:
    return int(math.trunc(x + math.copysign(TIME_TOLERANCE, x)))


def shift_offsets(window=(-1.0, 2.0), rate: float = 30.0) -> np.ndarray:
    """Native-sample offsets of the shift (nearest-sample) mode: ``o_start = trunc(t0·rate)``,
    ``o_end = trunc(o_start + (t1 − t0)·rate) + 1`` (endpoint included); offsets ``o_start … o_end − 1``."""
    t0, t1 = _window(window)
    o_start = _trunc(t0 * rate)
    o_end = _trunc(o_start + (t1 - t0) * rate) + 1
    return np.arange(o_start, o_end)


def nearest_sample(timestamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the sample nearest to each time (ties → the earlier sample); clipped to the recording."""
    t = np.asarray(timestamps, dtype=np.float64)
    q = np.asarray(times, dtype=np.float64)
    if len(t) == 0:
        raise ValueError("no samples")
    j = np.clip(np.searchsorted(t, q, side="left"), 1, max(len(t) - 1, 1))
    if len(t) == 1:
        return np.zeros(q.shape, dtype=np.int64)
    earlier = np.abs(q - t[j - 1]) <= np.abs(t[j] - q)
    out = np.where(earlier, j - 1, j).astype(np.int64)
    return np.where(np.isnan(q), 0, out)


# --- inputs ------------------------------------------------------------------------------------------


def _trace_matrix(traces, column: str | None, cell_ids) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """(cells × samples float matrix, cell coordinates, name of the dimension coordinate)."""
    coords: dict[str, np.ndarray] = {}
    if isinstance(traces, pd.DataFrame):
        if column is None:
            column = next((c for c in TRACE_COLUMNS if c in traces.columns), None)
            if column is None:
                objects = [c for c in traces.columns if traces[c].dtype == object]
                if len(objects) != 1:
                    raise ValueError(f"say which trace column to use (column=...), found {list(traces.columns)}")
                column = objects[0]
        values = traces[column].to_list()
        matrix = np.stack([np.asarray(v, dtype=np.float64) for v in values]) if values else np.zeros((0, 0))
        index = traces.index
        if index.name == "cell_specimen_id":
            coords["cell_specimen_id"] = _nullable_ids(index)
        if "cell_roi_id" in traces.columns:
            coords["cell_roi_id"] = traces["cell_roi_id"].to_numpy(np.int64)
        name = "cell_roi_id" if "cell_roi_id" in coords else (index.name or "cell")
        if name not in coords:
            coords[name] = index.to_numpy()
    elif isinstance(traces, pd.Series):
        matrix = np.stack([np.asarray(v, dtype=np.float64) for v in traces.to_list()])
        name = traces.index.name or "cell"
        coords[name] = traces.index.to_numpy()
    else:
        matrix = np.asarray(traces)
        if matrix.dtype.kind not in "fc":
            matrix = matrix.astype(np.float64)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        if matrix.ndim != 2:
            raise ValueError(f"traces must be cells × samples (2-D), got shape {matrix.shape}")
        name = "cell"
        coords[name] = np.arange(matrix.shape[0])
    if cell_ids is not None:
        ids = np.asarray(cell_ids)
        if len(ids) != matrix.shape[0]:
            raise ValueError(f"{len(ids)} cell ids for {matrix.shape[0]} traces")
        name = "cell"
        coords[name] = ids
    return matrix, coords, name


def _nullable_ids(values) -> np.ndarray:
    """Cell specimen ids as int64 with −1 for unmatched (null) ROIs."""
    return np.array([-1 if v is None or (isinstance(v, float) and math.isnan(v)) else int(v) for v in values],
                    dtype=np.int64)


def _event_vector(event_times, event_ids) -> tuple[np.ndarray, np.ndarray, str]:
    if isinstance(event_times, pd.Series):
        times = event_times.to_numpy(np.float64)
        ids = event_times.index.to_numpy()
        name = event_times.index.name or "event"
    else:
        times = np.atleast_1d(np.asarray(event_times, dtype=np.float64))
        ids = np.arange(len(times))
        name = "event"
    if times.ndim != 1:
        raise ValueError("event_times must be one-dimensional")
    if event_ids is not None:
        ids = np.asarray(event_ids)
        if len(ids) != len(times):
            raise ValueError(f"{len(ids)} event ids for {len(times)} events")
    return times, ids, name


# --- the gather --------------------------------------------------------------------------------------


def _interpolated(matrix: np.ndarray, t: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Linear interpolation of every row of ``matrix`` at ``query`` (any shape): cells × query.shape.

    Indices and weights are computed once per query time and applied to all rows at once (two gathers);
    query times outside ``[t[0], t[-1]]`` are NaN.
    """
    n = len(t)
    out_shape = (matrix.shape[0],) + query.shape
    dtype = np.result_type(matrix.dtype, np.float32)
    if n == 0:
        return np.full(out_shape, np.nan, dtype=dtype)
    if n == 1:
        out = np.full(out_shape, np.nan, dtype=dtype)
        out[:, query == t[0]] = matrix[:, :1]
        return out
    i = np.searchsorted(t, query, side="right") - 1
    np.clip(i, 0, n - 2, out=i)
    left = t[i]
    step = t[i + 1] - left
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(step > 0, (query - left) / step, 0.0)
    lower = np.take(matrix, i, axis=1)
    upper = np.take(matrix, i + 1, axis=1)
    upper -= lower
    upper *= w.astype(dtype, copy=False)
    upper += lower
    del lower
    outside = ~((query >= t[0]) & (query <= t[-1]))  # also NaN query times
    if outside.any():
        upper[:, outside] = np.nan
    return upper


def _shifted(matrix: np.ndarray, t: np.ndarray, events: np.ndarray, offsets: np.ndarray, rate: float) -> np.ndarray:
    """Nearest-sample windows: cells × events × offsets; NaN where an index falls outside the recording or the
    event itself lies more than one sample period outside it."""
    n = len(t)
    dtype = np.result_type(matrix.dtype, np.float32)
    if n == 0:
        return np.full((matrix.shape[0], len(events), len(offsets)), np.nan, dtype=dtype)
    i0 = nearest_sample(t, events)
    idx = i0[:, None] + offsets[None, :]
    valid = (idx >= 0) & (idx < n)
    slack = 1.0 / rate
    valid &= ((events >= t[0] - slack) & (events <= t[-1] + slack))[:, None]
    out = np.take(matrix, np.clip(idx, 0, n - 1), axis=1)
    if dtype != out.dtype:
        out = out.astype(dtype)
    if not valid.all():
        out[:, ~valid] = np.nan
    return out


def event_locked(traces, timestamps, event_times, window=(-1.0, 2.0), rate: float | None = None,
                 interpolate: bool = True, *, column: str | None = None, cell_ids=None,
                 event_ids=None) -> xr.DataArray:
    """Traces around events: an ``xarray.DataArray`` with dims ``("cell", "event", "time")``.

    Parameters
    ----------
    traces
        Cells × samples array (one trace: a 1-D array), or a traces DataFrame of an experiment
        (``dff_traces``, ``events`` — pick the column with ``column``; default the first of
        ``dff``, ``events``, ``filtered_events``, …).
    timestamps
        Time of every sample (s), increasing; length = number of samples.
    event_times
        Event times (s). A pandas Series keeps its index as the event ids (and the index name, e.g.
        ``stimulus_presentations_id``, in ``attrs["event_id"]``).
    window
        ``(start, end)`` relative to each event (s), both included when they fall on the time base.
    rate
        Output rate (Hz). Default: the empirical rate of ``timestamps``.
    interpolate
        True: linear interpolation of the native samples at ``event + τ`` for ``τ`` on the relative time base
        (:func:`relative_timebase`). False: the native samples nearest to the event, shifted by whole-sample
        offsets (:func:`shift_offsets`); time coordinate = offsets / rate.
    column, cell_ids, event_ids
        Trace column of a DataFrame; explicit ids of the cells / events.

    Returns
    -------
    xarray.DataArray
        Coordinates ``cell`` (``cell_roi_id`` for an experiment's traces, else the DataFrame index or
        0…n−1), ``event`` (event ids), ``time`` (s relative to the event), ``event_time`` (along ``event``)
        and, for an experiment's traces, ``cell_specimen_id`` (−1 when unmatched) along ``cell``.
        Samples outside the recording are NaN. ``attrs``: ``window``, ``rate``, ``interpolate``,
        ``cell_id``, ``event_id``.

    Notes
    -----
    One gather for all cells and events: fractional indices and weights are computed once per
    (event, τ) and applied to the whole matrix — no Python loop per event or per cell.
    """
    matrix, cell_coords, cell_name = _trace_matrix(traces, column, cell_ids)
    t = np.asarray(timestamps, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError("timestamps must be one-dimensional")
    if matrix.shape[1] != len(t):
        hint = " (traces look samples × cells: pass traces.T)" if matrix.shape[0] == len(t) else ""
        raise ValueError(f"traces must be cells × samples: {matrix.shape[1]} samples for {len(t)} timestamps{hint}")
    if len(t) > 1 and np.any(np.diff(t) < 0):
        raise ValueError("timestamps must be non-decreasing")
    times, ids, event_name = _event_vector(event_times, event_ids)
    window = _window(window)
    if rate is None:
        rate = empirical_rate(t)
    rate = float(rate)
    if interpolate:
        tau = relative_timebase(window, rate)
        data = _interpolated(matrix, t, times[:, None] + tau[None, :])
    else:
        offsets = shift_offsets(window, rate)
        tau = offsets / rate
        data = _shifted(matrix, t, times, offsets, rate)
    coords: dict[str, Any] = {"cell": cell_coords[cell_name], "event": ids, "time": tau,
                              "event_time": ("event", times)}
    for key, values in cell_coords.items():
        if key != cell_name:
            coords[key] = ("cell", values)
    name = column if column else (traces.name if isinstance(traces, pd.Series) else None)
    if name is None and isinstance(traces, pd.DataFrame):
        name = next((c for c in TRACE_COLUMNS if c in traces.columns), None)
    return xr.DataArray(data, dims=("cell", "event", "time"), coords=coords, name=name,
                        attrs={"window": window, "rate": rate, "interpolate": bool(interpolate),
                               "cell_id": cell_name, "event_id": event_name})


def to_tidy(tensor: xr.DataArray) -> pd.DataFrame:
    """An :func:`event_locked` tensor as the reference helpers' tidy table (``analysis.md`` §3.4).

    Returns
    -------
    pd.DataFrame
        One row per (cell, event, time): ``time`` (s from the event), the value column (the tensor's name,
        e.g. ``dff``; ``value`` if unnamed), ``event_number`` (0…n−1 in event order), the event id column
        (``attrs["event_id"]``, e.g. ``stimulus_presentations_id``), ``event_time`` (s) and, for several cells,
        the cell id column first (``attrs["cell_id"]``, e.g. ``cell_roi_id``).
    """
    n_cells, n_events, n_times = tensor.shape
    value = tensor.name or "value"
    event_name = tensor.attrs.get("event_id") or "event"
    per_cell = {"time": np.tile(tensor["time"].to_numpy(), n_events),
                value: None,
                "event_number": np.repeat(np.arange(n_events), n_times),
                event_name: np.repeat(tensor["event"].to_numpy(), n_times),
                "event_time": np.repeat(tensor["event_time"].to_numpy(), n_times)}
    columns = {k: (np.tile(v, n_cells) if v is not None else tensor.to_numpy().reshape(-1))
               for k, v in per_cell.items()}
    if n_cells > 1:
        cell_name = tensor.attrs.get("cell_id") or "cell"
        columns = {cell_name: np.repeat(tensor["cell"].to_numpy(), n_events * n_times), **columns}
    return pd.DataFrame(columns)


def to_wide(tensor: xr.DataArray, cell=None) -> pd.DataFrame:
    """One cell of an :func:`event_locked` tensor as a wide table (``analysis.md`` §3.4): index ``time`` (s from
    the event), one column per event named ``event_{n}_t={event time}``.

    ``cell``: a value of the tensor's ``cell`` coordinate (e.g. a ``cell_roi_id``); may be left out when the
    tensor holds one cell.
    """
    if cell is None:
        if tensor.sizes["cell"] != 1:
            raise ValueError(f"the tensor holds {tensor.sizes['cell']} cells: choose one with cell=")
        one = tensor.isel(cell=0)
    else:
        try:
            one = tensor.sel(cell=cell)
        except KeyError:
            raise KeyError(f"cell {cell!r} is not in the tensor's {tensor.attrs.get('cell_id') or 'cell'} "
                           "coordinate") from None
    names = [f"event_{n}_t={t}" for n, t in enumerate(one["event_time"].to_numpy().tolist())]
    return pd.DataFrame(one.to_numpy().T, index=pd.Index(one["time"].to_numpy(), name="time"), columns=names)


# --- event selection ---------------------------------------------------------------------------------


def _boolean(values: pd.Series) -> np.ndarray:
    """A boolean (possibly nullable) column as a numpy mask; NA → False."""
    if values.dtype == bool:
        return values.to_numpy()
    return values.fillna(False).astype(bool).to_numpy()


def block_rows(stimulus_presentations: pd.DataFrame, stimulus_block="change_detection") -> pd.DataFrame:
    """Rows of one stimulus block: a name part (``"change_detection"``: rows whose ``stimulus_block_name``
    contains it), a block number, or None for the whole table. Tables without ``stimulus_block_name``
    (releases before 1.1.0) are the change-detection block already."""
    sp = stimulus_presentations
    if stimulus_block is None:
        return sp
    if isinstance(stimulus_block, str):
        if "stimulus_block_name" not in sp:
            return sp
        keep = sp["stimulus_block_name"].astype(str).str.contains(stimulus_block, regex=False).to_numpy()
    else:
        keep = (sp["stimulus_block"] == int(stimulus_block)).to_numpy()
    rows = sp[keep]
    if rows.empty:
        raise ValueError(f"no stimulus presentations in block {stimulus_block!r}")
    return rows


_PRESENTATION_EVENTS = {"all": None, "images": "images", "omissions": "omitted", "omitted": "omitted",
                        "changes": "is_change", "is_change": "is_change"}


def select_events(stimulus_presentations: pd.DataFrame, event_type: str = "changes",
                  trials: pd.DataFrame | None = None, stimulus_block="change_detection",
                  onset: str = "start_time") -> pd.DataFrame:
    """The rows of the chosen events, with their time in column ``event_time``.

    ``event_type``: ``all``, ``images`` (flashes that are not omitted), ``omissions``/``omitted``,
    ``changes``/``is_change``, any boolean column of ``stimulus_presentations`` (rows of the block where it is
    True), or — when ``trials`` is given — ``trials`` (every trial with a change time) or any boolean column of
    ``trials`` (``hit``, ``miss``, ``false_alarm``, ``correct_reject``, ``go``, ``catch``, …), timed at
    ``change_time``. Nullable-boolean NA counts as False. Rows without a finite time are dropped.
    """
    sp = block_rows(stimulus_presentations, stimulus_block)
    if event_type in _PRESENTATION_EVENTS or (event_type in sp.columns and _is_boolean(sp[event_type])):
        key = _PRESENTATION_EVENTS.get(event_type, event_type)
        if key is None:
            rows = sp
        elif key == "images":
            rows = sp[~_boolean(sp["omitted"])] if "omitted" in sp else sp
            if "image_name" in rows:
                rows = rows[rows["image_name"].notna().to_numpy()]
        else:
            rows = sp[_boolean(sp[key])]
        rows = rows.copy()
        rows["event_time"] = rows[onset].to_numpy(np.float64)
    elif trials is not None and (event_type == "trials" or (event_type in trials.columns
                                                             and _is_boolean(trials[event_type]))):
        rows = trials if event_type == "trials" else trials[_boolean(trials[event_type])]
        rows = rows.copy()
        rows["event_time"] = rows["change_time"].to_numpy(np.float64)
        if stimulus_block is not None and "start_time" in sp:
            span = (sp["start_time"].min(), sp["end_time"].max() if "end_time" in sp else np.inf)
            rows = rows[(rows["event_time"] >= span[0]) & (rows["event_time"] <= span[1])]
    else:
        raise ValueError(f"unknown event_type {event_type!r}: use all, images, omissions, changes, trials or a "
                         "boolean column of stimulus_presentations or trials")
    return rows[np.isfinite(rows["event_time"].to_numpy(np.float64))]


def _is_boolean(values: pd.Series) -> bool:
    return values.dtype == bool or str(values.dtype) == "boolean"


# --- data streams ------------------------------------------------------------------------------------


def lick_rate(experiment) -> pd.DataFrame:
    """Lick rate of an experiment on the stimulus-frame time base — :func:`vbo.behavior.lick_rate` (the one
    definition, ``analysis.md`` §6) applied to ``experiment.licks`` and ``experiment.stimulus_timestamps``.

    Returns
    -------
    pandas.DataFrame
        ``timestamps`` (s), ``licks`` (0/1 per frame) and ``lick_rate``: the 0/1 lick train averaged over a
        trailing triangular window of :data:`LICK_RATE_BIN_FRAMES` frames (weights (1,3,5,5,3,1)/18), in licks
        per frame (the reference's "licks per 100 ms"); NaN for the first ``LICK_RATE_BIN_FRAMES − 1`` frames.
    """
    return behavior.lick_rate(experiment.licks, experiment.stimulus_timestamps)


def trace_data(experiment, data_type: str = "dff") -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(values: traces × samples, timestamps, one row per trace) of one data stream of an experiment.

    Neural streams (``dff``, ``events``, ``filtered_events``) have one trace per ROI (rows: ``cell_roi_id``,
    ``cell_specimen_id`` with −1 when unmatched); behavioral streams (``running_speed``, ``pupil_area``,
    ``pupil_width``, ``pupil_diameter`` = 2·√(area/π), ``pupil_radius`` = √(area/π), ``lick_rate``) have one
    trace (``trace_id`` 0) on their own time base (pupil values are NaN on likely blinks).
    """
    if data_type in NEURAL_DATA_TYPES:
        frame = experiment.dff_traces if data_type == "dff" else experiment.events
        values = frame[data_type].to_list()
        n = len(experiment.ophys_timestamps)
        matrix = np.stack([np.asarray(v, dtype=np.float64) for v in values]) if values else np.zeros((0, n))
        rows = pd.DataFrame({"cell_roi_id": frame["cell_roi_id"].to_numpy(np.int64),
                             "cell_specimen_id": _nullable_ids(frame.index)})
        return matrix, np.asarray(experiment.ophys_timestamps, dtype=np.float64), rows
    if data_type == "running_speed":
        running = experiment.running_speed
        t, v = running["timestamps"].to_numpy(np.float64), running["speed"].to_numpy(np.float64)
    elif data_type.startswith("pupil_"):
        eye = experiment.eye_tracking
        if data_type not in eye and data_type not in behavior.DERIVED_PUPIL_SIZES:
            raise ValueError(f"unknown data_type {data_type!r}")
        t, v = behavior.pupil_series(eye, data_type)  # eye-tracking timestamps (D8), blinks NaN, derived sizes (D9)
    elif data_type == "lick_rate":
        rate = lick_rate(experiment)
        t, v = rate["timestamps"].to_numpy(np.float64), rate["lick_rate"].to_numpy(np.float64)
    else:
        raise ValueError(f"unknown data_type {data_type!r}; choose one of {DATA_TYPES}")
    return v[None, :], t, pd.DataFrame({"trace_id": [0]})


# --- significance ------------------------------------------------------------------------------------


def _window_means(matrix: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """NaN-aware mean of ``matrix[:, s:s + length]`` for every start (cells × starts); NaN where out of range."""
    n = matrix.shape[1]
    finite = np.isfinite(matrix)
    sums = np.zeros((matrix.shape[0], n + 1))
    np.cumsum(np.where(finite, matrix, 0.0), axis=1, out=sums[:, 1:])
    counts = np.zeros((matrix.shape[0], n + 1))
    np.cumsum(finite, axis=1, out=counts[:, 1:])
    starts = np.asarray(starts, dtype=np.int64)
    ok = (starts >= 0) & (starts + length <= n)
    s = np.where(ok, starts, 0)
    total = sums[:, s + length] - sums[:, s]
    count = counts[:, s + length] - counts[:, s]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = total / count
    out[:, ~ok] = np.nan
    return out


def spontaneous_mask(timestamps: np.ndarray, stimulus_presentations: pd.DataFrame, period: str = "both",
                     stimulus_block="change_detection") -> np.ndarray:
    """Samples of a stream that fall in the gray screen around the change-detection block.

    ``before``: the :data:`SPONTANEOUS_BEFORE_S` s before the block's first stimulus (the second row when the
    first is an omission); ``after``: from the end of the block's last row to the end of the gray-screen
    block that follows it (or :data:`SPONTANEOUS_BEFORE_S` s when there is none); ``both``: the union.
    """
    if period not in ("before", "after", "both"):
        raise ValueError(f"period must be before, after or both, got {period!r}")
    sp = stimulus_presentations
    block = block_rows(sp, stimulus_block)
    t = np.asarray(timestamps, dtype=np.float64)
    mask = np.zeros(len(t), dtype=bool)
    first = block.iloc[0]
    if "omitted" in block and len(block) > 1 and bool(pd.notna(first["omitted"]) and first["omitted"]):
        first = block.iloc[1]
    start = float(first["start_time"])
    if period in ("before", "both"):
        mask |= (t >= start - SPONTANEOUS_BEFORE_S) & (t < start)
    if period in ("after", "both"):
        end = float(block["end_time"].max())
        stop = end + SPONTANEOUS_BEFORE_S
        if "stimulus_block_name" in sp:
            later = sp[(sp["start_time"] >= end - TIME_TOLERANCE)]
            gray = later[later["stimulus_block_name"].astype(str).str.contains("gray")]
            if len(gray):
                stop = float(gray["end_time"].iloc[0])
            elif len(later):
                stop = min(stop, float(later["start_time"].iloc[0]))
        mask |= (t >= end) & (t < stop)
    return mask


def response_window_samples(response_window_duration: float, rate: float) -> int:
    """Native samples in a response window: ``round(rwd · rate)`` (at least 1) — multiplied by the rate once
    (0.5 s at 31 Hz → 16, at 10.73 Hz → 5, at 11 Hz → 6)."""
    return max(int(round(float(response_window_duration) * float(rate))), 1)


def shuffled_p_values(matrix: np.ndarray, timestamps: np.ndarray, event_times: np.ndarray, spontaneous: np.ndarray,
                      response_window_duration: float = 0.5, n_shuffles: int = 10_000,
                      seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """p-value of each (trace, event) response against shuffled spontaneous windows (traces × events).

    The window holds ``L = round(rwd · rate)`` native samples (rate: the stream's empirical rate). The
    response is the mean of samples ``[i, i + L)`` after the sample ``i`` nearest to the event; the null
    distribution is ``n_shuffles`` means of ``L``-sample windows whose start is drawn (with replacement, from
    ``seed``) among the spontaneous samples whose whole window is spontaneous. ``p`` is the fraction of
    shuffles at or above the response (``1 − rank / n``, rank = shuffles strictly below). NaN responses give
    NaN. Raises ValueError when no spontaneous window fits.
    """
    t = np.asarray(timestamps, dtype=np.float64)
    rate = empirical_rate(t)
    length = response_window_samples(response_window_duration, rate)
    spont = np.asarray(spontaneous, dtype=bool)
    inside = np.concatenate([[0], np.cumsum(spont)])
    starts = np.flatnonzero(spont[: max(len(t) - length + 1, 0)])
    starts = starts[inside[starts + length] - inside[starts] == length]
    if len(starts) == 0:
        raise ValueError(f"no spontaneous gray-screen window of {length} samples to shuffle")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    draws = rng.choice(starts, size=int(n_shuffles), replace=True)
    null = _window_means(matrix, draws, length)
    events = np.asarray(event_times, dtype=np.float64)
    i = nearest_sample(t, events)
    outside = ~((events >= t[0] - 1.0 / rate) & (events <= t[-1] + 1.0 / rate))
    i[outside] = -1
    response = _window_means(matrix, i, length)
    null.sort(axis=1)  # NaN last
    n_valid = np.isfinite(null).sum(axis=1)
    p = np.full(response.shape, np.nan)
    for c in range(matrix.shape[0]):  # one searchsorted per trace (cheap; the data work is vectorised)
        if n_valid[c] == 0:
            continue
        rank = np.searchsorted(null[c, : n_valid[c]], response[c], side="left")
        p[c] = 1.0 - rank / n_valid[c]
    p[~np.isfinite(response)] = np.nan
    return p


# --- stimulus responses ------------------------------------------------------------------------------


@dataclass
class StimulusResponses:
    """Stimulus-locked responses of one experiment.

    Attributes
    ----------
    tensor
        ``xarray.DataArray`` (``cell`` × ``event`` × ``time``), see :func:`event_locked`.
    table
        Tidy table, one row per (trace, event): ids, ``mean_response``, ``baseline_response``,
        ``p_value_gray_screen``, the event's stimulus/trial columns and the parameters.
    events
        One row per event (the selected ``stimulus_presentations`` or ``trials`` rows, ``event_time``).
    params
        The parameters used.
    """

    tensor: xr.DataArray
    table: pd.DataFrame
    events: pd.DataFrame
    params: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.tensor, self.table))

    @property
    def cell_column(self) -> str:
        return "trace_id" if "trace_id" in self.table else "cell_roi_id"


WINDOW_TOLERANCE_S = 1e-6  # relative times within this of a window edge count as on it (empirical rates drift)


def _window_slice(times: np.ndarray, start: float, stop: float, closed: bool) -> np.ndarray:
    tol = WINDOW_TOLERANCE_S
    hi = times <= stop + tol if closed else times < stop - tol
    return (times >= start - tol) & hi


def window_means(tensor: xr.DataArray, response_window_duration: float = 0.5,
                 closed_windows: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(mean_response, baseline_response), each cells × events: NaN-aware means of the tensor over
    ``[0, rwd)`` and ``[−rwd, 0)`` (``closed_windows=True``: ``[0, rwd]`` and ``[−rwd, 0]``, legacy)."""
    times = tensor["time"].to_numpy()
    rwd = float(response_window_duration)
    response = _window_slice(times, 0.0, rwd, closed_windows)
    baseline = _window_slice(times, -rwd, 0.0, closed_windows)
    if not response.any() or not baseline.any():
        raise ValueError(f"window {tensor.attrs.get('window')} does not cover ±{rwd} s around the event")
    data = tensor.to_numpy()
    with np.errstate(invalid="ignore"), _quiet():
        return (np.nanmean(data[:, :, np.flatnonzero(response)], axis=2),
                np.nanmean(data[:, :, np.flatnonzero(baseline)], axis=2))


def anova_p_values(tensor: xr.DataArray, response_window_duration: float = 0.5,
                   closed_windows: bool = False) -> np.ndarray:
    """Legacy workshop significance (``trial_response_df``): one-way ANOVA between the samples of the
    response window ``[0, rwd)`` and the equal-length window before the event ``[−rwd, 0)``, per cell and
    event (cells × events; NaN where a window holds NaN or has no variance)."""
    from scipy import stats

    times = tensor["time"].to_numpy()
    rwd = float(response_window_duration)
    response = np.flatnonzero(_window_slice(times, 0.0, rwd, closed_windows))
    baseline = np.flatnonzero(_window_slice(times, -rwd, 0.0, closed_windows))
    if len(response) < 2 or len(baseline) < 2:
        raise ValueError(f"an ANOVA needs at least 2 samples per window; rwd {rwd} s at "
                         f"{tensor.attrs.get('rate')} Hz gives {len(response)} and {len(baseline)}")
    data = tensor.to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        result = stats.f_oneway(data[:, :, response], data[:, :, baseline], axis=2)
    return np.asarray(result.pvalue, dtype=np.float64)


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _metadata_columns(events: pd.DataFrame) -> list[str]:
    """Columns to repeat into the tidy table: all but per-row arrays (``lick_times`` stays in ``events``)."""
    keep = []
    for name in events.columns:
        values = events[name].dropna()
        if events[name].dtype == object and len(values) and isinstance(values.iloc[0], (list, tuple, np.ndarray)):
            continue
        keep.append(name)
    return keep


def stimulus_responses(experiment, event_type: str = "changes", data_type: str = "dff", window=(-3.0, 3.0),
                       response_window_duration: float = 0.5, interpolate: bool = True,
                       output_sampling_rate: float | None = None, stimulus_block="change_detection",
                       p_value: bool = True, n_shuffles: int = 10_000, spontaneous: str = "both",
                       seed: int | np.random.Generator | None = 0, closed_windows: bool = False,
                       events: pd.DataFrame | None = None, anova: bool = False) -> StimulusResponses:
    """Responses of every trace of an experiment to a set of events.

    Parameters
    ----------
    experiment
        A :class:`vbo.BehaviorOphysExperiment` (behavioral data types also work on a behavior session).
    event_type
        See :func:`select_events`: ``changes`` (default), ``omissions``, ``images``, ``all``, ``trials`` or a
        boolean column of ``stimulus_presentations`` / ``trials``.
    data_type
        ``dff``, ``events``, ``filtered_events``, ``running_speed``, ``pupil_area``, ``pupil_width``,
        ``pupil_diameter``, ``pupil_radius`` or ``lick_rate`` (see :func:`trace_data`).
    window
        Event-locked window (s), default ``(-3, 3)``.
    response_window_duration
        ``rwd`` (s): ``mean_response`` over ``[0, rwd)``, ``baseline_response`` over ``[−rwd, 0)``.
    interpolate, output_sampling_rate
        See :func:`event_locked`; the default rate is the stream's empirical rate.
    stimulus_block
        Block of ``stimulus_presentations`` to take events from (default: the change-detection block).
    p_value, n_shuffles, spontaneous, seed
        ``p_value_gray_screen`` against ``n_shuffles`` windows of the ``spontaneous`` gray screen
        (``before``, ``after``, ``both``), drawn from ``seed`` (:func:`shuffled_p_values`). ``p_value=False``
        leaves the column NaN.
    closed_windows
        Legacy closed response/baseline windows (count the ``t = 0`` sample in both).
    events
        Use these event rows (with ``event_time``) instead of selecting them.
    anova
        Also the legacy ``p_value_anova`` column (:func:`anova_p_values`, the workshop ``trial_response_df``).

    Returns
    -------
    StimulusResponses
        ``tensor`` and ``table`` (unpackable: ``tensor, table = stimulus_responses(...)``).
    """
    presentations = experiment.stimulus_presentations
    if events is None:
        trials = experiment.trials if event_type not in _PRESENTATION_EVENTS \
            and event_type not in presentations.columns else None
        events = select_events(presentations, event_type, trials, stimulus_block)
    matrix, t, traces = trace_data(experiment, data_type)
    event_times = pd.Series(events["event_time"].to_numpy(np.float64), index=events.index)
    tensor = event_locked(matrix, t, event_times, window, rate=output_sampling_rate, interpolate=interpolate)
    if "cell_roi_id" in traces:
        tensor = tensor.assign_coords(cell=traces["cell_roi_id"].to_numpy(),
                                      cell_specimen_id=("cell", traces["cell_specimen_id"].to_numpy()))
        tensor.attrs["cell_id"] = "cell_roi_id"
    else:
        tensor = tensor.assign_coords(cell=traces["trace_id"].to_numpy())
        tensor.attrs["cell_id"] = "trace_id"
    tensor.name = data_type
    tensor.attrs.update({"data_type": data_type, "event_type": event_type})
    mean_response, baseline_response = window_means(tensor, response_window_duration, closed_windows)
    if p_value and len(events):
        spont = spontaneous_mask(t, presentations, spontaneous, stimulus_block or "change_detection")
        p = shuffled_p_values(matrix, t, event_times.to_numpy(), spont, response_window_duration, n_shuffles, seed)
    else:
        p = np.full(mean_response.shape, np.nan)

    n_cells, n_events = mean_response.shape
    event_name = events.index.name or "event"
    columns: dict[str, Any] = {}
    for name in traces.columns:
        columns[name] = np.repeat(traces[name].to_numpy(), n_events)
    if "cell_specimen_id" in columns:
        ids = columns["cell_specimen_id"]
        columns["cell_specimen_id"] = pd.array(np.where(ids < 0, 0, ids), dtype="Int64")
        columns["cell_specimen_id"][ids < 0] = pd.NA
    columns[event_name] = np.tile(events.index.to_numpy(), n_cells)
    columns["mean_response"] = mean_response.ravel()
    columns["baseline_response"] = baseline_response.ravel()
    columns["p_value_gray_screen"] = p.ravel()
    if anova:
        columns["p_value_anova"] = anova_p_values(tensor, response_window_duration, closed_windows).ravel()
    table = pd.DataFrame(columns)
    meta = events[[c for c in _metadata_columns(events) if c not in table.columns]]
    meta = meta.iloc[np.tile(np.arange(n_events), n_cells)].reset_index(drop=True)
    table = pd.concat([table, meta], axis=1)
    params = {"data_type": data_type, "event_type": event_type, "interpolate": bool(interpolate),
              "output_sampling_rate": float(tensor.attrs["rate"]),
              "response_window_duration": float(response_window_duration),
              "stimulus_block": stimulus_block, "window": tuple(float(w) for w in window),
              "n_shuffles": int(n_shuffles) if p_value else 0, "spontaneous": spontaneous,
              "closed_windows": bool(closed_windows)}
    for key in ("data_type", "event_type", "interpolate", "output_sampling_rate", "response_window_duration"):
        table[key] = params[key]
    table["stimulus_block"] = str(stimulus_block) if stimulus_block is not None else None
    experiment_id = getattr(experiment, "ophys_experiment_id", None)
    if experiment_id is not None:
        table["ophys_experiment_id"] = int(experiment_id)
        tensor.attrs["ophys_experiment_id"] = int(experiment_id)
    return StimulusResponses(tensor, table, events, params)


# --- summaries ---------------------------------------------------------------------------------------


def _cell_column(table: pd.DataFrame) -> str:
    for name in ("cell_roi_id", "trace_id", "cell_specimen_id"):
        if name in table:
            return name
    raise ValueError("the table has no cell column (cell_roi_id, trace_id or cell_specimen_id)")


def _table(responses) -> pd.DataFrame:
    return responses.table if isinstance(responses, StimulusResponses) else responses


def condition_summary(responses, conditions: Sequence[str] | None = None, alpha: float = 0.05,
                      value: str = "mean_response") -> pd.DataFrame:
    """Per-condition summary of a response table (one row per group).

    Columns: ``mean_response`` (mean of ``value``), ``sem_response`` (std with ddof = 1 / √n; NaN for n = 1),
    ``n_events``, ``responses`` (list of the values), ``fraction_significant_responses`` (share with
    ``p_value_gray_screen < alpha``), ``cell_specimen_id`` (when known) and, when the conditions are
    (cell, ``image_name``), ``pref_stim``: True for each cell's image with the largest mean response
    (``omitted`` excluded). Default conditions: (cell, ``image_name``) when the table has image names,
    else (cell, ``change_image_name``) for trial responses.
    """
    table = _table(responses)
    cell = _cell_column(table)
    if conditions is None:
        image = "image_name" if "image_name" in table else "change_image_name" if "change_image_name" in table else None
        conditions = [cell, image] if image else [cell]
    conditions = list(conditions)
    grouped = table.groupby(conditions, sort=True, dropna=False, observed=True)
    values = grouped[value]
    out = pd.DataFrame({"mean_response": values.mean(), "sem_response": values.std(ddof=1) / np.sqrt(values.count()),
                        "n_events": values.count(), "responses": values.agg(list)})
    if "p_value_gray_screen" in table:
        significant = (table["p_value_gray_screen"] < alpha).astype(float)
        significant[table["p_value_gray_screen"].isna()] = np.nan
        out["fraction_significant_responses"] = significant.groupby(
            [table[c] for c in conditions], sort=True, dropna=False, observed=True).mean()
    if "cell_specimen_id" in table and cell != "cell_specimen_id" and cell in conditions:
        out["cell_specimen_id"] = grouped["cell_specimen_id"].first()
    image = next((c for c in ("image_name", "change_image_name") if c in conditions), None)
    if image is not None and cell in conditions:
        frame = out.reset_index()
        eligible = frame[frame[image].astype(str) != "omitted"]
        best = eligible.loc[eligible.groupby(cell)["mean_response"].idxmax().dropna()]
        flag = pd.Series(False, index=frame.index)
        flag[best.index] = True
        out["pref_stim"] = flag.to_numpy()
    return out


def preferred_image(responses, value: str = "mean_response", image_column: str | None = None) -> pd.Series:
    """Each cell's image with the largest mean response (``omitted`` excluded), indexed by the cell column."""
    table = _table(responses)
    cell = _cell_column(table)
    image = image_column or ("image_name" if "image_name" in table else "change_image_name")
    eligible = table[table[image].notna() & (table[image].astype(str) != "omitted")]
    means = eligible.groupby([cell, image], observed=True)[value].mean()
    if means.empty:
        return pd.Series(dtype=object, name=image)
    best = means.groupby(level=0).idxmax().dropna()
    return pd.Series([b[1] for b in best], index=best.index, name="preferred_image")


def fraction_significant(responses, alpha: float = 0.05, by: Sequence[str] | None = None) -> pd.Series:
    """Share of events with ``p_value_gray_screen < alpha`` per group (default: per cell)."""
    table = _table(responses)
    by = list(by) if by is not None else [_cell_column(table)]
    p = table["p_value_gray_screen"]
    significant = (p < alpha).astype(float).where(p.notna())
    return significant.groupby([table[c] for c in by], observed=True).mean().rename("fraction_significant_responses")


def lifetime_sparseness(responses, value: str = "mean_response", image_column: str | None = None,
                        clip_negative: bool = True) -> pd.Series:
    """Lifetime sparseness of each cell over its images' trial-averaged responses ``r_1 … r_N``:

    ``LS = [1 − (1/N)·(Σ r)² / Σ r²] / (1 − 1/N)`` (Vinje & Gallant). ``omitted`` is excluded; negative mean
    responses are clipped to 0 first (``clip_negative``); NaN for N < 2 or when every response is 0.
    0 = equal responses to every image, 1 = a response to one image only.
    """
    table = _table(responses)
    cell = _cell_column(table)
    image = image_column or ("image_name" if "image_name" in table else "change_image_name")
    eligible = table[table[image].notna() & (table[image].astype(str) != "omitted")]
    r = eligible.groupby([cell, image], observed=True)[value].mean().unstack(image)
    values = r.to_numpy(np.float64)
    if clip_negative:
        values = np.clip(values, 0.0, None)
    n = np.isfinite(values).sum(axis=1)
    total = np.nansum(values, axis=1)
    squares = np.nansum(values ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ls = (1.0 - (total ** 2) / (n * squares)) / (1.0 - 1.0 / n)
    ls[(n < 2) | (squares == 0)] = np.nan
    return pd.Series(ls, index=r.index, name="lifetime_sparseness")


def condition_traces(responses: StimulusResponses, condition: str | None = "image_name") -> xr.Dataset:
    """Mean and SEM (ddof = 1) event-locked trace of every cell per condition value.

    Returns an ``xarray.Dataset`` with ``mean``, ``sem`` and ``n_events`` over dims (``cell``, ``condition``,
    ``time``); ``condition=None`` averages over all events (one condition ``"all"``).
    """
    data = responses.tensor.to_numpy()
    if condition is None:
        labels = np.array(["all"] * data.shape[1], dtype=object)
    else:
        labels = responses.events[condition].astype(object).to_numpy()
    keys = [k for k in pd.unique(labels) if not (isinstance(k, float) and math.isnan(k))]
    keys = sorted(keys, key=str)
    means, sems, counts = [], [], []
    with _quiet():
        for key in keys:
            idx = np.flatnonzero(labels == key)
            part = data[:, idx, :]
            n = np.isfinite(part).sum(axis=1)
            means.append(np.nanmean(part, axis=1))
            sd = np.nanstd(part, axis=1, ddof=1) if len(idx) > 1 else np.full(means[-1].shape, np.nan)
            sems.append(sd / np.sqrt(n))
            counts.append(len(idx))
    tensor = responses.tensor
    coords = {"cell": tensor["cell"].to_numpy(), "condition": np.asarray(keys, dtype=object),
              "time": tensor["time"].to_numpy()}
    shape = (data.shape[0], 0, data.shape[2])
    mean = np.stack(means, axis=1) if means else np.zeros(shape)
    sem = np.stack(sems, axis=1) if sems else np.zeros(shape)
    out = xr.Dataset({"mean": (("cell", "condition", "time"), mean), "sem": (("cell", "condition", "time"), sem),
                      "n_events": ("condition", np.asarray(counts, dtype=np.int64))}, coords=coords)
    if "cell_specimen_id" in tensor.coords:
        out = out.assign_coords(cell_specimen_id=("cell", tensor["cell_specimen_id"].to_numpy()))
    out.attrs.update(dict(tensor.attrs), condition=condition)
    return out


def population_average(responses, condition: str | None = None) -> xr.Dataset:
    """Population mean and SEM (over cells) of the cells' event-averaged traces, per condition value.

    ``responses`` is a :class:`StimulusResponses` (or a tensor, averaged over all its events). Returns an
    ``xarray.Dataset`` with ``mean``, ``sem`` (ddof = 1 over cells) and ``n_cells`` over (``condition``, ``time``).
    """
    if isinstance(responses, xr.DataArray):
        responses = StimulusResponses(responses, pd.DataFrame(), pd.DataFrame(index=responses["event"].to_numpy()))
        condition = None
    per_cell = condition_traces(responses, condition)["mean"]
    values = per_cell.to_numpy()
    with _quiet():
        n = np.isfinite(values).sum(axis=0)
        mean = np.nanmean(values, axis=0)
        sem = np.nanstd(values, axis=0, ddof=1) / np.sqrt(n) if values.shape[0] > 1 else np.full(mean.shape, np.nan)
    return xr.Dataset({"mean": (("condition", "time"), mean), "sem": (("condition", "time"), sem),
                       "n_cells": (("condition", "time"), n)},
                      coords={"condition": per_cell["condition"].to_numpy(), "time": per_cell["time"].to_numpy()},
                      attrs=dict(per_cell.attrs))


def population_trace(experiment, data_type: str = "dff") -> pd.DataFrame:
    """Mean over cells of a neural stream at every ophys frame: ``timestamps``, ``<data_type>``."""
    matrix, t, _ = trace_data(experiment, data_type)
    with _quiet():
        mean = np.nanmean(matrix, axis=0) if len(matrix) else np.full(len(t), np.nan)
    return pd.DataFrame({"timestamps": t, data_type: mean})


# --- trial types -------------------------------------------------------------------------------------


def trial_type_responses(experiment, data_type: str = "dff", trial_types: Sequence[str] = TRIAL_TYPES,
                         **kwargs) -> StimulusResponses:
    """Responses aligned to the (sham) change time of trials of each type (default hit, miss, false alarm,
    correct reject — the "compare across trial types" tutorial). The table and ``events`` get a
    ``trial_type`` column (the first matching type). Other keyword arguments: :func:`stimulus_responses`."""
    trials = experiment.trials
    labels = pd.Series(pd.NA, index=trials.index, dtype=object)
    for kind in reversed(list(trial_types)):
        if kind not in trials:
            raise ValueError(f"trials have no column {kind!r}")
        labels[_boolean(trials[kind])] = kind
    chosen = trials[labels.notna().to_numpy()].copy()
    chosen["trial_type"] = labels[labels.notna()].astype(str)
    chosen["event_time"] = chosen["change_time"].to_numpy(np.float64)
    chosen = chosen[np.isfinite(chosen["event_time"].to_numpy())]
    result = stimulus_responses(experiment, event_type="trial_type", data_type=data_type, events=chosen, **kwargs)
    return result


def compare_trial_types(responses: StimulusResponses, value: str = "mean_response") -> pd.DataFrame:
    """Per cell and trial type: mean, SEM (ddof = 1) and count of ``value``; plus the population mean
    (``cell`` = ``"population"`` rows: mean and SEM over the cells' means)."""
    table = responses.table
    cell = _cell_column(table)
    grouped = table.groupby([cell, "trial_type"], observed=True)[value]
    per_cell = pd.DataFrame({"mean": grouped.mean(), "sem": grouped.std(ddof=1) / np.sqrt(grouped.count()),
                             "n": grouped.count()}).reset_index()
    by_type = per_cell.groupby("trial_type")["mean"]
    population = pd.DataFrame({cell: "population", "trial_type": list(by_type.groups),
                               "mean": by_type.mean().to_numpy(),
                               "sem": (by_type.std(ddof=1) / np.sqrt(by_type.count())).to_numpy(),
                               "n": by_type.count().to_numpy()})
    per_cell[cell] = per_cell[cell].astype(object)
    return pd.concat([per_cell, population], ignore_index=True)


# --- containers and novelty ---------------------------------------------------------------------------


def experiment_summary(responses: StimulusResponses) -> pd.DataFrame:
    """One row per cell: mean ``mean_response`` and baseline over the events, the largest image mean
    (``max_image_response``, when images are known), ``fraction_significant_responses``."""
    table = responses.table
    cell = _cell_column(table)
    grouped = table.groupby(cell, observed=True)
    out = pd.DataFrame({"mean_response": grouped["mean_response"].mean(),
                        "baseline_response": grouped["baseline_response"].mean(),
                        "n_events": grouped["mean_response"].count()})
    if "p_value_gray_screen" in table:
        out["fraction_significant_responses"] = fraction_significant(table)
    image = next((c for c in ("image_name", "change_image_name") if c in table), None)
    if image is not None:
        eligible = table[table[image].notna() & (table[image].astype(str) != "omitted")]
        if len(eligible):
            out["max_image_response"] = eligible.groupby([cell, image], observed=True)["mean_response"].mean() \
                .groupby(level=0).max()
    if "cell_specimen_id" in table:
        out["cell_specimen_id"] = grouped["cell_specimen_id"].first()
    return out.reset_index()


def match_cells(summaries: pd.DataFrame, value: str = "mean_response", by: str = "experience_level",
                aggfunc: str = "mean") -> pd.DataFrame:
    """Cells matched across sessions by ``cell_specimen_id``: one row per cell, one column per ``by`` value
    (mean over the sessions of that value). Unmatched ROIs (null ``cell_specimen_id``) are left out."""
    matched = summaries[summaries["cell_specimen_id"].notna()].copy()
    if matched.empty:
        return pd.DataFrame()
    matched["cell_specimen_id"] = matched["cell_specimen_id"].astype(np.int64)
    return matched.pivot_table(index="cell_specimen_id", columns=by, values=value, aggfunc=aggfunc)


def novelty_comparison(summaries: pd.DataFrame, value: str = "mean_response", familiar: str = "Familiar",
                       novel: str = "Novel 1", active_only: bool = False) -> pd.DataFrame:
    """Familiar vs novel responses of the cells matched across a container's sessions.

    One row per ``cell_specimen_id`` seen in both: ``familiar`` (mean over the familiar sessions), ``novel``,
    ``difference`` (novel − familiar), ``ratio`` (novel / familiar), ``modulation`` ((n − f) / (|n| + |f|)).
    ``active_only`` keeps active sessions only.
    """
    if active_only and "passive" in summaries:
        summaries = summaries[~summaries["passive"].astype(bool)]
    wide = match_cells(summaries, value)
    if wide.empty or familiar not in wide or novel not in wide:
        return pd.DataFrame(columns=["familiar", "novel", "difference", "ratio", "modulation"])
    both = wide[[familiar, novel]].dropna()
    f, n = both[familiar], both[novel]
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame({"familiar": f, "novel": n, "difference": n - f, "ratio": n / f,
                             "modulation": (n - f) / (n.abs() + f.abs())})
