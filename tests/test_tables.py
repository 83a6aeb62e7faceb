"""Metadata tables of the real release (../shared/data/release-tables) read as AllenSDK returns them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vbo import tables
from vbo.errors import UnknownIdError


@pytest.fixture(scope="module")
def release(shared_data):
    folder = shared_data / "release-tables"
    return {name: tables.read_metadata_table(folder / f"{name}.csv", name)
            for name in ("behavior_session_table", "ophys_session_table", "ophys_experiment_table")}


def test_release_counts(release):
    behavior, sessions, experiments = (release[n] for n in
                                       ("behavior_session_table", "ophys_session_table", "ophys_experiment_table"))
    assert len(behavior) == 4787 and len(sessions) == 704 and len(experiments) == 1941
    assert behavior["mouse_id"].nunique() == 107
    assert experiments["ophys_container_id"].nunique() == 326
    assert behavior["behavior_type"].value_counts().to_dict() == {"active_behavior": 4494, "passive_viewing": 293}
    assert experiments["project_code"].value_counts().to_dict() == {
        "VisualBehaviorMultiscope": 867, "VisualBehaviorMultiscope4areasx2d": 636,
        "VisualBehavior": 239, "VisualBehaviorTask1B": 199}
    mice = behavior.drop_duplicates("mouse_id")
    genotype = mice["cre_line"].str.split("-").str[0] + "/" + mice["reporter_line"].str.split("(").str[0]
    assert genotype.value_counts().to_dict() == {"Slc17a7/Ai93": 47, "Vip/Ai148": 28, "Sst/Ai148": 24,
                                                "Slc17a7/Ai94": 8}


def test_dtypes_and_values(release):
    behavior = release["behavior_session_table"]
    assert behavior.index.name == "behavior_session_id" and behavior.index.dtype == np.int64
    assert behavior["mouse_id"].map(type).eq(str).all()
    assert str(behavior["date_of_acquisition"].dtype) == "datetime64[ns, UTC]"
    assert str(behavior["session_number"].dtype) == "Int64"
    assert behavior["driver_line"].map(type).eq(list).all()
    assert behavior.loc[870987812, "driver_line"] == ["Sst-IRES-Cre"]
    sessions = release["ophys_session_table"]
    assert sessions.loc[951410079, "ophys_experiment_id"] == [951980471, 951980473, 951980475, 951980479,
                                                             951980481, 951980484, 951980486]
    experiments = release["ophys_experiment_table"]
    assert experiments.loc[951980471, "image_set"] == "A"  # single letter in this table (Q4)
    assert experiments["passive"].dtype == bool
    assert str(experiments["imaging_plane_group"].dtype) == "Int64"
    # the literal string "None" survives on every pandas version (Q3)
    levels = set(behavior["experience_level"].dropna())
    assert levels <= {"Training", "Familiar", "Novel 1", "Novel >1", "None"}


def test_column_order(release):
    assert list(release["ophys_session_table"].columns) == [
        "behavior_session_id", "ophys_container_id", "mouse_id", "indicator", "full_genotype", "driver_line",
        "cre_line", "reporter_line", "sex", "age_in_days", "imaging_plane_group_count", "project_code",
        "session_type", "session_number", "image_set", "behavior_type", "experience_level",
        "prior_exposures_to_session_type", "prior_exposures_to_image_set", "prior_exposures_to_omissions",
        "date_of_acquisition", "equipment_name", "num_depths_per_area", "ophys_experiment_id",
        "num_targeted_structures"]
    # columns outside AllenSDK's order follow the CSV (file_id last here), the same on every run
    assert list(release["behavior_session_table"].columns)[-1] == "file_id"


def test_row_order_is_csv_order(release, shared_data):
    raw = pd.read_csv(shared_data / "release-tables" / "behavior_session_table.csv", usecols=["behavior_session_id"])
    assert release["behavior_session_table"].index.tolist() == raw["behavior_session_id"].tolist()


def test_ids_as_int_or_str(release):
    behavior = release["behavior_session_table"]
    by_int = tables.sessions_of_mouse(behavior, 457841)
    by_str = tables.sessions_of_mouse(behavior, "457841")
    assert len(by_int) > 0
    pd.testing.assert_frame_equal(by_int, by_str)
    row = tables.lookup(release["ophys_experiment_table"], "951980471")
    assert row["ophys_container_id"] == 1018028342
    with pytest.raises(UnknownIdError, match="12345") as info:
        tables.lookup(release["ophys_experiment_table"], 12345)
    assert isinstance(info.value, KeyError)
    with pytest.raises(TypeError):
        tables.normalize_id("abc")


def test_parse_list():
    assert tables.parse_list("[1, 2]") == [1, 2]
    assert tables.parse_list("['Sst-IRES-Cre']") == ["Sst-IRES-Cre"]
    assert tables.parse_list("['Camk2a-tTA', 'Slc17a7-IRES2-Cre']") == ["Camk2a-tTA", "Slc17a7-IRES2-Cre"]
    assert tables.parse_list("[]") == []
    assert np.isnan(tables.parse_list(np.nan))
    with pytest.raises(ValueError):
        tables.parse_list("__import__('os')")
