"""Malformed NWB files: every member of a session or experiment gives the right value or a typed, named error.

Table-driven: each case copies one of the AllenSDK-written reference files, breaks one thing with h5py (or
with raw bytes), opens the copy and reads **every** member. A member must either equal what it gives on
the pristine file, or raise a ``vbo.errors`` exception naming the file; the members a case targets must
raise the expected class naming the dataset or attribute (or return the expected value for cases that
are valid encodings). A raw (non-vbo) exception or a value different from the pristine one without an
error (a wrong answer) fails the case. The outcome of every case is printed in the terminal summary.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pandas as pd
import pytest
from adversarial_report import Outcome, finish_within, record
from nwb_variants import STR, replace_dataset, set_attr, set_text_dataset

from vbo import BehaviorOphysExperiment, BehaviorSession
from vbo import errors as E
from vbo.nwb import read as nwb_read

TRIALS = "intervals/trials"
SPEED = "processing/running/speed"
CELLS = "processing/ophys/image_segmentation/cell_specimen_table"
EYE = "acquisition/EyeTracking"
SECRET = 42.0  # what the "other local file" holds; must never come back from a member

EXTRA_MEMBERS = ("running_acquisition",)
SKIPPED_MEMBERS = ("update_targeted_imaging_depth",)  # needs the Allen internal database, by design


# --- reading every member and fingerprinting its value ----------------------------------------------


def _digest(value: Any, h) -> None:
    """Feed a canonical form of ``value`` (frames, arrays, dicts, scalars) into the hash ``h``."""
    if isinstance(value, pd.DataFrame):
        h.update(b"frame" + repr((list(value.columns), value.index.name, str(value.index.dtype))).encode())
        _digest(value.index.to_numpy(), h)
        for name in value.columns:
            _digest(value[name], h)
    elif isinstance(value, pd.Series):
        h.update(b"series" + str(value.dtype).encode())
        _digest(value.to_numpy(), h)
    elif isinstance(value, pd.Index):
        _digest(value.to_numpy(), h)
    elif isinstance(value, np.ndarray) and value.dtype != object:
        h.update(repr((value.dtype.str, value.shape)).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (np.ndarray, list, tuple)):
        h.update(f"seq{len(value)}{type(value).__name__}".encode())
        for item in value:
            _digest(item, h)
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            h.update(repr(key).encode())
            _digest(value[key], h)
    elif isinstance(value, float) and math.isnan(value):
        h.update(b"nan")
    else:
        h.update(repr((type(value).__name__, value)).encode())


def fingerprint(value: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    _digest(value, h)
    return h.hexdigest()


def member_names(obj: BehaviorSession) -> list[str]:
    return [m for m in obj.list_data_attributes_and_methods() if m not in SKIPPED_MEMBERS] + list(EXTRA_MEMBERS)


def get_member(obj: BehaviorSession, name: str, cell_ids: list) -> Any:
    value = getattr(obj, name)
    if name == "get_cell_specimen_indices":
        return value(cell_ids)
    return value() if callable(value) else value


def read_every_member(cls, path: Path, cell_ids: list) -> dict[str, Any]:
    """{member: value or the exception it raised}, reading members in the SDK's alphabetical order."""
    results: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            obj = cls.from_nwb_path(path)
        except Exception as err:  # an open-level failure answers every member
            return {"<open>": err}
        with obj:
            for name in member_names(obj):
                try:
                    results[name] = get_member(obj, name, cell_ids)
                except Exception as err:
                    results[name] = err
    return results


# --- cases --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One malformed (or quirky but valid) file: how to break it and what must come back."""

    name: str
    source: str  # "session" or "experiment"
    mutate: Callable[[h5py.File, Path], None]
    errors: dict[str, tuple[type, str]] = field(default_factory=dict)  # member -> (class, text naming the spot)
    values: dict[str, Callable[[Any, Any], bool]] = field(default_factory=dict)  # member -> check(new, pristine)
    raw_bytes: Callable[[Path], None] | None = None  # edits of the closed file's bytes, after ``mutate``


def _nothing(f: h5py.File, tmp: Path) -> None:
    pass


def _edit(path: str, data, dtype=None):
    def mutate(f: h5py.File, tmp: Path) -> None:
        parent, name = path.rsplit("/", 1)
        replace_dataset(f[parent], name, data(f[path][()]) if callable(data) else data, dtype=dtype)
    return mutate


def _attr(path: str, name: str, value=None, delete: bool = False, dtype=None):
    def mutate(f: h5py.File, tmp: Path) -> None:
        if delete:
            del f[path].attrs[name]
        elif dtype is not None:
            f[path].attrs.create(name, value, dtype=dtype)
        else:
            set_attr(f[path], name, value)
    return mutate


def _delete(path: str):
    def mutate(f: h5py.File, tmp: Path) -> None:
        del f[path]
    return mutate


def _as_text(values) -> np.ndarray:
    return np.array([str(v) for v in np.asarray(values).ravel()], dtype=object)


def _secret_file(tmp: Path) -> Path:
    """Another local HDF5 file (what an external link would make vbo read instead)."""
    path = tmp / "someone_elses_file.h5"
    with h5py.File(path, "w") as g:
        g.create_dataset("secret", data=np.full(58965, SECRET))
        g.create_group("meta").attrs["equipment_name"] = "SECRET"
    return path


def _external_link(path: str, target: str):
    def mutate(f: h5py.File, tmp: Path) -> None:
        other = _secret_file(tmp)
        del f[path]
        f[path] = h5py.ExternalLink(str(other), target)
    return mutate


def _external_storage(f: h5py.File, tmp: Path) -> None:
    raw = tmp / "raw_speed.bin"
    np.full(58965, SECRET).tofile(raw)
    del f[f"{SPEED}/data"]
    f[SPEED].create_dataset("data", shape=(58965,), dtype="<f8", external=[(str(raw), 0, 58965 * 8)])


def _virtual(f: h5py.File, tmp: Path) -> None:
    other = _secret_file(tmp)
    layout = h5py.VirtualLayout(shape=(58965,), dtype="f8")
    layout[:] = h5py.VirtualSource(str(other), "secret", shape=(58965,))
    del f[f"{SPEED}/data"]
    f[SPEED].create_virtual_dataset("data", layout)


def _soft_loop(f: h5py.File, tmp: Path) -> None:
    del f[f"{SPEED}/data"]
    f[f"{SPEED}/data"] = h5py.SoftLink(f"/{SPEED}/data")


def _absurd_shape(f: h5py.File, tmp: Path) -> None:
    del f[f"{SPEED}/data"]
    f[SPEED].create_dataset("data", shape=(10**13,), dtype="f8", chunks=(1843,), compression="gzip")


def _corrupt_chunk(path: Path) -> None:
    """Overwrite the middle of the first gzip chunk of the running speed with garbage."""
    with h5py.File(path, "r") as f:
        info = f[f"{SPEED}/data"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 3)
        fh.write(b"\xff\x00\xfe\x01" * (info.size // 12))


def _ragged_index(transform):
    def mutate(f: h5py.File, tmp: Path) -> None:
        t = f[TRIALS]
        ends = t["lick_times_index"][()].astype(np.int64)
        replace_dataset(t, "lick_times_index", transform(ends, len(t["lick_times"])), dtype=np.int64)
    return mutate


def _swap_two(ends, n):
    ends = ends.copy()
    i = int(np.flatnonzero(np.diff(ends) > 0)[0])  # a trial with licks: make the index drop after it
    ends[i], ends[i + 1] = ends[i + 1], ends[i]
    return ends


def _no_licks_quirk(f: h5py.File, tmp: Path) -> None:
    """The writer's encoding of a session without licks (docs/format.md §7.6): one empty string, every end 0."""
    t = f[TRIALS]
    n = len(t["id"])
    replace_dataset(t, "lick_times", np.array([b""], dtype=object), dtype=h5py.string_dtype("ascii"))
    replace_dataset(t, "lick_times_index", np.zeros(n), dtype=t["lick_times_index"].dtype)


def _colnames(table: str, transform):
    def mutate(f: h5py.File, tmp: Path) -> None:
        names = [c.decode() if isinstance(c, bytes) else str(c) for c in f[table].attrs["colnames"]]
        f[table].attrs.create("colnames", np.array(transform(names), dtype=object), dtype=STR)
    return mutate


def _presentation_table(f: h5py.File) -> str:
    return next(f"intervals/{k}" for k in f["intervals"] if k.endswith("_presentations") and
                "image_name" in f["intervals"][k])


def _presentation_edit(column: str, transform, dtype=None):
    def mutate(f: h5py.File, tmp: Path) -> None:
        table = _presentation_table(f)
        replace_dataset(f[table], column, transform(f[table][column][()]), dtype=dtype)
    return mutate


def _lick_times_empty(new: pd.DataFrame, pristine: pd.DataFrame) -> bool:
    same = new.drop(columns="lick_times").equals(pristine.drop(columns="lick_times"))
    # empty arrays of dtype object in every trial, as AllenSDK reads the writer's one empty string
    return same and all(len(v) == 0 and v.dtype == object for v in new["lick_times"])


def _no_lick_metrics(new, pristine) -> bool:
    return isinstance(new, (dict, pd.DataFrame, np.ndarray))  # computed, not refused (passive sessions)


MALFORMED = E.MalformedDataError
MISSING = E.MissingDataError
EXTERNAL = E.ExternalDataError

SESSION_CASES = [
    # ragged index and table shape
    Case("lick_times_index decreasing", "session", _ragged_index(_swap_two),
         {"trials": (MALFORMED, "lick_times_index")}),
    Case("lick_times_index past the data", "session", _ragged_index(lambda e, n: np.where(e == e.max(), n + 5, e)),
         {"trials": (MALFORMED, "lick_times_index")}),
    Case("lick_times_index negative", "session", _ragged_index(lambda e, n: e - e[0] - 1),
         {"trials": (MALFORMED, "lick_times_index")}),
    Case("lick_times_index float", "session",
         lambda f, t: replace_dataset(f[TRIALS], "lick_times_index", f[TRIALS]["lick_times_index"][()] * 1.0,
                                      dtype="f8"),
         {"trials": (MALFORMED, "lick_times_index")}),
    Case("lick_times_index one row short", "session", _ragged_index(lambda e, n: e[:-1]),
         {"trials": (MALFORMED, "lick_times_index")}),
    Case("trials column one row short", "session", _edit(f"{TRIALS}/hit", lambda v: v[:-1]),
         {"trials": (MALFORMED, f"{TRIALS}/hit")}),
    Case("trials boolean stored as text", "session", _edit(f"{TRIALS}/hit", _as_text, STR),
         {"trials": (MALFORMED, f"{TRIALS}/hit")}),
    Case("trials times stored as text", "session", _edit(f"{TRIALS}/start_time", _as_text, STR),
         {"trials": (MALFORMED, f"{TRIALS}/start_time")}),
    Case("trials ids as floats", "session", _edit(f"{TRIALS}/id", lambda v: v + 0.5, "f8"),
         {"trials": (MALFORMED, f"{TRIALS}/id")}),
    Case("trials colnames names a missing column", "session", _colnames(TRIALS, lambda c: c + ["ghost"]),
         {"trials": (MISSING, "ghost")}),
    Case("trials colnames attribute missing", "session", _attr(TRIALS, "colnames", delete=True),
         {"trials": (MISSING, "colnames")}),
    Case("trials colnames as numbers", "session", _attr(TRIALS, "colnames", np.arange(3), dtype="i8"),
         {"trials": (MALFORMED, "colnames")}),
    Case("presentations omitted stored as text", "session", _presentation_edit("omitted", _as_text, STR),
         {"stimulus_presentations": (MALFORMED, "omitted")}),
    Case("presentations column one row short", "session", _presentation_edit("image_index", lambda v: v[:-1]),
         {"stimulus_presentations": (MALFORMED, "image_index")}),
    Case("no-lick quirk: one empty string, ends 0", "session", _no_licks_quirk,
         values={"trials": _lick_times_empty, "get_performance_metrics": _no_lick_metrics,
                 "get_rolling_performance_df": _no_lick_metrics, "get_reward_rate": _no_lick_metrics}),
    # metadata
    Case("metadata equipment_name missing", "session", _attr("general/metadata", "equipment_name", delete=True),
         {"metadata": (MISSING, "equipment_name")}),
    Case("metadata behavior_session_id text", "session",
         _attr("general/metadata", "behavior_session_id", "12x", dtype=STR),
         {"metadata": (MALFORMED, "behavior_session_id"), "behavior_session_id": (MALFORMED, "behavior_session_id")}),
    Case("session_start_time not a date", "session",
         lambda f, t: set_text_dataset(f, "/session_start_time", "yesterday at noon"),
         {"metadata": (MALFORMED, "session_start_time")}),
    Case("behavior_session_uuid not a uuid", "session",
         _attr("general/metadata", "behavior_session_uuid", "not-a-uuid", dtype=STR),
         {"metadata": (MALFORMED, "behavior_session_uuid")}),
    Case("reporter_line stored as a number", "experiment", _attr("general/subject", "reporter_line", 7, dtype="i8"),
         {"metadata": (MALFORMED, "reporter_line")}),
    Case("genotype missing", "session", _delete("general/subject/genotype"),
         {"metadata": (MISSING, "genotype")}),
    Case("genotype stored as a number", "session", _edit("general/subject/genotype", np.float64(3.5), "f8"),
         {"metadata": (MALFORMED, "genotype")}),
    Case("task response_window_sec not numbers", "session",
         _attr("general/task_parameters", "response_window_sec", np.array(["a", "b"], dtype=object), dtype=STR),
         {"task_parameters": (MALFORMED, "response_window_sec")}),
    Case("task session_type names no image set", "session",
         _attr("general/task_parameters", "session_type", "WEIRD", dtype=STR),
         {"task_parameters": (MALFORMED, "session_type")}),
    Case("behavior_session_uuid an array", "session",
         _attr("general/metadata", "behavior_session_uuid", np.arange(4), dtype="i8"),
         {"metadata": (MALFORMED, "behavior_session_uuid")}),
    Case("task response_window_sec missing", "session",
         _attr("general/task_parameters", "response_window_sec", delete=True),
         {"get_performance_metrics": (MISSING, "response_window_sec"),
          "get_reward_rate": (MISSING, "response_window_sec")},
         values={"task_parameters": lambda new, old: fingerprint(new) == fingerprint(
             {k: v for k, v in old.items() if k != "response_window_sec"})}),
    Case("task session_type missing", "session", _attr("general/task_parameters", "session_type", delete=True),
         {"task_parameters": (MISSING, "session_type")}),
    # streams
    Case("licks data shorter than timestamps", "session", _edit("processing/licking/licks/data", lambda v: v[:-3]),
         {"licks": (MALFORMED, "licks/data")}),
    Case("running speed shorter than timestamps", "session", _edit(f"{SPEED}/data", lambda v: v[:-1]),
         {"running_speed": (MALFORMED, f"{SPEED}/data")}),
    Case("autorewarded stored as text", "session", _edit("processing/rewards/autorewarded/data", _as_text, STR),
         {"rewards": (MALFORMED, "autorewarded")}),
    Case("stimulus timestamps stored as text", "session",
         _edit("processing/stimulus/timestamps/timestamps", _as_text, STR),
         {"stimulus_timestamps": (MALFORMED, "processing/stimulus/timestamps/timestamps")}),
    Case("template names fewer than images", "session",
         lambda f, t: [replace_dataset(f[f"stimulus/templates/{k}"], "control_description",
                                       f[f"stimulus/templates/{k}/control_description"][()][:-1])
                       for k in f["stimulus/templates"]],
         {"stimulus_templates": (MALFORMED, "stimulus/templates")}),
    # storage
    Case("absurd declared size", "session", _absurd_shape, {"running_speed": (MALFORMED, f"{SPEED}/data")}),
    Case("corrupt gzip chunk", "session", _nothing, {"running_speed": (E.CorruptDataError, f"{SPEED}/data")},
         raw_bytes=_corrupt_chunk),
    Case("external link to another file", "session", _external_link(f"{SPEED}/data", "/secret"),
         {"running_speed": (EXTERNAL, f"{SPEED}/data")}),
    Case("external raw storage", "session", _external_storage, {"running_speed": (EXTERNAL, f"{SPEED}/data")}),
    Case("virtual dataset", "session", _virtual, {"running_speed": (EXTERNAL, f"{SPEED}/data")}),
    Case("soft link loop", "session", _soft_loop, {"running_speed": (MALFORMED, f"{SPEED}/data")}),
    Case("external link at a required group", "session", _external_link("general/metadata", "/meta"),
         {"<open>": (EXTERNAL, "general/metadata")}),
]


def _cells(column: str, transform, dtype=None):
    return _edit(f"{CELLS}/{column}", transform, dtype)


def _first_cell_unmatched(new: pd.DataFrame, old: pd.DataFrame) -> bool:
    """The first ROI's cell_specimen_id became NaN (−1 in the file; the index turns float64, as in AllenSDK);
    every value and other id is unchanged."""
    same_values = all(fingerprint(new[c]) == fingerprint(old[c]) for c in old.columns)
    return (new.index.dtype == np.float64 and np.isnan(new.index[0]) and list(new.index[1:]) == list(old.index[1:])
            and same_values)


def _eye_rig_short(f: h5py.File, tmp: Path) -> None:
    _edit("processing/eye_tracking_rig_metadata/eye_tracking_rig_metadata/camera_position", lambda v: v[:2])(f, tmp)


EXPERIMENT_CASES = [
    Case("valid_roi stored as text", "experiment",
         _cells("valid_roi", lambda v: np.array(["False"] * len(v), dtype=object), STR),
         {m: (MALFORMED, "valid_roi") for m in ("cell_specimen_table", "dff_traces", "roi_masks")}),
    Case("cell_specimen_id stored as text", "experiment", _cells("cell_specimen_id", _as_text, STR),
         {"cell_specimen_table": (MALFORMED, "cell_specimen_id")}),
    Case("cell table column one row short", "experiment", _cells("x", lambda v: v[:-1]),
         {"cell_specimen_table": (MALFORMED, f"{CELLS}/x")}),
    Case("image_mask one ROI short", "experiment", _cells("image_mask", lambda v: v[:-1]),
         {"roi_masks": (MALFORMED, "image_mask"), "segmentation_mask_image": (MALFORMED, "image_mask")}),
    Case("rois region row out of range", "experiment",
         _edit("processing/ophys/dff/traces/rois", lambda v: v + 1),
         {"dff_traces": (MALFORMED, "dff/traces/rois")}),
    Case("dF/F ROI axis does not match rois", "experiment",
         _edit("processing/ophys/dff/traces/data", lambda v: v[:, :-1]),
         {"dff_traces": (MALFORMED, "dff/traces/data")}),
    # the open checks what names the session (/general, the root), not the data interfaces under /processing
    # (docs/format.md §13.5): a missing module, trace or cell table is named when read
    Case("stimulus module missing", "session", _delete("processing/stimulus"),
         {"stimulus_timestamps": (MISSING, "processing/stimulus")}),
    Case("dF/F interface missing", "experiment", _delete("processing/ophys/dff"),
         {"dff_traces": (MISSING, "processing/ophys/dff")}),
    Case("segmentation interface missing", "experiment", _delete("processing/ophys/image_segmentation"),
         {m: (MISSING, "image_segmentation") for m in ("cell_specimen_table", "roi_masks")}),
    Case("dF/F traces missing", "experiment", _delete("processing/ophys/dff/traces"),
         {"dff_traces": (MISSING, "dff/traces")}),
    Case("cell table missing", "experiment", _delete("processing/ophys/image_segmentation/cell_specimen_table"),
         {m: (MISSING, "cell_specimen_table") for m in ("cell_specimen_table", "roi_masks")}),
    Case("stimulus timestamps missing", "session", _delete("processing/stimulus/timestamps/timestamps"),
         {"stimulus_timestamps": (MISSING, "stimulus/timestamps/timestamps")}),
    Case("event lambdas one short", "experiment", _edit("processing/ophys/event_detection/lambdas", lambda v: v[:-1]),
         {"events": (MALFORMED, "lambdas")}),
    Case("r one short", "experiment", _edit("processing/ophys/corrected_fluorescence/r/data", lambda v: v[:-1]),
         {"corrected_fluorescence_traces": (MALFORMED, "corrected_fluorescence/r")}),
    Case("pupil area_raw shorter than timestamps", "experiment",
         _edit(f"{EYE}/pupil_tracking/area_raw", lambda v: v[:-10]),
         {"eye_tracking": (MALFORMED, "pupil_tracking/area_raw")}),
    Case("eye rig vector of two numbers", "experiment", _eye_rig_short,
         {"eye_tracking_rig_geometry": (MALFORMED, "camera_position")}),
    Case("identifier is a superscript two", "experiment", lambda f, t: set_text_dataset(f, "/identifier", "²"),
         {"ophys_experiment_id": (MALFORMED, "/identifier")}),
    Case("image resolution missing", "experiment",
         _attr("processing/ophys/images/max_projection", "resolution", delete=True),
         {"max_projection": (MISSING, "resolution")}),
    Case("motion y shorter than x", "experiment",
         _edit("processing/ophys/ophys_motion_correction_y/data", lambda v: v[:-1]),
         {"motion_correction": (MALFORMED, "ophys_motion_correction_y")}),
    Case("ophys timestamps too few", "experiment", _edit("processing/ophys/dff/traces/timestamps", lambda v: v[:-5]),
         {"ophys_timestamps": (E.InvalidDataError, "timestamps")}),
    Case("unmatched cell_specimen_id -1 (valid)", "experiment",
         _cells("cell_specimen_id", lambda v: np.where(np.arange(len(v)) == 0, -1, v)),
         values={m: _first_cell_unmatched for m in ("cell_specimen_table", "dff_traces", "roi_masks", "events",
                                                     "corrected_fluorescence_traces", "demixed_traces",
                                                     "neuropil_traces")}
         | {"get_cell_specimen_ids": lambda new, old: np.isnan(new[0]) and list(new[1:]) == list(old[1:]),
            "get_dff_traces": lambda new, old: all(np.array_equal(a, b) for a, b in zip(new, old))}),
]


SOURCES = {"session": (BehaviorSession, "session_nwb"), "experiment": (BehaviorOphysExperiment, "experiment_nwb")}


@pytest.fixture(scope="module")
def pristine(request):
    """Fingerprints of every member of the two reference files, computed once."""
    cache: dict[str, tuple[dict[str, str], list]] = {}

    def get(source: str):
        if source not in cache:
            cls, fixture = SOURCES[source]
            path = request.getfixturevalue(fixture)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with cls.from_nwb_path(path) as obj:
                    cell_ids = list(obj.cell_specimen_table.index[:2]) if source == "experiment" else []
            values = read_every_member(cls, path, cell_ids)
            bad = {k: v for k, v in values.items() if isinstance(v, Exception)}
            assert not bad, f"the pristine {source} file fails: {bad}"
            cache[source] = ({k: fingerprint(v) for k, v in values.items()}, cell_ids, values)
        return cache[source]

    return get


def _names_the_spot(err: BaseException, path: Path, spot: str) -> bool:
    text = str(err)
    return str(path) in text and spot in text


def malformed_copy(source: Path, tmp: Path, mutate, name: str = "malformed.nwb") -> Path:
    """A writable copy of ``source`` in ``tmp``, edited in place by ``mutate(h5py.File, tmp)``."""
    path = tmp / name
    shutil.copy(source, path)
    path.chmod(0o644)
    with h5py.File(path, "r+") as f:
        mutate(f, tmp)
    return path


def run_case(case: Case, pristine, tmp_path: Path, request) -> Outcome:
    cls, fixture = SOURCES[case.source]
    path = malformed_copy(request.getfixturevalue(fixture), tmp_path, case.mutate, f"{case.source}_malformed.nwb")
    if case.raw_bytes is not None:
        case.raw_bytes(path)
    prints, cell_ids, pristine_values = pristine(case.source)
    got = read_every_member(cls, path, cell_ids)
    outcome = Outcome(case.name)
    for member, value in got.items():
        expected_error = case.errors.get(member)
        if isinstance(value, E.VboError):
            if expected_error and not (isinstance(value, expected_error[0]) and
                                       _names_the_spot(value, path, expected_error[1])):
                outcome.wrong.append(f"{member}: {type(value).__name__} ({value}) instead of "
                                     f"{expected_error[0].__name__} naming {expected_error[1]!r}")
            elif str(path) not in str(value):
                outcome.wrong.append(f"{member}: {type(value).__name__} does not name the file: {value}")
            else:
                outcome.typed.append(f"{member}: {type(value).__name__}")
        elif isinstance(value, Exception):
            outcome.raw.append(f"{member}: {type(value).__name__}: {str(value)[:160]}")
        elif expected_error:
            outcome.wrong.append(f"{member}: returned a value instead of {expected_error[0].__name__}")
        elif member in case.values:
            ok = case.values[member](value, pristine_values.get(member))
            (outcome.wrong.append(f"{member}: unexpected value") if not ok else None)
            outcome.correct += bool(ok)
        elif fingerprint(value) != prints.get(member):
            outcome.wrong.append(f"{member}: differs from the pristine file's value without an error")
        else:
            outcome.correct += 1
    missing = [m for m in case.errors if m not in got]
    outcome.wrong += [f"{m}: expected {case.errors[m][0].__name__}, member never failed" for m in missing]
    return outcome


@pytest.mark.parametrize("case", SESSION_CASES + EXPERIMENT_CASES, ids=lambda c: c.name)
def test_malformed_file(case: Case, pristine, tmp_path, request):
    outcome = run_case(case, pristine, tmp_path, request)
    record("NWB files (every member of a malformed copy)", outcome)
    assert not outcome.raw, f"raw errors: {outcome.raw}"
    assert not outcome.wrong, f"wrong answers: {outcome.wrong}"
    assert outcome.typed or case.values, "the case broke nothing: no member failed"


# --- files that must be refused before anything reads them ----------------------------------------------


def _open_in_thread(path: Path, seconds: float = 20.0):
    """Open ``path`` as a session in a thread; the exception it raised (None if it opened), or a hang."""
    return finish_within(lambda: BehaviorSession.from_nwb_path(path).close(), seconds, f"opening {path} (a hang?)")


def path_builder(name: str, make: Callable[[Path], object]) -> Callable[[Path], Path]:
    """A case's file builder: given a folder ``tmp``, create ``tmp / name`` with ``make(path)`` and return it."""

    def build(tmp: Path) -> Path:
        path = tmp / name
        make(path)
        return path
    return build


_fifo = path_builder("pipe.nwb", os.mkfifo)
_device_link = path_builder("device.nwb", lambda path: path.symlink_to("/dev/zero"))
_directory = path_builder("folder.nwb", Path.mkdir)
_empty = path_builder("empty.nwb", lambda path: path.write_bytes(b""))
_signature_only = path_builder("signature_only.nwb",
                               lambda path: path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100))


OPEN_CASES = [
    ("FIFO named .nwb", _fifo, E.NotRegularFileError),
    ("symlink to a device", _device_link, E.NotRegularFileError),
    ("directory named .nwb", _directory, E.NotHdf5Error),
    ("empty file", _empty, E.NotHdf5Error),
    ("HDF5 signature then zeros", _signature_only, E.NwbFileError),
]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX special files")
@pytest.mark.parametrize("name,build,error", OPEN_CASES, ids=[c[0] for c in OPEN_CASES])
def test_refused_at_open(name, build, error, tmp_path):
    path = build(tmp_path)
    err = _open_in_thread(path)
    outcome = Outcome(name)
    if isinstance(err, error) and str(path) in str(err):
        outcome.typed.append(f"<open>: {type(err).__name__}")
    elif isinstance(err, E.VboError) or err is None:
        outcome.wrong.append(f"<open>: {type(err).__name__} ({err}) instead of {error.__name__}")
    else:
        outcome.raw.append(f"<open>: {type(err).__name__}: {err}")
    record("files refused at open", outcome)
    assert outcome.typed, outcome.raw + outcome.wrong


def test_open_checks_time_out(tmp_path, monkeypatch, session_nwb):
    """A file system that never answers gives OpenTimeoutError after VBO_OPEN_TIMEOUT seconds."""
    release = threading.Event()
    monkeypatch.setenv(nwb_read.OPEN_TIMEOUT_ENV, "0.2")
    monkeypatch.setattr(nwb_read, "_check_regular_hdf5", lambda path: release.wait(30))
    try:
        with pytest.raises(E.OpenTimeoutError, match="did not answer") as info:
            BehaviorSession.from_nwb_path(session_nwb)
        assert isinstance(info.value, TimeoutError) and str(session_nwb) in str(info.value)
    finally:
        release.set()


def test_open_nwb_does_not_follow_an_external_link(tmp_path, session_nwb):
    """``vbo.open_nwb`` decides session or experiment by looking for the ophys module; a link there is refused."""
    import vbo

    path = tmp_path / "linked.nwb"
    shutil.copy(session_nwb, path)
    path.chmod(0o644)
    with h5py.File(path, "r+") as f:
        f["processing/ophys"] = h5py.ExternalLink(str(_secret_file(tmp_path)), "/meta")
    with pytest.raises(E.ExternalDataError, match="processing/ophys") as info:
        vbo.open_nwb(path)
    assert str(path) in str(info.value) and info.value.dataset == "/processing/ophys"
