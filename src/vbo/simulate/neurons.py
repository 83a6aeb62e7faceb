"""Synthetic neurons and every ophys stream of one imaging plane, with planted ground truth.

A :class:`Container` is one field of view followed across the imaging sessions of a mouse: its cells
(``cell_specimen_id``), their ROI ellipses and their planted response properties, drawn once by
:func:`make_container`. :func:`simulate_ophys` turns one imaging plane of one session into an
:class:`~vbo.nwb.content.OphysContent`: which cells were segmented this time (plus a few unmatched ROIs),
masks and projection images, the plane's frame clock on the behavior clock, and the traces.

The model, per ROI (all in ΔF/F units unless stated):

* **drive** ``d`` — impulses at the first ophys frame after each planted response time ``τ`` (onset +
  latency), of amplitude ``A·exp(-(t_frame − τ)/tau)`` so that the filtered trace is exactly the
  continuous-time exponential sampled on the frame clock:

  - image flashes (``presentations`` rows with an image, not omitted): ``A = image_amplitude ·
    tuning[image_index] · (change_factor if is_change) · (novelty_gain on Novel 1 sessions) · v``,
    with trial-to-trial variability ``v`` (log-normal, and a response failure probability);
  - omissions: omission-ramping cells fire Poisson spikes at a rate rising linearly over the 0.75 s after
    the omitted flash onset, scaled so the expected ΔF/F at the end of the ramp is ``omission_ramp``;
  - natural movie: responsive cells with a movie preference respond to a few movie frames;
  - running: Poisson spikes at ``running_rate · speed / 10 cm/s`` (Hz) of ``spike_amplitude``;
  - spontaneous Poisson spikes everywhere (gray screens included);
  - the plane's own population state (a slow Ornstein-Uhlenbeck process drawn from the plane's seed) sets
    a shared spike rate for all its ROIs, so Multiscope planes imaged together do not move together.
* **calcium** ``c`` = ``d`` filtered by an exponential decay (per-ROI ``tau``: GCaMP6f 0.3-0.7 s,
  GCaMP6s 0.9-1.6 s) and a short exponential rise (40 / 80 ms), one IIR filter per ROI.
* ``dff = c + noise`` (AR(1) noise of per-ROI std ``noise_std``).
* ``corrected = F0 · (1 + dff)``; ``neuropil`` = a slow, population-coupled a.u. trace;
  ``demixed = corrected + r · neuropil``; ``RMSE`` = the std (a.u.) of ``corrected − F0·(1 + c)``.
* ``events`` = the drive where it reaches ``noise_std`` (nonnegative, mostly zero); ``lambda`` and
  ``noise_std`` per ROI; in a few experiments (``EVENT_SUBSET_PROBABILITY``) one ROI has no events.

Ids: see ``cell_specimen_id_block`` / ``cell_roi_id_block`` (release-unique without coordination).

Everything is vectorised over frames; the only Python loops run over ROIs (mask drawing, one exponential
filter per ROI), never over frames.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage, signal, sparse

from vbo.nwb.content import BehaviorContent, ImagingPlane, OphysContent
from vbo.simulate.plan import ExperimentPlan, MousePlan, Scale, SessionPlan

# --- constants ---------------------------------------------------------------------------------------

IMAGE_SELECTIVE = "image_selective"  # Slc17a7: one preferred image, sharp tuning
IMAGE_RESPONSIVE = "image_responsive"  # Sst: responds to most images (broad tuning)
OMISSION_RAMPING = "omission_ramping"  # Vip: ramps up after omitted flashes, running-coupled
UNRESPONSIVE = "unresponsive"  # spontaneous activity only

N_TUNING = 8  # images per image set
RESPONSE_LATENCY_S = 0.08  # flash onset → response
OMISSION_RAMP_S = 0.75  # omitted flash onset → next flash
RUNNING_REFERENCE_CM_S = 10.0
MOVIE_PREFERRED_FRAMES = 3
EVENT_THRESHOLD_NOISE = 1.0  # events = drive ≥ this × noise_std
EVENT_SUBSET_PROBABILITY = 0.03  # experiments whose event series lacks one ROI (as a few released files)

SINGLE_PLANE_RATE_HZ = 31.0  # Scientifica (CAM2P) frame rate
MESO_PLANE_RATE_HZ = 10.73  # effective per-plane rate of a Multiscope plane (4 plane groups)
MESO_PLANE_GROUPS = 4
EXCITATION_LAMBDA = 910.0
EMISSION_LAMBDA = 520.0
KEYWORDS = ("2-photon", "calcium imaging", "visual cortex", "behavior", "task")
REFERENCE_FOV = 512  # px; ROI sizes and motion are drawn for a 512-px field of view and scaled
PIXEL_SIZE_MM = 0.00078125  # at 512 px (a 400 µm field of view); smaller synthetic fields have larger pixels

# Ids are 10-digit ints built from compact keys, so that the workers (which never see each other's
# experiments) cannot collide: a container's cells take 1000 ids of its own block, an experiment's ROIs 1000
# ids of the block of (container, position of the session in the mouse's history).
# Unique while container ids span < 1e6 (specimen) / 1e5 (ROI) and a mouse has < 64 sessions.
_CELL_SPECIMEN_ID_BASE = 1_100_000_000  # + (container % 1e6)·1000 + k: below 2**31, like real ids
_CELL_ROI_ID_BASE = 3_000_000_000  # + ((container % 1e5)·64 + session_index % 64)·1000 + k
_ID_BLOCK = 1000
_SPECIMEN_BLOCKS = 1_000_000
_ROI_CONTAINER_BLOCKS = 100_000
_ROI_SESSION_SLOTS = 64

# cell-class mix and parameter ranges by cre line
_CLASS_MIX = {
    "Slc17a7": {IMAGE_SELECTIVE: 0.7, UNRESPONSIVE: 0.3},
    "Sst": {IMAGE_RESPONSIVE: 0.8, UNRESPONSIVE: 0.2},
    "Vip": {OMISSION_RAMPING: 0.8, UNRESPONSIVE: 0.2},
}
# each plane's own population activity (Multiscope planes imaged together do not move together)
POPULATION_STATE_TAU_S = 8.0
POPULATION_RATE_HZ = 0.1  # per ROI, at the mean state
POPULATION_STATE_GAIN = 1.0  # log-rate change per unit of state
SLC17A7_COUNT_SIGMA = 0.45  # log-normal spread of Slc17a7 cell counts (real: ~100 per plane, up to ~600)


def cre_family(cre_line: str) -> str:
    """``Slc17a7``, ``Sst`` or ``Vip`` for a cre line such as ``Sst-IRES-Cre`` (default Slc17a7)."""
    for family in ("Sst", "Vip", "Slc17a7"):
        if cre_line and cre_line.startswith(family):
            return family
    return "Slc17a7"


def cells_in_plane(family: str, scale: Scale, rng: np.random.Generator) -> int:
    """ROIs of one field of view: Sst and Vip planes hold few cells (uniform in the scale's interneuron
    range, real ~10-20); Slc17a7 planes many (log-normal around the geometric mean of the scale's range,
    clipped to it; ``full``: median 100, 40-250)."""
    if family in ("Sst", "Vip"):
        lo, hi = scale.interneuron_cells_per_plane
        return int(rng.integers(lo, hi + 1))
    lo, hi = scale.cells_per_plane
    median = math.sqrt(lo * hi)
    return int(np.clip(round(median * math.exp(rng.normal(0.0, SLC17A7_COUNT_SIGMA))), lo, hi))


# --- the container -----------------------------------------------------------------------------------


@dataclass
class Container:
    """One field of view followed across sessions: its cells and their planted properties.

    ``cells`` has one row per cell (index 0..n−1) with columns ``cell_specimen_id`` (int64), ROI ellipse
    ``center_y``, ``center_x``, ``radius_y``, ``radius_x`` (px), ``angle`` (rad), ``cell_class``,
    ``preferred_image`` (0..7, −1 when the class has none), ``image_amplitude`` (ΔF/F of a response to the
    preferred image), ``change_factor``, ``response_probability``, ``novelty_gain``, ``omission_ramp``
    (ΔF/F), ``running_rate`` (Hz of spikes at 10 cm/s), ``spike_amplitude`` (ΔF/F), ``spontaneous_rate``
    (Hz), ``movie_amplitude`` (ΔF/F), ``tau`` (s, decay), ``f0`` (a.u. baseline fluorescence),
    ``neuropil_ratio``, ``r``, ``noise_std`` (ΔF/F), ``brightness`` (projection gray levels) and
    ``presence`` (probability of being segmented in a session).
    ``tuning`` (n, 8): relative response to each image index of a set (1 at the preferred image);
    ``movie_frames`` (n, 3): movie frame indices a cell responds to (−1 = none).
    """

    ophys_container_id: int
    cre_line: str
    indicator: str
    field_of_view: tuple[int, int]  # rows, columns
    cells: pd.DataFrame
    tuning: np.ndarray
    movie_frames: np.ndarray

    @property
    def cell_specimen_ids(self) -> np.ndarray:
        return self.cells["cell_specimen_id"].to_numpy(np.int64)

    def __len__(self) -> int:
        return len(self.cells)


def _ids(base: int, block: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct sorted ids in ``[base + block·1000, base + (block + 1)·1000)``."""
    if n > _ID_BLOCK:
        raise ValueError(f"at most {_ID_BLOCK} ROIs per plane, asked for {n}")
    start = base + int(block) * _ID_BLOCK
    return start + np.sort(rng.choice(_ID_BLOCK, size=n, replace=False)).astype(np.int64)


def cell_specimen_id_block(container_id: int) -> int:
    return int(container_id) % _SPECIMEN_BLOCKS


def cell_roi_id_block(container_id: int, session_index: int) -> int:
    return (int(container_id) % _ROI_CONTAINER_BLOCKS) * _ROI_SESSION_SLOTS + int(session_index) % _ROI_SESSION_SLOTS


def _draw_properties(family: str, indicator: str, n: int, rng: np.random.Generator,
                     classes: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Response properties of ``n`` cells of a cre family: (columns, tuning (n, 8), movie frames (n, 3))."""
    mix = _CLASS_MIX[family]
    if classes is None:
        classes = rng.choice(list(mix), size=n, p=list(mix.values()))
    classes = np.asarray(classes, dtype=object)
    sel = classes == IMAGE_SELECTIVE
    resp = classes == IMAGE_RESPONSIVE
    ramp = classes == OMISSION_RAMPING

    preferred = rng.integers(0, N_TUNING, size=n)
    # tuning: selective → one sharp peak (maybe a weak second image); responsive → broad; ramping → weak
    tuning = np.zeros((n, N_TUNING))
    sharp = rng.uniform(0.0, 0.15, size=(n, N_TUNING))
    second = rng.integers(0, N_TUNING, size=n)
    sharp[np.arange(n), second] = np.where(rng.random(n) < 0.3, rng.uniform(0.25, 0.45, n), sharp[np.arange(n), second])
    broad = rng.uniform(0.45, 0.9, size=(n, N_TUNING))
    weak = rng.uniform(0.0, 0.6, size=(n, N_TUNING))
    tuning[sel] = sharp[sel]
    tuning[resp] = broad[resp]
    tuning[ramp] = weak[ramp]
    tuning[np.arange(n), preferred] = 1.0
    tuning[classes == UNRESPONSIVE] = 0.0
    preferred = np.where(classes == UNRESPONSIVE, -1, preferred)

    slow = indicator == "GCaMP6s"
    tau = rng.uniform(0.9, 1.6, n) if slow else rng.uniform(0.3, 0.7, n)
    image_amplitude = np.select([sel, resp, ramp], [rng.uniform(0.5, 1.2, n), rng.uniform(0.3, 0.7, n),
                                                    rng.uniform(0.05, 0.15, n)], 0.0)
    if slow:
        image_amplitude = image_amplitude * 1.5
    change_factor = np.where(classes == UNRESPONSIVE, 1.0, rng.uniform(1.6, 2.8, n))
    response_probability = np.select([sel, resp, ramp], [rng.uniform(0.6, 0.9, n), rng.uniform(0.5, 0.8, n),
                                                         rng.uniform(0.5, 0.8, n)], 0.0)
    novelty_gain = np.where(classes == UNRESPONSIVE, 1.0, rng.uniform(1.6, 2.5, n))
    omission_ramp = np.where(ramp, rng.uniform(0.3, 0.7, n), 0.0)
    running_rate = np.where(ramp, rng.uniform(0.3, 1.0, n), 0.0)  # Hz of spikes at 10 cm/s
    spike_amplitude = rng.uniform(0.15, 0.35, n)
    spontaneous_rate = rng.uniform(0.01, 0.06, n)
    has_movie = (sel | resp) & (rng.random(n) < 0.5)
    movie_amplitude = np.where(has_movie, image_amplitude * rng.uniform(0.4, 0.8, n), 0.0)
    movie_frames = np.where(has_movie[:, None], rng.integers(0, 900, size=(n, MOVIE_PREFERRED_FRAMES)), -1)

    f0 = rng.uniform(150.0, 800.0, n)
    props = pd.DataFrame({
        "cell_class": classes,
        "preferred_image": preferred.astype(np.int64),
        "image_amplitude": image_amplitude,
        "change_factor": change_factor,
        "response_probability": response_probability,
        "novelty_gain": novelty_gain,
        "omission_ramp": omission_ramp,
        "running_rate": running_rate,
        "spike_amplitude": spike_amplitude,
        "spontaneous_rate": spontaneous_rate,
        "movie_amplitude": movie_amplitude,
        "tau": tau,
        "f0": f0,
        "neuropil_ratio": rng.uniform(0.4, 0.9, n),
        "r": rng.uniform(0.55, 0.95, n),
        "noise_std": rng.uniform(0.03, 0.12, n),
        "brightness": rng.uniform(60.0, 140.0, n),
    })
    return props, tuning, movie_frames.astype(np.int64)


def _roi_size_scale(field_of_view: tuple[int, int]) -> float:
    return min(field_of_view) / REFERENCE_FOV


def _place_ellipses(n: int, field_of_view: tuple[int, int], rng: np.random.Generator,
                    existing: np.ndarray | None = None) -> pd.DataFrame:
    """``n`` ROI ellipses (8-15 px diameter at 512 px, scaled; ≥ 3 px) that barely overlap each other or
    ``existing`` (rows of centre y, centre x, mean radius), away from the motion-correction border."""
    rows, cols = field_of_view
    s = _roi_size_scale(field_of_view)
    diameter = np.maximum(rng.uniform(8.0, 15.0, n) * s, 3.0)
    radius_y = diameter / 2 * rng.uniform(0.8, 1.2, n)
    radius_x = diameter / 2 * rng.uniform(0.8, 1.2, n)
    angle = rng.uniform(0.0, np.pi, n)
    margin = max(14.0 * s, 2.0)
    placed = [] if existing is None else [tuple(e) for e in existing]
    cy = np.empty(n)
    cx = np.empty(n)
    for i in range(n):
        reach = max(radius_y[i], radius_x[i])
        lo_y, hi_y = margin + reach, rows - 1 - margin - reach
        lo_x, hi_x = margin + reach, cols - 1 - margin - reach
        if hi_y <= lo_y or hi_x <= lo_x:  # tiny field of view: use all of it
            lo_y, hi_y, lo_x, hi_x = reach, rows - 1 - reach, reach, cols - 1 - reach
        # rejection sampling in batches (vectorised over candidates); accept the least crowded at the end
        best, best_gap = None, -np.inf
        for _ in range(20):
            cand = np.column_stack([rng.uniform(lo_y, hi_y, 64), rng.uniform(lo_x, hi_x, 64)])
            if placed:
                p = np.asarray(placed)
                dist = np.hypot(cand[:, None, 0] - p[None, :, 0], cand[:, None, 1] - p[None, :, 1])
                gap = (dist - 0.9 * (p[None, :, 2] + (radius_y[i] + radius_x[i]) / 2)).min(axis=1)
            else:
                gap = np.full(len(cand), np.inf)
            k = int(np.argmax(gap))
            if gap[k] > best_gap:
                best, best_gap = cand[k], gap[k]
            if best_gap >= 0:
                break
        cy[i], cx[i] = best
        placed.append((cy[i], cx[i], (radius_y[i] + radius_x[i]) / 2))
    return pd.DataFrame({"center_y": cy, "center_x": cx, "radius_y": radius_y, "radius_x": radius_x, "angle": angle})


def make_container(container_id: int, mouse: MousePlan, experiment: ExperimentPlan, scale: Scale,
                   rng: np.random.Generator) -> Container:
    """The cells of one field of view (container): ids, ROI ellipses and planted response properties.

    Cell classes follow the cre line: Slc17a7 → mostly ``image_selective`` (a planted preferred image,
    index 0..7 of the session's image set), Sst → ``image_responsive`` (broad tuning), Vip →
    ``omission_ramping`` (ramps after omissions, running-coupled, weak image responses); the rest are
    ``unresponsive``. Every responsive cell responds ``change_factor`` times more to a change flash than to
    a repeated image, and ``novelty_gain`` times more on Novel 1 sessions.
    """
    family = cre_family(mouse.cre_line)
    n = cells_in_plane(family, scale, rng)
    field_of_view = tuple(int(v) for v in scale.field_of_view)
    geometry = _place_ellipses(n, field_of_view, rng)
    # the family's main class is always represented, so the planted effect exists even in small planes
    mix = _CLASS_MIX[family]
    classes = rng.choice(list(mix), size=n, p=list(mix.values())).astype(object)
    main = max(mix, key=mix.get)
    if not (classes == main).any():
        classes[0] = main
    props, tuning, movie_frames = _draw_properties(family, mouse.indicator, n, rng, classes=classes)
    ids = _ids(_CELL_SPECIMEN_ID_BASE, cell_specimen_id_block(container_id), n, rng)
    cells = pd.concat([pd.DataFrame({"cell_specimen_id": ids}), geometry, props], axis=1)
    cells["presence"] = rng.uniform(0.8, 1.0, n)
    return Container(int(container_id), mouse.cre_line, mouse.indicator, field_of_view, cells, tuning, movie_frames)


def container_truth(container: Container) -> dict:
    """JSON-serialisable planted properties of a container, keyed by ``cell_specimen_id`` (as str)."""
    cells = {}
    for i, row in container.cells.iterrows():
        cells[str(int(row["cell_specimen_id"]))] = _cell_truth(row, container.tuning[i], container.movie_frames[i])
    return {"ophys_container_id": container.ophys_container_id, "cre_line": container.cre_line,
            "indicator": container.indicator, "field_of_view": list(container.field_of_view), "cells": cells}


def _cell_truth(row: pd.Series, tuning: np.ndarray, movie_frames: np.ndarray) -> dict:
    return {
        "class": str(row["cell_class"]),
        "preferred_image_index": int(row["preferred_image"]),
        "tuning": [round(float(v), 6) for v in tuning],
        "image_amplitude": float(row["image_amplitude"]),
        "change_factor": float(row["change_factor"]),
        "response_probability": float(row["response_probability"]),
        "novelty_gain": float(row["novelty_gain"]),
        "omission_ramp": float(row["omission_ramp"]),
        "running_rate_hz_at_10cm_s": float(row["running_rate"]),
        "running_dff_per_cm_s": float(row["running_rate"] * row["spike_amplitude"] * row["tau"]
                                      / RUNNING_REFERENCE_CM_S),
        "spike_amplitude": float(row["spike_amplitude"]),
        "spontaneous_rate_hz": float(row["spontaneous_rate"]),
        "movie_amplitude": float(row["movie_amplitude"]),
        "movie_frames": [int(v) for v in movie_frames if v >= 0],
        "tau_s": float(row["tau"]),
        "f0": float(row["f0"]),
        "r": float(row["r"]),
        "noise_std": float(row["noise_std"]),
        "presence_probability": float(row["presence"]) if np.isfinite(row.get("presence", np.nan)) else None,
    }


# --- masks and images ----------------------------------------------------------------------------------


def _rasterise(rois: pd.DataFrame, field_of_view: tuple[int, int]) -> tuple[np.ndarray, list]:
    """Full-field bool masks (ROI, rows, columns) and, per ROI, its soft profile patch
    ``(row slice, column slice, profile)`` (1 at the centre, 0.5 at the edge, 0 outside)."""
    rows, cols = field_of_view
    n = len(rois)
    masks = np.zeros((n, rows, cols), dtype=bool)
    patches = []
    for i, (cy, cx, ry, rx, ang) in enumerate(rois[["center_y", "center_x", "radius_y", "radius_x", "angle"]]
                                              .itertuples(index=False)):
        reach = int(math.ceil(max(ry, rx))) + 1
        y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, rows)
        x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, cols)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(ang) + dy * np.sin(ang)) / rx
        v = (-dx * np.sin(ang) + dy * np.cos(ang)) / ry
        rho = u * u + v * v
        inside = rho <= 1.0
        if not inside.any():  # always at least the centre pixel
            inside[min(max(int(round(cy)) - y0, 0), y1 - y0 - 1), min(max(int(round(cx)) - x0, 0), x1 - x0 - 1)] = True
        masks[i, y0:y1, x0:x1] = inside
        patches.append((slice(y0, y1), slice(x0, x1), np.where(inside, 1.0 - 0.5 * np.minimum(rho, 1.0), 0.0)))
    return masks, patches


def _bounding_boxes(masks: np.ndarray) -> pd.DataFrame:
    """x, y (top-left, px), width, height of each mask."""
    any_row = masks.any(axis=2)  # (n, rows)
    any_col = masks.any(axis=1)  # (n, cols)
    y = any_row.argmax(axis=1)
    x = any_col.argmax(axis=1)
    height = masks.shape[1] - any_row[:, ::-1].argmax(axis=1) - y
    width = masks.shape[2] - any_col[:, ::-1].argmax(axis=1) - x
    return pd.DataFrame({"x": x.astype(np.int64), "y": y.astype(np.int64),
                         "width": width.astype(np.int64), "height": height.astype(np.int64)})


def _mask_planes(masks: np.ndarray) -> np.ndarray:
    """Stored mask-plane index: overlapping ROIs go to different planes (greedy, in ROI order)."""
    n = len(masks)
    flat = sparse.csr_matrix(masks.reshape(n, -1), dtype=np.float32)
    overlap = (flat @ flat.T).toarray() > 0
    planes = np.zeros(n, dtype=np.int64)
    for i in range(n):
        taken = set(planes[:i][overlap[i, :i]].tolist())
        p = 0
        while p in taken:
            p += 1
        planes[i] = p
    return planes


def _projections(patches: list, field_of_view: tuple[int, int], brightness: np.ndarray, activity: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(max, average) projections, uint8: a vignetted textured background, cells brighter in both."""
    rows, cols = field_of_view
    yy, xx = np.mgrid[0:rows, 0:cols]
    vignette = 1.0 - 0.25 * (((yy - rows / 2) / rows) ** 2 + ((xx - cols / 2) / cols) ** 2) * 4
    texture = ndimage.gaussian_filter(rng.standard_normal((rows, cols)), sigma=max(2.0, min(rows, cols) / 64))
    texture /= texture.std() or 1.0
    average = 58.0 * vignette + 4.0 * texture + rng.normal(0.0, 1.5, (rows, cols))
    maximum = 66.0 * vignette + 6.0 * texture + rng.normal(0.0, 4.0, (rows, cols))
    for (ys, xs, prof), b, a in zip(patches, brightness, np.clip(activity, 0.0, 2.0)):
        average[ys, xs] += 0.35 * b * prof
        maximum[ys, xs] += (1.0 + a) * b * prof

    def to_u8(im):
        return np.clip(np.round(im), 0, 255).astype(np.uint8)

    return to_u8(maximum), to_u8(average)


# --- time base -----------------------------------------------------------------------------------------


def _is_mesoscope(equipment_name: str) -> bool:
    return str(equipment_name).upper().startswith("MESO")


def frame_clock(session: SessionPlan, experiment: ExperimentPlan,
                behavior: BehaviorContent) -> tuple[np.ndarray, float]:
    """Ophys frame times of one plane on the behavior (sync) clock, and the nominal per-plane rate (Hz).

    The clock is drawn from the session id only, so every plane of a Multiscope session shares it: the
    rig's frames run at ``groups × 10.73`` Hz and plane group ``g`` takes frames ``g, g + groups, …``.
    Single-plane (CAM2P) rigs image at 31 Hz. Imaging starts a few seconds before the first stimulus frame
    and ends shortly after the last.
    """
    key = session.ophys_session_id if session.ophys_session_id is not None else session.behavior_session_id
    srng = np.random.default_rng([int(key), 31])
    stim = np.asarray(behavior.stimulus_timestamps, dtype=np.float64)
    running = np.asarray(behavior.running_timestamps, dtype=np.float64)
    first = min(stim[0] if len(stim) else 0.0, running[0] if len(running) else np.inf)
    last = max(stim[-1] if len(stim) else 0.0, running[-1] if len(running) else -np.inf)
    if len(behavior.presentations):
        last = max(last, float(pd.to_numeric(behavior.presentations["end_time"], errors="coerce").max()))
    lead = srng.uniform(2.0, 6.0)
    start = first - lead if first - lead > 0.5 else max(first - 0.5, 0.0) * srng.uniform(0.2, 1.0)
    end = last + srng.uniform(0.5, 2.0)
    if _is_mesoscope(session.equipment_name):
        groups = experiment.imaging_plane_group_count or MESO_PLANE_GROUPS
        plane_rate = MESO_PLANE_RATE_HZ + srng.uniform(-0.01, 0.01)
        group = experiment.imaging_plane_group or 0
    else:
        groups, plane_rate, group = 1, SINGLE_PLANE_RATE_HZ * (1.0 + srng.normal(0.0, 2e-6)), 0
    rig_rate = plane_rate * groups
    n = int(np.floor((end - start) * rig_rate)) + 1
    times = start + np.arange(n) / rig_rate + srng.normal(0.0, 2e-6, n)
    return times[group::groups].copy(), plane_rate


# --- presentations -----------------------------------------------------------------------------------


def _bool_column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.zeros(len(frame), dtype=bool)
    col = frame[name]
    if col.dtype == object:
        col = col.map(lambda v: bool(v) if v is not None and v is not pd.NA and v == v else False)
    return col.fillna(False).to_numpy(dtype=bool)


def _stimulus_events(presentations: pd.DataFrame) -> dict:
    """Onsets of image flashes (with image index and change flag), omissions and movie frames."""
    p = presentations
    start = pd.to_numeric(p["start_time"], errors="coerce").to_numpy(np.float64)
    omitted = _bool_column(p, "omitted")
    names = p["image_name"] if "image_name" in p else pd.Series([None] * len(p), index=p.index)
    has_name = names.notna().to_numpy() & (names.astype(str) != "omitted").to_numpy()
    omitted = omitted | (names.astype(str) == "omitted").to_numpy()
    image = has_name & ~omitted & np.isfinite(start)
    if "image_index" in p:
        index = pd.to_numeric(p["image_index"], errors="coerce").fillna(-1).to_numpy(np.int64)
    else:
        index = np.full(len(p), -1, dtype=np.int64)
    if image.any() and (index[image] < 0).any():  # no usable image_index: order image names
        codes, _ = pd.factorize(names[image].astype(str), sort=True)
        index[image] = codes
    index = np.where(image, index % N_TUNING, -1)
    name_of = {}
    for i, name in zip(index[image], names[image].astype(str)):
        name_of.setdefault(int(i), name)
    if "movie_frame_index" in p:
        movie_frame = pd.to_numeric(p["movie_frame_index"], errors="coerce").fillna(-1).to_numpy(np.int64)
    else:
        movie_frame = np.full(len(p), -1, dtype=np.int64)
    movie = (movie_frame >= 0) & ~image & np.isfinite(start)
    return {
        "image_time": start[image], "image_index": index[image], "image_change": _bool_column(p, "is_change")[image],
        "omission_time": start[omitted & np.isfinite(start)],
        "movie_time": start[movie], "movie_frame": movie_frame[movie],
        "image_names": name_of,
    }


# --- traces --------------------------------------------------------------------------------------------


def _impulses(times: np.ndarray, amplitudes: np.ndarray, frame_times: np.ndarray, tau: np.ndarray,
              n_frames: int) -> np.ndarray:
    """Drive (frames × ROIs) of impulses ``amplitudes`` (ROIs × events) at ``times``, sampled exactly: each
    lands on the first frame after its time, attenuated by the exponential decay over the sub-frame delay."""
    k = np.searchsorted(frame_times, times, side="left")
    ok = (k < len(frame_times)) & (times >= frame_times[0] - 1.0)
    k, times, amplitudes = k[ok], times[ok], amplitudes[:, ok]
    delay = frame_times[k] - times  # ≥ 0
    attenuated = amplitudes * np.exp(-delay[None, :] / tau[:, None])
    placement = sparse.csr_matrix((np.ones(len(k)), (k, np.arange(len(k)))), shape=(n_frames, len(k)))
    return np.asarray(placement @ attenuated.T)


def _variability(shape: tuple[int, int], probability: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Trial-to-trial response multiplier: log-normal (mean 1) times a Bernoulli response."""
    sigma = 0.35
    v = rng.lognormal(-sigma * sigma / 2, sigma, size=shape)
    return v * (rng.random(shape) < probability[:, None])


def _simulate_drive(props: pd.DataFrame, tuning: np.ndarray, movie_frames: np.ndarray, events: dict,
                    frame_times: np.ndarray, speed: np.ndarray, novel: bool,
                    rng: np.random.Generator) -> np.ndarray:
    """Planted input (frames × ROIs, ΔF/F impulses) of every ROI."""
    n_frames, n = len(frame_times), len(props)
    tau = props["tau"].to_numpy()
    dt = float(np.median(np.diff(frame_times))) if n_frames > 1 else 1 / SINGLE_PLANE_RATE_HZ
    prob = props["response_probability"].to_numpy()
    gain = props["novelty_gain"].to_numpy() if novel else np.ones(n)

    # image flashes
    idx, change = events["image_index"], events["image_change"]
    amp = (props["image_amplitude"].to_numpy()[:, None] * tuning[:, idx] * gain[:, None]
           * np.where(change[None, :], props["change_factor"].to_numpy()[:, None], 1.0))
    amp = amp * _variability(amp.shape, prob, rng)
    drive = _impulses(events["image_time"] + RESPONSE_LATENCY_S, amp, frame_times, tau, n_frames)

    # natural movie frames
    if len(events["movie_time"]) and (movie_frames >= 0).any():
        hit = (events["movie_frame"][None, :, None] == movie_frames[:, None, :]).any(axis=2)
        amp = props["movie_amplitude"].to_numpy()[:, None] * hit
        amp = amp * _variability(amp.shape, np.maximum(prob, 0.5), rng)
        drive += _impulses(events["movie_time"] + RESPONSE_LATENCY_S, amp, frame_times, tau, n_frames)

    # omission ramps: Poisson spikes whose rate rises linearly over OMISSION_RAMP_S after the omitted flash
    # onset, scaled so the expected ΔF/F at the end of the ramp is `omission_ramp`
    ramp = props["omission_ramp"].to_numpy()
    spike = props["spike_amplitude"].to_numpy()
    if len(events["omission_time"]) and (ramp > 0).any():
        steps = np.arange(0.0, OMISSION_RAMP_S, dt)
        times = (events["omission_time"][:, None] + steps[None, :]).ravel()
        fraction = np.tile((steps + dt) / OMISSION_RAMP_S, len(events["omission_time"]))
        d = OMISSION_RAMP_S
        norm = 1.0 / (1.0 - (tau / d) * (1.0 - np.exp(-d / tau)))  # expected c(d) = ramp
        expected = (ramp * norm * dt / tau)[:, None] * fraction[None, :]  # ΔF/F input per frame
        amp = rng.poisson(expected / spike[:, None]) * spike[:, None]
        drive += _impulses(times, amp, frame_times, tau, n_frames)

    # running-coupled spikes (Poisson, rate ∝ speed) for the coupled ROIs only
    rate = props["running_rate"].to_numpy()
    coupled = np.flatnonzero(rate > 0)
    if len(coupled):
        lam = np.clip(speed, 0.0, None)[:, None] / RUNNING_REFERENCE_CM_S * rate[coupled][None, :] * dt
        spikes = rng.poisson(lam).astype(np.float64)
        drive[:, coupled] += spikes * spike[coupled][None, :]

    # spontaneous spikes everywhere
    counts = rng.poisson(props["spontaneous_rate"].to_numpy() * n_frames * dt)
    cols = np.repeat(np.arange(n), counts)
    frames = rng.integers(0, n_frames, size=len(cols))
    sizes = spike[cols] * rng.lognormal(0.0, 0.4, len(cols)) * 1.5
    np.add.at(drive, (frames, cols), sizes)
    return drive


def population_state(frame_times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """This plane's own slow population state (unit-variance Ornstein-Uhlenbeck process, time constant
    ``POPULATION_STATE_TAU_S``), drawn from the plane's own seed: planes imaged together do not share it."""
    n = len(frame_times)
    if n < 2:
        return np.zeros(n)
    dt = float(np.median(np.diff(frame_times)))
    state = _ar_noise((n, 1), math.exp(-dt / POPULATION_STATE_TAU_S), rng)[:, 0]
    # fluctuations around the plane's mean rate: zero mean, unit variance over the session
    state -= state.mean()
    state /= max(float(state.std()), 1e-12)
    return state


def _population_drive(props: pd.DataFrame, frame_times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Spikes of every ROI at a rate following the plane's population state (frames × ROIs, ΔF/F impulses):
    ``rate = POPULATION_RATE_HZ · coupling · exp(POPULATION_STATE_GAIN · state)``; a cell's coupling is its
    spontaneous rate relative to the plane's mean (a property of the cell, the same in every session)."""
    spike_amplitude = props["spike_amplitude"].to_numpy()
    n_frames, n = len(frame_times), len(spike_amplitude)
    if n_frames < 2 or n == 0:
        return np.zeros((n_frames, n))
    dt = float(np.median(np.diff(frame_times)))
    rate = POPULATION_RATE_HZ * np.exp(POPULATION_STATE_GAIN * population_state(frame_times, rng))
    spontaneous = props["spontaneous_rate"].to_numpy()
    coupling = spontaneous / max(float(spontaneous.mean()), 1e-12)
    spikes = rng.poisson(rate[:, None] * dt * coupling[None, :]).astype(np.float64)
    spikes *= spike_amplitude[None, :]
    return spikes


def _calcium(drive: np.ndarray, frame_times: np.ndarray, tau: np.ndarray, rise_s: float) -> np.ndarray:
    """Drive filtered by an exponential decay (per-ROI ``tau``) and a short exponential rise (unit gain):
    one second-order IIR filter per ROI column."""
    dt = float(np.median(np.diff(frame_times))) if len(frame_times) > 1 else 1 / SINGLE_PLANE_RATE_HZ
    gr = math.exp(-dt / rise_s)
    out = np.empty_like(drive)
    for j, t in enumerate(tau):
        g = math.exp(-dt / t)
        out[:, j] = signal.lfilter([1.0 - gr], [1.0, -(g + gr), g * gr], drive[:, j])
    return out


def _to_float32_precision(values: np.ndarray) -> None:
    """Round float64 traces in place to float32 precision: the released traces are float32 values stored as
    float64 (the pipeline computes in float32), which is also why they compress about twice as well."""
    values[...] = values.astype(np.float32)


def _ar_noise(shape: tuple[int, int], rho: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance AR(1) noise along frames."""
    white = rng.standard_normal(shape)
    return signal.lfilter([math.sqrt(1.0 - rho * rho)], [1.0, -rho], white, axis=0)


def _motion(n_frames: int, field_of_view: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rigid motion-correction offsets (px, int): slow drift plus small jitter, within ±12 px at 512 px."""
    s = _roi_size_scale(field_of_view)
    limit = max(int(round(12 * s)), 1)
    out = []
    for amplitude in (7.0 * s, 4.0 * s):
        walk = _ar_noise((n_frames, 1), 0.995, rng)[:, 0] * amplitude + rng.normal(0.0, 0.6 * max(s, 0.3), n_frames)
        out.append(np.clip(np.round(walk), -limit, limit).astype(np.int64))
    return out[0], out[1]


# --- one imaging plane -------------------------------------------------------------------------------


def simulate_ophys(session: SessionPlan, experiment: ExperimentPlan, container: Container,
                   behavior: BehaviorContent, scale: Scale, rng: np.random.Generator) -> tuple[OphysContent, dict]:
    """Every ophys stream of one imaging plane of one session, and the planted truth (JSON-serialisable).

    Most container cells are segmented (each with its ``presence`` probability; at least half), a few
    unmatched ROIs (``cell_specimen_id`` −1) are added, and every ROI gets a new ``cell_roi_id``. Responses
    are driven by ``behavior.presentations`` (image flashes, changes, omissions, movie frames) and
    ``behavior.running_speed``; see the module docstring for the model.
    """
    field_of_view = container.field_of_view
    novel = bool(session.novel_images)
    segmented = _segment(session, container, rng)
    masks, patches = _rasterise(segmented.rois, field_of_view)
    frame_times, plane_rate = frame_clock(session, experiment, behavior)
    events_in = _stimulus_events(behavior.presentations)
    traces = _plane_traces(segmented, container.indicator, events_in, frame_times,
                           _running_at(frame_times, behavior), novel, rng)
    motion_x, motion_y = _motion(len(frame_times), field_of_view, rng)
    rois = _roi_table(segmented, masks, _max_corrections(motion_x, motion_y))
    max_projection, average_projection = _projections(patches, field_of_view,
                                                      segmented.rois["brightness"].to_numpy(), traces.peak, rng)
    behavior_out = _experiment_behavior(behavior, session, experiment, field_of_view)
    plane = _imaging_plane(experiment, container, plane_rate)
    for trace in (traces.dff, traces.corrected, traces.neuropil, traces.demixed, traces.events):
        _to_float32_precision(trace)
    rows_fov, cols_fov = field_of_view
    content = OphysContent(
        behavior=behavior_out, imaging_plane=plane, rois=rois, roi_masks=masks, ophys_timestamps=frame_times,
        dff=traces.dff, corrected_fluorescence=traces.corrected, neuropil=traces.neuropil, demixed=traces.demixed,
        r=traces.r.copy(), rmse=traces.rmse, events=traces.events,
        event_lambdas=traces.lambdas[traces.event_rows], event_noise_stds=traces.noise_std[traces.event_rows],
        event_rows=traces.event_rows, motion_x=motion_x, motion_y=motion_y,
        max_projection=max_projection, average_projection=average_projection,
        segmentation_mask=masks.any(axis=0).astype(np.int64),
        pixel_size_mm=PIXEL_SIZE_MM * REFERENCE_FOV / max(rows_fov, cols_fov))
    truth = _plane_truth(session, experiment, behavior_out.metadata, frame_times, plane_rate, plane.imaging_rate,
                         segmented, traces, events_in["image_names"], novel)
    return content, truth


@dataclass
class _Segmented:
    """The ROIs of one plane in ``cell_roi_id`` order, with each ROI's tuning and movie-frame preferences."""

    cells: pd.DataFrame  # the container's cells
    present: np.ndarray  # bool per container cell: segmented in this session
    matched: pd.DataFrame  # the segmented container cells (before ROI-id order)
    rois: pd.DataFrame  # matched + unmatched ROIs, in cell_roi_id order
    tuning: np.ndarray
    movie_frames: np.ndarray
    roi_ids: np.ndarray


@dataclass
class _Traces:
    """One plane's traces (frames × ROIs) and the per-ROI numbers they were made with."""

    dff: np.ndarray
    corrected: np.ndarray
    neuropil: np.ndarray
    demixed: np.ndarray
    events: np.ndarray  # the ROIs of ``event_rows`` only
    event_rows: np.ndarray
    r: np.ndarray
    rmse: np.ndarray
    noise_std: np.ndarray
    threshold: np.ndarray
    lambdas: np.ndarray
    peak: np.ndarray  # peak calcium per ROI, for the max projection
    rise_s: float


def _segment(session: SessionPlan, container: Container, rng: np.random.Generator) -> _Segmented:
    """Which container cells this session segments (re-segmented slightly differently), plus a few unmatched
    ROIs, ordered by their new ``cell_roi_id``."""
    field_of_view = container.field_of_view
    rows_fov, cols_fov = field_of_view
    cells = container.cells
    present = rng.random(len(cells)) < cells["presence"].to_numpy()
    if present.sum() < max(1, len(cells) // 2):
        present[rng.choice(len(cells), size=max(1, len(cells) // 2), replace=False)] = True
    keep = np.flatnonzero(present)
    matched = cells.iloc[keep].reset_index(drop=True)
    tuning = container.tuning[keep]
    movie_frames = container.movie_frames[keep]
    # the same cell is re-segmented slightly differently: sub-pixel centre jitter, a few % size change
    s = _roi_size_scale(field_of_view)
    jitter = 0.6 * max(s, 0.25)
    matched["center_y"] = np.clip(matched["center_y"] + rng.normal(0.0, jitter, len(matched)), 0, rows_fov - 1)
    matched["center_x"] = np.clip(matched["center_x"] + rng.normal(0.0, jitter, len(matched)), 0, cols_fov - 1)
    matched["radius_y"] *= rng.uniform(0.93, 1.07, len(matched))
    matched["radius_x"] *= rng.uniform(0.93, 1.07, len(matched))

    n_unmatched = int(rng.integers(1, max(1, round(0.06 * len(cells))) + 1))
    existing = np.column_stack([cells["center_y"], cells["center_x"], (cells["radius_y"] + cells["radius_x"]) / 2])
    geometry = _place_ellipses(n_unmatched, field_of_view, rng, existing=existing)
    props, tun_u, movie_u = _draw_properties(cre_family(container.cre_line), container.indicator, n_unmatched, rng)
    unmatched = pd.concat([geometry, props], axis=1)
    unmatched["cell_specimen_id"] = -1
    unmatched["presence"] = np.nan

    rois = pd.concat([matched, unmatched], ignore_index=True)
    tuning = np.vstack([tuning, tun_u])
    movie_frames = np.vstack([movie_frames, movie_u])
    n_rois = len(rois)
    roi_ids = _ids(_CELL_ROI_ID_BASE, cell_roi_id_block(container.ophys_container_id, session.session_index),
                   n_rois, rng)
    order = rng.permutation(n_rois)  # ROI ids are assigned regardless of matching; rows sorted by ROI id
    rois = rois.iloc[order].reset_index(drop=True)
    rois["cell_roi_id"] = roi_ids
    return _Segmented(cells, present, matched, rois, tuning[order], movie_frames[order], roi_ids)


def _running_at(frame_times: np.ndarray, behavior: BehaviorContent) -> np.ndarray:
    """Running speed (cm/s) at each imaging frame; zeros without a running stream."""
    run_t = np.asarray(behavior.running_timestamps, dtype=np.float64)
    run_v = np.asarray(behavior.running_speed, dtype=np.float64)
    if len(run_t) and len(run_t) == len(run_v):
        finite = np.isfinite(run_v)
        if finite.any():
            return np.interp(frame_times, run_t[finite], run_v[finite])
    return np.zeros(len(frame_times))


def _plane_traces(segmented: _Segmented, indicator: str, events_in: dict, frame_times: np.ndarray,
                  speed: np.ndarray, novel: bool, rng: np.random.Generator) -> _Traces:
    """dF/F, corrected, neuropil and demixed traces and events of every ROI (the module docstring's model)."""
    rois_all = segmented.rois
    n_frames, n_rois = len(frame_times), len(rois_all)
    drive = _simulate_drive(rois_all, segmented.tuning, segmented.movie_frames, events_in, frame_times, speed, novel,
                            rng)
    drive += _population_drive(rois_all, frame_times, rng)
    tau = rois_all["tau"].to_numpy()
    rise = 0.08 if indicator == "GCaMP6s" else 0.04
    calcium = _calcium(drive, frame_times, tau, rise)

    peak = calcium.max(axis=0) if n_frames else np.zeros(n_rois)  # for the max projection
    population = calcium.mean(axis=1, keepdims=True)  # local population activity, seen in the neuropil
    noise_std = rois_all["noise_std"].to_numpy()
    dt = float(np.median(np.diff(frame_times)))
    noise = _ar_noise((n_frames, n_rois), math.exp(-dt / 0.03), rng)
    noise *= noise_std[None, :]
    f0 = rois_all["f0"].to_numpy()
    rmse = f0 * noise.std(axis=0)  # residual (a.u.) of corrected around the noiseless F0·(1 + c)
    dff = noise
    dff += calcium
    del noise, calcium
    corrected = dff + 1.0
    corrected *= f0[None, :]
    # neuropil: slow drift shared by the plane + local population activity + its own noise
    shared = 1.0 + 0.04 * _ar_noise((n_frames, 1), math.exp(-dt / 20.0), rng) + 0.5 * population
    neuropil = _ar_noise((n_frames, n_rois), 0.5, rng)
    neuropil *= 0.02
    neuropil += shared
    neuropil *= (rois_all["neuropil_ratio"].to_numpy() * f0)[None, :]
    r = rois_all["r"].to_numpy()
    demixed = neuropil * r[None, :]
    demixed += corrected

    # events: the planted drive where it clears the detection threshold
    threshold = EVENT_THRESHOLD_NOISE * noise_std
    events = drive
    events[events < threshold[None, :]] = 0.0
    del drive
    lambdas = np.clip(noise_std * rng.uniform(0.2, 1.3, n_rois), 0.0, 0.15)
    event_rows = np.arange(n_rois, dtype=np.int64)
    if rng.random() < EVENT_SUBSET_PROBABILITY and n_rois > 3:
        event_rows = np.delete(event_rows, rng.integers(n_rois))
        events = np.ascontiguousarray(events[:, event_rows])
    return _Traces(dff, corrected, neuropil, demixed, events, event_rows, r, rmse, noise_std, threshold, lambdas, peak,
                   rise)


def _max_corrections(motion_x: np.ndarray, motion_y: np.ndarray) -> dict[str, float]:
    """The ROI table's ``max_correction_*`` columns (px) from the motion-correction offsets."""
    return {
        "max_correction_down": float(max(0, -motion_y.min())),
        "max_correction_left": float(max(0, -motion_x.min())),
        "max_correction_right": float(max(0, motion_x.max())),
        "max_correction_up": float(max(0, motion_y.max())),
    }


def _roi_table(segmented: _Segmented, masks: np.ndarray, max_corr: dict[str, float]) -> pd.DataFrame:
    """The stored ROI table (``cell_specimen_table`` columns) in ``cell_roi_id`` order."""
    boxes = _bounding_boxes(masks)
    n_rois = len(segmented.rois)
    return pd.DataFrame({
        "cell_roi_id": segmented.roi_ids.astype(np.int64),
        "cell_specimen_id": segmented.rois["cell_specimen_id"].to_numpy(np.int64),
        "height": boxes["height"].to_numpy(),
        "mask_image_plane": _mask_planes(masks),
        **{k: np.full(n_rois, v) for k, v in max_corr.items()},
        "valid_roi": np.ones(n_rois, dtype=bool),
        "width": boxes["width"].to_numpy(),
        "x": boxes["x"].to_numpy(),
        "y": boxes["y"].to_numpy(),
    })


def _experiment_behavior(behavior: BehaviorContent, session: SessionPlan, experiment: ExperimentPlan,
                         field_of_view: tuple[int, int]) -> BehaviorContent:
    """The session's behavior content as this plane's file holds it: the imaging-plane metadata added."""
    rows_fov, cols_fov = field_of_view
    group = experiment.imaging_plane_group
    metadata = dict(behavior.metadata)
    metadata.update({
        "field_of_view_height": int(rows_fov),
        "field_of_view_width": int(cols_fov),
        "imaging_plane_group": int(group) if group is not None else -1,
        "imaging_plane_group_count": int(experiment.imaging_plane_group_count) if group is not None else 0,
        "targeted_imaging_depth": int(experiment.targeted_imaging_depth),
        "ophys_session_id": int(session.ophys_session_id) if session.ophys_session_id is not None else -1,
        "imaging_depth": int(experiment.imaging_depth),
        "ophys_container_id": int(experiment.ophys_container_id),
        "ophys_experiment_id": int(experiment.ophys_experiment_id),
    })
    return dataclasses.replace(
        behavior, metadata=metadata, subject=dict(behavior.subject), task_parameters=dict(behavior.task_parameters),
        identifier=str(experiment.ophys_experiment_id), keywords=KEYWORDS)


def _imaging_plane(experiment: ExperimentPlan, container: Container, plane_rate: float) -> ImagingPlane:
    rows_fov, cols_fov = container.field_of_view
    return ImagingPlane(
        description=f"({cols_fov}, {rows_fov}) field of view in {experiment.targeted_structure} "
                    f"at depth {experiment.imaging_depth} um",
        excitation_lambda=EXCITATION_LAMBDA, emission_lambda=EMISSION_LAMBDA, imaging_rate=float(round(plane_rate)),
        indicator=container.indicator, location=experiment.targeted_structure)


def _roi_truth(segmented: _Segmented, traces: _Traces, image_names: dict, novel: bool) -> dict[str, dict]:
    """Planted properties of every ROI, keyed by ``cell_roi_id`` text."""
    roi_truth = {}
    roi_ids = segmented.roi_ids
    for i, row in segmented.rois.iterrows():
        entry = _cell_truth(row, segmented.tuning[i], segmented.movie_frames[i])
        pref = int(row["preferred_image"])
        entry.update({
            "cell_roi_id": int(roi_ids[i]),
            "cell_specimen_id": int(row["cell_specimen_id"]) if row["cell_specimen_id"] != -1 else None,
            "preferred_image_name": image_names.get(pref) if pref >= 0 else None,
            "novelty_gain_applied": novel and row["cell_class"] != UNRESPONSIVE,
            "event_threshold": float(traces.threshold[i]),
            "event_lambda": float(traces.lambdas[i]),
        })
        roi_truth[str(int(roi_ids[i]))] = entry
    return roi_truth


def _plane_truth(session: SessionPlan, experiment: ExperimentPlan, metadata: dict, frame_times: np.ndarray,
                 plane_rate: float, imaging_rate: float, segmented: _Segmented, traces: _Traces, image_names: dict,
                 novel: bool) -> dict:
    """The plane's planted truth (JSON-serialisable): clock, model, which cells are present, every ROI."""
    roi_truth = _roi_truth(segmented, traces, image_names, novel)
    roi_ids, rois_all, n_frames = segmented.roi_ids, segmented.rois, len(frame_times)
    cells_truth = {str(v["cell_specimen_id"]): k for k, v in roi_truth.items() if v["cell_specimen_id"] is not None}
    return {
        "ophys_experiment_id": int(experiment.ophys_experiment_id),
        "ophys_container_id": int(experiment.ophys_container_id),
        "ophys_session_id": metadata["ophys_session_id"],
        "equipment_name": session.equipment_name,
        "mesoscope": _is_mesoscope(session.equipment_name),
        "imaging_plane_group": metadata["imaging_plane_group"],
        "frame_rate_hz": float(1.0 / np.mean(np.diff(frame_times))) if n_frames > 1 else plane_rate,
        "nominal_plane_rate_hz": float(plane_rate),
        "imaging_rate": imaging_rate,
        "n_frames": int(n_frames),
        "novel_images": novel,
        "session_type": session.session_type,
        "kernel": {"shape": "exponential decay after an exponential rise", "rise_s": traces.rise_s,
                   "response_latency_s": RESPONSE_LATENCY_S, "omission_ramp_s": OMISSION_RAMP_S},
        "population_state": {"model": "this plane's own Ornstein-Uhlenbeck state drives spikes of every ROI at "
                                      "rate_hz * coupling * exp(gain * state); coupling = the cell's "
                                      "spontaneous rate / the plane's mean",
                             "tau_s": POPULATION_STATE_TAU_S, "rate_hz": POPULATION_RATE_HZ,
                             "gain": POPULATION_STATE_GAIN},
        "trace_model": "dff = calcium + noise; corrected = f0*(1+dff); demixed = corrected + r*neuropil; "
                       "events = drive where drive >= event_threshold",
        "image_names": {str(k): v for k, v in sorted(image_names.items())},
        "present_cell_specimen_ids": sorted(int(c) for c in segmented.matched["cell_specimen_id"]),
        "absent_cell_specimen_ids": sorted(int(c) for c in
                                           segmented.cells["cell_specimen_id"].to_numpy()[~segmented.present]),
        "cell_roi_ids_without_events": sorted(int(roi_ids[i]) for i in
                                              np.setdiff1d(np.arange(len(rois_all)), traces.event_rows)),
        "unmatched_cell_roi_ids": sorted(int(roi_ids[i]) for i in np.flatnonzero(rois_all["cell_specimen_id"] == -1)),
        "cell_specimen_id_to_cell_roi_id": {k: int(v) for k, v in cells_truth.items()},
        "rois": roi_truth,
    }
