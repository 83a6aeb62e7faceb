"""How a vbo member is compared with AllenSDK 2.16.2's recorded answer (shared by the conformance tests).

Exact for integers, strings, booleans, ids and indexes; floats within 1e-9 relative; dtypes, index names
and column order checked. ``stimulus_presentations``: AllenSDK orders the columns after its fixed prefix
through a Python set, so only the prefix is compared by position; vbo's own stable tail order is checked.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from vbo.values import Coordinates, Image

RTOL = 1e-9
# stimulus_presentations: AllenSDK's fixed leading columns (those present, in this order); the rest
# follow in Python-set order in AllenSDK, in vbo's fixed order (Q23): PRESENTATION_TAIL, then extras
PRESENTATION_PREFIX = ("stimulus_block", "stimulus_block_name", "image_index", "image_name", "movie_frame_index",
                       "duration", "start_time", "end_time", "start_frame", "end_frame", "is_change",
                       "is_image_novel", "omitted", "movie_repeat", "flashes_since_change", "trials_id")
PRESENTATION_FIXED = len(PRESENTATION_PREFIX)
PRESENTATION_TAIL = ["active", "stimulus_name", "is_sham_change"]
# members whose AllenSDK value is a bug that vbo fixes (Q35)
DIVERGENT = {"neuropil_traces"}


def assert_values_equal(actual, expected, where: str) -> None:
    """Recursive comparison with the tolerance and type rules of the acceptance criteria."""
    if isinstance(expected, pd.DataFrame):
        assert isinstance(actual, pd.DataFrame), f"{where}: {type(actual)} is not a DataFrame"
        assert_frames_equal(actual, expected, where)
    elif isinstance(expected, dict) and set(expected) == {"data", "spacing", "unit"}:
        assert isinstance(actual, Image), f"{where}: {type(actual)} is not an Image"
        assert_values_equal(actual.data, expected["data"], f"{where}.data")
        assert list(actual.spacing) == pytest.approx(expected["spacing"], rel=RTOL), where
        assert actual.unit == expected["unit"], where
        np.testing.assert_array_equal(np.asarray(actual), expected["data"])
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {type(actual)} is not a dict"
        assert list(actual) == list(expected), f"{where}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_values_equal(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_values_equal(a, e, f"{where}[{i}]")
    elif isinstance(expected, np.ndarray):
        actual = np.asarray(actual)
        assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != {expected.shape}"
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=0, equal_nan=True, err_msg=where)
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=where)
    elif isinstance(expected, list) and any(isinstance(v, np.ndarray) for v in expected):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_values_equal(a, e, f"{where}[{i}]")
    elif isinstance(expected, list):
        assert list(actual) == expected if not any(isinstance(v, float) for v in expected) \
            else list(actual) == pytest.approx(expected, rel=RTOL, nan_ok=True), f"{where}: {actual} != {expected}"
        if isinstance(actual, Coordinates):
            assert (actual.x, actual.y, actual.z) == tuple(actual)
        else:
            assert isinstance(actual, list), f"{where}: {type(actual)} is not a list"
    elif isinstance(expected, float):
        assert isinstance(actual, (float, np.floating)), f"{where}: {type(actual)} is not a float"
        assert type(actual) is type(expected), f"{where}: type {type(actual)} != {type(expected)}"
        if np.isnan(expected):
            assert np.isnan(actual), where
        else:
            assert actual == pytest.approx(expected, rel=RTOL), f"{where}: {actual} != {expected}"
    elif isinstance(expected, dt.datetime):
        assert isinstance(actual, dt.datetime) and actual.tzinfo is not None, where
        assert actual == expected, f"{where}: {actual} != {expected}"
        assert actual.utcoffset() == dt.timedelta(0), f"{where}: not UTC (Q32)"
    else:
        assert type(actual) is type(expected), f"{where}: type {type(actual)} != {type(expected)}"
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def assert_series_equal(actual: pd.Series, expected: pd.Series, where: str) -> None:
    assert str(actual.dtype) == str(expected.dtype), f"{where}: dtype {actual.dtype} != {expected.dtype}"
    if expected.dtype == object:
        for i, (a, e) in enumerate(zip(actual.to_list(), expected.to_list())):
            if isinstance(e, np.ndarray):
                assert_values_equal(a, e, f"{where}[{i}]")
            elif e is None or (isinstance(e, float) and np.isnan(e)):
                assert a is None if e is None else (isinstance(a, float) and np.isnan(a)), f"{where}[{i}]: {a!r} != {e!r}"
            else:
                assert type(a) is type(e) and a == e, f"{where}[{i}]: {a!r} != {e!r}"
    elif expected.dtype.kind == "f":
        np.testing.assert_allclose(actual.to_numpy(), expected.to_numpy(), rtol=RTOL, atol=0, equal_nan=True,
                                   err_msg=where)
    else:
        pd.testing.assert_series_equal(actual, expected, check_names=False, obj=where)


def assert_frames_equal(actual: pd.DataFrame, expected: pd.DataFrame, where: str) -> None:
    assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != {expected.shape}"
    assert actual.index.name == expected.index.name, f"{where}: index name {actual.index.name!r}"
    assert str(actual.index.dtype) == str(expected.index.dtype), f"{where}: index dtype {actual.index.dtype}"
    np.testing.assert_array_equal(actual.index.to_numpy(), expected.index.to_numpy(), err_msg=f"{where}.index")
    # the SDK names some frames through a plain attribute (stimulus_templates: the image set)
    assert vars(actual).get("name") == vars(expected).get("name"), f"{where}: DataFrame.name"
    if where.endswith("stimulus_presentations"):
        fixed = [c for c in PRESENTATION_PREFIX if c in expected.columns]
        assert list(expected.columns[:len(fixed)]) == fixed, f"{where}: AllenSDK's prefix {list(expected.columns)}"
        assert list(actual.columns[:len(fixed)]) == fixed, f"{where}: columns {list(actual.columns)}"
        assert set(actual.columns) == set(expected.columns), f"{where}: columns {list(actual.columns)}"
        tail = [c for c in PRESENTATION_TAIL if c in expected.columns]
        assert list(actual.columns[len(fixed):len(fixed) + len(tail)]) == tail, f"{where}: {list(actual.columns)}"
    else:
        assert list(actual.columns) == list(expected.columns), f"{where}: columns {list(actual.columns)}"
    for column in expected.columns:
        assert_series_equal(actual[column].reset_index(drop=True), expected[column].reset_index(drop=True),
                            f"{where}.{column}")


def call_member(obj, name: str, truth_entry: dict):
    """Read a property, or call a method the way the truth was recorded."""
    value = getattr(obj, name)
    if not callable(value):
        return value
    if name == "get_cell_specimen_indices":
        return value(cell_specimen_ids=obj.cell_specimen_table.index.values)
    return value()
