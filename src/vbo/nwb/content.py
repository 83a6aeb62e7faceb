"""What one released NWB file holds, as plain arrays, frames and dicts: the writer's input.

The shapes follow what the reader returns (the members of ``vbo.BehaviorSession`` and
``vbo.BehaviorOphysExperiment``, ``docs/format.md`` §8), so ``write(content)`` followed by reading the
file gives back the same members. Units: seconds, cm/s, mL, px, mm (rig geometry), degrees.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class StimulusTemplate:
    """One image set: names in template order, warped (uint8) and unwarped (float, NaN off-screen) images."""

    name: str  # e.g. "Natural_Images_Lum_Matched_set_training_2017.07.14" or "grating"
    image_names: list[str]
    warped: np.ndarray  # (n, rows, columns) uint8
    unwarped: np.ndarray  # (n, rows, columns) float64


@dataclass
class Ellipse:
    """One ellipse series of the eye tracking (px, px², rad), one row per eye-camera frame."""

    center: np.ndarray  # (n, 2) x, y
    area: np.ndarray  # stored area (cr/eye: π·w·h, pupil: π·max(w, h)²), NaN on blinks
    area_raw: np.ndarray
    width: np.ndarray
    height: np.ndarray
    angle: np.ndarray


@dataclass
class EyeTracking:
    """Eye-camera frame times (s), the three ellipses and the stored blink flags."""

    timestamps: np.ndarray
    eye: Ellipse
    pupil: Ellipse
    corneal_reflection: Ellipse
    likely_blink: np.ndarray  # bool


@dataclass
class RigGeometry:
    """Eye-tracking rig geometry: positions in mm, rotations in degrees, each an (x, y, z) triple."""

    equipment: str
    monitor_position: tuple[float, float, float]
    camera_position: tuple[float, float, float]
    led_position: tuple[float, float, float]
    monitor_rotation: tuple[float, float, float]
    camera_rotation: tuple[float, float, float]


@dataclass
class BehaviorContent:
    """Everything a behavior-session NWB file holds (and the behavior part of an experiment file).

    ``metadata`` holds the ``BehaviorMetadata`` fields (``behavior_session_id``, ``behavior_session_uuid``
    (str), ``equipment_name``, ``project_code``, ``session_type``, ``stimulus_frame_rate``); experiment
    files add the ``OphysBehaviorMetadata`` fields (see :class:`OphysContent`).
    ``subject``: ``age`` ("P140D"), ``description``, ``genotype``, ``sex``, ``species``, ``subject_id`` (str),
    ``driver_line`` (list of str), ``reporter_line`` (str).
    ``task_parameters``: the stored fields (``blank_duration_sec`` and ``response_window_sec`` as 2 floats,
    converted to text when written; ``stimulus_name`` optional).
    ``trials``: the reader's 21-column frame (index ``trials_id``; ``lick_times`` arrays).
    ``presentations``: the reader's ``stimulus_presentations`` frame, plus an ``image_set`` column for image
    rows; the writer splits it by ``stimulus_name`` into ``<stimulus_name>_presentations`` tables.
    ``licks`` / ``rewards``: None for passive sessions (no module written).
    """

    identifier: str
    session_start_time: dt.datetime
    session_type: str
    experiment_description: str
    metadata: dict
    subject: dict
    task_parameters: dict
    stimulus_timestamps: np.ndarray  # s, one per stimulus frame, no monitor delay
    running_timestamps: np.ndarray  # s
    running_speed: np.ndarray  # cm/s, filtered
    running_speed_unfiltered: np.ndarray  # cm/s
    running_dx: np.ndarray  # cm per frame (float32 in released files)
    v_in: np.ndarray  # V
    v_sig: np.ndarray  # V
    trials: pd.DataFrame
    presentations: pd.DataFrame
    licks: pd.DataFrame | None = None  # timestamps (s), frame (int)
    rewards: pd.DataFrame | None = None  # volume (mL), timestamps (s), auto_rewarded (bool)
    templates: list[StimulusTemplate] = field(default_factory=list)
    eye_tracking: EyeTracking | None = None
    rig_geometry: RigGeometry | None = None
    keywords: tuple[str, ...] = ("visual", "behavior", "task")
    institution: str = "Allen Institute for Brain Science"


@dataclass
class ImagingPlane:
    """``/general/optophysiology/imaging_plane_1`` and its channel."""

    description: str  # "(512, 512) field of view in VISp at depth 175 um"
    excitation_lambda: float  # nm
    emission_lambda: float  # nm
    imaging_rate: float  # Hz, rounded to whole Hz
    indicator: str  # "GCAMP6f"
    location: str  # targeted structure, e.g. "VISp"


@dataclass
class OphysContent:
    """The imaging part of an experiment file (one plane).

    ``behavior.metadata`` must also hold the ``OphysBehaviorMetadata`` fields: ``field_of_view_height``,
    ``field_of_view_width``, ``imaging_plane_group`` (−1 single plane), ``imaging_plane_group_count``
    (0 single plane), ``targeted_imaging_depth``, ``ophys_session_id``, ``imaging_depth``,
    ``ophys_container_id``, ``ophys_experiment_id``.
    ``rois``: one row per ROI, columns ``cell_roi_id`` (the NWB id), ``cell_specimen_id`` (−1 = unmatched),
    ``height``, ``mask_image_plane``, ``max_correction_down``, ``max_correction_left``,
    ``max_correction_right``, ``max_correction_up``, ``valid_roi``, ``width``, ``x``, ``y``.
    Trace arrays are frames × ROIs in ``rois`` row order; ``events`` may cover only ``event_rows``.
    """

    behavior: BehaviorContent
    imaging_plane: ImagingPlane
    rois: pd.DataFrame
    roi_masks: np.ndarray  # (ROI, rows, columns) bool, full field of view
    ophys_timestamps: np.ndarray  # s, one per frame of this plane
    dff: np.ndarray  # frames × ROIs
    corrected_fluorescence: np.ndarray
    neuropil: np.ndarray | None
    demixed: np.ndarray | None
    r: np.ndarray | None  # (ROI,) neuropil-correction fit
    rmse: np.ndarray | None  # (ROI,)
    events: np.ndarray  # frames × len(event_rows)
    event_lambdas: np.ndarray
    event_noise_stds: np.ndarray
    event_rows: np.ndarray  # rows of `rois` covered by `events`
    motion_x: np.ndarray  # px per frame (int)
    motion_y: np.ndarray
    max_projection: np.ndarray  # (rows, columns) uint8
    average_projection: np.ndarray  # (rows, columns) uint8
    segmentation_mask: np.ndarray  # (rows, columns) int, union of ROI masks
    pixel_size_mm: float = 0.00078125  # stored as resolution = pixel_size_mm / 10
