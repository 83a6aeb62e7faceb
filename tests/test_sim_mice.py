"""The synthetic cohort and metadata tables (vbo.simulate.mice) against the released tables and docs/format.md §6."""

from __future__ import annotations

import re
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from vbo.simulate.mice import (
    cells_table,
    experience_level_of,
    metadata_tables,
    plan_release,
    table_columns,
    write_metadata_csv,
)
from vbo.simulate.plan import SCALES

TABLES = ("behavior_session_table", "ophys_session_table", "ophys_experiment_table")
PROJECTS = {"VisualBehavior", "VisualBehaviorTask1B", "VisualBehaviorMultiscope", "VisualBehaviorMultiscope4areasx2d"}
STRUCTURE = {"VisualBehavior": (1, 1), "VisualBehaviorTask1B": (1, 1), "VisualBehaviorMultiscope": (2, 4),
             "VisualBehaviorMultiscope4areasx2d": (4, 2)}  # (num_targeted_structures, num_depths_per_area)
SEED = 20240611


def _plan(n_mice=4, seed=SEED, scale="tiny", **kw):
    return plan_release(np.random.default_rng(seed), n_mice, SCALES[scale], **kw)


@pytest.fixture(scope="module")
def cohort():
    """A 12-mouse cohort (all project × Cre combinations, all 8 Multiscope planes): released sessions, full
    history, tables."""
    released = _plan(12, scale="full")
    full = _plan(12, scale="full", include_unreleased=True)
    return released, full, metadata_tables(released)


@pytest.fixture(scope="module")
def written(tmp_path_factory, cohort):
    folder = tmp_path_factory.mktemp("tables")
    _, _, tables = cohort
    return {name: write_metadata_csv(tables[name], folder / f"{name}.csv") for name in TABLES}


def _read(path):
    return pd.read_csv(path, dtype={"mouse_id": str})


# --- determinism and coverage ---------------------------------------------------------------------


def test_same_seed_same_plan_and_tables():
    a, b = _plan(), _plan()
    assert a == b
    ta, tb = metadata_tables(a), metadata_tables(b)
    for name in TABLES:
        pd.testing.assert_frame_equal(ta[name], tb[name])
    assert _plan(seed=SEED + 1) != a


def test_every_project_and_cre_line_with_four_mice():
    mice = {s.mouse.mouse_id: s.mouse for s in _plan(4)}
    assert len(mice) == 4
    assert {m.project_code for m in mice.values()} == PROJECTS
    assert {m.cre_line for m in mice.values()} == {"Slc17a7-IRES2-Cre", "Sst-IRES-Cre", "Vip-IRES-Cre"}
    rigs = {m.project_code: m.equipment_name for m in mice.values()}
    assert rigs["VisualBehaviorMultiscope"] == rigs["VisualBehaviorMultiscope4areasx2d"] == "MESO.1"
    assert rigs["VisualBehavior"] in {"CAM2P.3", "CAM2P.4", "CAM2P.5"}


def test_history_shape(cohort):
    released, full, _ = cohort
    stage_rank = {f"TRAINING_{i}": i for i in range(6)} | {f"OPHYS_{i}": 6 + i for i in range(7)}
    by_mouse = {}
    for s in full:
        by_mouse.setdefault(s.mouse.mouse_id, []).append(s)
    for history in by_mouse.values():
        dates = [s.date_of_acquisition for s in history]
        assert dates == sorted(dates) and len({d.date() for d in dates}) == len(dates)
        assert all(d.tzinfo is not None and d.utcoffset().total_seconds() == 0 for d in dates)
        assert [s.session_index for s in history] == list(range(len(history)))
        ranks = [stage_rank[s.stage] for s in history]
        training = [r for r in ranks if r < 6]
        assert training == sorted(training) and ranks[: len(training)] == training  # training first, in order
        assert history[0].session_type == "TRAINING_0_gratings_autorewards_15min"
        assert sum(s.stage == "OPHYS_0" for s in history) in (1, 2)
        assert any(s.is_imaging for s in history)
        m = history[0].mouse
        for s in history:
            assert s.stage.split("_")[0] in s.session_type and s.session_type.startswith(s.stage)
            if s.stage.startswith("OPHYS"):
                assert s.equipment_name == m.equipment_name
                number = int(s.stage[-1])
                expected = m.novel_image_set if number >= 4 else m.familiar_image_set
                assert s.image_set == expected and f"_images_{expected}" in s.session_type
            else:
                assert s.equipment_name.startswith("BEH.")
            assert (s.file_id == -999) == s.is_imaging and (s.file_id == 0) == (not s.is_imaging)
            assert s.is_imaging == bool(s.experiments) == (s.ophys_session_id is not None)
            if s.is_imaging:
                assert s.stage in {f"OPHYS_{i}" for i in range(1, 7)}
    # retakes, failed imaging released as behavior-only, sessions missing from the release
    assert any(not s.released for s in full)
    assert all(s.released for s in released) and len(released) < len(full)
    assert any(s.stage != "OPHYS_0" and s.stage.startswith("OPHYS") and not s.is_imaging for s in released)
    assert any(s.session_type.startswith("TRAINING_5") and "lapsed" in s.session_type for s in full)
    assert any(s.session_type.startswith("TRAINING_5") and "epilogue" in s.session_type for s in full)


# --- ids --------------------------------------------------------------------------------------------


def test_ids_unique_and_realistic(cohort):
    released, full, _ = cohort
    bsids = [s.behavior_session_id for s in full]
    osids = [s.ophys_session_id for s in full if s.ophys_session_id is not None]
    oeids = [e.ophys_experiment_id for s in full for e in s.experiments]
    containers = {e.ophys_container_id for s in full for e in s.experiments}
    every = bsids + osids + oeids + sorted(containers)
    assert len(every) == len(set(every))
    assert all(10**8 <= i < 10**10 for i in every)
    mice = {s.mouse.mouse_id: s.mouse for s in full}
    assert all(re.fullmatch(r"\d{6}", mid) for mid in mice)
    assert len({m.isi_experiment_id for m in mice.values()}) == len(mice)


# --- imaging planes and containers ------------------------------------------------------------------


def test_planes_and_groups(cohort):
    released, _, _ = cohort
    for s in released:
        project = s.mouse.project_code
        if not s.is_imaging:
            continue
        groups = [e.imaging_plane_group for e in s.experiments]
        if project in ("VisualBehavior", "VisualBehaviorTask1B"):
            assert len(s.experiments) == 1 and groups == [None]
            assert s.experiments[0].imaging_plane_group_count == 0
            assert s.experiments[0].targeted_structure == "VISp"
        else:
            assert 1 <= len(s.experiments) <= 8 and set(groups) <= {0, 1, 2, 3}
            assert all(e.imaging_plane_group_count == len(set(groups)) for e in s.experiments)
    # per Multiscope mouse: 8 planes (containers) in 4 groups of 2, one area per group
    by_mouse = {}
    for s in released:
        for e in s.experiments:
            by_mouse.setdefault((s.mouse.project_code, s.mouse.mouse_id), {})[e.ophys_container_id] = e
    n_full_sessions = sum(len(s.experiments) == 8 for s in released)
    assert n_full_sessions > 0
    for (project, _), planes in by_mouse.items():
        if "Multiscope" not in project:
            assert len(planes) == 1
            continue
        assert len(planes) == 8
        areas = {"VisualBehaviorMultiscope": {"VISp", "VISl"},
                 "VisualBehaviorMultiscope4areasx2d": {"VISp", "VISl", "VISal", "VISam"}}[project]
        assert {e.targeted_structure for e in planes.values()} == areas
        for g in range(4):
            members = [e for e in planes.values() if e.imaging_plane_group == g]
            assert len(members) == 2 and len({e.targeted_structure for e in members}) == 1
        per_area = {a: sum(e.targeted_structure == a for e in planes.values()) for a in areas}
        assert set(per_area.values()) == {STRUCTURE[project][1]}


def test_containers_follow_one_plane(cohort):
    released, _, tables = cohort
    exp = tables["ophys_experiment_table"]
    for _, rows in exp.groupby("ophys_container_id"):
        assert rows.mouse_id.nunique() == 1 and rows.targeted_structure.nunique() == 1
        assert rows.imaging_plane_group.nunique(dropna=False) == 1
        assert rows.ophys_session_id.is_unique
        assert rows.imaging_depth.max() - rows.imaging_depth.min() <= 12
        if rows.equipment_name.iloc[0] != "MESO.1":
            assert rows.imaging_depth.nunique() == 1 and rows.imaging_depth.iloc[0] in (175, 275, 375)
    # some containers miss a session (failed QC)
    sessions_per_mouse = exp.groupby("mouse_id").ophys_session_id.nunique()
    per_container = exp.groupby(["mouse_id", "ophys_container_id"]).size()
    missing = [n < sessions_per_mouse[m] for (m, _), n in per_container.items()]
    assert any(missing)


# --- tables: columns, dtypes, text -----------------------------------------------------------------


@pytest.mark.parametrize("name", TABLES)
def test_headers_match_release(shared_data, tmp_path, cohort, name):
    real_header = (shared_data / "release-tables" / f"{name}.csv").read_text().split("\n", 1)[0]
    released, _, _ = cohort
    old = metadata_tables(released, layout="1.0")[name]
    path = write_metadata_csv(old, tmp_path / f"{name}.csv")
    assert path.read_text().split("\n", 1)[0] == real_header
    # v1.1.0 layout: the same columns plus the v1.1.0 ones, inserted before file_id
    real = real_header.split(",")
    new = list(table_columns(name, "1.1.0"))
    extra = {"behavior_session_table": ["trial_count", "go_trial_count", "catch_trial_count", "hit_trial_count",
                                        "miss_trial_count", "false_alarm_trial_count",
                                        "correct_reject_trial_count", "engaged_trial_count"],
             "ophys_experiment_table": ["published_at", "isi_experiment_id"]}.get(name, [])
    assert new == real[:-1] + extra + real[-1:] if extra else new == real
    assert list(metadata_tables(released)[name].columns) == new


@pytest.mark.parametrize("name", TABLES)
def test_dtypes_after_read_back(shared_data, written, name):
    real = _read(shared_data / "release-tables" / f"{name}.csv")
    ours = _read(written[name])
    for column in real.columns:
        assert ours[column].dtype == real[column].dtype, column
    text = pd.Series(["text"]).dtype  # this pandas version's text dtype (str from pandas 3, object before)
    extras = {"trial_count": "int64", "engaged_trial_count": "int64", "published_at": text,
              "isi_experiment_id": "int64"}
    for column, dtype in extras.items():
        if column in ours.columns:
            assert ours[column].dtype == dtype, column


@pytest.mark.parametrize("name", TABLES)
def test_csv_text_conventions(shared_data, written, name):
    real = pd.read_csv(shared_data / "release-tables" / f"{name}.csv", dtype=str, keep_default_na=False)
    ours = pd.read_csv(written[name], dtype=str, keep_default_na=False)

    def shape(value: str) -> str:
        return re.sub(r"[A-Za-z]+", "a", re.sub(r"\d+", "9", value))

    for column in ("date_of_acquisition", "driver_line", "ophys_container_id", "ophys_experiment_id",
                   "imaging_plane_group_count", "imaging_plane_group", "session_number", "passive",
                   "prior_exposures_to_image_set", "num_depths_per_area", "ophys_session_id"):
        if column in real.columns:
            assert set(ours[column].map(shape)) <= set(real[column].map(shape)), column
    assert set(ours.full_genotype) <= set(real.full_genotype)
    assert set(ours.reporter_line) <= set(real.reporter_line)
    assert set(ours.session_type) <= set(real.session_type)
    assert set(ours.equipment_name) <= set(real.equipment_name) | {
        f"BEH.{x}-Box{i}" for x in "BDFG" for i in range(1, 7)}


def test_written_tables_round_trip(written, cohort):
    _, _, tables = cohort
    for name in TABLES:
        back = _read(written[name])
        assert len(back) == len(tables[name])
        dates = pd.to_datetime(back.date_of_acquisition, utc=True, format="ISO8601")
        assert (dates.dt.tz_convert(None).to_numpy() == tables[name].date_of_acquisition.dt.tz_convert(None).to_numpy()).all()


# --- derived columns, re-derived from their definitions -----------------------------------------------


def _session_number(st):
    m = re.match(r"OPHYS_(\d+)", st)
    return int(m.group(1)) if m else None


@pytest.mark.parametrize("session_type,prior_exposures_to_image_set,level", [
    ("TRAINING_0_gratings_autorewards_15min", None, "Training"),
    ("TRAINING_5_images_A_handoff_ready", 3, "Training"),
    ("OPHYS_0_images_A_habituation", 2, "Familiar"),
    ("OPHYS_2_images_A_passive", 9, "Familiar"),
    ("OPHYS_4_images_B", 0, "Novel 1"),
    ("OPHYS_5_images_B_passive", 1, "Novel >1"),
    ("OPHYS_6_images_B", 2, "Novel >1"),
    ("OPHYS_7_receptive_field_mapping", None, "None"),
])
def test_experience_level(session_type, prior_exposures_to_image_set, level):
    """The release's experience levels: training; familiar images (ophys 0-3); novel images (ophys 4-6), first
    exposure or later; anything else the literal ``"None"``."""
    assert experience_level_of(session_type, prior_exposures_to_image_set) == level


def _expected_history(full):
    """Prior-exposure counts per behavior_session_id over the complete history (incl. unreleased)."""
    frame = pd.DataFrame({
        "bsid": [s.behavior_session_id for s in full],
        "mouse_id": [s.mouse.mouse_id for s in full],
        "session_type": [s.session_type for s in full],
        "date": [s.date_of_acquisition for s in full],
        "habituation_omissions": [s.has_omissions for s in full],
    }).sort_values("date")
    frame["letter"] = frame.session_type.str.extract(r".*images_(\w)", expand=False)
    frame["pe_type"] = frame.groupby(["mouse_id", "session_type"]).cumcount()
    frame["pe_image"] = frame.groupby(["mouse_id", "letter"]).cumcount().where(frame.letter.notna())
    lower = frame.session_type.str.lower()
    has = lower.str.contains("ophys") & ~lower.str.contains("habituation")
    has |= lower.str.contains("habituation") & frame.habituation_omissions
    frame["has"] = has.astype(int)
    frame["pe_omit"] = frame.groupby("mouse_id").has.cumsum() - frame.has
    return frame.set_index("bsid")


def test_derived_columns(cohort):
    released, full, tables = cohort
    hist = _expected_history(full)
    mice = {s.mouse.mouse_id: s.mouse for s in full}
    for name in TABLES:
        t = tables[name]
        h = hist.loc[t.behavior_session_id]
        sn = t.session_type.map(_session_number)
        assert (t.session_number.fillna(-1).astype(int).values == sn.fillna(-1).astype(int).values).all()
        bt = np.where(t.session_type.str.contains("passive") & t.session_type.str.contains("OPHYS"),
                      "passive_viewing", "active_behavior")
        assert (t.behavior_type.values == bt).all()
        if name == "ophys_experiment_table":
            assert (t.image_set == t.session_type.map(lambda st: st[15] if len(st) > 15 else "N/A")).all()
            assert (t.passive == sn.isin([2, 5])).all()
        else:
            def image_set(st):
                tok = st.split("_")
                return "images_" + tok[3] if tok[2] == "images" else {"gratings": "gratings"}[tok[2]]
            assert (t.image_set == t.session_type.map(image_set)).all()
        assert (t.prior_exposures_to_session_type.values == h.pe_type.values).all()
        assert (t.prior_exposures_to_image_set.fillna(-1).values == h.pe_image.fillna(-1).values).all()
        assert (t.prior_exposures_to_omissions.values == h.pe_omit.values).all()
        levels = [experience_level_of(st, None if pd.isna(p) else int(p))
                  for st, p in zip(t.session_type, h.pe_image)]
        assert list(t.experience_level) == levels
        ages = [(d - mice[m].date_of_birth).days for d, m in zip(t.date_of_acquisition, t.mouse_id)]
        assert list(t.age_in_days) == ages
        assert (t.cre_line == t.full_genotype.str.split(";").str[0].str.replace("/wt", "")).all()
        indicator = np.where(t.reporter_line.str.contains("GCaMP6f|GC6f"), "GCaMP6f",
                             np.where(t.reporter_line.str.contains("GCaMP6s"), "GCaMP6s", None))
        assert (t.indicator.values == indicator).all()
    assert set(tables["behavior_session_table"].experience_level) == {"Training", "Familiar", "Novel 1", "Novel >1"}

    exp, ses, beh = (tables[n] for n in ("ophys_experiment_table", "ophys_session_table", "behavior_session_table"))
    # targeted_imaging_depth = int(mean(imaging_depth)) per container
    mean_depth = exp.groupby("ophys_container_id").imaging_depth.mean().astype(int)
    assert (exp.targeted_imaging_depth.values == mean_depth.loc[exp.ophys_container_id].values).all()
    # imaging_plane_group_count = distinct groups of the session's experiments; NA for Scientifica
    groups = exp.groupby("ophys_session_id").imaging_plane_group.nunique()
    expected = groups.loc[ses.ophys_session_id].where(groups.loc[ses.ophys_session_id] > 0)
    assert (ses.imaging_plane_group_count.fillna(-1).values == expected.fillna(-1).values).all()
    # num_* by project, session lists match the experiment table
    for row in ses.itertuples():
        assert (row.num_targeted_structures, row.num_depths_per_area) == STRUCTURE[row.project_code]
        mine = exp[exp.ophys_session_id == row.ophys_session_id]
        assert row.ophys_experiment_id == sorted(mine.ophys_experiment_id)
        assert row.ophys_container_id == sorted(set(mine.ophys_container_id))
    imaging = beh.ophys_session_id.notna()
    assert set(beh.ophys_session_id[imaging].astype(int)) == set(ses.ophys_session_id)
    assert (beh.file_id[imaging] == -999).all() and (beh.file_id[~imaging] >= 0).all()
    for row in beh[imaging].itertuples():
        assert (row.num_targeted_structures, row.num_depths_per_area) == STRUCTURE[row.project_code]
    assert beh[~imaging][["num_targeted_structures", "num_depths_per_area", "imaging_plane_group_count"]].isna().all().all()
    assert beh[~imaging].ophys_experiment_id.isna().all()
    assert set(exp.ophys_experiment_id) == {e for ids in ses.ophys_experiment_id for e in ids}
    # the plan's own derived fields agree with the tables
    by_id = {s.behavior_session_id: s for s in released}
    for row in beh.itertuples():
        s = by_id[row.behavior_session_id]
        assert s.experience_level == row.experience_level
        assert s.novel_images == (row.experience_level == "Novel 1")
        assert s.passive == (_session_number(s.session_type) in (2, 5))


# --- planted behaviour -----------------------------------------------------------------------------


def _dprime(h, f):
    z = NormalDist().inv_cdf
    return z(min(max(h, 0.01), 0.99)) - z(min(max(f, 0.01), 0.99))


def test_planted_dprime_rises(cohort):
    released, _, _ = cohort
    by_stage = {}
    for s in released:
        if s.passive:
            assert s.hit_probability == 0.0 and s.false_alarm_probability == 0.0
            continue
        assert 0.0 < s.false_alarm_probability < s.hit_probability < 1.0 or s.stage == "TRAINING_0"
        key = "OPHYS_active" if s.stage in {f"OPHYS_{i}" for i in range(1, 7)} else s.stage
        by_stage.setdefault(key, []).append(_dprime(s.hit_probability, s.false_alarm_probability))
    means = {k: float(np.mean(v)) for k, v in by_stage.items()}
    order = ["TRAINING_0", "TRAINING_1", "TRAINING_2", "TRAINING_3", "TRAINING_4", "OPHYS_active"]
    assert [means[k] for k in order] == sorted(means[k] for k in order)
    assert means["TRAINING_0"] < 0.6
    assert all(1.45 <= d <= 2.55 for d in by_stage["OPHYS_active"])
    assert 1.6 <= means["TRAINING_5"] <= 2.5


# --- trial counts, cells table ---------------------------------------------------------------------


def test_trial_counts_and_cells_table(tmp_path):
    sessions = _plan()
    bsid = sessions[3].behavior_session_id
    counts = {"trial_count": 10, "go_trial_count": 7, "catch_trial_count": 3, "hit_trial_count": 5,
              "miss_trial_count": 2, "false_alarm_trial_count": 1, "correct_reject_trial_count": 2,
              "engaged_trial_count": 8}
    beh = metadata_tables(sessions, {bsid: counts})["behavior_session_table"]
    row = beh.set_index("behavior_session_id").loc[bsid]
    assert {k: int(row[k]) for k in counts} == counts
    assert (beh[beh.behavior_session_id != bsid].trial_count == 0).all()

    cells = cells_table([(1080884343, 1086496928, 775614751), (1080884344, None, 775614751),
                         (1080884345, -1, 775614752)])
    assert list(cells.columns) == ["cell_roi_id", "cell_specimen_id", "ophys_experiment_id"]
    assert cells.cell_specimen_id.isna().tolist() == [False, True, True]
    path = write_metadata_csv(cells, tmp_path / "ophys_cells_table.csv")
    assert path.read_text().splitlines() == [
        "cell_roi_id,cell_specimen_id,ophys_experiment_id",
        "1080884343,1086496928,775614751", "1080884344,,775614751", "1080884345,,775614752"]
