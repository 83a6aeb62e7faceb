"""Errors raised when opening files that are not readable Visual Behavior NWB files, and after close()."""

from __future__ import annotations

import re
import warnings
from datetime import datetime, timezone

import h5py
import numpy as np
import pandas as pd
import pytest

from vbo import BehaviorOphysExperiment, BehaviorSession
from vbo import errors as E

OPENERS = [BehaviorSession, BehaviorOphysExperiment]
OPENER_IDS = ["BehaviorSession", "BehaviorOphysExperiment"]


def _open(cls, path):
    obj = cls.from_nwb_path(path)
    obj.close()  # only reached if construction unexpectedly succeeds
    return obj


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bad_files")


@pytest.fixture(scope="module")
def text_nwb(bad_dir):
    path = bad_dir / "notes.nwb"
    path.write_text("this is a text file, not an NWB file\n" * 20)
    return path


@pytest.fixture(scope="module")
def random_nwb(bad_dir):
    path = bad_dir / "random.nwb"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


@pytest.fixture(scope="module")
def truncated_nwb(bad_dir, session_nwb):
    path = bad_dir / "truncated.nwb"
    data = session_nwb.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="module")
def plain_pynwb_nwb(bad_dir):
    pynwb = pytest.importorskip("pynwb")
    path = bad_dir / "plain_pynwb.nwb"
    nwbfile = pynwb.NWBFile(
        session_description="an ephys session, not Visual Behavior",
        identifier="not-vbo-1",
        session_start_time=datetime(2021, 1, 1, tzinfo=timezone.utc),
    )
    nwbfile.add_acquisition(
        pynwb.TimeSeries(name="signal", data=np.arange(10.0), unit="V", timestamps=np.arange(10.0))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pynwb.NWBHDF5IO(str(path), "w") as io:
            io.write(nwbfile)
    return path


@pytest.fixture(scope="module")
def bare_hdf5_nwb(bad_dir):
    path = bad_dir / "bare.nwb"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.arange(5))
        f.create_group("general").attrs["note"] = "nothing Visual Behavior here"
    return path


def _check_message(err: BaseException, path) -> None:
    assert str(path) in str(err), f"path missing from message: {err}"


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", OPENERS, ids=OPENER_IDS)
def test_missing_path(cls, tmp_path):
    path = tmp_path / "does_not_exist" / "behavior_session_1.nwb"
    with pytest.raises(E.NwbFileNotFoundError) as info:
        _open(cls, path)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, E.NwbFileError) and isinstance(info.value, E.VboError)
    _check_message(info.value, path)
    assert info.value.path == str(path)


# A file that is not one vbo reads: the error class and what its ``problem`` says went wrong.
UNREADABLE_FILES = [
    ("text_nwb", E.NotHdf5Error, "not an HDF5 file"),
    ("random_nwb", E.NotHdf5Error, "not an HDF5 file"),
    ("truncated_nwb", E.TruncatedFileError, "incomplete"),
    ("plain_pynwb_nwb", E.NotVisualBehaviorFileError, "missing /"),  # names what is missing
    ("bare_hdf5_nwb", E.NotVisualBehaviorFileError, "missing /"),
]


@pytest.mark.parametrize("cls", OPENERS, ids=OPENER_IDS)
@pytest.mark.parametrize("fixture,error,problem", UNREADABLE_FILES, ids=[row[0] for row in UNREADABLE_FILES])
def test_unreadable_file(cls, fixture, error, problem, request):
    path = request.getfixturevalue(fixture)
    with pytest.raises(error) as info:
        _open(cls, path)
    assert info.value.path == str(path) and problem in info.value.problem
    _check_message(info.value, path)


def test_behavior_file_opened_as_experiment(session_nwb):
    with pytest.raises(E.NotVisualBehaviorFileError) as info:
        _open(BehaviorOphysExperiment, session_nwb)
    _check_message(info.value, session_nwb)
    # the message names what is missing (the ophys module / optophysiology / ophys metadata)
    assert re.search(r"ophys", info.value.problem, re.IGNORECASE), info.value.problem


def test_experiment_file_opens_as_behavior_session(experiment_nwb):
    """Not an error: behavior sessions of imaging sessions are read from the experiment file (docs/format.md §6.7)."""
    with BehaviorSession.from_nwb_path(experiment_nwb) as s:
        assert s.behavior_session_id == 1091562010
        assert len(s.metadata) == 14
        assert len(s.trials) == 29


# ------------------------------------------------------------------------------------------------
# close()
# ------------------------------------------------------------------------------------------------


def test_member_after_close_raises(session_nwb):
    s = BehaviorSession.from_nwb_path(session_nwb)
    trials = s.trials
    md = s.metadata
    s.close()
    with pytest.raises(E.SessionClosedError):
        s.licks
    with pytest.raises(E.SessionClosedError):
        s.running_speed
    assert isinstance(E.SessionClosedError("x"), ValueError)
    # members read before close stay available
    pd.testing.assert_frame_equal(s.trials, trials)
    assert s.metadata == md
    s.close()  # closing twice is harmless


def test_experiment_member_after_context_exit_raises(experiment_nwb):
    with BehaviorOphysExperiment.from_nwb_path(experiment_nwb) as exp:
        dff = exp.dff_traces
        licks = exp.licks
    with pytest.raises(E.SessionClosedError):
        exp.events
    with pytest.raises(E.SessionClosedError):
        exp.eye_tracking
    assert exp.dff_traces is dff or exp.dff_traces.equals(dff)
    pd.testing.assert_frame_equal(exp.licks, licks)


def test_truncated_copy_is_really_truncated(truncated_nwb, session_nwb):
    """Guard for the fixture: the copy keeps the HDF5 signature, so only the length is wrong."""
    head = truncated_nwb.read_bytes()[:8]
    assert head == b"\x89HDF\r\n\x1a\n"
    assert truncated_nwb.stat().st_size == session_nwb.stat().st_size // 2


def test_writer_content_error_is_the_vbo_error_class():
    from vbo.nwb import write

    assert write.ContentError is E.ContentError  # one class, importable from both places
    assert issubclass(E.ContentError, E.VboError) and issubclass(E.ContentError, ValueError)
