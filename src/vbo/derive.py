"""What AllenSDK recomputes when it reads a file: presentations, eye-tracking blinks, filtered events,
and the metadata parsing rules (``docs/format.md`` §6.2–§6.6, §8.3, §8.6–§8.8).

Pure functions on arrays and frames; no file access.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from vbo.nwb.layout import FILE_STRING_NA, INT_NA, NONE_STRING
from vbo.parallel import THREAD_WORKERS

# --- metadata parsing -----------------------------------------------------------------------


def cre_line(full_genotype: str | None) -> str | None:
    """Text before the first ``;`` of the genotype with ``/wt`` removed; None without a ``;``."""
    if not full_genotype or ";" not in full_genotype:
        return None
    return full_genotype.split(";")[0].replace("/wt", "")


def indicator(reporter_line: str | None) -> str | None:
    """Calcium indicator named by the reporter line (GCaMP6f / GCaMP6s), else None."""
    if not reporter_line:
        return None
    if "GCaMP6f" in reporter_line or "GC6f" in reporter_line:
        return "GCaMP6f"
    if "GCaMP6s" in reporter_line:
        return "GCaMP6s"
    return None


def age_in_days(age: str | None) -> int | None:
    """Days from an NWB age string like ``P140D``; None when it does not start with ``P``."""
    if not age or not age.startswith("P"):
        return None
    digits = re.search(r"\d+", age)
    return int(digits.group()) if digits else None


def none_if_none_string(value):
    """The literal string ``"None"`` (how the writer stores a missing value) → None."""
    return None if value is None or value == NONE_STRING else value


def image_set(session_type: str) -> str:
    """``images_X`` or ``gratings`` from a session type (session-table rule, ``docs/format.md`` §6.6).

    Raises
    ------
    ValueError
        If the session type names neither images nor gratings.
    """
    tokens = session_type.split("_")
    kind = tokens[2] if len(tokens) > 2 else ""
    if kind == "images" and len(tokens) > 3:
        return f"images_{tokens[3]}"
    if kind == "gratings":
        return "gratings"
    raise ValueError(f"session_type {session_type!r} names no image set (expected '..._images_X...' or '..._gratings...')")


# --- stimulus presentations (docs/format.md §8.3) ----------------------------------------------

PRESENTATION_INT_COLUMNS = ("flashes_since_change", "image_index", "movie_repeat", "movie_frame_index",
                            "repeat", "stimulus_index")
PRESENTATION_FIXED_ORDER = (
    "stimulus_block", "stimulus_block_name", "image_index", "image_name", "movie_frame_index", "duration",
    "start_time", "end_time", "start_frame", "end_frame", "is_change", "is_image_novel", "omitted",
    "movie_repeat", "flashes_since_change", "trials_id", "active", "stimulus_name", "is_sham_change",
)
PRESENTATION_DROPPED = ("image_set", "index")


def object_strings(values: np.ndarray) -> pd.Series:
    """A text column as an object Series of ``str`` (the SDK's dtype on every pandas version)."""
    return pd.Series(values, dtype=object)


def presentation_frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """One stored presentation table as a frame, the string ``N/A`` read as ``""`` (step 1)."""
    data = {}
    for name, values in columns.items():
        if values.dtype == object:
            series = object_strings(values)
            data[name] = series.where(series != FILE_STRING_NA, "")
        else:
            data[name] = pd.Series(values)
    return pd.DataFrame(data)


def _recompute_is_change(image_name: pd.Series, omitted: pd.Series) -> np.ndarray:
    """Step 6: change iff the image differs from the previous non-omitted image flash."""
    shown = (omitted == False).fillna(False).to_numpy(bool)  # noqa: E712 (NA must be excluded)
    names = image_name.to_numpy(object)[shown]
    changed = np.zeros(len(names), dtype=bool)
    changed[1:] = names[1:] != names[:-1]
    is_change = np.zeros(len(image_name), dtype=bool)
    is_change[shown] = changed
    return is_change


def flashes_since_change(is_change: np.ndarray, holds: np.ndarray) -> np.ndarray:
    """Flashes since the last change, per presentation row (``docs/format.md`` §8.3).

    Parameters
    ----------
    is_change
        True on change rows (the count restarts at 0 there; the first row also restarts it).
    holds
        True on rows that repeat the previous count instead of adding one (omitted flashes).

    Returns
    -------
    numpy.ndarray
        int64 count per row. The one definition: the reader (here) and the simulator both use it.
    """
    n = len(is_change)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    resets = np.asarray(is_change, bool).copy()
    resets[0] = True
    step = np.where(np.asarray(holds, bool) | resets, 0, 1)
    total = np.cumsum(step)
    last_reset = np.maximum.accumulate(np.where(resets, np.arange(n), 0))
    return (total - total[last_reset]).astype(np.int64)


def _recompute_flashes_since_change(is_change: np.ndarray, image_name: pd.Series, omitted: pd.Series) -> np.ndarray:
    """Step 7: count flashes since the last change; omitted rows repeat the previous count."""
    holds = (omitted == True).fillna(False).to_numpy(bool) | (image_name == "omitted").fillna(False).to_numpy(bool)  # noqa: E712
    return flashes_since_change(is_change, holds)


def _derive_trial_columns(df: pd.DataFrame, trials: pd.DataFrame) -> None:
    """Step 8: ``trials_id``, ``active``, ``is_sham_change`` for files that predate them (in place)."""
    image_rows = df["image_name"].notna().to_numpy() if "image_name" in df else np.zeros(len(df), bool)
    starts = df["start_time"].to_numpy(float)
    if "trials_id" not in df:
        trial_starts = trials["start_time"].to_numpy(float)
        position = np.searchsorted(trial_starts, starts, side="right") - 1
        inside = image_rows & (position >= 0) & (starts < trials["stop_time"].to_numpy(float).max())
        df["trials_id"] = np.where(inside, trials.index.to_numpy()[np.clip(position, 0, None)], INT_NA)
    if "active" not in df:
        lo, hi = trials["start_time"].min(), trials["stop_time"].max()
        in_task = image_rows & (starts > lo) & (starts < hi)
        block = df["stimulus_block"] if "stimulus_block" in df else pd.Series(0, index=df.index)
        active_blocks = set(block[in_task])
        df["active"] = block.isin(active_blocks).to_numpy(bool)
    if "is_sham_change" not in df and "start_frame" in df:
        sham_frames = trials.loc[trials["catch"].astype(bool), "change_frame"].to_numpy()
        df["is_sham_change"] = df["start_frame"].isin(sham_frames).to_numpy(bool)


def stimulus_presentations(tables: list[pd.DataFrame], trials: pd.DataFrame | None,
                           recompute_is_change: bool = True) -> pd.DataFrame:
    """Build ``stimulus_presentations`` from the stored ``*_presentations`` tables (``docs/format.md`` §8.3).

    Parameters
    ----------
    tables
        One frame per stored table, as returned by :func:`presentation_frame`.
    trials
        The trials table, used only to derive ``trials_id``/``active``/``is_sham_change`` when absent.
    recompute_is_change
        Recompute ``is_change`` from the image sequence (AllenSDK's default) instead of using the stored one.

    Returns
    -------
    pandas.DataFrame
        Index ``stimulus_presentations_id``; columns in AllenSDK's fixed order (:data:`PRESENTATION_FIXED_ORDER`) first.
    """
    df = pd.concat(tables, ignore_index=True, sort=False) if tables else pd.DataFrame()
    for name in df.columns:
        col = df[name]
        if pd.api.types.is_integer_dtype(col.dtype) and not isinstance(col.dtype, pd.BooleanDtype):
            df[name] = col.astype(np.int64)
        elif col.dtype.kind == "f" and not name.endswith("_index"):
            present = col.dropna()
            if len(present) and present.isin([0.0, 1.0]).all():
                df[name] = col.astype("boolean")
        elif col.dtype != object and not pd.api.types.is_numeric_dtype(col.dtype) and col.dtype != bool:
            df[name] = col.astype(object)
    if "start_time" in df:
        df = df.sort_values("start_time", kind="stable").reset_index(drop=True)
    image_name = df["image_name"] if "image_name" in df else pd.Series(np.nan, index=df.index, dtype=object)
    omitted = df["omitted"] if "omitted" in df else pd.Series(pd.NA, index=df.index, dtype="boolean")
    if recompute_is_change or "is_change" not in df:
        df["is_change"] = _recompute_is_change(image_name, omitted)
    else:
        df["is_change"] = df["is_change"].fillna(False).astype(bool)
    df["flashes_since_change"] = _recompute_flashes_since_change(df["is_change"].to_numpy(), image_name, omitted)
    if trials is not None and len(trials):
        _derive_trial_columns(df, trials)
    for name in PRESENTATION_INT_COLUMNS:
        if name in df:
            df[name] = df[name].astype(object).where(df[name].notna(), INT_NA).astype(np.int64)
    df = df.rename(columns={"stop_time": "end_time"}).drop(columns=[c for c in PRESENTATION_DROPPED if c in df])
    fixed = [c for c in PRESENTATION_FIXED_ORDER if c in df]
    df = df[fixed + [c for c in df.columns if c not in fixed]]
    df.index.name = "stimulus_presentations_id"
    return df


# --- eye tracking (docs/format.md §8.7) --------------------------------------------------------

EYE_TRACKING_COLUMNS = (
    "timestamps", "cr_area", "eye_area", "pupil_area", "likely_blink", "pupil_area_raw", "cr_area_raw",
    "eye_area_raw", "cr_center_x", "cr_center_y", "cr_width", "cr_height", "cr_phi", "eye_center_x",
    "eye_center_y", "eye_width", "eye_height", "eye_phi", "pupil_center_x", "pupil_center_y", "pupil_width",
    "pupil_height", "pupil_phi",
)
BLINK_MASKED_COLUMNS = ("eye_area", "pupil_area", "cr_area", "eye_width", "eye_height", "eye_phi",
                        "pupil_width", "pupil_height", "pupil_phi")


def likely_blinks(eye_area_raw: np.ndarray, pupil_area_raw: np.ndarray, z_threshold: float = 3.0,
                  dilation_frames: int = 2) -> np.ndarray:
    """Frames that are likely blinks: NaN or outlier (|z| > ``z_threshold``) eye/pupil area, dilated.

    Parameters
    ----------
    eye_area_raw, pupil_area_raw
        Ellipse areas per eye-camera frame (px²).
    z_threshold
        Outlier threshold in population standard deviations (NaN ignored).
    dilation_frames
        Frames added on each side of every blink (binary dilation iterations).
    """
    def outliers(x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (x - np.nanmean(x)) / np.nanstd(x)
        return np.abs(z) > z_threshold

    blink = np.isnan(eye_area_raw) | np.isnan(pupil_area_raw) | outliers(eye_area_raw) | outliers(pupil_area_raw)
    for _ in range(int(dilation_frames)):  # 1-D binary dilation: grow one frame on both sides per iteration
        grown = blink.copy()
        grown[1:] |= blink[:-1]
        grown[:-1] |= blink[1:]
        blink = grown
    return blink


def eye_tracking_frame(timestamps: np.ndarray, ellipses: dict[str, dict[str, np.ndarray]],
                       z_threshold: float = 3.0, dilation_frames: int = 2) -> pd.DataFrame:
    """The 23-column ``eye_tracking`` frame from the three ellipse series.

    ``ellipses`` maps a prefix (``eye``, ``pupil``, ``cr``) to arrays ``data`` (n, 2), ``area_raw``,
    ``width``, ``height``, ``angle``.
    """
    columns: dict[str, np.ndarray] = {"timestamps": timestamps}
    for prefix, e in ellipses.items():
        columns[f"{prefix}_center_x"] = e["data"][:, 0]
        columns[f"{prefix}_center_y"] = e["data"][:, 1]
        columns[f"{prefix}_width"] = e["width"]
        columns[f"{prefix}_height"] = e["height"]
        columns[f"{prefix}_phi"] = e["angle"]
        columns[f"{prefix}_area_raw"] = e["area_raw"]
        columns[f"{prefix}_area"] = e["area_raw"].astype(float, copy=True)
    blink = likely_blinks(columns["eye_area_raw"], columns["pupil_area_raw"], z_threshold, dilation_frames)
    columns["likely_blink"] = blink
    for name in BLINK_MASKED_COLUMNS:
        columns[name] = np.where(blink, np.nan, columns[name])
    df = pd.DataFrame({name: columns[name] for name in EYE_TRACKING_COLUMNS})
    df.index.name = "frame"
    return df


def empty_eye_tracking() -> pd.DataFrame:
    """The frame returned for a file without eye tracking: no rows, the 23 float columns, index ``frame``."""
    return pd.DataFrame({name: pd.Series(dtype=float) for name in EYE_TRACKING_COLUMNS},
                        index=pd.Index([], dtype=object, name="frame"))


# --- events (docs/format.md §8.8) --------------------------------------------------------------


FILTER_BLOCK_BYTES = 4 << 20  # rows of event traces filtered together (measured best with 2 threads)
FILTER_WORKERS = THREAD_WORKERS  # threads filtering blocks of rows
SPARSE_SPREAD_LIMIT = 2  # spread events one by one while events × kernel taps ≤ this × samples (≈ 10 % density
# for 20 taps: measured crossover with the shifted sums, whose cost does not depend on density)


def filter_events(events: np.ndarray, frame_rate: float, scale_seconds: float = 2 / 31,
                  n_time_steps: int = 20) -> np.ndarray:
    """Causal half-normal smoothing of event traces (last axis = time), all traces at once (vectorised; sparse
    events are spread over the kernel, dense ones summed by shifted copies — no per-trace loop, no scipy.signal,
    whose import alone costs about a second).

    Parameters
    ----------
    events
        Event magnitudes, shape (..., frames).
    frame_rate
        Ophys frame rate in Hz (the rounded metadata value, as the SDK uses).
    scale_seconds
        Half-normal scale in seconds.
    n_time_steps
        Kernel length in frames.
    """
    scale = scale_seconds * frame_rate
    kernel = np.exp(-0.5 * (np.arange(n_time_steps) / scale) ** 2)  # half-normal pdf up to a constant
    kernel = kernel / kernel.sum()
    events = np.asarray(events, dtype=np.float64)
    n = events.shape[-1] if events.ndim else 0
    if n == 0 or events.size == 0:
        return np.zeros_like(events)
    kernel = kernel[:n]
    traces = events.reshape(-1, n)
    filtered = np.zeros(traces.shape)  # zero pages on first touch: no pass to clear the memory first
    step = max(1, FILTER_BLOCK_BYTES // (8 * n))  # rows per block: the block's output stays in the CPU cache

    def one_block(lo: int) -> None:
        block, out = traces[lo:lo + step], filtered[lo:lo + step]
        flat_index = np.flatnonzero(block != 0)  # a boolean's nonzero is several times faster than a float's
        if len(flat_index) * len(kernel) <= SPARSE_SPREAD_LIMIT * block.size:
            _spread_events(out, block.reshape(-1)[flat_index], flat_index, flat_index % n, kernel)
        else:
            _shifted_sum(out, block, kernel)

    starts = range(0, len(traces), step)
    if len(starts) > 1 and FILTER_WORKERS > 1:  # blocks are independent; numpy releases the GIL in each
        with ThreadPoolExecutor(max_workers=FILTER_WORKERS) as pool:
            list(pool.map(one_block, starts))
    else:
        for lo in starts:
            one_block(lo)
    return filtered.reshape(events.shape)


def _spread_events(out: np.ndarray, values: np.ndarray, flat_index: np.ndarray, times: np.ndarray,
                   kernel: np.ndarray) -> None:
    """Sparse events (all traces at once): add each event × kernel tap at its time + lag (no index repeats
    within one lag, so a plain fancy-index add is exact)."""
    flat = out.reshape(-1)
    n = out.shape[-1]
    for lag, weight in enumerate(kernel):
        keep = times < n - lag
        flat[flat_index[keep] + lag] += weight * values[keep]


def _shifted_sum(out: np.ndarray, traces: np.ndarray, kernel: np.ndarray) -> None:
    """Dense events: one vectorised shifted multiply-add per kernel tap."""
    n = traces.shape[-1]
    tmp = np.empty_like(traces)
    for lag, weight in enumerate(kernel):
        np.multiply(traces[:, :n - lag], weight, out=tmp[:, :n - lag])
        out[:, lag:] += tmp[:, :n - lag]
