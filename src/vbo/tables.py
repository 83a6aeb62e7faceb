"""Project metadata CSVs → typed DataFrames exactly as AllenSDK returns them (``docs/format.md`` §6.1), and id lookups.

``mouse_id`` stays a string (the SDK's dtype) but every lookup helper here accepts ``int`` or ``str`` ids.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from vbo.errors import InvalidIdError, MetadataTableError, UnknownIdError

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
PASSIVE_VIEWING, ACTIVE_BEHAVIOR = "passive_viewing", "active_behavior"  # ``behavior_type`` values (§6.3)
# pandas 1.x default NA tokens: the pandas-2 set minus "None", so the literal string "None" survives (Q3)
NA_VALUES = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
             "<NA>", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"]
# one list item and the separator after it; every part is anchored, so a match never backtracks far and
# parsing a cell is linear in its length (a cell of 100 kB of spaces is read at once)
_LIST_ITEM = re.compile(r"""[ \t]*(?:'([^']*)'|"([^"]*)"|([^,'"\s\[\]]+))[ \t]*(,|$)""")
_INTEGER = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?(?:nan|inf)", re.IGNORECASE)
MAX_ID_DIGITS = 19  # ids are int64
_DECIMAL_ID = re.compile(r"[ \t]*\+?[0-9]+[ \t]*")


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_list(cell) -> list | float:
    """A list cell of the CSV (``"[1, 2]"``, ``"['Sst-IRES-Cre']"``) as a Python list, without ``eval``.

    Numbers become ``int`` (or ``float``); quoted items stay ``str``; missing cells stay NaN; non-string
    cells are kept. Linear in the cell's length.

    Raises
    ------
    ValueError
        The cell is not a list of numbers and quoted strings separated by commas.
    """
    if not isinstance(cell, str):
        return cell
    text = cell.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise ValueError(f"not a list cell: {_short(cell)}")
    body = text[1:-1].strip()
    items: list = []
    position = 0
    while position < len(body):
        match = _LIST_ITEM.match(body, position)
        if match is None or match.end() == position:
            raise ValueError(f"not a list of numbers and quoted text at character {position + 1}: {_short(text)}")
        single, double, bare, separator = match.groups()
        if bare is not None:
            if _INTEGER.fullmatch(bare):
                items.append(int(bare))
            elif _FLOAT.fullmatch(bare):
                items.append(float(bare))
            else:
                raise ValueError(f"list item {_short(bare)} is neither a number nor quoted text")
        else:
            items.append(single if single is not None else double)
        position = match.end()
        if separator == "" and position < len(body):
            raise ValueError(f"list items must be separated by commas: {_short(text)}")
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

    Raises
    ------
    vbo.errors.MetadataTableError
        The file cannot be read as this table (naming the file, and the column and row at fault).
    """
    if name not in INDEX_COLUMN:
        raise ValueError(f"unknown metadata table {name!r}; expected one of {sorted(INDEX_COLUMN)}")
    index = INDEX_COLUMN[name]
    df = _read_csv(path, name)
    if index not in df:
        raise MetadataTableError(path, index, f"the {name} has no {index} column")
    _check_ids(path, df[index])
    df = df.drop(columns=[c for c in IGNORED_COLUMNS if c in df])
    for column in df.columns:
        if pd.api.types.is_numeric_dtype(df[column]) or pd.api.types.is_bool_dtype(df[column]):
            continue  # numbers pandas parsed (e.g. the experiment table's scalar ophys_experiment_id) stay
        if column in LIST_COLUMNS:
            df[column] = pd.Series([_list_cell(path, column, row, v) for row, v in zip(df[index], df[column])],
                                   index=df.index, dtype=object)
        else:  # text as object columns of str, as AllenSDK returns them on every pandas version
            df[column] = df[column].astype(object)
    if "date_of_acquisition" in df:
        df["date_of_acquisition"] = _dates(path, df["date_of_acquisition"], df[index])
    for column in INTEGER_COLUMNS:
        if column in df:
            df[column] = _integers(path, column, df[column], df[index])
    first = [c for c in COLUMN_ORDER if c in df]
    df = df[first + [c for c in df.columns if c not in first]]
    return df.set_index(index)


def _read_csv(path: str | Path, name: str) -> pd.DataFrame:
    dtype = {"mouse_id": str} if name != "ophys_cells_table" else None
    try:
        return pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=NA_VALUES)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise MetadataTableError(path, None, f"cannot be read as a CSV table: {' '.join(str(err).split())}") from None


def _check_ids(path: str | Path, ids: pd.Series) -> None:
    """The index column must hold integers, each once."""
    if not pd.api.types.is_integer_dtype(ids.dtype):
        bad = next((v for v in ids if not _DECIMAL_ID.fullmatch(str(v))), ids.iloc[0] if len(ids) else None)
        raise MetadataTableError(path, str(ids.name), f"ids must be integers, found {_short(str(bad))}")
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise MetadataTableError(path, str(ids.name), f"id {int(duplicated.iloc[0])} appears more than once")


def _list_cell(path: str | Path, column: str, row, cell):
    try:
        return parse_list(cell)
    except ValueError as err:
        raise MetadataTableError(path, column, f"row {row}: {err}") from None


def _first_bad(values: pd.Series, good: pd.Series, ids: pd.Series) -> str:
    position = int(np.flatnonzero(~good.to_numpy(bool))[0])
    return f"row {ids.iloc[position]}: {_short(str(values.iloc[position]))}"


def _dates(path: str | Path, values: pd.Series, ids: pd.Series) -> pd.Series:
    """ISO-8601 texts as UTC datetimes (ns)."""
    try:
        return pd.to_datetime(values, utc=True, format="ISO8601").astype("datetime64[ns, UTC]")
    except (ValueError, TypeError, OverflowError):
        parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
        good = parsed.notna() | values.isna()
        where = _first_bad(values, good, ids) if not good.all() else "a date out of range"
        raise MetadataTableError(path, "date_of_acquisition", f"not an ISO-8601 date and time: {where}") from None


def _integers(path: str | Path, column: str, values: pd.Series, ids: pd.Series) -> pd.Series:
    """A column of whole numbers (NaN allowed) as nullable ``Int64``."""
    try:
        return values.astype("Int64")
    except (ValueError, TypeError, OverflowError):
        numbers = pd.to_numeric(values, errors="coerce")
        good = (numbers.notna() & (numbers % 1 == 0)) | values.isna()
        where = _first_bad(values, good, ids) if not good.all() else "a value out of range"
        raise MetadataTableError(path, column, f"must hold whole numbers: {where}") from None


def is_passive(table: pd.DataFrame) -> np.ndarray:
    """One bool per row: a passive-viewing session (the task replayed without lick spout: no licks, no hits).

    Reads the ``passive`` column (experiment and ophys-session tables), else ``behavior_type`` (behavior
    session table), else the ``session_type`` (an ``OPHYS_*`` type containing ``passive``)."""
    if "passive" in table.columns:
        return table["passive"].fillna(False).astype(bool).to_numpy()
    if "behavior_type" in table.columns:
        return (table["behavior_type"].astype(str) == PASSIVE_VIEWING).to_numpy()
    types = table["session_type"].astype(str)
    return (types.str.contains("passive") & types.str.contains("OPHYS")).to_numpy()


def normalize_id(value) -> int:
    """An id given as ``int``, numpy integer, float without fraction, or a string of ASCII digits → ``int``.

    Raises
    ------
    vbo.errors.InvalidIdError
        (a ``TypeError`` and ``ValueError``) for anything else: text that is not decimal digits (``'²'``,
        ``'12a'``), fractions, booleans, None.
    """
    if isinstance(value, (bool, np.bool_)):
        raise InvalidIdError(f"{value!r} is not an id (expected an integer or a string of digits)")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and _DECIMAL_ID.fullmatch(value):
        digits = value.strip().lstrip("+").lstrip("0") or "0"
        if len(digits) > MAX_ID_DIGITS:
            raise InvalidIdError(f"{_short(value)} is not an id (more than {MAX_ID_DIGITS} digits)")
        return int(digits)
    shown = _short(value) if isinstance(value, str) else repr(value)[:60]
    raise InvalidIdError(f"{shown} is not an id (expected an integer or a string of digits 0-9)")


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
