"""Figures of neural activity: each function takes an experiment or arrays and returns a matplotlib Figure."""

from __future__ import annotations

import warnings

import numpy as np

from vbo.behavior import pupil_series
from vbo.plots.style import pyplot
from vbo.responses import (StimulusResponses, block_rows, population_average, population_trace,
                           stimulus_responses, trace_data, trial_type_responses)
from vbo.tables import is_passive, normalize_id


def experiment_overview(experiment, n_cells: int = 6, window_s: float = 60.0):
    """Max projection and, for a time window of the task, the dF/F of a few cells over stimulus spans,
    licks, rewards and running speed.

    Parameters
    ----------
    experiment
        A :class:`vbo.BehaviorOphysExperiment`.
    n_cells
        Number of cells whose dF/F is drawn.
    window_s
        Length of the window (s), starting at the first change-detection flash.
    """
    plt = pyplot()
    presentations = experiment.stimulus_presentations
    images = presentations[presentations["image_name"].notna()]
    t0 = float(images["start_time"].iloc[0]) if len(images) else float(experiment.ophys_timestamps[0])
    t1 = t0 + window_s
    fig = plt.figure(figsize=(11, 5))
    grid = fig.add_gridspec(3, 3)
    projection = fig.add_subplot(grid[:, 0])
    projection.imshow(experiment.max_projection, cmap="gray")
    projection.set_title(f"experiment {experiment.ophys_experiment_id}")
    projection.axis("off")
    traces = fig.add_subplot(grid[:2, 1:])
    behavior_ax = fig.add_subplot(grid[2, 1:], sharex=traces)
    in_window = images[(images["start_time"] < t1) & (images["end_time"] > t0)]
    names = sorted(n for n in in_window["image_name"].unique() if n != "omitted")
    palette = plt.get_cmap("tab10")
    for _, flash in in_window.iterrows():
        color = "r" if flash["image_name"] == "omitted" else palette(names.index(flash["image_name"]) % 10)
        for ax in (traces, behavior_ax):
            ax.axvspan(flash["start_time"], flash["end_time"], color=color, alpha=0.15 if color != "r" else 0.4, lw=0)
    timestamps = experiment.ophys_timestamps
    frames = (timestamps >= t0) & (timestamps <= t1)
    dff = experiment.dff_traces["dff"]
    for i, trace in enumerate(dff.iloc[:n_cells]):
        traces.plot(timestamps[frames], np.asarray(trace)[frames] + 2.0 * i, lw=0.8, color="k")
    traces.set_ylabel("dF/F (offset per cell)")
    running = experiment.running_speed
    shown = running[(running["timestamps"] >= t0) & (running["timestamps"] <= t1)]
    behavior_ax.plot(shown["timestamps"], shown["speed"], color="0.3", lw=0.8)
    licks = experiment.licks
    licks = licks[(licks["timestamps"] >= t0) & (licks["timestamps"] <= t1)]
    top = float(shown["speed"].max()) if len(shown) else 1.0
    behavior_ax.plot(licks["timestamps"], np.full(len(licks), top * 1.05), "|", color="m", label="licks")
    rewards = experiment.rewards
    rewards = rewards[(rewards["timestamps"] >= t0) & (rewards["timestamps"] <= t1)]
    behavior_ax.plot(rewards["timestamps"], np.full(len(rewards), top * 1.12), "v", color="b", label="rewards")
    behavior_ax.set_ylabel("running (cm/s)")
    behavior_ax.set_xlabel("time (s)")
    behavior_ax.set_xlim(t0, t1)
    fig.tight_layout()
    return fig


# --- issue 6: projections, heatmaps, traces, stimulus-locked responses -------------------------------

CRE_COLORS = {"Slc17a7": "#8073ac", "Sst": "#b35806", "Vip": "#fdb863"}
TRIAL_TYPE_COLORS = {"hit": "darkgreen", "miss": "0.5", "false_alarm": "darkred", "correct_reject": "#1f77b4"}


def _cre_family(cre_line: str) -> str:
    """``Slc17a7``, ``Sst`` or ``Vip`` for a cre line such as ``Sst-IRES-Cre``."""
    return next((family for family in ("Sst", "Vip", "Slc17a7") if cre_line.startswith(family)), cre_line or "unknown")


def _cell_position(experiment, cell) -> int:
    """Row of a cell in ``dff_traces``: a position (< number of cells), a ``cell_roi_id`` or a ``cell_specimen_id``."""
    dff = experiment.dff_traces
    n = len(dff)
    if isinstance(cell, (int, np.integer)) and 0 <= int(cell) < n:
        return int(cell)
    roi = np.flatnonzero(dff["cell_roi_id"].to_numpy() == cell)
    if len(roi):
        return int(roi[0])
    matches = [i for i, c in enumerate(dff.index) if c is not None and c == cell]
    if matches:
        return matches[0]
    raise KeyError(f"cell {cell!r} is neither a position, a cell_roi_id nor a cell_specimen_id of this experiment")


def _image_colors(names) -> dict:
    plt = pyplot()
    palette = plt.get_cmap("tab10")
    images = sorted(str(n) for n in set(names) if isinstance(n, str) and n != "omitted")
    colors = {name: palette(i % 10) for i, name in enumerate(images)}
    colors["omitted"] = "white"
    return colors


def _stimulus_spans(axes, presentations, t0: float, t1: float, alpha: float = 0.25) -> None:
    """One ``axvspan`` per change-detection stimulus in [t0, t1], coloured by image (palette over sorted image
    names; omitted white)."""
    try:
        rows = block_rows(presentations, "change_detection")
    except ValueError:
        return
    rows = rows[(rows["end_time"] > t0) & (rows["start_time"] < t1) & rows["image_name"].notna()]
    colors = _image_colors(rows["image_name"])
    for start, end, name in zip(rows["start_time"], rows["end_time"], rows["image_name"]):
        for ax in axes:
            ax.axvspan(start, end, color=colors.get(name, "0.8"), alpha=alpha, lw=0)


def roi_projection(experiment, projection: str = "max", ax=None, outline_color: str = "#ff7f0e"):
    """Max (or ``"average"``) projection with the outline of every ROI.

    Parameters
    ----------
    experiment
        A :class:`vbo.BehaviorOphysExperiment`.
    projection
        ``"max"`` or ``"average"``.
    """
    plt = pyplot()
    fig, ax = (plt.subplots(figsize=(6, 6)) if ax is None else (ax.figure, ax))
    image = experiment.max_projection if projection == "max" else experiment.average_projection
    ax.imshow(np.asarray(image), cmap="gray")
    masks = experiment.roi_masks["roi_mask"].to_list()
    for mask in masks:
        mask = np.asarray(mask, dtype=float)
        if mask.any():
            ax.contour(mask, levels=[0.5], colors=[outline_color], linewidths=0.8)
    ax.set_title(f"experiment {experiment.ophys_experiment_id}: {projection} projection, {len(masks)} ROIs")
    ax.axis("off")
    return fig


def stimulus_template(templates, name, versions=("unwarped", "warped")):
    """One stimulus as the template stores it (``docs/analysis.md`` §12.7): ``imshow`` in gray, one panel per version.

    Parameters
    ----------
    templates : pd.DataFrame
        ``session.stimulus_templates`` (index ``image_name``) or ``cache.get_natural_movie_template()``
        (index ``movie_frame_index``).
    name
        The row: an image name (e.g. ``"gratings_90.0"``, ``"im065"``) or a movie frame number.
    versions
        Columns to draw: ``"unwarped"`` (NaN where the mouse cannot see, drawn blank) and/or ``"warped"``
        (as on the monitor).
    """
    plt = pyplot()
    if name not in templates.index:
        raise KeyError(f"{name!r} is not in the templates' {templates.index.name} index")
    fig, axes = plt.subplots(1, len(versions), figsize=(5.2 * len(versions), 3.6), squeeze=False,
                             layout="constrained")
    for ax, version in zip(axes[0], versions):
        ax.imshow(np.asarray(templates.loc[name, version], dtype=float), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{name} ({version})")
        ax.axis("off")
    return fig


def container_projections(cache, ophys_container_id, projection: str = "max", *, passive: bool = True):
    """The field of view of every experiment of a container, side by side in acquisition order (``docs/analysis.md`` §12.8).

    Parameters
    ----------
    cache
        A :class:`vbo.VisualBehaviorOphysProjectCache`.
    ophys_container_id
        int or str.
    projection
        ``"max"`` or ``"average"``.
    passive
        Include the passive-viewing sessions; False shows the active ones only (their files are not opened).
    """
    plt = pyplot()
    container = normalize_id(ophys_container_id)
    table = cache.get_ophys_experiment_table()
    rows = table[table["ophys_container_id"] == container].sort_values("date_of_acquisition")
    if not passive:
        rows = rows[~is_passive(rows)]
    if rows.empty:
        raise ValueError(f"no {'' if passive else 'active '}experiments in container {container}")
    fig, axes = plt.subplots(1, len(rows), figsize=(2.2 * len(rows), 2.8), squeeze=False, layout="constrained")
    for ax, (experiment_id, row) in zip(axes[0], rows.iterrows()):
        with cache.get_behavior_ophys_experiment(int(experiment_id)) as experiment:
            image = experiment.max_projection if projection == "max" else experiment.average_projection
            ax.imshow(np.asarray(image), cmap="gray")
        ax.set_title(f"{experiment_id}\n{row['session_type']}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"container {container}: {projection} projections{'' if passive else ' (active sessions)'}")
    return fig


def plane_population_traces(cache, ophys_session_id, t_range=(300.0, 600.0), data_type: str = "dff", ax=None):
    """Mean dF/F over cells of every imaging plane of one session, one line per plane (``docs/analysis.md`` §12.9).

    Lines are labelled ``<targeted_structure>_<imaging_depth>``; x "time (seconds)" limited to ``t_range``
    (s), y "dF/F"; the title is the cre line and the session id.
    """
    plt = pyplot()
    session = normalize_id(ophys_session_id)
    table = cache.get_ophys_experiment_table()
    rows = table[table["ophys_session_id"] == session].sort_values(["targeted_structure", "imaging_depth"])
    if rows.empty:
        raise ValueError(f"no experiments in ophys session {session}")
    fig, ax = (plt.subplots(figsize=(11, 4)) if ax is None else (ax.figure, ax))
    for experiment_id, row in rows.iterrows():
        with cache.get_behavior_ophys_experiment(int(experiment_id)) as experiment:
            mean = population_trace(experiment, data_type)
        if t_range is not None:
            mean = mean[(mean["timestamps"] >= t_range[0]) & (mean["timestamps"] <= t_range[1])]
        ax.plot(mean["timestamps"], mean[data_type], lw=0.8,
                label=f"{row['targeted_structure']}_{row['imaging_depth']}")
    if t_range is not None:
        ax.set_xlim(*t_range)
    ax.set_xlabel("time (seconds)")
    ax.set_ylabel("dF/F" if data_type == "dff" else data_type)
    ax.set_title(f"{rows['cre_line'].iloc[0]}, ophys session {session}")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def dff_heatmap(experiment, t_range=None, data_type: str = "dff", max_columns: int = 4000, ax=None):
    """Cells × time heatmap of dF/F (``pcolormesh``, magma, vmax = 99th percentile, colorbar "dF/F").

    Long recordings are averaged into at most ``max_columns`` time bins for drawing.
    """
    plt = pyplot()
    matrix, t, _ = trace_data(experiment, data_type)
    if t_range is not None:
        keep = (t >= t_range[0]) & (t <= t_range[1])
        matrix, t = matrix[:, keep], t[keep]
    step = max(1, int(np.ceil(matrix.shape[1] / max_columns)))
    if step > 1:
        n = (matrix.shape[1] // step) * step
        matrix = matrix[:, :n].reshape(matrix.shape[0], -1, step).mean(axis=2)
        t = t[:n].reshape(-1, step).mean(axis=1)
    fig, ax = (plt.subplots(figsize=(11, 4)) if ax is None else (ax.figure, ax))
    finite = matrix[np.isfinite(matrix)]
    vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    mesh = ax.pcolormesh(t, np.arange(matrix.shape[0]), matrix, cmap="magma", vmin=0.0, vmax=vmax, shading="nearest")
    fig.colorbar(mesh, ax=ax, label="dF/F" if data_type == "dff" else data_type)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("cells")
    ax.set_title(f"experiment {experiment.ophys_experiment_id}")
    return fig


def cell_trace(experiment, cell=0, t_range=None, ax=None):
    """One cell's dF/F and detected events ("time (seconds)" × "trace magnitude", legend ``dff``, ``events``).

    ``cell``: position, ``cell_roi_id`` or ``cell_specimen_id``.
    """
    plt = pyplot()
    position = _cell_position(experiment, cell)
    dff = experiment.dff_traces
    roi = int(dff["cell_roi_id"].iloc[position])
    t = experiment.ophys_timestamps
    keep = np.ones(len(t), dtype=bool) if t_range is None else (t >= t_range[0]) & (t <= t_range[1])
    fig, ax = (plt.subplots(figsize=(11, 3)) if ax is None else (ax.figure, ax))
    ax.plot(t[keep], np.asarray(dff["dff"].iloc[position])[keep], lw=0.8, label="dff")
    events = experiment.events
    rows = np.flatnonzero(events["cell_roi_id"].to_numpy() == roi)
    if len(rows):
        ax.plot(t[keep], np.asarray(events["events"].iloc[rows[0]])[keep], lw=0.8, label="events")
    ax.set_xlabel("time (seconds)")
    ax.set_ylabel("trace magnitude")
    ax.set_title(f"cell_specimen_id {dff.index[position]} (cell_roi_id {roi})")
    ax.legend(loc="upper right")
    return fig


def _normalised(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    top = np.nanmax(np.abs(values)) if values.size and np.isfinite(values).any() else 0.0
    return values / top if top > 0 else values


def behavior_neural_window(experiment, t_start: float | None = None, t_end: float | None = None, cell=0):
    """One cell plus behavior over a time window, with stimulus spans coloured by image (omitted white).

    Panel 1: the cell's dF/F and events, each divided by its maximum in the window. Panel 2: running speed
    and pupil width (max-normalised), licks as dots at 0, rewards as diamonds. Default window: 40 s from the
    first change-detection flash.
    """
    plt = pyplot()
    presentations = experiment.stimulus_presentations
    if t_start is None:
        t_start = float(block_rows(presentations, "change_detection")["start_time"].iloc[0])
    if t_end is None:
        t_end = t_start + 40.0
    position = _cell_position(experiment, cell)
    dff = experiment.dff_traces
    roi = int(dff["cell_roi_id"].iloc[position])
    t = experiment.ophys_timestamps
    keep = (t >= t_start) & (t <= t_end)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5), sharex=True)
    _stimulus_spans((top, bottom), presentations, t_start, t_end)
    top.plot(t[keep], _normalised(np.asarray(dff["dff"].iloc[position])[keep]), color="k", lw=1, label="dff")
    events = experiment.events
    rows = np.flatnonzero(events["cell_roi_id"].to_numpy() == roi)
    if len(rows):
        top.plot(t[keep], _normalised(np.asarray(events["events"].iloc[rows[0]])[keep]), color="tab:blue", lw=1,
                 label="events")
    top.set_ylabel("normalised")
    top.set_title(f"cell_specimen_id {dff.index[position]} (cell_roi_id {roi})")
    top.legend(loc="upper right")
    running = experiment.running_speed
    shown = running[(running["timestamps"] >= t_start) & (running["timestamps"] <= t_end)]
    bottom.plot(shown["timestamps"], _normalised(shown["speed"]), color="0.3", lw=1, label="running speed")
    eye = experiment.eye_tracking
    if len(eye) and "pupil_width" in eye:
        et, width = pupil_series(eye, "pupil_width")  # the one pupil definition (blinks NaN, eye-tracking times)
        inside = (et >= t_start) & (et <= t_end)
        bottom.plot(et[inside], _normalised(width[inside]), color="tab:purple", lw=1, label="pupil width")
    licks = experiment.licks
    licks = licks[(licks["timestamps"] >= t_start) & (licks["timestamps"] <= t_end)]
    bottom.plot(licks["timestamps"], np.zeros(len(licks)), "o", color="m", ms=3, label="licks")
    rewards = experiment.rewards
    rewards = rewards[(rewards["timestamps"] >= t_start) & (rewards["timestamps"] <= t_end)]
    bottom.plot(rewards["timestamps"], np.zeros(len(rewards)), "D", color="tab:cyan", ms=7, label="rewards")
    bottom.set_ylabel("normalised")
    bottom.set_xlabel("time in session (s)")
    bottom.set_xlim(t_start, t_end)
    bottom.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return fig


def _band(ax, time, mean, sem, color, label):
    ax.plot(time, mean, color=color, label=label)
    if sem is not None and np.isfinite(sem).any():
        ax.fill_between(time, mean - sem, mean + sem, color=color, alpha=0.25, lw=0)


def change_responses_by_trial_type(responses, title: str | None = None, ax=None):
    """Change-aligned population response (mean ± SEM over cells of each cell's trial average) per trial type.

    ``responses``: the result of :func:`vbo.responses.trial_type_responses`, or an experiment (computed here
    for dF/F with a (−1, 2) s window).
    """
    plt = pyplot()
    if not isinstance(responses, StimulusResponses):
        responses = trial_type_responses(responses, window=(-1.0, 2.0), p_value=False)
    population = population_average(responses, "trial_type")
    fig, ax = (plt.subplots(figsize=(6, 4)) if ax is None else (ax.figure, ax))
    time = population["time"].to_numpy()
    for kind in population["condition"].to_numpy():
        part = population.sel(condition=kind)
        n = int((responses.events["trial_type"] == kind).sum())
        _band(ax, time, part["mean"].to_numpy(), part["sem"].to_numpy(), TRIAL_TYPE_COLORS.get(kind, None),
              f"{kind} (n={n})")
    ax.axvline(0.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("time from change (s)")
    ax.set_ylabel(responses.params.get("data_type", "dff") if responses.params.get("data_type") != "dff" else "dF/F")
    ax.set_title(title or f"experiment {responses.tensor.attrs.get('ophys_experiment_id', '')}: by trial type")
    ax.legend(fontsize="small")
    return fig


def image_response_heatmap(responses, value: str = "mean_response", ax=None):
    """Image × cell heatmap of the mean response (cells sorted by preferred image, then response size).

    ``responses``: :class:`vbo.responses.StimulusResponses` (or its table) of image flashes.
    """
    plt = pyplot()
    table = responses.table if isinstance(responses, StimulusResponses) else responses
    cell = "cell_roi_id" if "cell_roi_id" in table else "trace_id"
    image = "image_name" if "image_name" in table else "change_image_name"
    eligible = table[table[image].notna() & (table[image].astype(str) != "omitted")]
    matrix = eligible.groupby([image, cell], observed=True)[value].mean().unstack(cell)
    order = sorted(matrix.columns, key=lambda c: (int(np.nanargmax(matrix[c].to_numpy())) if matrix[c].notna().any()
                                                   else len(matrix), -np.nanmax(matrix[c].to_numpy())))
    matrix = matrix[order]
    fig, ax = (plt.subplots(figsize=(max(6, 0.05 * matrix.shape[1] + 4), 4)) if ax is None else (ax.figure, ax))
    values = matrix.to_numpy()
    finite = values[np.isfinite(values)]
    vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    mesh = ax.imshow(values, aspect="auto", cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(mesh, ax=ax, label=value.replace("_", " "))
    ax.set_yticks(np.arange(len(matrix.index)), [str(i) for i in matrix.index])
    ax.set_ylabel("image name")
    ax.set_xlabel("cells (sorted by preferred image)")
    return fig


def responses_by_cell_type(experiments, event_types=("changes", "omissions"), data_type: str = "dff",
                           window=(-1.0, 2.0), title: str | None = None):
    """Population responses to changes and omissions by cell type (cre line colours).

    For each experiment and event type, every cell's trace is averaged over the events; the panels show the
    mean ± SEM over all cells of each cre line (Slc17a7, Sst, Vip).

    Parameters
    ----------
    experiments
        Iterable of :class:`vbo.BehaviorOphysExperiment` (read one at a time; may be a generator that opens
        and closes them).
    """


    plt = pyplot()
    per_cell: dict[tuple[str, str], list[np.ndarray]] = {}
    time_axis: dict[str, np.ndarray] = {}
    for experiment in experiments:
        family = _cre_family(str(experiment.metadata.get("cre_line") or ""))
        for event_type in event_types:
            try:
                result = stimulus_responses(experiment, event_type, data_type, window=window, p_value=False)
            except ValueError:
                continue
            if result.tensor.sizes["event"] == 0:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                means = np.nanmean(result.tensor.to_numpy(), axis=1)
            tau = result.tensor["time"].to_numpy()
            reference = time_axis.setdefault(event_type, np.round(tau, 6))
            if len(tau) != len(reference):  # planes of other frame rates: onto the first plane's time base
                means = np.array([np.interp(reference, tau, m) for m in means])
            per_cell.setdefault((family, event_type), []).append(means)
    fig, axes = plt.subplots(1, len(event_types), figsize=(5 * len(event_types), 4), squeeze=False)
    for ax, event_type in zip(axes[0], event_types):
        for family, color in CRE_COLORS.items():
            blocks = per_cell.get((family, event_type))
            if not blocks:
                continue
            cells = np.vstack(blocks)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(cells, axis=0)
                sem = np.nanstd(cells, axis=0, ddof=1) / np.sqrt(np.isfinite(cells).sum(axis=0))
            _band(ax, time_axis[event_type], mean, sem, color, f"{family} ({len(cells)} cells)")
        ax.axvline(0.0, color="k", lw=0.8, ls="--")
        ax.set_title(event_type)
        ax.set_xlabel("time from event (s)")
        ax.set_ylabel("dF/F" if data_type == "dff" else data_type)
        if ax.lines:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
