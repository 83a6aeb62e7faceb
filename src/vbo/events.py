"""Event-locked traces on arrays: time bases, the gather, window means and shuffled p-values.

Everything here works on plain arrays (a cells × samples trace matrix and its timestamps) and returns numpy
arrays, pandas frames or :class:`xarray.DataArray`; no session or file is involved. :mod:`vbo.responses`
builds one experiment's response tables on it. The conventions are those of ``docs/analysis.md`` §6 (time
bases and the gather) and §7 (response windows and significance):

* the sampling rate of a stream is its empirical rate ``1 / mean(diff(timestamps))`` (:func:`empirical_rate`),
  from that stream's own timestamps;
* the relative time base of a window ``[t0, t1]`` at rate ``r`` is ``t0 + i / r`` for
  ``i = 0 … floor((t1 − t0)·r)`` (endpoint included; :func:`relative_timebase`);
* samples whose time lies outside the recording are NaN — never the edge value, never wrapped around;
* response window ``[0, rwd)`` and baseline window ``[−rwd, 0)`` (half-open; ``closed_windows=True`` gives the
  legacy closed windows that count the ``t = 0`` sample in both);
* p-values against shuffled spontaneous windows of ``round(rwd · rate)`` native samples, drawn with a seedable
  generator; response and null on the same native basis.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import pandas as pd
import xarray as xr

TIME_TOLERANCE = 1e-9
TRACE_COLUMNS = ("dff", "events", "filtered_events", "corrected_fluorescence", "demixed_trace", "neuropil_trace")
WINDOW_TOLERANCE_S = 1e-6  # relative times within this of a window edge count as on it (empirical rates drift)

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
            coords["cell_specimen_id"] = nullable_ids(index)
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


def nullable_ids(values) -> np.ndarray:
    """Cell specimen ids (any iterable of ints, None or NaN) as an int64 array with −1 for unmatched ROIs."""
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
    """An :func:`event_locked` tensor as the reference helpers' tidy table (``docs/analysis.md`` §6).

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
    """One cell of an :func:`event_locked` tensor as a wide table (``docs/analysis.md`` §6): index ``time`` (s from
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


# --- response and baseline windows ---------------------------------------------------------------


@contextmanager
def quiet_nan_warnings() -> Iterator[None]:
    """Silence numpy's RuntimeWarnings (means of empty or all-NaN slices give NaN, as intended)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


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
    with np.errstate(invalid="ignore"), quiet_nan_warnings():
        return (np.nanmean(data[:, :, np.flatnonzero(response)], axis=2),
                np.nanmean(data[:, :, np.flatnonzero(baseline)], axis=2))


def anova_p_values(tensor: xr.DataArray, response_window_duration: float = 0.5,
                   closed_windows: bool = False) -> np.ndarray:
    """Legacy workshop significance (``trial_response_df``): one-way ANOVA between the samples of the
    response window ``[0, rwd)`` and the equal-length window before the event ``[−rwd, 0)``, per cell and
    event (cells × events; NaN where a window holds NaN or has no variance)."""
    from scipy import stats  # heavy: imported on use, keeps ``import vbo.events`` fast

    times = tensor["time"].to_numpy()
    rwd = float(response_window_duration)
    response = np.flatnonzero(_window_slice(times, 0.0, rwd, closed_windows))
    baseline = np.flatnonzero(_window_slice(times, -rwd, 0.0, closed_windows))
    if len(response) < 2 or len(baseline) < 2:
        raise ValueError(f"an ANOVA needs at least 2 samples per window; rwd {rwd} s at "
                         f"{tensor.attrs.get('rate')} Hz gives {len(response)} and {len(baseline)}")
    data = tensor.to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"), quiet_nan_warnings():
        result = stats.f_oneway(data[:, :, response], data[:, :, baseline], axis=2)
    return np.asarray(result.pvalue, dtype=np.float64)


# --- significance ------------------------------------------------------------------------------------


def _native_window_means(matrix: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
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
    null = _native_window_means(matrix, draws, length)
    events = np.asarray(event_times, dtype=np.float64)
    i = nearest_sample(t, events)
    outside = ~((events >= t[0] - 1.0 / rate) & (events <= t[-1] + 1.0 / rate))
    i[outside] = -1
    response = _native_window_means(matrix, i, length)
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
