"""Project-level tables and population analyses across experiments.

- :func:`cells_table` — every ROI of the release with its experiment's metadata (mouse, genotype, area, depth,
  session), from the metadata tables alone: no NWB file is opened;
- :func:`experiments_of_cell` — the experiments a ``cell_specimen_id`` was matched in (AllenSDK#2181);
- :func:`roi_table` — the same rows with each ROI's position and size from the files (AllenSDK#2543);
- :func:`population_responses` — per-cell response summaries of many experiments, one task per file;
- :func:`container_responses` — the same for every experiment of a container, for matching cells across sessions.

The per-file work runs through :func:`vbo.parallel.map_files`: locally in processes, or on a Dask cluster
when a ``dask.distributed.Client`` is passed as ``client``.
"""

from __future__ import annotations

import warnings

import pandas as pd

from vbo.errors import UnknownIdError
from vbo.experiment import BehaviorOphysExperiment
from vbo.parallel import map_files
from vbo.responses import experiment_summary, stimulus_responses
from vbo.tables import normalize_id

CELL_METADATA_COLUMNS = ("ophys_session_id", "behavior_session_id", "ophys_container_id", "mouse_id", "cre_line",
                         "full_genotype", "reporter_line", "indicator", "sex", "targeted_structure",
                         "imaging_depth", "targeted_imaging_depth", "imaging_plane_group", "project_code",
                         "session_type", "session_number", "experience_level", "passive", "equipment_name",
                         "date_of_acquisition")
"""Experiment-table columns attached to each cell (those present in the release's table)."""
ROI_COLUMNS = ("x", "y", "width", "height", "valid_roi")


def cells_table(cache) -> pd.DataFrame:
    """Every ROI of the release with its experiment's metadata, without opening an NWB file.

    Parameters
    ----------
    cache
        A :class:`vbo.VisualBehaviorOphysProjectCache`.

    Returns
    -------
    pd.DataFrame
        Index ``cell_roi_id`` (the cells-table order); ``ophys_experiment_id``, ``cell_specimen_id`` (Int64,
        <NA> when unmatched), then :data:`CELL_METADATA_COLUMNS`. ROIs of experiments missing from the
        experiment table (AllenSDK#2242) keep NaN metadata.
    """
    return _with_metadata(cache.get_ophys_cells_table(), cache)


def _with_metadata(frame: pd.DataFrame, cache, columns=CELL_METADATA_COLUMNS) -> pd.DataFrame:
    """``frame`` with the experiment-table ``columns`` (those in the release, not already in ``frame``) joined
    on its ``ophys_experiment_id``."""
    experiments = cache.get_ophys_experiment_table()
    present = [c for c in columns if c in experiments.columns and c not in frame.columns]
    return frame.join(experiments[present], on="ophys_experiment_id")


def experiments_of_cell(cache, cell_specimen_id) -> pd.DataFrame:
    """The rows of :func:`cells_table` of one ``cell_specimen_id`` (int or str), oldest session first.

    Raises
    ------
    vbo.errors.UnknownIdError
        (a ``KeyError``) if no ROI of the release was matched to this cell.
    """
    key = normalize_id(cell_specimen_id)
    table = cells_table(cache)
    rows = table[(table["cell_specimen_id"] == key).fillna(False).to_numpy(bool)]
    if rows.empty:
        raise UnknownIdError(f"cell_specimen_id {cell_specimen_id!r} is not in this release's ophys_cells_table")
    return rows.sort_values("date_of_acquisition", kind="stable") if "date_of_acquisition" in rows else rows


def _experiment_ids(cache, ophys_experiment_ids) -> list[int]:
    if ophys_experiment_ids is None:
        return [int(i) for i in cache.get_ophys_experiment_table().index]
    return [normalize_id(i) for i in ophys_experiment_ids]


def experiment_sources(cache, ophys_experiment_ids, stream: bool = False) -> list[str]:
    """Where each experiment's file is: local paths (downloaded in parallel first on an S3 cache), or with
    ``stream`` on an S3 cache the objects' URLs, for workers that read them by byte ranges."""
    ids = list(ophys_experiment_ids)
    if not stream:
        cache.download(ophys_experiment_ids=ids)
    return [cache.file_source(ophys_experiment_id=i, stream=stream) for i in ids]


def _open(source: str):
    return BehaviorOphysExperiment.from_nwb_path(source)


def experiment_rois(source: str) -> pd.DataFrame:
    """ROI position and size of one experiment file (runs in a worker): ``cell_roi_id`` and
    :data:`ROI_COLUMNS` (px; ``valid_roi`` bool), plus ``ophys_experiment_id``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _open(source) as experiment:
            table = experiment.cell_specimen_table
            rois = table.reset_index()[["cell_roi_id", *ROI_COLUMNS]]
            rois.insert(0, "ophys_experiment_id", int(experiment.ophys_experiment_id))
    return rois


def roi_table(cache, ophys_experiment_ids=None, *, client=None, workers: int | None = None,
              stream: bool = False) -> pd.DataFrame:
    """:func:`cells_table` rows with each ROI's position and size read from the experiment files.

    Parameters
    ----------
    cache
        A :class:`vbo.VisualBehaviorOphysProjectCache`.
    ophys_experiment_ids : iterable of int or str, optional
        Experiments to include (default: every experiment of the release).
    client : dask.distributed.Client, optional
        Read the files as Dask tasks on this cluster; otherwise ``workers`` local processes.
    stream : bool
        On an S3 cache, workers read the files by byte ranges instead of downloading them.

    Returns
    -------
    pd.DataFrame
        Index ``cell_roi_id`` (every ROI of the chosen files, in file order); the :func:`cells_table` columns
        (``cell_specimen_id`` <NA> for ROIs the cells table does not list) plus ``x``, ``y``, ``width``,
        ``height`` (px) and ``valid_roi``.
    """
    ids = _experiment_ids(cache, ophys_experiment_ids)
    parts = map_files(experiment_rois, experiment_sources(cache, ids, stream), client=client, workers=workers)
    rois = pd.concat(parts, ignore_index=True).set_index("cell_roi_id") if parts else \
        pd.DataFrame(columns=["ophys_experiment_id", *ROI_COLUMNS]).rename_axis("cell_roi_id")
    cells = cache.get_ophys_cells_table()
    table = rois[["ophys_experiment_id"]].join(cells[["cell_specimen_id"]])
    return _with_metadata(table, cache).join(rois[list(ROI_COLUMNS)])


def experiment_responses(source: str, event_type: str, data_type: str, options: dict) -> pd.DataFrame:
    """Per-cell response summary of one experiment file (runs in a worker; ``options`` go to
    :func:`vbo.responses.stimulus_responses`), with ``ophys_experiment_id``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _open(source) as experiment:
            summary = experiment_summary(stimulus_responses(experiment, event_type, data_type, **options))
            summary.insert(0, "ophys_experiment_id", int(experiment.ophys_experiment_id))
    return summary


def population_responses(cache, ophys_experiment_ids=None, event_type: str = "changes", data_type: str = "dff",
                         *, client=None, workers: int | None = None, stream: bool = False,
                         metadata_columns=CELL_METADATA_COLUMNS, **kwargs) -> pd.DataFrame:
    """Per-cell response summaries of many experiments, one task per file, with experiment metadata.

    Parameters
    ----------
    cache
        A :class:`vbo.VisualBehaviorOphysProjectCache`.
    ophys_experiment_ids : iterable of int or str, optional
        Experiments (default: all of the release).
    event_type, data_type
        As for :func:`vbo.responses.stimulus_responses` (``"changes"``, ``"omissions"``, ``"images"``, …;
        ``"dff"``, ``"events"``, …); other keyword arguments (``window``, ``p_value``, …) are passed on.
    client, workers, stream
        Where the per-file work runs, as for :func:`roi_table`.
    metadata_columns
        Experiment-table columns to attach to each row.

    Returns
    -------
    pd.DataFrame
        One row per cell and experiment: ``ophys_experiment_id``, the cell id columns and the summary of
        :func:`vbo.responses.experiment_summary` (``mean_response``, ``baseline_response``, ``n_events``, …),
        then the metadata columns; experiments in input order.
    """
    ids = _experiment_ids(cache, ophys_experiment_ids)
    parts = map_files(experiment_responses, experiment_sources(cache, ids, stream), event_type, data_type, kwargs,
                      client=client, workers=workers)
    if not parts:
        return pd.DataFrame()
    return _with_metadata(pd.concat(parts, ignore_index=True), cache, metadata_columns)


EXPERIMENT_COLUMNS = ("ophys_container_id", "session_type", "experience_level", "passive", "session_number",
                      "cre_line", "behavior_session_id")


def container_responses(cache, ophys_container_id: int, event_type: str = "images", data_type: str = "dff",
                        window=(-1.0, 1.5), p_value: bool = False, **kwargs) -> pd.DataFrame:
    """Per-cell response summaries of every experiment of a container, for matching across sessions.

    :func:`population_responses` over the container's experiments: :func:`vbo.responses.experiment_summary`
    rows with ``ophys_experiment_id`` and the experiment table's ``session_type``, ``experience_level``,
    ``passive``, … columns. Other keyword arguments go to :func:`vbo.responses.stimulus_responses`, except
    ``client`` and ``workers`` (where the files are read; default: in this process).
    """
    table = cache.get_ophys_experiment_table()
    ids = table.index[table["ophys_container_id"] == normalize_id(ophys_container_id)]
    if not len(ids):
        raise ValueError(f"no experiments in container {ophys_container_id}")
    kwargs.setdefault("workers", 1)
    return population_responses(cache, ids, event_type, data_type, window=window, p_value=p_value,
                                metadata_columns=EXPERIMENT_COLUMNS, **kwargs)
