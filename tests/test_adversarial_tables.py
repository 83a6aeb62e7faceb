"""Malformed metadata CSVs and ids: a typed error naming the file, column and row — never a wrong table.

Table-driven: each case edits a copy of the first rows of a real release table (one cell, one column or
the bytes), then reads it with ``read_metadata_table``. Outcomes go to the terminal summary table.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from adversarial_report import Outcome, finish_within, record

from vbo import tables
from vbo.errors import InvalidIdError, MetadataTableError, VboError

BEHAVIOR = "behavior_session_table"
SESSIONS = "ophys_session_table"
ROWS = 30
HUGE = 1_000_000  # characters in a "huge" cell: quadratic parsing would never finish


def _source(shared_data, name: str) -> pd.DataFrame:
    return pd.read_csv(shared_data / "release-tables" / f"{name}.csv", dtype=str, keep_default_na=False).head(ROWS)


def _cell(column: str, value: str, row: int = 3):
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.loc[row, column] = value
        return df
    return edit


def _drop(column: str):
    return lambda df: df.drop(columns=column)


def _duplicate_first_id(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.iloc[5, 0] = df.iloc[4, 0]
    return df


# (case, table, edit of the rows (or raw bytes), column the error names (None: a valid table), check of a valid result)
CASES = [
    ("list cell of a million spaces", BEHAVIOR, _cell("driver_line", "[" + " " * HUGE + "]"), None,
     lambda t: t["driver_line"].iloc[3] == []),
    ("list items without commas", BEHAVIOR, _cell("driver_line", "['Sst-IRES-Cre' 'Vip-IRES-Cre']"), "driver_line",
     None),
    ("list cell that is not a list", BEHAVIOR, _cell("driver_line", "Sst-IRES-Cre"), "driver_line", None),
    ("list item neither number nor text", BEHAVIOR, _cell("driver_line", "[Sst]"), "driver_line", None),
    ("list cell never closed", SESSIONS, _cell("ophys_container_id", "[1018028339, 1018028342"),
     "ophys_container_id", None),
    ("date that is not a date", BEHAVIOR, _cell("date_of_acquisition", "yesterday"), "date_of_acquisition", None),
    ("date of a million spaces", BEHAVIOR, _cell("date_of_acquisition", " " * HUGE), "date_of_acquisition", None),
    ("whole-number column with a fraction", BEHAVIOR, _cell("session_number", "1.5"), "session_number", None),
    ("whole-number column with text", BEHAVIOR, _cell("age_in_days", "²"), "age_in_days", None),
    ("index column missing", BEHAVIOR, _drop("behavior_session_id"), "behavior_session_id", None),
    ("index id with a letter", BEHAVIOR, _cell("behavior_session_id", "87098781a"), "behavior_session_id", None),
    ("index id as a superscript", BEHAVIOR, _cell("behavior_session_id", "²"), "behavior_session_id", None),
    ("index id repeated", BEHAVIOR, _duplicate_first_id, "behavior_session_id", None),
    ("mouse_id of a million spaces (text stays text)", BEHAVIOR, _cell("mouse_id", " " * HUGE), None,
     lambda t: t["mouse_id"].iloc[3] == " " * HUGE),
    ("row with an extra field", BEHAVIOR, b"a,b\n1,2\n3,4,5\n", "", None),
    ("empty file", BEHAVIOR, b"", "", None),
    ("bytes that are not text", BEHAVIOR, bytes(range(256)) * 4, "", None),
]


def _read_bounded(path, name, seconds: float = 120.0):
    """Read the table; fail (not hang) if it takes longer than ``seconds`` (super-linear parsing?)."""
    return finish_within(lambda: tables.read_metadata_table(path, name), seconds, f"reading {path}")


@pytest.mark.parametrize("case,name,edit,column,check", CASES, ids=[c[0] for c in CASES])
def test_malformed_table(case, name, edit, column, check, shared_data, tmp_path):
    path = tmp_path / f"{name}.csv"
    if isinstance(edit, bytes):
        path.write_bytes(edit)
    else:
        edit(_source(shared_data, name)).to_csv(path, index=False)
    result = _read_bounded(path, name)
    outcome = Outcome(case)
    if isinstance(result, MetadataTableError):
        named = str(path) in str(result) and (column is None or column in str(result))
        if column is not None and named:
            outcome.typed.append(type(result).__name__)
        else:
            outcome.wrong.append(f"{type(result).__name__} not naming {column!r}: {result}")
    elif isinstance(result, BaseException):
        outcome.raw.append(f"{type(result).__name__}: {str(result)[:200]}")
    elif column is not None:
        outcome.wrong.append("returned a table instead of an error")
    elif check(result):
        outcome.correct += 1
    else:
        outcome.wrong.append("unexpected values")
    record("metadata tables (CSV)", outcome)
    assert not outcome.raw and not outcome.wrong, outcome.raw + outcome.wrong


BAD_IDS = ["²", "12a", "", "   ", "1 2", "٣", "0x1F", "1e5", "-", "9" * 5000, 1.5, float("nan"), True, None, [1],
           "12.0"]
GOOD_IDS = [("42", 42), (" 42 ", 42), ("+42", 42), (42.0, 42), (np.int64(42), 42), ("0042", 42)]


@pytest.mark.parametrize("value", BAD_IDS, ids=[repr(v)[:20] for v in BAD_IDS])
def test_bad_id(value):
    outcome = Outcome(f"id {value!r:.30}")
    try:
        got = tables.normalize_id(value)
        outcome.wrong.append(f"accepted as {got}")
    except InvalidIdError as err:
        outcome.typed.append("InvalidIdError") if isinstance(err, (TypeError, ValueError)) else None
    except Exception as err:
        outcome.raw.append(f"{type(err).__name__}: {err}")
    record("ids", outcome)
    assert outcome.typed, outcome.raw + outcome.wrong


@pytest.mark.parametrize("value,expected", GOOD_IDS, ids=[repr(v[0]) for v in GOOD_IDS])
def test_good_id(value, expected):
    assert tables.normalize_id(value) == expected
    assert type(tables.normalize_id(value)) is int


def test_lookup_of_a_bad_id_is_typed(shared_data):
    table = tables.read_metadata_table(shared_data / "release-tables" / "ophys_experiment_table.csv",
                                       "ophys_experiment_table")
    with pytest.raises(InvalidIdError) as info:
        tables.lookup(table, "²")
    assert isinstance(info.value, VboError) and "²" in str(info.value)
    with pytest.raises(InvalidIdError):
        tables.sessions_of_mouse(table, "45784l")
