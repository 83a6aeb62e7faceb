"""Project metadata CSVs → typed DataFrames exactly as AllenSDK returns them (``format.md`` §6.1), and id lookups.

``mouse_id`` stays a string (the SDK's dtype) but every lookup helper here accepts ``int`` or ``str`` ids.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from vbo.errors import UnknownIdError

INDEX_COLUMN = {
    "behavior_session_table": "behavior_session_id",
    "ophys_session_table": "ophys_session_id",
    "ophys_experiment_table": "ophys_experiment_id",
    "ophys_cells_table": "cell_roi_id",
}
LIST_COLUMNS = ("ophys_experiment_id", "ophys_container_id", "driver_line")
INTEGER_COLUMNS = (
    "session_number", "age_in_days", "prior_exposures_to_image_set", "prior_exposures_to_session_type",
    "prior_exposures_to_omissions", "ophys_session_id", "imaging_plane_group_count", "imaging_plane_group",
    "targeted_areas", "num_depths_per_area", "num_targeted_structures", "cell_specimen_id",
)
COLUMN_ORDER = (
    "behavior_session_id", "ophys_session_id", "ophys_container_id", "mouse_id", "indicator", "full_genotype",
    "driver_line", "cre_line", "reporter_line", "sex", "age_in_days", "imaging_depth", "targeted_structure",
    "targeted_imaging_depth", "imaging_plane_group_count", "imaging_plane_group", "project_code", "session_type",
    "session_number", "image_set", "behavior_type", "passive", "experience_level",
    "prior_exposures_to_session_type", "prior_exposures_to_image_set", "prior_exposures_to_omissions",
    "date_of_acquisition", "equipment_name", "num_depths_per_area", "ophys_experiment_id",
    "num_targeted_structures", "published_at", "isi_experiment_id",
)
IGNORED_COLUMNS = ("file_path",)
# pandas 1.x default NA tokens: the pandas-2 set minus "None", so the literal string "None" survives (Q3)
NA_VALUES = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
             "<NA>", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"]
_LIST_ITEM = re.compile(r"""\s*(?:'([^']*)'|"([^"]*)"|([^,\s]+))\s*(?:,|$)""")


def parse_list(cell) -> list | float:
    """A list cell of the CSV (``"[1, 2]"``, ``"['Sst-IRES-Cre']"``) as a Python list, without ``eval``.

    Numbers become ``int``; quoted items stay ``str``; missing cells stay NaN; non-string cells are kept.
    """
    if not isinstance(cell, str):
        return cell
    text = cell.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise ValueError(f"not a list cell: {cell!r}")
    items = []
    for single, double, bare in _LIST_ITEM.findall(text[1:-1]):
        if bare:
            items.append(int(bare) if re.fullmatch(r"[-+]?\d+", bare) else float(bare))
        else:
            items.append(single or double)
    return items


def read_metadata_table(path: str | Path, name: str) -> pd.DataFrame:
    """Read one release CSV into the DataFrame AllenSDK 2.16.2 returns.

    Parameters
    ----------
    path
        The CSV file.
    name
        ``behavior_session_table``, ``ophys_session_table``, ``ophys_experiment_table`` or ``ophys_cells_table``.

    Returns
    -------
    pandas.DataFrame
        Indexed by the table's id; list columns as lists; ``date_of_acquisition`` as UTC datetimes;
        nullable ``Int64`` integer columns; columns in AllenSDK's order, then the rest in file order.
    """
    if name not in INDEX_COLUMN:
        raise ValueError(f"unknown metadata table {name!r}; expected one of {sorted(INDEX_COLUMN)}")
    dtype = {"mouse_id": str} if name != "ophys_cells_table" else None
    df = pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=NA_VALUES)
    df = df.drop(columns=[c for c in IGNORED_COLUMNS if c in df])
    for column in df.columns:
        if pd.api.types.is_numeric_dtype(df[column]) or pd.api.types.is_bool_dtype(df[column]):
            continue  # numbers pandas parsed (e.g. the experiment table's scalar ophys_experiment_id) stay
        if column in LIST_COLUMNS:
            df[column] = pd.Series([parse_list(v) for v in df[column]], index=df.index, dtype=object)
        else:  # text as object columns of str, as AllenSDK returns them on every pandas version
            df[column] = df[column].astype(object)
    if "date_of_acquisition" in df:
        df["date_of_acquisition"] = pd.to_datetime(df["date_of_acquisition"], utc=True, format="ISO8601")
        df["date_of_acquisition"] = df["date_of_acquisition"].astype("datetime64[ns, UTC]")
    for column in INTEGER_COLUMNS:
        if column in df:
            df[column] = df[column].astype("Int64")
    first = [c for c in COLUMN_ORDER if c in df]
    df = df[first + [c for c in df.columns if c not in first]]
    return df.set_index(INDEX_COLUMN[name])


def normalize_id(value) -> int:
    """An id given as ``int``, numpy integer, float without fraction, or digit string → ``int``."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{value!r} is not an id")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+").isdigit():
        return int(value.strip())
    raise TypeError(f"{value!r} is not an id (expected an integer or a string of digits)")


def normalize_mouse_id(value) -> str:
    """A mouse id given as ``int`` or ``str`` → the table's string form (``457841`` → ``'457841'``)."""
    return str(normalize_id(value))


def lookup(table: pd.DataFrame, identifier, what: str | None = None) -> pd.Series:
    """The row of ``table`` whose index equals ``identifier`` (int or str).

    Raises
    ------
    vbo.errors.UnknownIdError
        (a ``KeyError``) naming the id and the table's index.
    """
    key = normalize_id(identifier)
    if key not in table.index:
        raise UnknownIdError(f"{what or table.index.name} {identifier!r} is not in this release")
    row = table.loc[key]
    if isinstance(row, pd.DataFrame):
        raise UnknownIdError(f"{what or table.index.name} {identifier!r} has {len(row)} rows; expected one")
    return row


def sessions_of_mouse(table: pd.DataFrame, mouse_id) -> pd.DataFrame:
    """Rows of a metadata table for one mouse, given its id as ``int`` or ``str``."""
    return table[table["mouse_id"] == normalize_mouse_id(mouse_id)]
