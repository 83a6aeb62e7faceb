"""The synthetic cohort: mice, their training and imaging histories, and the release metadata tables.

``plan_release`` draws a cohort and every mouse's behavior-session history (training stages, habituation,
imaging sessions with retakes, failed-QC planes and sessions missing from the release) with planted
behaviour (hit and false-alarm probabilities). ``metadata_tables`` turns the plan into the three session /
experiment tables exactly as the release CSVs hold them, every derived column computed by its
``docs/format.md`` §6.2–§6.6 definition; ``cells_table`` builds ``ophys_cells_table``; ``write_metadata_csv`` writes
any of them with the release's CSV text conventions.

Vocabulary (session types, genotypes, rigs, depths, projects) follows the released tables.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from vbo import derive
from vbo.tables import ACTIVE_BEHAVIOR, PASSIVE_VIEWING

from vbo.simulate.plan import ExperimentPlan, MousePlan, Scale, SessionPlan

UTC = dt.timezone.utc
_NORMAL = NormalDist()

# --------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Project:
    code: str
    rigs: tuple[str, ...]
    familiar: str
    novel: str
    areas: tuple[str, ...]
    depths_per_area: int
    start_window: tuple[str, str]  # first training day drawn in this window (ISO dates)


PROJECTS: tuple[_Project, ...] = (
    _Project("VisualBehavior", ("CAM2P.3", "CAM2P.4", "CAM2P.5"), "A", "B", ("VISp",), 1,
             ("2018-08-20", "2020-06-30")),
    _Project("VisualBehaviorTask1B", ("CAM2P.3", "CAM2P.4", "CAM2P.5"), "B", "A", ("VISp",), 1,
             ("2019-06-03", "2020-10-30")),
    _Project("VisualBehaviorMultiscope", ("MESO.1",), "A", "B", ("VISp", "VISl"), 4,
             ("2019-02-11", "2020-12-18")),
    _Project("VisualBehaviorMultiscope4areasx2d", ("MESO.1",), "G", "H", ("VISp", "VISl", "VISal", "VISam"), 2,
             ("2019-08-05", "2021-03-31")),
)
PROJECT_BY_CODE = {p.code: p for p in PROJECTS}

# docs/format.md §6.2–§6.6: project_code -> (num_targeted_structures, num_depths_per_area)
PROJECT_STRUCTURE = {
    "VisualBehavior": (1, 1),
    "VisualBehaviorTask1B": (1, 1),
    "VisualBehaviorMultiscope": (2, 4),
    "VisualBehaviorMultiscope4areasx2d": (4, 2),
}


@dataclass(frozen=True)
class _Genotype:
    full_genotype: str
    driver_line: tuple[str, ...]
    reporter_line: str


GENOTYPES = {
    "Slc17a7_Ai93": _Genotype("Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt",
                              ("Slc17a7-IRES2-Cre", "Camk2a-tTA"), "Ai93(TITL-GCaMP6f)"),
    "Slc17a7_Ai94": _Genotype("Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai94(TITL-GCaMP6s)/wt",
                              ("Slc17a7-IRES2-Cre", "Camk2a-tTA"), "Ai94(TITL-GCaMP6s)"),
    "Sst": _Genotype("Sst-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt", ("Sst-IRES-Cre",),
                     "Ai148(TIT2L-GC6f-ICL-tTA2)"),
    "Vip": _Genotype("Vip-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt", ("Vip-IRES-Cre",),
                     "Ai148(TIT2L-GC6f-ICL-tTA2)"),
}
CRE_CYCLE = ("Slc17a7", "Vip", "Sst")
# mouse i gets project PROJECT_CYCLE[i % 4] and Cre line CRE_CYCLE[i % 3]: the first four mice cover every
# Cre line, both rig kinds (Scientifica CAM2P, Multiscope MESO) and every reporter (mouse 0 is Ai94), and
# hold what the tutorials select (a Vip Multiscope mouse, an Sst mouse whose session 4 is its first novel
# one); the first twelve every project x Cre line pair
PROJECT_CYCLE = ("VisualBehavior", "VisualBehaviorMultiscope", "VisualBehaviorTask1B",
                 "VisualBehaviorMultiscope4areasx2d")
BEHAVIOR_RIG_LETTERS = ("B", "D", "F", "G")
SCIENTIFICA_DEPTHS = ((175, 0.55), (275, 0.25), (375, 0.20))

# --------------------------------------------------------------------------------------------------
# Derived-column definitions (docs/format.md §6.2–§6.6)
# --------------------------------------------------------------------------------------------------

_SESSION_NUMBER = re.compile(r"^OPHYS_(\d+)")
_IMAGE_LETTER = re.compile(r".*images_(\w)")


def session_number_of(session_type: str) -> int | None:
    """``OPHYS_(\\d+)`` at the start of ``session_type`` → that integer; otherwise None."""
    match = _SESSION_NUMBER.match(session_type)
    return int(match.group(1)) if match else None


def behavior_type_of(session_type: str) -> str:
    passive = "passive" in session_type and "OPHYS" in session_type
    return PASSIVE_VIEWING if passive else ACTIVE_BEHAVIOR


image_set_of = derive.image_set  # behavior / ophys-session table form: ``images_X`` or ``gratings``


def experiment_image_set_of(session_type: str) -> str:
    """Experiment table form: the character at position 15, or ``"N/A"``."""
    return session_type[15] if len(session_type) > 15 else "N/A"


def image_letter_of(session_type: str) -> str | None:
    """Image-set letter used for ``prior_exposures_to_image_set`` (None for gratings)."""
    match = _IMAGE_LETTER.match(session_type)
    return match.group(1) if match else None


def experience_level_of(session_type: str, prior_exposures_to_image_set: int | None) -> str:
    level = "None"
    number = session_number_of(session_type)
    if session_type.startswith("TRAINING"):
        level = "Training"
    if number in (0, 1, 2, 3):
        level = "Familiar"
    if number in (4, 5, 6):
        level = "Novel 1" if prior_exposures_to_image_set == 0 else "Novel >1"
    return level


cre_line_of = derive.cre_line
indicator_of = derive.indicator


def derive_history(sessions: list[SessionPlan]) -> None:
    """Fill the history-dependent fields of every session in place (docs/format.md §6.2–§6.6).

    ``sessions`` must hold each mouse's complete history, including sessions left out of the release:
    per mouse in date order, ``prior_exposures_to_session_type`` / ``_image_set`` count earlier sessions
    of the same type / image letter, ``prior_exposures_to_omissions`` counts earlier sessions with
    omissions; then ``experience_level``, ``novel_images`` and ``passive`` follow from them.
    """
    by_mouse: dict[str, list[SessionPlan]] = {}
    for s in sessions:
        by_mouse.setdefault(s.mouse.mouse_id, []).append(s)
    for history in by_mouse.values():
        history.sort(key=lambda s: s.date_of_acquisition)
        type_counts: dict[str, int] = {}
        letter_counts: dict[str, int] = {}
        omissions = 0
        for s in history:
            s.prior_exposures_to_session_type = type_counts.get(s.session_type, 0)
            type_counts[s.session_type] = s.prior_exposures_to_session_type + 1
            letter = image_letter_of(s.session_type)
            if letter is None:
                s.prior_exposures_to_image_set = None
            else:
                s.prior_exposures_to_image_set = letter_counts.get(letter, 0)
                letter_counts[letter] = s.prior_exposures_to_image_set + 1
            s.prior_exposures_to_omissions = omissions
            omissions += int(s.has_omissions)
            s.experience_level = experience_level_of(s.session_type, s.prior_exposures_to_image_set)
            s.novel_images = s.experience_level == "Novel 1"
            s.passive = session_number_of(s.session_type) in (2, 5)


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------


@dataclass
class _Plane:
    structure: str
    nominal_depth: int
    group: int | None
    jitter: int = 0  # per-session imaging-depth jitter amplitude (µm)
    container_id: int = 0


@dataclass
class _Draft:
    """One behavior session before ids are assigned."""

    mouse_index: int
    session_type: str
    stage: str
    day: dt.date
    equipment_name: str
    released: bool = True
    imaging: bool = False
    has_omissions: bool = False
    dprime: float = 0.0
    false_alarm: float = 0.0


def _next_weekday(day: dt.date, rng: np.random.Generator, skip_probability: float = 0.1) -> dt.date:
    """The next weekday; with ``skip_probability`` the one after (a day without a session)."""
    skips = 1 + int(rng.random() < skip_probability)
    for _ in range(skips):
        day = day + dt.timedelta(days=1)
        while day.weekday() >= 5:
            day = day + dt.timedelta(days=1)
    return day


def _random_day(rng: np.random.Generator, window: tuple[str, str]) -> dt.date:
    first, last = (dt.date.fromisoformat(x) for x in window)
    day = first + dt.timedelta(days=int(rng.integers(0, (last - first).days + 1)))
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def _make_mouse(rng: np.random.Generator, index: int, mouse_id: str, isi_id: int) -> tuple[MousePlan, dt.date]:
    project = PROJECT_BY_CODE[PROJECT_CYCLE[index % len(PROJECT_CYCLE)]]
    cre = CRE_CYCLE[index % len(CRE_CYCLE)]
    if cre == "Slc17a7":
        # GCaMP6s (Ai94) mice exist only in the single-plane projects; the first mouse is one
        single_plane = project.rigs[0] != "MESO.1"
        key = "Slc17a7_Ai94" if (single_plane and (index == 0 or rng.random() < 0.25)) else "Slc17a7_Ai93"
    else:
        key = cre
    genotype = GENOTYPES[key]
    start = _random_day(rng, project.start_window)
    age_at_start = int(rng.integers(70, 101))
    birth = dt.datetime.combine(start - dt.timedelta(days=age_at_start), dt.time(), tzinfo=UTC)
    mouse = MousePlan(
        mouse_id=mouse_id,
        full_genotype=genotype.full_genotype,
        driver_line=list(genotype.driver_line),
        reporter_line=genotype.reporter_line,
        cre_line=cre_line_of(genotype.full_genotype),
        indicator=indicator_of(genotype.reporter_line),
        sex="M" if rng.random() < 0.6 else "F",
        date_of_birth=birth,
        project_code=project.code,
        equipment_name=str(rng.choice(project.rigs)),
        familiar_image_set=project.familiar,
        novel_image_set=project.novel,
        isi_experiment_id=isi_id,
    )
    return mouse, start


def _planes(rng: np.random.Generator, project: _Project) -> list[_Plane]:
    """The imaging planes of one mouse (one container each), in experiment-id order."""
    if project.depths_per_area == 1:
        depths = [d for d, _ in SCIENTIFICA_DEPTHS]
        weights = [w for _, w in SCIENTIFICA_DEPTHS]
        return [_Plane("VISp", int(rng.choice(depths, p=weights)), None)]
    planes = []
    if project.code == "VisualBehaviorMultiscope":
        # two groups per area, each pairing two depths of the same area (as in the released tables)
        jitter = 5 if rng.random() < 0.5 else 0  # early mice: exact nominal depths in every session
        for a, area in enumerate(project.areas):
            pairs = [(150, 225), (75, 300)]
            if rng.random() < 0.5:
                pairs.reverse()
            for g, pair in enumerate(pairs):
                for depth in pair:
                    offset = int(rng.integers(-8, 9)) if jitter else 0
                    planes.append(_Plane(area, depth + offset, 2 * a + g, jitter))
    else:  # 4 areas x 2 depths: one group per area
        for a, area in enumerate(project.areas):
            planes.append(_Plane(area, int(rng.integers(145, 201)), a, 6))
            planes.append(_Plane(area, int(rng.integers(230, 306)), a, 6))
    return planes


def _behavior_rig(rng: np.random.Generator) -> str:
    return f"BEH.{rng.choice(BEHAVIOR_RIG_LETTERS)}-Box{int(rng.integers(1, 7))}"


class _History:
    """A mouse's sessions as they are drafted, one weekday after another, on its behavior rig."""

    def __init__(self, rng: np.random.Generator, index: int, start: dt.date, sessions_per_stage: int):
        self.rng, self.index, self.day, self.k = rng, index, start, sessions_per_stage
        self.skill = float(rng.normal(0.0, 0.15))  # mouse-specific d' offset
        self.drafts: list[_Draft] = []
        self.rig = _behavior_rig(rng)

    def n_sessions(self) -> int:
        """Sessions of one training stage: the scale's number, sometimes one more."""
        return self.k + int(self.rng.random() < 0.3)

    def add(self, session_type: str, stage: str, dprime: float, fa: tuple[float, float], *,
            equipment: str | None = None) -> _Draft:
        """The next session (the next weekday), with its planted d' and false-alarm rate."""
        rng = self.rng
        if self.drafts:
            self.day = _next_weekday(self.day, rng)
        if equipment is None and rng.random() < 0.08:
            self.rig = self.rig.split("-Box")[0] + f"-Box{int(rng.integers(1, 7))}"
        draft = _Draft(self.index, session_type, stage, self.day, equipment or self.rig)
        draft.dprime = max(0.0, dprime + self.skill + float(rng.normal(0.0, 0.12)))
        draft.false_alarm = float(rng.uniform(*fa))
        self.drafts.append(draft)
        return draft


EARLY_FA, TRAINED_FA = (0.30, 0.45), (0.08, 0.25)  # planted false-alarm rates, early and trained


def _training_history(rng: np.random.Generator, index: int, mouse: MousePlan, start: dt.date,
                      scale: Scale) -> list[_Draft]:
    """Every session of one mouse in date order: training stages, habituation, the imaging sessions."""
    history = _History(rng, index, start, max(1, scale.sessions_per_training_stage))
    _training_stages(history, mouse.familiar_image_set)
    history.day = _next_weekday(history.day, rng, skip_probability=0.5)
    for _ in range(int(rng.integers(1, 3))):
        h = history.add(f"OPHYS_0_images_{mouse.familiar_image_set}_habituation", "OPHYS_0", 2.1, TRAINED_FA,
                        equipment=mouse.equipment_name)
        h.has_omissions = bool(rng.random() < 0.15)
    _imaging_stages(history, mouse)
    for d in history.drafts:
        if d.stage.startswith("OPHYS") and session_number_of(d.session_type) in (2, 5):
            d.dprime = 0.0
        elif d.stage.startswith("OPHYS") and d.stage != "OPHYS_0":
            d.dprime = float(np.clip(d.dprime, 1.5, 2.5))
    return history.drafts


def _training_stages(history: _History, fam: str) -> None:
    """TRAINING_0 … TRAINING_5 on the behavior rig (a lapse sometimes), a few not in the release."""
    rng, add = history.rng, history.add
    add("TRAINING_0_gratings_autorewards_15min", "TRAINING_0", 0.1, EARLY_FA)
    for _ in range(history.n_sessions()):
        add("TRAINING_1_gratings", "TRAINING_1", 0.5, EARLY_FA)
    for _ in range(history.n_sessions()):
        add("TRAINING_2_gratings_flashed", "TRAINING_2", 0.9, (0.2, 0.35))
    for _ in range(history.n_sessions()):
        add(f"TRAINING_3_images_{fam}_10uL_reward", "TRAINING_3", 1.2, (0.15, 0.3))
    for _ in range(history.n_sessions()):
        add(f"TRAINING_4_images_{fam}_training", "TRAINING_4", 1.5, TRAINED_FA)
    if rng.random() < 0.35:
        add(f"TRAINING_5_images_{fam}_epilogue", "TRAINING_5", 1.8, TRAINED_FA)
    ready = history.n_sessions()
    lapse_after = int(rng.integers(1, ready + 1)) if rng.random() < 0.3 else -1
    for i in range(ready):
        add(f"TRAINING_5_images_{fam}_handoff_ready", "TRAINING_5", 2.0, TRAINED_FA)
        if i + 1 == lapse_after:
            for _ in range(int(rng.integers(1, 3))):
                add(f"TRAINING_5_images_{fam}_handoff_lapsed", "TRAINING_5", 1.2, (0.15, 0.3))
            add(f"TRAINING_5_images_{fam}_handoff_ready", "TRAINING_5", 2.0, TRAINED_FA)
    for d in history.drafts:  # a few training sessions are not in the release
        if d.stage != "TRAINING_0" and rng.random() < 0.04:
            d.released = False


def _imaging_stages(history: _History, mouse: MousePlan) -> None:
    """OPHYS_1 … OPHYS_6 on the imaging rig (failed first attempts, rarely a late retake), all with omissions."""
    rng = history.rng
    fam, nov = mouse.familiar_image_set, mouse.novel_image_set

    def ophys(number: int) -> list[_Draft]:
        image_set = fam if number <= 3 else nov
        session_type = f"OPHYS_{number}_images_{image_set}" + ("_passive" if number in (2, 5) else "")
        base = 2.1 if number <= 3 else 1.9
        out = []
        if rng.random() < 0.12:  # a failed first attempt: behavior only, or missing from the release
            failed = history.add(session_type, f"OPHYS_{number}", base, TRAINED_FA, equipment=mouse.equipment_name)
            failed.released = bool(rng.random() < 0.6)
            out.append(failed)
        attempt = history.add(session_type, f"OPHYS_{number}", base, TRAINED_FA, equipment=mouse.equipment_name)
        attempt.imaging = bool(rng.random() >= 0.04)
        out.append(attempt)
        return out

    ophys_drafts = [d for number in range(1, 7) for d in ophys(number)]
    if not any(d.imaging for d in ophys_drafts):
        ophys_drafts[-1].imaging = True
        ophys_drafts[-1].released = True
    if rng.random() < 0.1:  # a late retake of an earlier stage, imaged
        number = int(rng.choice([1, 2, 3, 6]))
        image_set = fam if number <= 3 else nov
        retake = history.add(f"OPHYS_{number}_images_{image_set}" + ("_passive" if number == 2 else ""),
                             f"OPHYS_{number}", 2.0, TRAINED_FA, equipment=mouse.equipment_name)
        retake.imaging = True
        ophys_drafts.append(retake)
    for d in ophys_drafts:
        d.has_omissions = True


def _acquisition_time(rng: np.random.Generator, day: dt.date, imaging_rig: bool) -> dt.datetime:
    first_hour = 12.0 if imaging_rig else 8.25
    seconds = int((first_hour + rng.uniform(0.0, 3.25)) * 3600)
    ms = int(rng.integers(0, 1000))
    return dt.datetime.combine(day, dt.time(), tzinfo=UTC) + dt.timedelta(seconds=seconds, milliseconds=ms)


def _probabilities(draft: _Draft, passive: bool) -> tuple[float, float]:
    if passive:
        return 0.0, 0.0
    fa = draft.false_alarm
    hit = _NORMAL.cdf(draft.dprime + _NORMAL.inv_cdf(fa))
    return round(float(hit), 4), round(float(fa), 4)


def plan_release(rng: np.random.Generator, n_mice: int, scale: Scale, *,
                 include_unreleased: bool = False) -> list[SessionPlan]:
    """Plan a synthetic release of ``n_mice`` mice.

    Returns the released behavior sessions (training, habituation, imaging sessions and imaging
    sessions whose imaging failed), ordered by mouse then date. Imaging sessions carry their released
    experiments (one per plane that passed QC). History-dependent fields are computed over each mouse's
    complete history, including sessions missing from the release; ``include_unreleased=True`` returns
    that complete history too (those sessions have ``released=False``).
    """
    if n_mice < 1:
        raise ValueError("n_mice must be >= 1")
    mouse_ids = rng.choice(200_000, size=n_mice, replace=False) + 400_000
    mice: list[MousePlan] = []
    drafts: list[_Draft] = []
    planes: list[list[_Plane]] = []
    for i in range(n_mice):
        mouse, start = _make_mouse(rng, i, str(int(mouse_ids[i])), 600_000_000 + 1_000 * i
                                   + int(rng.integers(0, 1_000)))
        mice.append(mouse)
        planes.append(_planes(rng, PROJECT_BY_CODE[mouse.project_code])[:scale.mesoscope_planes])
        drafts += _training_history(rng, i, mouse, start, scale)

    times = [_acquisition_time(rng, d.day, d.stage.startswith("OPHYS")) for d in drafts]
    order = sorted(range(len(drafts)), key=lambda j: (times[j], j))
    sessions = _sessions_in_date_order(rng, drafts, times, order, mice, planes)
    derive_history(sessions)
    _fill_targeted_depths(sessions)
    mouse_order = {m.mouse_id: i for i, m in enumerate(mice)}
    sessions.sort(key=lambda s: (mouse_order[s.mouse.mouse_id], s.date_of_acquisition))
    if include_unreleased:
        return sessions
    return [s for s in sessions if s.released]


def _sessions_in_date_order(rng: np.random.Generator, drafts: list[_Draft], times: list[dt.datetime],
                            order: list[int], mice: list[MousePlan], planes: list[list[_Plane]]) -> list[SessionPlan]:
    """Every drafted session in date order, with its ids (and its experiments' for imaging sessions)."""
    # ids: one increasing sequence over sessions in date order (all 9 digits, below the container ids)
    step = min(400_000, 220_000_000 // max(1, len(drafts)))
    if step < 4_000:
        raise ValueError(f"too many sessions ({len(drafts)}) for the id space")
    # containers: per mouse in order of first imaging session, 10 digits
    container_next = [1_018_000_000 + int(rng.integers(0, 10_000))]
    cursor = 770_000_000 + int(rng.integers(0, 1_000_000))
    sessions: list[SessionPlan] = []
    index_in_history: dict[int, int] = {}
    for j in order:
        d = drafts[j]
        mouse = mice[d.mouse_index]
        block = cursor + int(rng.integers(0, step // 2))
        cursor += step
        ophys_session_id = None
        experiments: list[ExperimentPlan] = []
        if d.imaging:
            ophys_session_id = block
            behavior_session_id, experiments = _imaging_session(rng, mouse, planes[d.mouse_index], block,
                                                                container_next)
        else:
            behavior_session_id = block + int(rng.integers(0, 1_000))
        history_index = index_in_history.get(d.mouse_index, 0)
        index_in_history[d.mouse_index] = history_index + 1
        hit, fa = _probabilities(d, session_number_of(d.session_type) in (2, 5))
        sessions.append(SessionPlan(
            behavior_session_id=behavior_session_id,
            mouse=mouse,
            session_type=d.session_type,
            date_of_acquisition=times[j],
            equipment_name=d.equipment_name,
            session_index=history_index,
            stage=d.stage,
            image_set=image_letter_of(d.session_type),
            passive=session_number_of(d.session_type) in (2, 5),
            is_imaging=d.imaging,
            has_omissions=d.has_omissions,
            novel_images=False,
            experience_level="None",
            prior_exposures_to_image_set=None,
            ophys_session_id=ophys_session_id,
            experiments=experiments,
            file_id=-999 if d.imaging else 0,
            hit_probability=hit,
            false_alarm_probability=fa,
            released=d.released,
        ))
    return sessions


def _imaging_session(rng: np.random.Generator, mouse: MousePlan, mouse_planes: list[_Plane], block: int,
                     container_next: list[int]) -> tuple[int, list[ExperimentPlan]]:
    """The behavior session id of an imaging session (``block`` is its ophys_session_id) and its released
    planes (Multiscope planes pass QC with p 0.88, at least one).

    The mouse's containers get their ids at its first imaging session (``container_next``: the next free
    container id, advanced in place)."""
    if mouse_planes[0].container_id == 0:
        container_next[0] += int(rng.integers(5, 500))
        areas = PROJECT_BY_CODE[mouse.project_code].areas
        for plane in sorted(mouse_planes, key=lambda p: (areas.index(p.structure), p.nominal_depth)):
            plane.container_id = container_next[0]
            container_next[0] += int(rng.integers(3, 5))
    behavior_session_id = block + int(rng.integers(100, 1_000))
    next_id = behavior_session_id + int(rng.integers(100, 500))
    multiscope = mouse_planes[0].group is not None
    passed = [not multiscope or rng.random() < 0.88 for _ in mouse_planes]
    if not any(passed):
        passed[int(rng.integers(0, len(passed)))] = True
    experiments = []
    for plane, ok in zip(mouse_planes, passed):
        next_id += int(rng.integers(1, 4))
        if not ok:
            continue
        jitter = int(rng.integers(-plane.jitter, plane.jitter + 1)) if plane.jitter else 0
        experiments.append(ExperimentPlan(
            ophys_experiment_id=next_id,
            ophys_container_id=plane.container_id,
            targeted_structure=plane.structure,
            imaging_depth=plane.nominal_depth + jitter,
            targeted_imaging_depth=0,  # filled over the container by _fill_targeted_depths
            imaging_plane_group=plane.group,
            imaging_plane_group_count=0,
        ))
    groups = {e.imaging_plane_group for e in experiments if e.imaging_plane_group is not None}
    for e in experiments:
        e.imaging_plane_group_count = len(groups)
    return behavior_session_id, experiments


def _fill_targeted_depths(sessions: list[SessionPlan]) -> None:
    """targeted_imaging_depth: int(mean(imaging_depth)) over the released experiments of the container."""
    depths: dict[int, list[int]] = {}
    for s in sessions:
        if s.released:
            for e in s.experiments:
                depths.setdefault(e.ophys_container_id, []).append(e.imaging_depth)
    for s in sessions:
        for e in s.experiments:
            if e.ophys_container_id in depths:
                e.targeted_imaging_depth = int(np.mean(depths[e.ophys_container_id]))


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------

TRIAL_COUNT_COLUMNS = (
    "trial_count", "go_trial_count", "catch_trial_count", "hit_trial_count", "miss_trial_count",
    "false_alarm_trial_count", "correct_reject_trial_count", "engaged_trial_count",
)

# CSV column orders of the release tables (release 1.0.x copy in shared/data/release-tables)
BEHAVIOR_SESSION_COLUMNS = (
    "behavior_session_id", "ophys_session_id", "ophys_container_id", "mouse_id", "indicator",
    "full_genotype", "driver_line", "cre_line", "reporter_line", "sex", "age_in_days", "project_code",
    "session_type", "session_number", "image_set", "behavior_type", "experience_level",
    "prior_exposures_to_session_type", "prior_exposures_to_image_set", "prior_exposures_to_omissions",
    "date_of_acquisition", "equipment_name", "imaging_plane_group_count", "num_depths_per_area",
    "num_targeted_structures", "ophys_experiment_id", "file_id",
)
OPHYS_SESSION_COLUMNS = (
    "ophys_session_id", "behavior_session_id", "ophys_container_id", "mouse_id", "indicator",
    "full_genotype", "driver_line", "cre_line", "reporter_line", "sex", "age_in_days", "project_code",
    "session_type", "session_number", "image_set", "behavior_type", "experience_level",
    "prior_exposures_to_session_type", "prior_exposures_to_image_set", "prior_exposures_to_omissions",
    "date_of_acquisition", "equipment_name", "num_targeted_structures", "imaging_plane_group_count",
    "ophys_experiment_id", "num_depths_per_area",
)
OPHYS_EXPERIMENT_COLUMNS = (
    "ophys_experiment_id", "behavior_session_id", "ophys_session_id", "ophys_container_id", "mouse_id",
    "indicator", "full_genotype", "driver_line", "cre_line", "reporter_line", "sex", "age_in_days",
    "imaging_depth", "targeted_structure", "targeted_imaging_depth", "imaging_plane_group", "project_code",
    "session_type", "session_number", "image_set", "behavior_type", "passive", "experience_level",
    "prior_exposures_to_session_type", "prior_exposures_to_image_set", "prior_exposures_to_omissions",
    "date_of_acquisition", "equipment_name", "file_id",
)
CELLS_COLUMNS = ("cell_roi_id", "cell_specimen_id", "ophys_experiment_id")
LAYOUTS = ("1.0", "1.1.0")


def table_columns(table: str, layout: str = "1.1.0") -> tuple[str, ...]:
    """CSV column order of a release table; ``1.1.0`` adds the trial counts and publication columns."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    extra = layout == "1.1.0"
    if table == "behavior_session_table":
        cols = BEHAVIOR_SESSION_COLUMNS
        return cols[:-1] + (TRIAL_COUNT_COLUMNS if extra else ()) + cols[-1:]
    if table == "ophys_session_table":
        return OPHYS_SESSION_COLUMNS
    if table == "ophys_experiment_table":
        cols = OPHYS_EXPERIMENT_COLUMNS
        return cols[:-1] + (("published_at", "isi_experiment_id") if extra else ()) + cols[-1:]
    if table == "ophys_cells_table":
        return CELLS_COLUMNS
    raise ValueError(f"unknown table {table!r}")


def _mouse_columns(mouse: MousePlan, when: dt.datetime) -> dict:
    return {
        "mouse_id": mouse.mouse_id,
        "indicator": indicator_of(mouse.reporter_line),
        "full_genotype": mouse.full_genotype,
        "driver_line": list(mouse.driver_line),
        "cre_line": cre_line_of(mouse.full_genotype),
        "reporter_line": mouse.reporter_line,
        "sex": mouse.sex,
        "age_in_days": (when - mouse.date_of_birth).days,
    }


def _session_columns(s: SessionPlan) -> dict:
    number = session_number_of(s.session_type)
    return {
        "project_code": s.mouse.project_code,
        "session_type": s.session_type,
        "session_number": np.nan if number is None else float(number),
        "image_set": image_set_of(s.session_type),
        "behavior_type": behavior_type_of(s.session_type),
        "experience_level": experience_level_of(s.session_type, s.prior_exposures_to_image_set),
        "prior_exposures_to_session_type": s.prior_exposures_to_session_type,
        "prior_exposures_to_image_set": (np.nan if s.prior_exposures_to_image_set is None
                                         else float(s.prior_exposures_to_image_set)),
        "prior_exposures_to_omissions": s.prior_exposures_to_omissions,
        "date_of_acquisition": pd.Timestamp(s.date_of_acquisition).tz_convert("UTC"),
        "equipment_name": s.equipment_name,
    }


def _group_count(s: SessionPlan) -> float:
    groups = {e.imaging_plane_group for e in s.experiments if e.imaging_plane_group is not None}
    return float(len(groups)) if groups else np.nan


def _published_at(sessions: list[SessionPlan]) -> dict[int, str]:
    """Container publication date: 60 days after its last released session."""
    last: dict[int, dt.datetime] = {}
    for s in sessions:
        for e in s.experiments:
            last[e.ophys_container_id] = max(last.get(e.ophys_container_id, s.date_of_acquisition),
                                             s.date_of_acquisition)
    return {c: (d + dt.timedelta(days=60)).date().isoformat() for c, d in last.items()}


def metadata_tables(sessions: list[SessionPlan], trial_counts: dict[int, dict] | None = None, *,
                    layout: str = "1.1.0") -> dict[str, pd.DataFrame]:
    """``behavior_session_table``, ``ophys_session_table``, ``ophys_experiment_table`` as written to CSV.

    Sessions with ``released=False`` are skipped. Columns and order are those of the release CSVs
    (``layout="1.0"``: the shared release copy; ``"1.1.0"``: plus the eight trial-count columns before
    ``file_id`` in the behavior table and ``published_at``, ``isi_experiment_id`` before ``file_id`` in
    the experiment table). Integer columns with missing values are float64 (as pandas reads the CSVs),
    list columns hold Python lists, ``date_of_acquisition`` is ``datetime64[ns, UTC]``.
    """
    trial_counts = trial_counts or {}
    released = [s for s in sessions if s.released]
    published = _published_at(released)
    behavior_rows, session_rows, experiment_rows = [], [], []
    for s in released:
        shared = {**_mouse_columns(s.mouse, s.date_of_acquisition), **_session_columns(s)}
        behavior_rows.append(_behavior_row(s, shared, trial_counts.get(s.behavior_session_id, {})))
        if _imaging(s):
            session_rows.append(_ophys_session_row(s, shared))
            experiment_rows += _experiment_rows(s, shared, published)
    # the released behavior table lists behavior-only sessions first, then the imaging sessions
    behavior_rows.sort(key=lambda r: isinstance(r["ophys_experiment_id"], list))
    tables = {
        "behavior_session_table": behavior_rows,
        "ophys_session_table": session_rows,
        "ophys_experiment_table": experiment_rows,
    }
    out = {}
    for name, rows in tables.items():
        columns = list(table_columns(name, layout))
        frame = pd.DataFrame(rows, columns=columns) if rows else pd.DataFrame(columns=columns)
        if len(frame):
            frame["date_of_acquisition"] = pd.to_datetime(
                frame["date_of_acquisition"], utc=True).astype("datetime64[ns, UTC]")
        out[name] = frame.reset_index(drop=True)
    return out


def _imaging(s: SessionPlan) -> bool:
    """An imaging session with released experiments (a row in the ophys tables)."""
    return s.is_imaging and s.ophys_session_id is not None and bool(s.experiments)


def _behavior_row(s: SessionPlan, shared: dict, counts: dict) -> dict:
    """One ``behavior_session_table`` row; ``shared``: the mouse and session columns."""
    imaging = _imaging(s)
    structures, depths = PROJECT_STRUCTURE.get(s.mouse.project_code, (np.nan, np.nan))
    return {
        "behavior_session_id": s.behavior_session_id,
        "ophys_session_id": float(s.ophys_session_id) if imaging else np.nan,
        "ophys_container_id": sorted({e.ophys_container_id for e in s.experiments}) if imaging else np.nan,
        **shared,
        "imaging_plane_group_count": _group_count(s) if imaging else np.nan,
        "num_depths_per_area": float(depths) if imaging else np.nan,
        "num_targeted_structures": float(structures) if imaging else np.nan,
        "ophys_experiment_id": sorted(e.ophys_experiment_id for e in s.experiments) if imaging else np.nan,
        **{c: int(counts.get(c, 0)) for c in TRIAL_COUNT_COLUMNS},
        "file_id": -999 if imaging else int(s.file_id),
    }


def _ophys_session_row(s: SessionPlan, shared: dict) -> dict:
    """One ``ophys_session_table`` row of an imaging session."""
    structures, depths = PROJECT_STRUCTURE.get(s.mouse.project_code, (np.nan, np.nan))
    return {
        "ophys_session_id": s.ophys_session_id,
        "behavior_session_id": s.behavior_session_id,
        "ophys_container_id": sorted({e.ophys_container_id for e in s.experiments}),
        **shared,
        "session_number": session_number_of(s.session_type),
        "prior_exposures_to_image_set": s.prior_exposures_to_image_set,
        "num_targeted_structures": structures,
        "imaging_plane_group_count": _group_count(s),
        "ophys_experiment_id": sorted(e.ophys_experiment_id for e in s.experiments),
        "num_depths_per_area": depths,
    }


def _experiment_rows(s: SessionPlan, shared: dict, published: dict[int, str]) -> list[dict]:
    """The ``ophys_experiment_table`` rows of an imaging session, one per plane in id order (the plane's
    columns override the session's ``session_number``, ``image_set`` and ``prior_exposures_to_image_set``)."""
    return [{
        "ophys_experiment_id": e.ophys_experiment_id,
        "behavior_session_id": s.behavior_session_id,
        "ophys_session_id": s.ophys_session_id,
        "ophys_container_id": e.ophys_container_id,
        **shared,
        "imaging_depth": e.imaging_depth,
        "targeted_structure": e.targeted_structure,
        "targeted_imaging_depth": e.targeted_imaging_depth,
        "imaging_plane_group": np.nan if e.imaging_plane_group is None else float(e.imaging_plane_group),
        "session_number": session_number_of(s.session_type),
        "image_set": experiment_image_set_of(s.session_type),
        "passive": session_number_of(s.session_type) in (2, 5),
        "prior_exposures_to_image_set": s.prior_exposures_to_image_set,
        "published_at": published[e.ophys_container_id],
        "isi_experiment_id": s.mouse.isi_experiment_id,
        "file_id": e.file_id,
    } for e in sorted(s.experiments, key=lambda e: e.ophys_experiment_id)]


def cells_table(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    """``ophys_cells_table`` from ``(cell_roi_id, cell_specimen_id, ophys_experiment_id)`` tuples.

    ``cell_specimen_id`` may be None or a negative sentinel (unmatched ROI) → ``<NA>``.
    """
    roi = [int(r[0]) for r in rows]
    specimen = [None if (r[1] is None or (isinstance(r[1], float) and math.isnan(r[1])) or r[1] < 0)
                else int(r[1]) for r in rows]
    experiment = [int(r[2]) for r in rows]
    return pd.DataFrame({
        "cell_roi_id": pd.Series(roi, dtype="int64"),
        "cell_specimen_id": pd.Series(specimen, dtype="Int64"),
        "ophys_experiment_id": pd.Series(experiment, dtype="int64"),
    })


def _date_text(value, with_offset: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return ""
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    ts = ts.tz_convert("UTC")
    return str(ts) if with_offset else str(ts.tz_localize(None))


def write_metadata_csv(table: pd.DataFrame, path: str | Path, name: str | None = None) -> Path:
    """Write a metadata table with the release CSV conventions.

    No index column; list cells as Python reprs (``[1, 2]``, ``['Sst-IRES-Cre']``); missing values as
    empty cells; floats as pandas writes them (``4.0``); booleans ``True``/``False``;
    ``date_of_acquisition`` as ``2019-05-17 14:46:33.550000+00:00`` in the behavior table and without
    the UTC offset in the ophys session and experiment tables. ``name`` (the table name) is inferred
    from the first column when not given.
    """
    path = Path(path)
    if name is None:
        name = {"behavior_session_id": "behavior_session_table", "ophys_session_id": "ophys_session_table",
                "ophys_experiment_id": "ophys_experiment_table", "cell_roi_id": "ophys_cells_table"}.get(
            table.columns[0], "")
    out = table.copy()
    if "date_of_acquisition" in out.columns:
        with_offset = name == "behavior_session_table"
        out["date_of_acquisition"] = [_date_text(v, with_offset) for v in out["date_of_acquisition"]]
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = [
                repr(v) if isinstance(v, list) else ("None" if v is None and column == "experience_level" else v)
                for v in out[column]
            ]
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False, lineterminator="\n")
    return path
