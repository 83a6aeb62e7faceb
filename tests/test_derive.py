"""Unit tests of the read-time derivations (format.md §6.2, §6.6, §8.3, §8.6-§8.8) on small hand-made inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vbo import derive


def reference_filter(events: np.ndarray, frame_rate: float, scale_seconds: float, n_steps: int) -> np.ndarray:
    """Plain per-trace full convolution with the normalised half-normal kernel, truncated (the definition)."""
    from scipy.stats import halfnorm

    kernel = halfnorm.pdf(np.arange(n_steps), loc=0, scale=scale_seconds * frame_rate)
    kernel /= kernel.sum()
    return np.array([np.convolve(trace, kernel)[: len(trace)] for trace in events])


@pytest.mark.parametrize("density", [0.01, 0.08, 0.9])  # sparse path (two densities) and dense path
def test_filter_events_equals_the_definition(density):
    rng = np.random.default_rng(1)
    events = np.where(rng.random((7, 500)) < density, rng.random((7, 500)), 0.0)
    for rate, scale, steps in ((31.0, 2 / 31, 20), (11.0, 0.1, 10), (31.0, 2 / 31, 600)):
        np.testing.assert_allclose(derive.filter_events(events, rate, scale, steps),
                                   reference_filter(events, rate, scale, steps), rtol=1e-12, atol=1e-15)


def test_filter_events_in_threads_by_blocks_of_rows(monkeypatch):
    """Blocks of rows filtered in threads, some sparse and some dense, give the definition and one thread's answer."""
    rng = np.random.default_rng(4)
    events = np.where(rng.random((40, 300)) < 0.02, rng.random((40, 300)), 0.0)
    events[25:31] = rng.random((6, 300))  # dense rows: their blocks take the shifted-sum path
    monkeypatch.setattr(derive, "FILTER_BLOCK_BYTES", 8 * 300 * 3)  # 3 rows per block: 14 blocks
    threaded = derive.filter_events(events, 31.0)
    monkeypatch.setattr(derive, "FILTER_WORKERS", 1)
    np.testing.assert_array_equal(threaded, derive.filter_events(events, 31.0))
    np.testing.assert_allclose(threaded, reference_filter(events, 31.0, 2 / 31, 20), rtol=1e-12, atol=1e-15)


def test_likely_blinks_outliers_nan_and_dilation():
    eye = np.full(40, 100.0) + np.linspace(0, 1, 40)
    pupil = np.full(40, 10.0) + np.linspace(0, 0.1, 40)
    eye[10] = 10_000.0  # outlier
    pupil[30] = np.nan
    blink = derive.likely_blinks(eye, pupil, z_threshold=3.0, dilation_frames=2)
    assert np.flatnonzero(blink).tolist() == [8, 9, 10, 11, 12, 28, 29, 30, 31, 32]
    assert np.flatnonzero(derive.likely_blinks(eye, pupil, 3.0, 0)).tolist() == [10, 30]


def test_presentations_recompute_is_change_and_flashes_since_change():
    gray = pd.DataFrame({"start_time": [0.0], "stop_time": [5.0], "stimulus_block": [0],
                         "stimulus_name": pd.Series(["spontaneous"], dtype=object)})
    names = ["a", "a", "omitted", "a", "b", "b", "a"]
    flashes = pd.DataFrame({
        "start_time": 5.0 + np.arange(7) * 0.75, "stop_time": 5.25 + np.arange(7) * 0.75,
        "stimulus_block": [1] * 7, "image_name": pd.Series(names, dtype=object),
        "omitted": [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], "image_index": [0, 0, 8, 0, 1, 1, 0],
        "stimulus_name": pd.Series(["images"] * 7, dtype=object),
        "trials_id": [0] * 7, "active": [True] * 7, "is_sham_change": [False] * 7,
    })
    df = derive.stimulus_presentations([flashes, gray], trials=None)
    assert df.index.name == "stimulus_presentations_id"
    assert df["start_time"].is_monotonic_increasing
    assert df["is_change"].tolist() == [False, False, False, False, False, True, False, True]
    # the gray row counts (quirk Q22); the omitted flash holds the count; a change resets it
    assert df["flashes_since_change"].tolist() == [0, 1, 2, 2, 3, 0, 1, 0]
    assert str(df["omitted"].dtype) == "boolean" and df["omitted"].isna().tolist()[0]
    assert df["image_index"].tolist()[0] == -99
    assert "end_time" in df and "stop_time" not in df
    assert list(df.columns[:3]) == ["stimulus_block", "image_index", "image_name"]


def test_presentations_derive_trial_columns_for_old_files():
    flashes = pd.DataFrame({
        "start_time": [1.0, 2.0, 3.0, 9.0], "stop_time": [1.25, 2.25, 3.25, 9.25],
        "start_frame": [60, 120, 180, 540], "image_name": pd.Series(["a", "a", "b", "b"], dtype=object),
        "omitted": [0.0, 0.0, 0.0, 0.0],
    })
    trials = pd.DataFrame({"start_time": [0.5, 2.5], "stop_time": [2.4, 8.0], "catch": [False, True],
                           "change_frame": [-99, 180]}, index=pd.Index([0, 1], name="trials_id"))
    df = derive.stimulus_presentations([flashes], trials)
    assert df["trials_id"].tolist() == [0, 0, 1, -99]
    assert df["active"].tolist() == [True] * 4
    assert df["is_sham_change"].tolist() == [False, False, True, False]


@pytest.mark.parametrize("session_type, expected", [
    ("OPHYS_1_images_A", "images_A"), ("TRAINING_5_images_G_epilogue", "images_G"),
    ("TRAINING_1_gratings", "gratings"), ("TRAINING_0_gratings_autorewards_15min", "gratings"),
])
def test_image_set(session_type, expected):
    assert derive.image_set(session_type) == expected


def test_image_set_rejects_unknown():
    with pytest.raises(ValueError, match="names no image set"):
        derive.image_set("OPHYS_7_receptive_field_mapping")


def test_metadata_rules():
    assert derive.cre_line("Sst-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt") == "Sst-IRES-Cre"
    assert derive.cre_line("wt") is None
    assert derive.indicator("Ai148(TIT2L-GC6f-ICL-tTA2)") == "GCaMP6f"
    assert derive.indicator("Ai94(TITL-GCaMP6s)") == "GCaMP6s"
    assert derive.indicator("Ai93(TITL-GCaMP6f)") == "GCaMP6f"
    assert derive.indicator(None) is None
    assert derive.age_in_days("P140D") == 140
    assert derive.age_in_days("null") is None
    assert derive.none_if_none_string("None") is None
