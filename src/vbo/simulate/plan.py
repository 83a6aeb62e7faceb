"""The plan of a synthetic release: scales, and one record per behavior session and imaging plane.

``mice.py`` makes the plan; ``task.py`` and ``neurons.py`` turn each record into file content;
``release.py`` writes it all in the bucket layout.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scale:
    """How big a synthetic release is. Durations in s; shapes in px (rows, columns).

    ``small`` and ``full`` have the real session structure (5 min gray, 60 min change detection, 5 min
    gray, 10 repeats of the 30 s movie on the imaging rig and in ``TRAINING_5``; the earlier training stages
    are the 60-min task alone, 15 min in ``TRAINING_0``); they cut cost with fewer mice, cells,
    Multiscope planes and pixels, never with shorter sessions. ``tiny`` (tests only) also shortens sessions.
    """

    name: str
    default_mice: int  # at least 4, so that the cohort covers every Cre line, reporter and rig
    initial_gray_s: float  # gray screen before the task (real: 300 s)
    task_s: float  # change-detection block (real: 3600 s)
    final_gray_s: float  # gray screen after the task (real: 300 s)
    movie_repeats: int  # natural_movie_one repeats (real: 10)
    movie_frames: int  # frames of one movie repeat (real: 900 at 30 Hz)
    training_task_s: float  # task length of training sessions (real: 3600 s; TRAINING_0 15 min)
    cells_per_plane: tuple[int, int]  # Slc17a7 planes: ROIs drawn log-normally around the geometric mean
    interneuron_cells_per_plane: tuple[int, int]  # Sst and Vip planes: ROIs, uniform (real: ~10-20)
    field_of_view: tuple[int, int]  # imaging field of view (real: 512 x 512)
    template_shape: tuple[int, int]  # stimulus template size (real: 1200 x 1920)
    sessions_per_training_stage: int  # sessions of each TRAINING_n stage (real: 1-10)
    mesoscope_planes: int  # imaging planes of a Multiscope mouse, whole plane groups (real: 8)


SCALES = {
    "tiny": Scale("tiny", default_mice=4, initial_gray_s=10.0, task_s=120.0, final_gray_s=5.0, movie_repeats=1,
                  movie_frames=90, training_task_s=90.0, cells_per_plane=(30, 60), interneuron_cells_per_plane=(10, 20),
                  field_of_view=(64, 64), template_shape=(60, 96), sessions_per_training_stage=1,
                  mesoscope_planes=2),
    "small": Scale("small", default_mice=4, initial_gray_s=300.0, task_s=3600.0, final_gray_s=300.0,
                   movie_repeats=10, movie_frames=900, training_task_s=3600.0, cells_per_plane=(30, 60),
                   interneuron_cells_per_plane=(10, 20), field_of_view=(128, 128), template_shape=(150, 240),
                   sessions_per_training_stage=1, mesoscope_planes=2),
    "full": Scale("full", default_mice=12, initial_gray_s=300.0, task_s=3600.0, final_gray_s=300.0,
                  movie_repeats=10, movie_frames=900, training_task_s=3600.0, cells_per_plane=(40, 250),
                  interneuron_cells_per_plane=(10, 20), field_of_view=(512, 512), template_shape=(1200, 1920),
                  sessions_per_training_stage=3, mesoscope_planes=8),
}
REAL_DURATION_SCALES = ("small", "full")  # the scales the demo and the tutorials use


@dataclass
class ExperimentPlan:
    """One imaging plane of one imaging session."""

    ophys_experiment_id: int
    ophys_container_id: int
    targeted_structure: str  # VISp, VISl, VISal, VISam
    imaging_depth: int  # µm
    targeted_imaging_depth: int  # µm, int(mean(imaging_depth)) over the container
    imaging_plane_group: int | None  # Multiscope plane pair 0..3; None on single-plane rigs
    imaging_plane_group_count: int  # 0 on single-plane rigs
    file_id: int = -1


@dataclass
class MousePlan:
    """One mouse: identity, genotype and project."""

    mouse_id: str  # 6 digits
    full_genotype: str
    driver_line: list[str]
    reporter_line: str
    cre_line: str
    indicator: str  # GCaMP6f / GCaMP6s
    sex: str
    date_of_birth: dt.datetime
    project_code: str
    equipment_name: str  # imaging rig: CAM2P.3/4/5 or MESO.1
    familiar_image_set: str  # A, B (Task1B) or G
    novel_image_set: str  # B, A or H
    isi_experiment_id: int = 0  # intrinsic-signal-imaging experiment (experiment table, v1.1.0 layout)


@dataclass
class SessionPlan:
    """One behavior session (training, habituation or the behavior part of an imaging session)."""

    behavior_session_id: int
    mouse: MousePlan
    session_type: str
    date_of_acquisition: dt.datetime  # UTC
    equipment_name: str
    session_index: int  # 0-based position in the mouse's history
    stage: str  # TRAINING_0..5, OPHYS_0..6
    image_set: str | None  # letter, or None for gratings
    passive: bool
    is_imaging: bool  # OPHYS_1..6 with released experiments
    has_omissions: bool
    novel_images: bool  # first session with the novel image set ("Novel 1")
    experience_level: str
    prior_exposures_to_image_set: int | None
    ophys_session_id: int | None = None
    experiments: list[ExperimentPlan] = field(default_factory=list)
    file_id: int = -999  # behavior NWB key in the manifest; -999 for imaging sessions
    # planted behaviour: probabilities of licking in the response window on go and catch trials
    hit_probability: float = 0.0
    false_alarm_probability: float = 0.0
    # False: the session happened (it counts in prior_exposures_*) but is not in the release
    released: bool = True
    # computed over the mouse's complete history in date order (docs/format.md §6.2–§6.6)
    prior_exposures_to_session_type: int = 0
    prior_exposures_to_omissions: int = 0


def example_mouse(cre_line: str = "Slc17a7-IRES2-Cre", *, equipment_name: str = "CAM2P.4",
                  indicator: str = "GCaMP6f", driver_line: list[str] | None = None, familiar_image_set: str = "A",
                  novel_image_set: str = "B") -> MousePlan:
    """One mouse (453911, Ai93 reporter) to simulate single sessions with, outside a release plan."""
    return MousePlan(mouse_id="453911", full_genotype=f"{cre_line}/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt",
                     driver_line=driver_line if driver_line is not None else [cre_line, "Camk2a-tTA"],
                     reporter_line="Ai93(TITL-GCaMP6f)", cre_line=cre_line, indicator=indicator, sex="F",
                     date_of_birth=dt.datetime(2020, 10, 20, tzinfo=dt.timezone.utc), project_code="VisualBehavior",
                     equipment_name=equipment_name, familiar_image_set=familiar_image_set,
                     novel_image_set=novel_image_set)


def example_session(session_type: str = "OPHYS_1_images_A", mouse: MousePlan | None = None,
                    **fields) -> SessionPlan:
    """One active, familiar session of :func:`example_mouse` (hit p 0.8, false-alarm p 0.2) to feed
    ``simulate_behavior``; any :class:`SessionPlan` field can be given to change it."""
    plan = dict(behavior_session_id=1091562010, mouse=mouse or example_mouse(), session_type=session_type,
                date_of_acquisition=dt.datetime(2021, 3, 9, 9, 47, 12, tzinfo=dt.timezone.utc),
                equipment_name="CAM2P.4", session_index=12, stage="_".join(session_type.split("_")[:2]),
                image_set="A", passive=False, is_imaging=True, has_omissions=True, novel_images=False,
                experience_level="Familiar", prior_exposures_to_image_set=3, hit_probability=0.8,
                false_alarm_probability=0.2)
    return SessionPlan(**{**plan, **fields})
