"""Stimulus-locked responses of one experiment: response tables, significance and summaries.

Built on :mod:`vbo.events` (the gather on arrays), this module knows an experiment's streams and tables:

* :func:`stimulus_responses` — the responses of one experiment to changes, omissions, image flashes or any
  boolean column of ``stimulus_presentations`` / ``trials``, for dF/F, events, filtered events, running
  speed, pupil size or lick rate; restricted by default to the change-detection block. Returns a
  :class:`StimulusResponses` (the tensor plus a tidy table with ``mean_response``, ``baseline_response``,
  ``p_value_gray_screen`` and the stimulus/trial metadata);
* summaries: :func:`condition_summary`, :func:`condition_traces`, :func:`preferred_image`,
  :func:`fraction_significant`, :func:`lifetime_sparseness`, :func:`population_average`,
  :func:`experiment_summary`;
* trial types: :func:`trial_type_responses`, :func:`compare_trial_types`;
* matched cells: :func:`match_cells`, :func:`novelty_comparison` on the per-cell summaries of several
  experiments (the rows of :func:`vbo.population.container_responses`, which reads the files).

Windows, baselines and the gray-screen p-value follow ``docs/analysis.md`` §7, the summaries §8. The
array-level functions of :mod:`vbo.events` (:func:`event_locked`, :func:`relative_timebase`, :func:`to_tidy`,
:func:`window_means`, :func:`shuffled_p_values`, …) stay importable from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from vbo import behavior
# the array-level names of vbo.events keep their vbo.responses import paths (tests, tutorials, user code)
from vbo.events import (TIME_TOLERANCE, TRACE_COLUMNS, WINDOW_TOLERANCE_S, anova_p_values, empirical_rate,
                        event_locked, nearest_sample, nullable_ids, quiet_nan_warnings, relative_timebase,
                        response_window_samples, shift_offsets, shuffled_p_values, to_tidy, to_wide,
                        window_means)

NEURAL_DATA_TYPES = ("dff", "events", "filtered_events")
PUPIL_DATA_TYPES = ("pupil_area", "pupil_width", "pupil_diameter", "pupil_radius")
BEHAVIOR_DATA_TYPES = ("running_speed",) + PUPIL_DATA_TYPES + ("lick_rate",)
DATA_TYPES = NEURAL_DATA_TYPES + BEHAVIOR_DATA_TYPES
TRIAL_TYPES = behavior.TRIAL_OUTCOMES  # the one outcome vocabulary (vbo.behavior)
SPONTANEOUS_BEFORE_S = 240.0  # the last 4 min of the pre-task gray screen
LICK_RATE_BIN_FRAMES = behavior.LICK_RATE_BIN_FRAMES  # kept here for old imports; defined in vbo.behavior


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
    definition, ``docs/analysis.md`` §5) applied to ``experiment.licks`` and ``experiment.stimulus_timestamps``.

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
                             "cell_specimen_id": nullable_ids(frame.index)})
        return matrix, np.asarray(experiment.ophys_timestamps, dtype=np.float64), rows
    if data_type == "running_speed":
        running = experiment.running_speed
        t, v = running["timestamps"].to_numpy(np.float64), running["speed"].to_numpy(np.float64)
    elif data_type.startswith("pupil_"):
        eye = experiment.eye_tracking
        if data_type not in eye and data_type not in behavior.DERIVED_PUPIL_SIZES:
            raise ValueError(f"unknown data_type {data_type!r}")
        t, v = behavior.pupil_series(eye, data_type)  # eye-tracking clock, blinks NaN (docs/analysis.md §11)
    elif data_type == "lick_rate":
        rate = lick_rate(experiment)
        t, v = rate["timestamps"].to_numpy(np.float64), rate["lick_rate"].to_numpy(np.float64)
    else:
        raise ValueError(f"unknown data_type {data_type!r}; choose one of {DATA_TYPES}")
    return v[None, :], t, pd.DataFrame({"trace_id": [0]})



# --- gray-screen significance --------------------------------------------------------------------


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
    tensor = _trace_tensor(matrix, t, traces, event_times, window, output_sampling_rate, interpolate)
    tensor.name = data_type
    tensor.attrs.update({"data_type": data_type, "event_type": event_type})
    means = window_means(tensor, response_window_duration, closed_windows)
    if p_value and len(events):
        spont = spontaneous_mask(t, presentations, spontaneous, stimulus_block or "change_detection")
        p = shuffled_p_values(matrix, t, event_times.to_numpy(), spont, response_window_duration, n_shuffles, seed)
    else:
        p = np.full(means[0].shape, np.nan)
    p_anova = anova_p_values(tensor, response_window_duration, closed_windows) if anova else None
    table = _response_table(traces, events, *means, p, p_anova)
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


def _trace_tensor(matrix: np.ndarray, t: np.ndarray, traces: pd.DataFrame, event_times: pd.Series, window,
                  rate: float | None, interpolate: bool) -> xr.DataArray:
    """:func:`event_locked` of a :func:`trace_data` stream, its ``cell`` coordinate the ROI ids (with
    ``cell_specimen_id``) of a neural stream or the ``trace_id`` of a behavioral one."""
    tensor = event_locked(matrix, t, event_times, window, rate=rate, interpolate=interpolate)
    if "cell_roi_id" in traces:
        tensor = tensor.assign_coords(cell=traces["cell_roi_id"].to_numpy(),
                                      cell_specimen_id=("cell", traces["cell_specimen_id"].to_numpy()))
        tensor.attrs["cell_id"] = "cell_roi_id"
    else:
        tensor = tensor.assign_coords(cell=traces["trace_id"].to_numpy())
        tensor.attrs["cell_id"] = "trace_id"
    return tensor


def _response_table(traces: pd.DataFrame, events: pd.DataFrame, mean_response: np.ndarray,
                    baseline_response: np.ndarray, p: np.ndarray, p_anova: np.ndarray | None) -> pd.DataFrame:
    """One row per (trace, event), traces outer: the trace ids (``cell_specimen_id`` nullable Int64), the event
    id, the response statistics (traces × events arrays) and the event's metadata columns."""
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
    if p_anova is not None:
        columns["p_value_anova"] = p_anova.ravel()
    table = pd.DataFrame(columns)
    meta = events[[c for c in _metadata_columns(events) if c not in table.columns]]
    meta = meta.iloc[np.tile(np.arange(n_events), n_cells)].reset_index(drop=True)
    return pd.concat([table, meta], axis=1)


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
    with quiet_nan_warnings():
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
    with quiet_nan_warnings():
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
    with quiet_nan_warnings():
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
