"""Documented data issues of the release: a curated table, checks of the metadata tables, and warnings.

Some released sessions are known to be wrong or inconsistent (``docs/format.md`` §12). They still open; the
project cache warns (:class:`vbo.errors.KnownIssueWarning`, naming the id and the public report) when one is
asked for, and :func:`release_issues` lists what the loaded tables show.
"""

from __future__ import annotations

import warnings

import pandas as pd

from vbo.errors import KnownIssueWarning

CURATED = (
    # (id column, id, public report, what is wrong)
    ("behavior_session_id", 875471358, "AllenSDK#2220",
     "the stimulus is wrong: OPHYS_6_images_A was shown in a VisualBehaviorMultiscope session (mouse 449653); "
     "its stimulus-dependent values do not describe what the project planned"),
    ("ophys_session_id", 951410079, "AllenSDK#1770",
     "the Cre line and mouse of this session were mislabelled in early releases; check mouse_id and cre_line "
     "against the release tables of the manifest in use"),
)
COLUMNS = ["id_column", "id", "source", "issue"]


def curated() -> pd.DataFrame:
    """The curated issues: ``id_column``, ``id``, ``source`` (public report), ``issue``."""
    return pd.DataFrame(list(CURATED), columns=COLUMNS)


def issues_of(**ids) -> list[tuple[str, int, str, str]]:
    """Curated issues matching any of the given ids (``behavior_session_id=…``, ``ophys_session_id=…``, …;
    None values are ignored)."""
    wanted = {(column, int(value)) for column, value in ids.items() if value is not None and not pd.isna(value)}
    return [row for row in CURATED if (row[0], row[1]) in wanted]


def warn_if_known(stacklevel: int = 3, **ids) -> None:
    """Emit a :class:`vbo.errors.KnownIssueWarning` for every curated issue of these ids."""
    for column, value, source, issue in issues_of(**ids):
        warnings.warn(f"{column} {value}: {issue} ({source})", KnownIssueWarning, stacklevel=stacklevel)


def release_issues(cache) -> pd.DataFrame:
    """Curated issues plus what the loaded metadata tables show (one row per affected id).

    Checks: experiments in ``ophys_cells_table`` missing from ``ophys_experiment_table`` and imaging sessions
    without a container (AllenSDK#2242); sessions without ``session_type`` (AllenSDK#1903).

    Returns
    -------
    pd.DataFrame
        Columns ``id_column``, ``id``, ``source``, ``issue``; curated rows first.
    """
    rows = list(CURATED)
    experiments = cache.get_ophys_experiment_table()
    cells = cache.get_ophys_cells_table()
    for experiment_id in sorted(set(cells["ophys_experiment_id"]) - set(experiments.index)):
        rows.append(("ophys_experiment_id", int(experiment_id), "AllenSDK#2242",
                     "ROIs in ophys_cells_table, but no row in ophys_experiment_table"))
    sessions = cache.get_ophys_session_table()
    empty = sessions["ophys_container_id"].map(lambda v: not isinstance(v, list) and pd.isna(v))
    for session_id in sessions.index[empty.to_numpy(bool)]:
        rows.append(("ophys_session_id", int(session_id), "AllenSDK#2242", "no ophys_container_id"))
    behavior = cache.get_behavior_session_table()
    for session_id in behavior.index[behavior["session_type"].isna().to_numpy()]:
        rows.append(("behavior_session_id", int(session_id), "AllenSDK#1903", "session_type is missing"))
    return pd.DataFrame(rows, columns=COLUMNS)
