"""The behaviour of one simulated session: stimulus clock, trials, licks, rewards, running, eye tracking.

:func:`simulate_behavior` turns a :class:`~vbo.simulate.plan.SessionPlan` into a
:class:`~vbo.nwb.content.BehaviorContent` in the reader's shapes (those of :mod:`vbo.nwb.content`) plus a dict of what
was planted. The model is the Visual Behavior change-detection task (a mouse licks when the flashed image
changes):

* stimulus frames at 60 Hz (small jitter, rare dropped frames); behavior-only sessions start their clock at
  0 s, imaging sessions at 8-9 s (``docs/format.md`` §9). Presentation times and ``change_time`` include the rig's
  monitor delay; stimulus, lick, reward, running and trial start/stop times do not.
* blocks: ``initial_gray_screen_5min`` → change detection (0.25 s flash every 45 frames) →
  ``post_behavior_gray_screen_5min`` → ``natural_movie_one`` (30 Hz, one row per movie frame) on the imaging rig
  and in ``TRAINING_5``, where the movie epilogue was added; the earlier training stages (``TRAINING_0``–``4``)
  are the change-detection block alone (block 0, no gray-screen or movie rows; ``docs/format.md`` §7.5).
* trials start just before a flash; the change comes on flash 4-12 after the trial start (geometric, p 0.3);
  a fraction of trials are catch (sham-change) trials; the first non-aborted trials are auto-rewarded
  (all of them in ``TRAINING_0``); a lick before the change aborts the trial.
* a mouse is engaged early and disengages late in the session (a logistic fall of the probability of being
  engaged). Engaged, it licks in the response window with the planted ``hit_probability`` on go trials and
  ``false_alarm_probability`` on catch trials; disengaged, with a tenth of each. Licks come in bouts.
* omitted flashes (5 %) when ``plan.has_omissions``: never the first flash, a change or sham-change flash,
  or the flash before one.
* running speed rises when the mouse disengages; the pupil follows running; blinks are short bursts of
  NaN or outlier ellipse areas.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import ndimage, signal

from vbo import screen
from vbo.derive import flashes_since_change, likely_blinks  # the one definitions, shared with the reader
from vbo.nwb.content import BehaviorContent, Ellipse, EyeTracking, RigGeometry, StimulusTemplate
from vbo.nwb.layout import INT_NA
from vbo.simulate.plan import Scale, SessionPlan


# --- stimulus -----------------------------------------------------------------------------------
FRAME_RATE = 60.0
FLASH_FRAMES = 15  # 0.25 s image
FLASH_PERIOD = 45  # onset to onset: 0.25 s image + 0.5 s gray
MOVIE_STIMULUS_FRAMES = 2  # natural_movie_one runs at 30 Hz
FRAME_JITTER_S = 1.5e-4  # SD of the inter-frame interval
DROPPED_FRAME_PROBABILITY = 2e-5
OMITTED_FLASH_FRACTION = 0.05
BEHAVIOR_ONLY_MONITOR_DELAY = 0.02115
MONITOR_DELAY = {  # per-rig fallback values (docs/format.md §9)
    "CAM2P.1": 0.020842, "CAM2P.2": 0.037566, "CAM2P.3": 0.021390, "CAM2P.4": 0.021102,
    "CAM2P.5": 0.021192, "MESO.1": 0.03613, "MESO.2": 0.03613,
}
IMAGING_CLOCK_START = (8.0, 9.0)  # s: first stimulus frame on the sync clock of imaging sessions

BLOCK_NAMES = ("initial_gray_screen_5min", "change_detection_behavior", "post_behavior_gray_screen_5min",
               "natural_movie_one")
PASSIVE_BLOCK_NAME = "change_detection_passive"
SPONTANEOUS = "spontaneous"
MOVIE = "natural_movie_one"
GRATING = "grating"
GRATING_ORIENTATIONS = (0.0, 90.0, 180.0, 270.0)  # template order
GRATING_SHOWN = (0.0, 90.0)  # orientations used by the task

# image set letter -> (stimulus_name of the presentations, template name, default image names in template order)
IMAGE_SETS = {
    "A": ("Natural_Images_Lum_Matched_set_training_2017", "Natural_Images_Lum_Matched_set_training_2017.07.14",
          ["im065", "im061", "im062", "im063", "im066", "im069", "im077", "im085"]),
    "B": ("Natural_Images_Lum_Matched_set_ophys_6_2017", "Natural_Images_Lum_Matched_set_ophys_6_2017.07.14",
          ["im000", "im031", "im035", "im045", "im054", "im073", "im075", "im106"]),
    "G": ("Natural_Images_Lum_Matched_set_ophys_G_2019", "Natural_Images_Lum_Matched_set_ophys_G_2019.05.26",
          ["im012", "im036", "im044", "im047", "im078", "im083", "im111", "im115"]),
    "H": ("Natural_Images_Lum_Matched_set_ophys_H_2019", "Natural_Images_Lum_Matched_set_ophys_H_2019.05.26",
          ["im005", "im024", "im034", "im083", "im087", "im104", "im111", "im114"]),  # shares 2 images with G
}

# --- task ---------------------------------------------------------------------------------------
RESPONSE_WINDOW_S = (0.15, 0.75)
BLANK_DURATION_S = (0.5, 0.5)
STIMULUS_DURATION_S = 0.25
CHANGE_FLASH_P = 0.3  # geometric distribution of the change flash after the trial start
MIN_CHANGE_FLASH, MAX_CHANGE_FLASH = 4, 12
CATCH_FRACTION = 0.15
AUTO_REWARDED_TRIALS = 5
TRAINING_0_TASK_S = 900.0  # TRAINING_0_gratings_autorewards_15min
EARLY_TRAINING_STAGES = ("TRAINING_0", "TRAINING_1", "TRAINING_2", "TRAINING_3", "TRAINING_4")  # no movie epilogue
POST_CHANGE_FRAMES = 255  # trial end after the change (≈ 4.25 s)
ABORT_STOP_FRAMES = 19  # aborted trial ends ≈ 0.32 s after the aborting lick
AUTO_REWARD_DELAY_FRAMES = 10
REWARD_VOLUME = 0.007  # mL
LARGE_REWARD_VOLUME = 0.010  # 10uL stages and gratings training
AUTO_REWARD_VOLUME = 0.005
ABORT_RATE = {True: 0.06, False: 0.01}  # impulsive licks per s before the change (engaged, disengaged)
LATE_LICK_PROBABILITY = {True: 0.25, False: 0.05}  # a lick after the response window when not responding
AUTO_LICK_PROBABILITY = {True: 0.95, False: 0.3}
DISENGAGED_RESPONSE_FACTOR = 0.1  # disengaged hit / false-alarm probability = factor × planted
RESPONSE_LATENCY_S = (0.2, 0.7)  # first lick of a response, after the change (inside the window)
LATE_LATENCY_S = (1.0, 2.8)
LICK_INTERVAL_FRAMES = (7, 8, 9, 10)  # 7-8.6 Hz licking
SPONTANEOUS_LICK_RATE = 0.02  # per s, gray screens and movie of active sessions
DISENGAGE_FRACTION = (0.6, 0.8)  # engagement falls at this fraction of the task block
DISENGAGE_TAU_FRACTION = 0.04  # logistic width, fraction of the task block

# --- running and eye ----------------------------------------------------------------------------
RUN_TAU_S = 3.0
RUN_ENGAGED_MEAN, RUN_DISENGAGED_EXTRA, RUN_GRAY_MEAN, RUN_SPREAD = 10.0, 10.0, 8.0, 15.0  # cm/s
ENCODER_RADIUS_CM = 6.5
ENCODER_STEP_CM = 0.0095
ENCODER_VOLTAGE_STEP = 0.00129  # V: the DAQ's resolution of v_in and v_sig (docs/format.md §7.9)
RUNNING_CUTOFF_HZ = 10.0
EYE_RATE = 30.0
BLINK_RATE = 0.05  # per s
RIG_GEOMETRY = {  # monitor, camera, LED positions (mm); monitor, camera rotations (degrees)
    "CAM2P.3": ((118.6, 86.2, 31.6), (130.0, 0.0, 0.0), (246.0, 92.3, 52.6), (0.0, 0.0, 0.0), (0.0, 0.0, 13.1)),
    "CAM2P.4": ((118.6, 86.2, 31.6), (130.0, 0.0, 0.0), (265.1, -39.3, 1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 13.1)),
    "CAM2P.5": ((118.6, 86.2, 31.6), (130.0, 0.0, 0.0), (265.1, -39.3, 1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 13.1)),
    "MESO.1": ((118.6, 86.2, 31.6), (130.0, 0.0, 0.0), (265.1, -39.3, 1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 13.1)),
}
SUBJECT_DESCRIPTION = "A visual behavior subject with a LabTracks ID"


# --- public entry point -------------------------------------------------------------------------


def simulate_behavior(plan: SessionPlan, scale: Scale, rng: np.random.Generator,
                      image_names: dict[str, list[str]] | None = None) -> tuple[BehaviorContent, dict]:
    """Simulate the behaviour of one session.

    Parameters
    ----------
    plan
        The session (type, stage, mouse, rig, planted hit and false-alarm probabilities ...).
    scale
        Block durations (initial gray, task or training task, final gray, movie) and template shape.
    rng
        The session's random generator; the same state gives the same content.
    image_names
        Image names per set letter (8 each, template order); defaults to :data:`IMAGE_SETS`.

    Returns
    -------
    (BehaviorContent, dict)
        The file content in the reader's shapes, and the planted truth (JSON-serialisable).
    """
    setup = _Setup.build(plan, scale, image_names)
    layout = _FrameLayout.build(setup, scale)
    ts = _stimulus_timestamps(layout.n_frames, setup, rng)
    session_uuid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
    engagement = _Engagement.build(setup, layout, ts, rng)
    task = _run_task(setup, layout, ts, engagement, rng)
    omitted = _omissions(setup, layout, task, rng)
    presentations = _presentations(setup, layout, ts, task, omitted)
    trials = _trials_frame(setup, layout, ts, task)
    running = _running(setup, layout, ts, engagement, rng)
    eye = _eye_tracking(setup, ts, running["speed"], rng) if setup.imaging else None

    licks = rewards = None
    if not setup.passive:
        licks = pd.DataFrame({"timestamps": ts[task.lick_frames], "frame": task.lick_frames.astype(np.int64)})
        rewards = pd.DataFrame({"volume": np.asarray(task.reward_volumes, float),
                                "timestamps": ts[np.asarray(task.reward_frames, np.int64)],
                                "auto_rewarded": np.asarray(task.reward_auto, bool)})
    shown_flashes = int(layout.n_flashes - omitted.sum())
    content = BehaviorContent(
        identifier=str(plan.behavior_session_id),
        session_start_time=plan.date_of_acquisition,
        session_type=plan.session_type,
        experiment_description=experiment_description(plan.session_type),
        metadata={
            "behavior_session_id": int(plan.behavior_session_id),
            "behavior_session_uuid": session_uuid,
            "equipment_name": plan.equipment_name,
            "project_code": plan.mouse.project_code,
            "session_type": plan.session_type,
            "stimulus_frame_rate": FRAME_RATE,
        },
        subject=_subject(plan),
        task_parameters=_task_parameters(setup, shown_flashes),
        stimulus_timestamps=ts,
        running_timestamps=ts.copy(),
        running_speed=running["speed"],
        running_speed_unfiltered=running["speed_unfiltered"],
        running_dx=running["dx"],
        v_in=running["v_in"],
        v_sig=running["v_sig"],
        trials=trials,
        presentations=presentations,
        licks=licks,
        rewards=rewards,
        templates=[stimulus_template(setup.set_letter, scale.template_shape, tuple(setup.image_names))],
        eye_tracking=eye,
        rig_geometry=rig_geometry(plan.equipment_name) if setup.imaging else None,
    )
    truth = _truth(plan, setup, layout, ts, engagement, task, omitted, trials, running, eye, session_uuid)
    return content, truth


# --- session set-up -----------------------------------------------------------------------------


@dataclass
class _Setup:
    plan: SessionPlan
    gratings: bool
    set_letter: str | None  # None for gratings
    stimulus_name: str
    template_name: str
    image_names: list[str]  # template order
    shown: np.ndarray  # template indices the task changes between
    novel: np.ndarray  # per template image: novel to this mouse (only on Novel 1 sessions)
    passive: bool
    imaging: bool
    training: bool
    all_auto: bool
    n_auto: int
    task_s: float
    reward_volume: float
    monitor_delay: float
    clock_start: float | None  # None: drawn for imaging sessions
    omissions: bool
    epilogue: bool  # gray screens around the task and the natural movie after it (imaging rig, TRAINING_5)

    @classmethod
    def build(cls, plan: SessionPlan, scale: Scale, image_names: dict[str, list[str]] | None) -> _Setup:
        gratings = plan.image_set is None or "gratings" in plan.session_type
        if gratings:
            names = [f"gratings_{o}" for o in GRATING_ORIENTATIONS]
            stimulus_name = template_name = GRATING
            letter = None
            shown = np.array([GRATING_ORIENTATIONS.index(o) for o in GRATING_SHOWN])
        else:
            letter = plan.image_set
            stimulus_name, template_name, default = IMAGE_SETS[letter]
            names = list((image_names or {}).get(letter) or default)
            shown = np.arange(len(names))
        novel = np.zeros(len(names), bool)
        if plan.novel_images and not gratings:
            familiar = plan.mouse.familiar_image_set
            familiar_names = set((image_names or {}).get(familiar) or IMAGE_SETS.get(familiar, ("", "", []))[2])
            novel = np.array([n not in familiar_names for n in names])
        stage = plan.stage
        training = stage.startswith("TRAINING")
        all_auto = stage == "TRAINING_0" and not plan.passive
        task_s = scale.training_task_s if training else scale.task_s
        if stage == "TRAINING_0":
            task_s = min(task_s, TRAINING_0_TASK_S)
        large = "10uL" in plan.session_type or stage in ("TRAINING_0", "TRAINING_1", "TRAINING_2")
        imaging = bool(plan.is_imaging)
        delay = MONITOR_DELAY.get(plan.equipment_name, BEHAVIOR_ONLY_MONITOR_DELAY) if imaging \
            else BEHAVIOR_ONLY_MONITOR_DELAY
        return cls(plan=plan, gratings=gratings, set_letter=letter, stimulus_name=stimulus_name,
                   template_name=template_name, image_names=names, shown=shown, novel=novel,
                   passive=bool(plan.passive), imaging=imaging, training=training, all_auto=all_auto,
                   n_auto=0 if plan.passive else AUTO_REWARDED_TRIALS, task_s=float(task_s),
                   reward_volume=LARGE_REWARD_VOLUME if large else REWARD_VOLUME, monitor_delay=delay,
                   clock_start=None if imaging else 0.0, omissions=bool(plan.has_omissions),
                   epilogue=stage not in EARLY_TRAINING_STAGES)

    @property
    def task_block_name(self) -> str:
        """``stimulus_block_name`` of the change-detection block (its passive form in passive sessions)."""
        return PASSIVE_BLOCK_NAME if self.passive else BLOCK_NAMES[1]


@dataclass
class _FrameLayout:
    first_flash: int  # stimulus frame of the first flash (start of the task block)
    task_block: int  # ``stimulus_block`` of the change-detection rows: 1 after the first gray screen, else 0
    n_flashes: int
    task_end: int  # frame after the last flash's gray period
    movie_start: int  # first movie frame (= n_frames without a movie)
    movie_rows: int  # movie frames shown (repeats × frames)
    movie_frames: int
    n_frames: int

    @classmethod
    def build(cls, setup: _Setup, scale: Scale) -> _FrameLayout:
        gray_s, final_gray_s = (scale.initial_gray_s, scale.final_gray_s) if setup.epilogue else (0.0, 0.0)
        first = int(round(gray_s * FRAME_RATE)) + 2
        n_flashes = max(int(setup.task_s * FRAME_RATE) // FLASH_PERIOD, MAX_CHANGE_FLASH + 8)
        task_end = first + n_flashes * FLASH_PERIOD
        movie_start = task_end + int(round(final_gray_s * FRAME_RATE))
        movie_rows = int(scale.movie_repeats) * int(scale.movie_frames) if setup.epilogue else 0
        n_frames = movie_start + MOVIE_STIMULUS_FRAMES * movie_rows
        if movie_rows == 0:
            n_frames += 1
        return cls(first, int(setup.epilogue), n_flashes, task_end, movie_start, movie_rows, int(scale.movie_frames),
                   n_frames)

    @property
    def onsets(self) -> np.ndarray:
        return self.first_flash + FLASH_PERIOD * np.arange(self.n_flashes)


def _stimulus_timestamps(n_frames: int, setup: _Setup, rng: np.random.Generator) -> np.ndarray:
    """Frame times (s) at 60 Hz with small jitter and rare dropped frames; no monitor delay."""
    start = setup.clock_start if setup.clock_start is not None else rng.uniform(*IMAGING_CLOCK_START)
    intervals = 1.0 / FRAME_RATE + rng.normal(0.0, FRAME_JITTER_S, n_frames - 1)
    intervals = np.clip(intervals, 0.8 / FRAME_RATE, None)
    intervals += (rng.random(n_frames - 1) < DROPPED_FRAME_PROBABILITY) / FRAME_RATE
    ts = np.empty(n_frames)
    ts[0] = start
    np.cumsum(intervals, out=ts[1:])
    ts[1:] += start
    return ts


# --- engagement ---------------------------------------------------------------------------------


@dataclass
class _Engagement:
    disengage_time: float | None  # s on the session clock; None for passive sessions
    tau: float

    @classmethod
    def build(cls, setup: _Setup, layout: _FrameLayout, ts: np.ndarray, rng: np.random.Generator) -> _Engagement:
        t0, t1 = ts[layout.first_flash], ts[layout.task_end - 1]
        if setup.passive:
            return cls(None, 1.0)
        return cls(float(t0 + rng.uniform(*DISENGAGE_FRACTION) * (t1 - t0)), DISENGAGE_TAU_FRACTION * (t1 - t0))

    def level(self, t: np.ndarray | float) -> np.ndarray:
        """Probability of being engaged at time ``t`` (s)."""
        if self.disengage_time is None:
            return np.zeros_like(np.asarray(t, float))
        z = np.clip((np.asarray(t, float) - self.disengage_time) / self.tau, -50, 50)
        return 1.0 / (1.0 + np.exp(z))


# --- trials -------------------------------------------------------------------------------------


@dataclass
class _Task:
    start_frame: list
    stop_frame: list
    initial_image: list  # template index
    change_image: list
    change_frame: list  # -99: none
    change_flash: list  # flash index of the (sham) change, -1: none
    mode: list  # go / catch / auto
    aborted: list
    hit: list
    miss: list
    false_alarm: list
    correct_reject: list
    engaged: list
    reward_frame: list  # -1: none
    reward_volume: list
    lick_frames: np.ndarray = None
    reward_frames: list = None
    reward_volumes: list = None
    reward_auto: list = None
    first_image: int = 0

    @property
    def n(self) -> int:
        return len(self.start_frame)


def _change_flash_count(rng: np.random.Generator) -> int:
    """Flashes from the trial start to the change: 4 + geometric(p), truncated at 12."""
    span = MAX_CHANGE_FLASH - MIN_CHANGE_FLASH + 1
    top = 1.0 - (1.0 - CHANGE_FLASH_P) ** span
    u = rng.random() * top
    return MIN_CHANGE_FLASH + int(np.floor(np.log1p(-u) / np.log1p(-CHANGE_FLASH_P)))


def _bout(first: int, n: int, rng: np.random.Generator) -> list[int]:
    steps = rng.choice(LICK_INTERVAL_FRAMES, size=max(n - 1, 0))
    return (first + np.concatenate([[0], np.cumsum(steps)])).astype(int).tolist()


def _frame_at_latency(ts: np.ndarray, change_frame: int, delay: float, latency: float) -> int:
    """First stimulus frame at or after ``change_time + latency`` (change_time includes the delay)."""
    return int(np.searchsorted(ts, ts[change_frame] + delay + latency))


def _run_task(setup: _Setup, layout: _FrameLayout, ts: np.ndarray, engagement: _Engagement,
              rng: np.random.Generator) -> _Task:
    """Walk through the task block trial by trial: schedule the change, decide abort / response / reward."""
    onsets = layout.onsets
    task = _Task(*([] for _ in range(15)))
    licks: list[int] = []
    rewards: list[tuple[int, float, bool]] = []  # frame, volume (mL), auto-rewarded
    image = int(rng.choice(setup.shown))
    task.first_image = image
    auto_left = setup.n_auto
    start = layout.first_flash - 2
    while True:
        # the change flash, and this trial's mode and engagement
        j0 = int(np.searchsorted(onsets, start, side="left"))
        jc = j0 + _change_flash_count(rng)
        if jc >= layout.n_flashes:
            break
        change_frame = int(onsets[jc])
        stop = change_frame + POST_CHANGE_FRAMES + int(rng.integers(0, 2))
        if stop >= layout.task_end:
            break
        engaged = bool(rng.random() < engagement.level(ts[start]))
        if setup.passive:
            mode = "catch" if rng.random() < CATCH_FRACTION else "go"
        elif setup.all_auto or auto_left > 0:
            mode = "auto"
        else:
            mode = "catch" if rng.random() < CATCH_FRACTION else "go"
        abort_frame = None
        if not setup.passive:
            abort_frame = start + 1 + int(rng.exponential(1.0 / ABORT_RATE[engaged]) * FRAME_RATE)
            if abort_frame >= change_frame:
                abort_frame = None
        record = dict(start=start, initial=image, engaged=engaged, mode=mode)
        # an aborted trial ends early with a lick; otherwise the change (or a sham one) and the response
        if abort_frame is not None:
            stop = abort_frame + ABORT_STOP_FRAMES
            licks += _bout(abort_frame, int(rng.integers(1, 3)), rng)
            _append_trial(task, record, stop=stop, change_image=image, change_frame=INT_NA, change_flash=-1,
                          aborted=True)
        else:
            new_image = image
            if mode != "catch":
                others = setup.shown[setup.shown != image]
                new_image = int(rng.choice(others))
            if mode == "auto":
                auto_left -= 1
            outcome, reward_frame, volume = _response(setup, ts, change_frame, mode, engaged, licks, rng)
            if reward_frame >= 0:
                rewards.append((reward_frame, volume, mode == "auto"))
            _append_trial(task, record, stop=stop, change_image=new_image, change_frame=change_frame,
                          change_flash=jc, aborted=False, reward_frame=reward_frame, reward_volume=volume, **outcome)
            image = new_image
        # the next trial starts on (or up to 2 frames before) the next flash
        jn = int(np.searchsorted(onsets, stop + 1, side="left"))
        if jn >= layout.n_flashes:
            break
        start = max(int(onsets[jn]) - int(rng.integers(0, 3)), stop + 1)

    if not setup.passive:
        licks += _spontaneous_licks(layout, ts, rng)
    task.lick_frames = np.unique(np.asarray(licks, dtype=np.int64))
    task.reward_frames = [r[0] for r in rewards]
    task.reward_volumes = [r[1] for r in rewards]
    task.reward_auto = [r[2] for r in rewards]
    return task


def _response(setup: _Setup, ts: np.ndarray, change_frame: int, mode: str, engaged: bool, licks: list[int],
              rng: np.random.Generator) -> tuple[dict[str, bool], int, float]:
    """The mouse's answer to a (sham) change: its licks (appended to ``licks``), the outcome flags, and the
    reward frame and volume (−1 and 0 without a reward)."""
    plan, delay = setup.plan, setup.monitor_delay
    factor = 1.0 if engaged else DISENGAGED_RESPONSE_FACTOR
    outcome = dict(hit=False, miss=False, false_alarm=False, correct_reject=False)
    reward_frame, volume = -1, 0.0
    if mode == "auto":
        reward_frame, volume = change_frame + AUTO_REWARD_DELAY_FRAMES, AUTO_REWARD_VOLUME
        if rng.random() < AUTO_LICK_PROBABILITY[engaged]:
            first = _frame_at_latency(ts, change_frame, delay, rng.uniform(*RESPONSE_LATENCY_S))
            licks += _bout(first, 6 + min(int(rng.poisson(5)), 10), rng)
    elif not setup.passive:
        p = (plan.hit_probability if mode == "go" else plan.false_alarm_probability) * factor
        responded = bool(rng.random() < p)
        if responded:
            first = _frame_at_latency(ts, change_frame, delay, rng.uniform(*RESPONSE_LATENCY_S))
            if mode == "go":
                licks += _bout(first, 6 + min(int(rng.poisson(5)), 10), rng)
                reward_frame, volume = first, setup.reward_volume
            else:
                licks += _bout(first, 1 + int(rng.random() < 0.3), rng)
        elif rng.random() < LATE_LICK_PROBABILITY[engaged]:
            first = _frame_at_latency(ts, change_frame, delay, rng.uniform(*LATE_LATENCY_S))
            licks += _bout(first, 1 + min(int(rng.poisson(1.5)), 4), rng)
        key = ("hit" if responded else "miss") if mode == "go" else ("false_alarm" if responded else "correct_reject")
        outcome[key] = True
    else:
        outcome["miss" if mode == "go" else "correct_reject"] = True
    return outcome, reward_frame, volume


def _append_trial(task: _Task, record: dict, *, stop: int, change_image: int, change_frame: int,
                  change_flash: int, aborted: bool, hit: bool = False, miss: bool = False,
                  false_alarm: bool = False, correct_reject: bool = False, reward_frame: int = -1,
                  reward_volume: float = 0.0) -> None:
    task.start_frame.append(record["start"])
    task.stop_frame.append(stop)
    task.initial_image.append(record["initial"])
    task.change_image.append(change_image)
    task.change_frame.append(change_frame)
    task.change_flash.append(change_flash)
    task.mode.append(record["mode"])
    task.aborted.append(aborted)
    task.hit.append(hit)
    task.miss.append(miss)
    task.false_alarm.append(false_alarm)
    task.correct_reject.append(correct_reject)
    task.engaged.append(record["engaged"])
    task.reward_frame.append(reward_frame)
    task.reward_volume.append(reward_volume)


def _spontaneous_licks(layout: _FrameLayout, ts: np.ndarray, rng: np.random.Generator) -> list[int]:
    """A few isolated licks in the gray screens and the movie (outside the task block)."""
    spans = [(1, layout.first_flash - 10), (layout.task_end + 30, layout.n_frames - 1)]
    frames: list[int] = []
    for lo, hi in spans:
        if hi <= lo:
            continue
        n = int(rng.poisson(SPONTANEOUS_LICK_RATE * (ts[hi] - ts[lo])))
        frames += rng.integers(lo, hi, size=n).tolist()
    return frames


def _trials_frame(setup: _Setup, layout: _FrameLayout, ts: np.ndarray, task: _Task) -> pd.DataFrame:
    """The reader's 21-column trials table (``vbo.behavior`` / ``BehaviorSession.trials``), from the simulated log."""
    n = task.n
    start_frame = np.asarray(task.start_frame, np.int64)
    stop_frame = np.asarray(task.stop_frame, np.int64)
    change_frame = np.asarray(task.change_frame, np.int64)
    aborted = np.asarray(task.aborted, bool)
    mode = np.asarray(task.mode, object)
    auto = (mode == "auto") & ~aborted
    catch = (mode == "catch") & ~aborted
    go = (mode == "go") & ~aborted
    has_change = change_frame >= 0
    start_time = ts[start_frame]
    stop_time = ts[stop_frame]
    change_time = np.where(has_change, ts[np.clip(change_frame, 0, None)] + setup.monitor_delay, np.nan)
    names = np.asarray(setup.image_names, object)
    initial = names[np.asarray(task.initial_image, np.int64)] if n else np.zeros(0, object)
    changed = names[np.asarray(task.change_image, np.int64)] if n else np.zeros(0, object)

    # lick_times: licks whose frame is in (start frame, next start frame]; the last trial up to the movie
    licks = task.lick_frames
    lo = np.searchsorted(licks, start_frame, side="right")
    hi = np.empty(n, np.int64)
    hi[:-1] = np.searchsorted(licks, start_frame[1:], side="right")
    if n:
        hi[-1] = np.searchsorted(licks, layout.movie_start, side="left") if layout.movie_rows else len(licks)
    lick_times = pd.Series([ts[licks[a:b]] for a, b in zip(lo, hi)], dtype=object)
    first_lick = np.array([x[0] if len(x) else np.nan for x in lick_times], float)
    response_time = np.where(aborted, np.nan, first_lick)
    with np.errstate(invalid="ignore"):
        latency = np.where(np.isnan(first_lick), np.inf, first_lick - change_time)
    latency = np.where(aborted, np.nan, latency)

    reward_frame = np.asarray(task.reward_frame, np.int64)
    reward_time = np.where(reward_frame >= 0, ts[np.clip(reward_frame, 0, None)], np.nan)
    frame = pd.DataFrame({
        "start_time": start_time,
        "stop_time": stop_time,
        "initial_image_name": pd.Series(initial, dtype=object),
        "change_image_name": pd.Series(changed, dtype=object),
        "is_change": (go | auto),
        "change_time": change_time,
        "go": go,
        "catch": catch,
        "lick_times": lick_times,
        "response_time": response_time,
        "response_latency": latency,
        "reward_time": reward_time,
        "reward_volume": np.asarray(task.reward_volume, float),
        "hit": np.asarray(task.hit, bool),
        "false_alarm": np.asarray(task.false_alarm, bool),
        "miss": np.asarray(task.miss, bool),
        "correct_reject": np.asarray(task.correct_reject, bool),
        "aborted": aborted,
        "auto_rewarded": auto,
        "change_frame": change_frame,
        "trial_length": stop_time - start_time,
    })
    frame.index = pd.Index(np.arange(n, dtype=np.int64), name="trials_id")
    return frame


# --- presentations ------------------------------------------------------------------------------


def _omissions(setup: _Setup, layout: _FrameLayout, task: _Task, rng: np.random.Generator) -> np.ndarray:
    """Omitted flags per flash: ~5 % of flashes, never the first, a (sham) change or the flash before one."""
    omitted = np.zeros(layout.n_flashes, bool)
    if not setup.omissions:
        return omitted
    eligible = np.ones(layout.n_flashes, bool)
    eligible[[0, -1]] = False
    changes = np.asarray([j for j in task.change_flash if j >= 0], np.int64)
    eligible[changes] = False
    eligible[changes[changes > 0] - 1] = False
    p = min(1.0, OMITTED_FLASH_FRACTION * layout.n_flashes / max(int(eligible.sum()), 1))
    omitted[eligible] = rng.random(int(eligible.sum())) < p
    return omitted


def _presentations(setup: _Setup, layout: _FrameLayout, ts: np.ndarray, task: _Task,
                   omitted: np.ndarray) -> pd.DataFrame:
    """The reader's ``stimulus_presentations`` (19 columns, + ``orientation`` for gratings) + ``image_set``.

    Rows: the gray screen before the task, one per flash, the gray screen after, one per movie frame (the flashes
    alone in the early training stages)."""
    nf, m = layout.n_flashes, layout.movie_rows
    change_flags, sham_flags, image_idx = _flash_images(task, nf)
    rows = _presentation_rows(setup, layout, ts, omitted)
    task_block = layout.task_block
    n, block, flash_rows = len(rows["block"]), rows["block"], slice(task_block, task_block + nf)
    names = np.asarray(setup.image_names, object)

    def flash_column(values, fill, dtype) -> np.ndarray:
        column = np.full(n, fill, dtype=dtype)
        column[flash_rows] = values
        return column

    def flags(values, dtype="boolean"):
        column = pd.array([pd.NA] * n, dtype=dtype)
        column[flash_rows] = values
        return column

    novel = pd.array(np.asarray(setup.novel)[image_idx], dtype="boolean")
    novel[omitted] = pd.NA
    movie_frame_index = np.full(n, INT_NA, np.int64)
    movie_repeat = np.full(n, INT_NA, np.int64)
    movie_frame_index[n - m:] = np.arange(m) % max(layout.movie_frames, 1)
    movie_repeat[n - m:] = np.arange(m) // max(layout.movie_frames, 1)
    is_change = flash_column(change_flags, False, bool)
    trials_id, active = _trial_of_flash(task, ts, rows["start_time"][flash_rows], n, flash_rows)
    stimulus_name = np.where(block == task_block, setup.stimulus_name, SPONTANEOUS).astype(object)
    stimulus_name[block == task_block + 2] = MOVIE
    task_name = setup.task_block_name
    block_names = np.asarray([BLOCK_NAMES[0], task_name, BLOCK_NAMES[2], BLOCK_NAMES[3]] if task_block
                             else [task_name], object)
    columns = {
        "stimulus_block": block,
        "stimulus_block_name": pd.Series(block_names[block], dtype=object),
        "image_index": flash_column(np.where(omitted, len(names), image_idx), INT_NA, np.int64),
        "image_name": pd.Series(flash_column(np.where(omitted, "omitted", names[image_idx]).astype(object), np.nan,
                                             object), dtype=object),
        "movie_frame_index": movie_frame_index,
        "duration": rows["end_time"] - rows["start_time"],
        "start_time": rows["start_time"],
        "end_time": rows["end_time"],
        "start_frame": rows["start_frame"],
        "end_frame": rows["end_frame"],
        "is_change": is_change,
        "is_image_novel": flags(novel),
        "omitted": flags(omitted),
        "movie_repeat": movie_repeat,
        "flashes_since_change": flashes_since_change(is_change, flash_column(omitted, False, bool)),
        "trials_id": trials_id,
        "active": active,
        "stimulus_name": pd.Series(stimulus_name, dtype=object),
        "is_sham_change": flash_column(sham_flags, False, bool),
    }
    if setup.gratings:
        columns["orientation"] = flash_column(
            np.where(omitted, np.nan, np.asarray(GRATING_ORIENTATIONS)[image_idx]), np.nan, float)
    columns["image_set"] = pd.Series(flash_column(setup.template_name, np.nan, object), dtype=object)
    frame = pd.DataFrame(columns)
    frame.index = pd.RangeIndex(n, name="stimulus_presentations_id")
    return frame


def _flash_images(task: _Task, nf: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per flash: a change, a sham change (catch trial), and the image shown; the image changes at each go
    or auto-rewarded change flash."""
    change_flags = np.zeros(nf, bool)
    sham_flags = np.zeros(nf, bool)
    seg_flash, seg_image = [], []
    for j, img, mode, ab in zip(task.change_flash, task.change_image, task.mode, task.aborted):
        if ab or j < 0:
            continue
        if mode == "catch":
            sham_flags[j] = True
        else:
            change_flags[j] = True
            seg_flash.append(j)
            seg_image.append(img)
    seg_images = np.asarray([task.first_image] + seg_image, np.int64)
    image_idx = seg_images[np.searchsorted(np.asarray(seg_flash, np.int64), np.arange(nf), side="right")]
    return change_flags, sham_flags, image_idx


def _presentation_rows(setup: _Setup, layout: _FrameLayout, ts: np.ndarray,
                       omitted: np.ndarray) -> dict[str, np.ndarray]:
    """Block, start/end time (s, with the monitor delay) and start/end frame of every row: gray before, the
    flashes, gray after, the movie frames (the flashes alone, block 0, without the epilogue)."""
    delay = setup.monitor_delay
    onsets, nf, m = layout.onsets, layout.n_flashes, layout.movie_rows
    start = ts[onsets] + delay
    end = np.where(omitted, start + STIMULUS_DURATION_S, ts[onsets + FLASH_FRAMES] + delay)
    if not layout.task_block:
        return {"block": np.zeros(nf, np.int64), "start_time": start, "end_time": end,
                "start_frame": onsets.astype(np.int64), "end_frame": (onsets + FLASH_FRAMES).astype(np.int64)}
    gray2_start_frame = int(onsets[-1] + FLASH_FRAMES)
    gray2_end_frame = layout.movie_start if m else layout.n_frames - 1
    movie_start_frames = layout.movie_start + MOVIE_STIMULUS_FRAMES * np.arange(m)
    movie_end_times = ts[np.minimum(movie_start_frames + MOVIE_STIMULUS_FRAMES, layout.n_frames - 1)] + delay
    return {
        "block": np.concatenate([[0], np.full(nf, 1), [2], np.full(m, 3)]).astype(np.int64),
        "start_time": np.concatenate([[0.0], start, [end[-1]], ts[movie_start_frames] + delay]),
        "end_time": np.concatenate([[start[0]], end, [ts[gray2_end_frame] + delay], movie_end_times]),
        "start_frame": np.concatenate([[0], onsets, [gray2_start_frame], movie_start_frames]).astype(np.int64),
        "end_frame": np.concatenate([[layout.first_flash], onsets + FLASH_FRAMES, [gray2_end_frame],
                                     movie_start_frames + 1]).astype(np.int64),
    }


def _trial_of_flash(task: _Task, ts: np.ndarray, flash_start: np.ndarray, n_rows: int,
                    flash_rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """``trials_id`` (the trial whose start most recently precedes the flash start, before the last trial's
    stop; −99 elsewhere) and ``active`` (the task block's rows, ``flash_rows``, of a session with trials) of
    each of the ``n_rows`` rows."""
    trials_id = np.full(n_rows, INT_NA, np.int64)
    active = np.zeros(n_rows, bool)
    if task.n:
        trial_start = ts[np.asarray(task.start_frame, np.int64)]
        last_stop = ts[np.asarray(task.stop_frame, np.int64)].max()
        pos = np.searchsorted(trial_start, flash_start, side="right") - 1
        inside = (pos >= 0) & (flash_start < last_stop)
        trials_id[flash_rows] = np.where(inside, pos, INT_NA)
        if ((flash_start > trial_start.min()) & (flash_start < last_stop)).any():
            active[flash_rows] = True
    return trials_id, active


# --- running ------------------------------------------------------------------------------------


def _running(setup: _Setup, layout: _FrameLayout, ts: np.ndarray, engagement: _Engagement,
             rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Wheel running at every stimulus frame: faster when disengaged; encoder dx, voltages, raw and filtered speed."""
    n = len(ts)
    frames = np.arange(n)
    in_task = (frames >= layout.first_flash) & (frames < layout.task_end)
    level = engagement.level(ts) if engagement.disengage_time is not None else np.ones(n)
    mean = np.where(in_task, RUN_ENGAGED_MEAN + RUN_DISENGAGED_EXTRA * (1.0 - level), RUN_GRAY_MEAN)
    mouse_factor = rng.uniform(0.6, 1.4)
    a = np.exp(-1.0 / (RUN_TAU_S * FRAME_RATE))
    ou = signal.lfilter([np.sqrt(1 - a * a)], [1.0, -a], rng.standard_normal(n))
    z = mouse_factor * mean + RUN_SPREAD * ou
    true_speed = 3.0 * np.logaddexp(0.0, z / 3.0) - 3.0 * np.log(2.0) * np.exp(-np.abs(z))  # ≈ 0 at rest
    true_speed = np.clip(true_speed, 0.0, None)
    dt_frame = np.diff(ts, prepend=ts[0] - 1.0 / FRAME_RATE)
    dx = np.round((true_speed * dt_frame + rng.normal(0.0, 0.002, n)) / ENCODER_STEP_CM) * ENCODER_STEP_CM
    dx = dx.astype(np.float32)
    raw = dx.astype(np.float64) / dt_frame
    b, a_ = signal.butter(3, RUNNING_CUTOFF_HZ / (FRAME_RATE / 2.0))
    speed = signal.filtfilt(b, a_, raw)
    # both voltages are sampled at the DAQ's resolution: v_in sits on a few levels, v_sig (≤ v_in) steps
    v_in_level = rng.uniform(4.85, 4.95)
    v_in = _sampled_volts(np.round((v_in_level + rng.normal(0.0, 2e-4, n)) / ENCODER_VOLTAGE_STEP))
    angle = np.mod(rng.uniform(0, 2 * np.pi) + np.cumsum(dx.astype(np.float64)) / ENCODER_RADIUS_CM, 2 * np.pi)
    v_sig = _sampled_volts(np.floor(np.round(v_in / ENCODER_VOLTAGE_STEP) * angle / (2 * np.pi)))
    return {"speed": speed, "speed_unfiltered": raw, "dx": dx, "v_in": v_in, "v_sig": v_sig,
            "true_speed": true_speed, "in_task": in_task, "level": level}


def _sampled_volts(counts: np.ndarray) -> np.ndarray:
    """DAQ counts → volts, at the decimal precision of the step."""
    return np.round(counts * ENCODER_VOLTAGE_STEP, 8)


# --- eye tracking -------------------------------------------------------------------------------


def _eye_tracking(setup: _Setup, ts: np.ndarray, running_speed: np.ndarray, rng: np.random.Generator) -> EyeTracking:
    """Eye, pupil and corneal-reflection ellipses at ~30 Hz over the session, with blinks."""
    t0 = rng.uniform(0.1, 0.5)
    t1 = ts[-1] + rng.uniform(0.2, 1.0)
    n = int((t1 - t0) * EYE_RATE)
    times = t0 + np.cumsum(np.concatenate([[0.0], 1.0 / EYE_RATE + rng.normal(0, 2e-4, n - 1)]))
    eye, pupil, cr = _ellipse_fits(times, ts, running_speed, rng)

    # blinks: short bursts; the eye closes (tiny eye area) and the pupil fit fails (NaN) or explodes (outlier)
    in_blink, pupil_nan, pupil_big, cr_nan = _blink_bursts(n, t1 - t0, rng)
    eye["h"] = np.where(in_blink, eye["h"] * rng.uniform(0.05, 0.3, n), eye["h"])
    pupil["w"] = np.where(pupil_big, pupil["w"] * rng.uniform(4.0, 6.0, n), pupil["w"])
    pupil["h"] = np.where(pupil_big, pupil["w"] * 0.95, pupil["h"])
    for key in ("w", "h", "phi", "cx", "cy"):
        pupil[key][pupil_nan] = np.nan
    for key in ("w", "h"):
        cr[key][cr_nan] = np.nan
    # the ellipse fits are single precision (as in AllenSDK-written files); areas are computed from them
    for fit in (eye, pupil, cr):
        for key, values in fit.items():
            fit[key] = np.asarray(values, np.float32).astype(np.float64)

    eye_area = np.pi * eye["w"] * eye["h"]
    pupil_area = np.pi * np.fmax(pupil["w"], pupil["h"]) ** 2
    pupil_area[pupil_nan] = np.nan
    cr_area = np.pi * cr["w"] * cr["h"]

    def ellipse(fit: dict[str, np.ndarray], area: np.ndarray) -> Ellipse:
        return Ellipse(center=np.column_stack([fit["cx"], fit["cy"]]), area=np.where(in_blink, np.nan, area),
                       area_raw=area, width=fit["w"], height=fit["h"], angle=fit["phi"])

    return EyeTracking(timestamps=times, eye=ellipse(eye, eye_area), pupil=ellipse(pupil, pupil_area),
                       corneal_reflection=ellipse(cr, cr_area), likely_blink=likely_blinks(eye_area, pupil_area))


def _ellipse_fits(times: np.ndarray, ts: np.ndarray, running_speed: np.ndarray,
                  rng: np.random.Generator) -> tuple[dict[str, np.ndarray], ...]:
    """Eye, pupil and corneal-reflection fits without blinks: centre ``cx``, ``cy``, ``w``, ``h`` (px) and
    ``phi`` (rad) at ``times``; the pupil widens with running, the gaze jumps in saccades."""
    n = len(times)

    def ou(tau_s: float, size: int = n) -> np.ndarray:
        a = np.exp(-1.0 / (tau_s * EYE_RATE))
        return signal.lfilter([np.sqrt(1 - a * a)], [1.0, -a], rng.standard_normal(size))

    speed = np.interp(times, ts, running_speed)
    pupil_w = np.clip(21.0 + 0.45 * speed + 5.0 * ou(4.0), 8.0, 70.0)
    pupil_h = pupil_w * rng.uniform(0.93, 0.97) + rng.normal(0, 0.6, n)
    pupil_phi = rng.uniform(-0.5, 0.5, n)
    # gaze: fixations with saccades (piecewise constant) plus small drift
    saccade = rng.random(n) < 0.5 / EYE_RATE
    gaze_x = np.cumsum(np.where(saccade, rng.normal(0, 6, n), 0.0))
    gaze_y = np.cumsum(np.where(saccade, rng.normal(0, 3, n), 0.0))
    gaze_x = gaze_x - signal.lfilter([0.002], [1, -0.998], gaze_x)
    gaze_y = gaze_y - signal.lfilter([0.002], [1, -0.998], gaze_y)
    pupil_cx = 320.0 + np.clip(gaze_x, -30, 30) + rng.normal(0, 0.4, n)
    pupil_cy = 255.0 + np.clip(gaze_y, -16, 16) + rng.normal(0, 0.4, n)
    cr = {"cx": pupil_cx + 7.0 + rng.normal(0, 0.3, n), "cy": pupil_cy + 9.0 + rng.normal(0, 0.3, n),
          "w": 8.5 + rng.normal(0, 0.6, n), "h": 8.0 + rng.normal(0, 0.6, n), "phi": rng.uniform(-0.8, 0.8, n)}
    eye = {"cx": 340.0 + 1.8 * ou(20.0), "cy": 265.0 + 1.7 * ou(20.0), "w": 150.0 + 4.0 * ou(30.0),
           "h": 105.0 + 5.5 * ou(30.0), "phi": 0.05 + 0.02 * ou(10.0)}
    pupil = {"cx": pupil_cx, "cy": pupil_cy, "w": pupil_w, "h": pupil_h, "phi": pupil_phi}
    return eye, pupil, cr


def _blink_bursts(n: int, duration_s: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Blink frames (2-8 frame bursts at :data:`BLINK_RATE`) and, per burst, whether the pupil fit fails
    (NaN) or explodes and whether the corneal-reflection fit fails: four boolean arrays over the frames."""
    n_blinks = int(rng.poisson(BLINK_RATE * duration_s))
    blink_start = rng.integers(0, max(n - 10, 1), n_blinks)
    blink_len = rng.integers(2, 9, n_blinks)
    marks = np.zeros(n + 10, np.int64)
    np.add.at(marks, blink_start, 1)
    np.add.at(marks, blink_start + blink_len, -1)
    in_blink = np.cumsum(marks)[:n] > 0
    blink_id = np.cumsum(np.r_[0, np.diff(in_blink.astype(np.int64)) == 1])  # burst number
    burst_nan = rng.random(blink_id.max() + 2) < 0.6
    pupil_nan = in_blink & burst_nan[blink_id]
    pupil_big = in_blink & ~burst_nan[blink_id]
    cr_nan = in_blink & (rng.random(blink_id.max() + 2) < 0.5)[blink_id]
    return in_blink, pupil_nan, pupil_big, cr_nan


def rig_geometry(equipment: str) -> RigGeometry:
    """Eye-tracking rig geometry of an imaging rig (mm, degrees)."""
    monitor, camera, led, monitor_rot, camera_rot = RIG_GEOMETRY.get(equipment, RIG_GEOMETRY["CAM2P.4"])
    return RigGeometry(equipment=equipment, monitor_position=monitor, camera_position=camera, led_position=led,
                       monitor_rotation=monitor_rot, camera_rotation=camera_rot)


# --- templates ----------------------------------------------------------------------------------


def stimulus_template(set_letter: str | None, shape: tuple[int, int],
                      image_names: tuple[str, ...] | None = None) -> StimulusTemplate:
    """The template of an image set (or the gratings): deterministic for a set and a shape.

    Unwarped images are NaN outside a central visible region; warped images fill the screen (uint8).
    """
    rows, cols = int(shape[0]), int(shape[1])
    if set_letter is None:
        names = [f"gratings_{o}" for o in GRATING_ORIENTATIONS]
        warped, unwarped = _grating_set((rows, cols))
        return StimulusTemplate(GRATING, names, warped, unwarped)
    names = tuple(image_names) if image_names else tuple(IMAGE_SETS[set_letter][2])
    warped, unwarped = _image_set(set_letter, (rows, cols), names)
    return StimulusTemplate(IMAGE_SETS[set_letter][1], list(names), warped, unwarped)


GRATING_CYCLES_PER_SCREEN_WIDTH = 12.0


@lru_cache(maxsize=4)
def _grating_set(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(warped, unwarped) full-field gratings in :data:`GRATING_ORIENTATIONS` order, prepared like the image
    sets: a sine grating filling the screen, NaN where the mouse cannot see, and warped by the monitor warp
    (its bars curve on the screen). Cached per shape; read-only arrays."""
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    period = max(cols / GRATING_CYCLES_PER_SCREEN_WIDTH, 4.0)
    gratings = []
    for orientation in GRATING_ORIENTATIONS:
        theta = np.deg2rad(orientation)
        phase = 2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / period
        gratings.append(np.rint(screen.GRAY + 127.0 * np.sin(phase)).clip(0, 255).astype(np.uint8))
    placed = np.stack(gratings)
    warped = screen.warp(placed, n_workers=1)
    unwarped = screen.unwarped(placed)
    warped.flags.writeable = unwarped.flags.writeable = False
    return warped, unwarped


NATURAL_SCENE_SHAPE = (918, 1174)  # px of a natural image on the 1200 x 1920 screen


@lru_cache(maxsize=8)
def _image_set(set_letter: str, shape: tuple[int, int], names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(warped, unwarped) images of a set, as the release prepares them: each image centred on a gray screen
    (scaled from 918 x 1174 on 1200 x 1920), NaN where the mouse cannot see, and warped by the monitor warp
    (:mod:`vbo.screen`, at this template resolution). Cached per set and shape; read-only arrays."""
    rows, cols = shape
    rng = np.random.default_rng(zlib.crc32(f"vbo-template-{set_letter}".encode()))
    image_rows = max(2, round(NATURAL_SCENE_SHAPE[0] * rows / screen.SCREEN_SHAPE[0]))
    image_cols = max(2, round(NATURAL_SCENE_SHAPE[1] * cols / screen.SCREEN_SHAPE[1]))
    top, left = (rows - image_rows) // 2, (cols - image_cols) // 2
    low = (48, 72)
    # separable bilinear resampling of a smooth low-resolution texture: image = Wy @ base @ Wx.T
    resample_y = _interpolation_matrix((np.arange(image_rows) + 0.5) / image_rows, low[0])
    resample_x = _interpolation_matrix((np.arange(image_cols) + 0.5) / image_cols, low[1])
    placed = np.full((len(names), rows, cols), screen.GRAY, dtype=np.uint8)
    for i in range(len(names)):
        base = ndimage.gaussian_filter(rng.standard_normal(low), 1.6, mode="wrap")
        base = np.clip(125.0 + 48.0 * (base - base.mean()) / base.std(), 0.0, 255.0)
        placed[i, top:top + image_rows, left:left + image_cols] = np.rint(resample_y @ base @ resample_x.T)
    warped = screen.warp(placed, n_workers=1)
    unwarped = screen.unwarped(placed)
    warped.flags.writeable = unwarped.flags.writeable = False
    return warped, unwarped


def _interpolation_matrix(fraction: np.ndarray, n: int) -> np.ndarray:
    """Linear-interpolation weights (len(fraction) × n) sampling n grid points spanning [0, 1] at ``fraction``."""
    position = np.clip(fraction * (n - 1), 0, n - 1)
    left = np.minimum(position.astype(int), n - 2)
    t = position - left
    weights = np.zeros((len(fraction), n))
    rows = np.arange(len(fraction))
    weights[rows, left] = 1.0 - t
    weights[rows, left + 1] = t
    return weights


# --- metadata -----------------------------------------------------------------------------------

_DESCRIPTIONS = (
    ("OPHYS_0", "Habituation to the imaging rig: the mouse performs the visual change detection task with its "
                "familiar natural images under the two-photon microscope, without recording. Images are shown "
                "for 250 ms with 500 ms of gray screen between them."),
    ("OPHYS_1", "Two-photon calcium imaging in visual cortex while the mouse performs the visual change detection "
                "task with the natural images it learned in training. Images are shown for 250 ms with 500 ms of "
                "gray screen between them and 5% of non-change presentations are omitted. Five minutes of gray "
                "screen precede and follow 60 minutes of behavior, then a 30 s natural movie is repeated 10 "
                "times."),
    ("OPHYS_3", "Two-photon calcium imaging in visual cortex while the mouse performs the visual change detection "
                "task with the natural images it learned in training. Images are shown for 250 ms with 500 ms of "
                "gray screen between them and 5% of non-change presentations are omitted. Five minutes of gray "
                "screen precede and follow 60 minutes of behavior, then a 30 s natural movie is repeated 10 "
                "times."),
    ("OPHYS_2", "Two-photon calcium imaging in visual cortex during passive viewing of the familiar natural images: "
                "the lick spout is withdrawn and no rewards are given. Images are shown for 250 ms with 500 ms of "
                "gray screen between them and 5% of non-change presentations are omitted, followed by 10 repeats "
                "of a 30 s natural movie."),
    ("OPHYS_4", "Two-photon calcium imaging in visual cortex while the mouse performs the visual change detection "
                "task with a set of natural images it has not seen in training. Images are shown for 250 ms with "
                "500 ms of gray screen between them and 5% of non-change presentations are omitted, between "
                "gray screens and followed by 10 repeats of a 30 s natural movie."),
    ("OPHYS_6", "Two-photon calcium imaging in visual cortex while the mouse performs the visual change detection "
                "task with a set of natural images it has not seen in training. Images are shown for 250 ms with "
                "500 ms of gray screen between them and 5% of non-change presentations are omitted, between "
                "gray screens and followed by 10 repeats of a 30 s natural movie."),
    ("OPHYS_5", "Two-photon calcium imaging in visual cortex during passive viewing of the novel natural images: "
                "the lick spout is withdrawn and no rewards are given. Images are shown for 250 ms with 500 ms of "
                "gray screen between them and 5% of non-change presentations are omitted, followed by 10 repeats "
                "of a 30 s natural movie."),
    ("TRAINING_0", "First day of training: full-field gratings change orientation and every change is followed by "
                   "an automatic water reward, for 15 minutes, so the mouse learns where water comes from."),
    ("TRAINING_1", "Training on the change detection task with full-field gratings: the mouse earns water by "
                   "licking when the orientation changes."),
    ("TRAINING_2", "Training on the change detection task with flashed gratings: gratings are shown for 250 ms "
                   "with 500 ms of gray screen between them and the mouse licks when the orientation changes."),
    ("TRAINING_3", "Training on the change detection task with natural images, shown for 250 ms with 500 ms of gray "
                   "screen between them; correct licks earn a 10 uL water reward."),
    ("TRAINING_4", "Training on the change detection task with natural images shown for 250 ms with 500 ms of gray "
                   "screen between them; the reward drops to 7 uL."),
    ("TRAINING_5", "Final training stage of the change detection task with natural images: the mouse must reach "
                   "criterion performance before it moves to the imaging rig."),
)


def experiment_description(session_type: str) -> str:
    """The prose stored in ``/general/experiment_description``, chosen by the session type's stage."""
    for prefix, text in _DESCRIPTIONS:
        if session_type.startswith(prefix):
            return text
    return "Visual change detection task with flashed stimuli and water rewards."


def _age_days(plan: SessionPlan) -> int:
    acquired, born = plan.date_of_acquisition, plan.mouse.date_of_birth
    if (acquired.tzinfo is None) != (born.tzinfo is None):
        acquired = acquired.replace(tzinfo=None)
        born = born.replace(tzinfo=None)
    return int((acquired - born).days)


def _subject(plan: SessionPlan) -> dict:
    mouse = plan.mouse
    return {
        "age": f"P{_age_days(plan)}D",
        "description": SUBJECT_DESCRIPTION,
        "genotype": mouse.full_genotype,
        "sex": mouse.sex,
        "species": "Mus musculus",
        "subject_id": str(mouse.mouse_id),
        "driver_line": list(mouse.driver_line),
        "reporter_line": mouse.reporter_line,
    }


def _task_parameters(setup: _Setup, shown_flashes: int) -> dict:
    return {
        "auto_reward_volume": AUTO_REWARD_VOLUME,
        "blank_duration_sec": list(BLANK_DURATION_S),
        "n_stimulus_frames": int(shown_flashes * FLASH_FRAMES),
        "omitted_flash_fraction": OMITTED_FLASH_FRACTION if setup.omissions else float("nan"),
        "response_window_sec": list(RESPONSE_WINDOW_S),
        "reward_volume": setup.reward_volume,
        "session_type": setup.plan.session_type,
        "stimulus": GRATING if setup.gratings else "images",
        "stimulus_distribution": "geometric",
        "stimulus_duration_sec": STIMULUS_DURATION_S,
        "stimulus_name": setup.stimulus_name,
        "task": "change detection",
    }


# --- planted truth ------------------------------------------------------------------------------


def _rate(k: int, n: int) -> float | None:
    return float(k / n) if n else None


def _truth(plan: SessionPlan, setup: _Setup, layout: _FrameLayout, ts: np.ndarray, engagement: _Engagement,
           task: _Task, omitted: np.ndarray, trials: pd.DataFrame, running: dict, eye: EyeTracking | None,
           session_uuid: str) -> dict:
    """What was planted in one session (JSON-serialisable): probabilities, engagement, trial counts, the
    stimulus sequence, clock, lick and running models, eye tracking."""
    counts = _trial_count_truth(task, trials)
    truth = {
        "behavior_session_id": int(plan.behavior_session_id),
        "behavior_session_uuid": session_uuid,
        "session_type": plan.session_type,
        "stage": plan.stage,
        "passive": setup.passive,
        "stimulus": GRATING if setup.gratings else "images",
        "hit_probability": float(plan.hit_probability),
        "false_alarm_probability": float(plan.false_alarm_probability),
        "disengaged_hit_probability": float(plan.hit_probability * DISENGAGED_RESPONSE_FACTOR),
        "disengaged_false_alarm_probability": float(plan.false_alarm_probability * DISENGAGED_RESPONSE_FACTOR),
        "observed_engaged_hit_rate": _rate(counts["engaged_hit"], counts["engaged_go"]),
        "observed_engaged_false_alarm_rate": _rate(counts["engaged_false_alarm"], counts["engaged_catch"]),
        "engagement": {
            "model": "P(engaged at trial start) = 1 / (1 + exp((t - disengage_time) / tau))",
            "disengage_time": engagement.disengage_time,
            "tau_s": float(engagement.tau) if engagement.disengage_time is not None else None,
            "trial_engaged": np.asarray(task.engaged, bool).tolist(),
        },
        "trial_counts": counts,
        **_stimulus_truth(setup, layout, ts, task, omitted, trials),
        "monitor_delay": float(setup.monitor_delay),
        "clock_start": float(ts[0]),
        "stimulus_frame_rate": FRAME_RATE,
        "n_stimulus_frames": int(layout.n_frames),
        "blocks": _block_times(setup, layout, ts),
        "reward_volume": float(setup.reward_volume),
        "auto_reward_volume": AUTO_REWARD_VOLUME,
        "lick_model": {
            "abort_rate_per_s": {"engaged": ABORT_RATE[True], "disengaged": ABORT_RATE[False]},
            "response_latency_s": list(RESPONSE_LATENCY_S),
            "late_lick_probability": {"engaged": LATE_LICK_PROBABILITY[True],
                                      "disengaged": LATE_LICK_PROBABILITY[False]},
            "lick_interval_frames": list(LICK_INTERVAL_FRAMES),
        },
        "running": _running_truth(running),
    }
    if eye is not None:
        truth["eye_tracking"] = {
            "n_frames": int(len(eye.timestamps)),
            "rate_hz": EYE_RATE,
            "n_blink_frames": int(np.isnan(eye.eye.area).sum()),
            "pupil_width_mean": float(np.nanmean(eye.pupil.width)),
        }
    return truth


def _trial_count_truth(task: _Task, trials: pd.DataFrame) -> dict[str, int]:
    """Trials of each type and outcome, overall and among engaged trials."""
    engaged = np.asarray(task.engaged, bool)
    go, catch = trials["go"].to_numpy(), trials["catch"].to_numpy()
    hit, fa = trials["hit"].to_numpy(), trials["false_alarm"].to_numpy()
    return {
        "trials": int(task.n),
        "go": int(go.sum()), "catch": int(catch.sum()),
        "aborted": int(trials["aborted"].sum()), "auto_rewarded": int(trials["auto_rewarded"].sum()),
        "hit": int(hit.sum()), "miss": int(trials["miss"].sum()),
        "false_alarm": int(fa.sum()), "correct_reject": int(trials["correct_reject"].sum()),
        "engaged": int(engaged.sum()),
        "engaged_go": int((go & engaged).sum()), "engaged_hit": int((hit & engaged).sum()),
        "engaged_catch": int((catch & engaged).sum()), "engaged_false_alarm": int((fa & engaged).sum()),
    }


def _stimulus_truth(setup: _Setup, layout: _FrameLayout, ts: np.ndarray, task: _Task, omitted: np.ndarray,
                    trials: pd.DataFrame) -> dict:
    """Changes, sham changes and omissions (times in s, with the monitor delay) and the image sequence."""
    is_change = trials["is_change"].to_numpy()
    return {
        "catch_fraction": CATCH_FRACTION,
        "change_flash_distribution": {"kind": "geometric", "p": CHANGE_FLASH_P, "min_flash": MIN_CHANGE_FLASH,
                                      "max_flash": MAX_CHANGE_FLASH},
        "change_times": trials.loc[is_change, "change_time"].round(6).tolist(),
        "sham_change_times": trials.loc[trials["catch"], "change_time"].round(6).tolist(),
        "omitted_flash_times": np.round(ts[layout.onsets[omitted]] + setup.monitor_delay, 6).tolist(),
        "omitted_flash_fraction": float(omitted.mean()) if layout.n_flashes else 0.0,
        "image_sequence": {
            "image_set": setup.set_letter if not setup.gratings else "gratings",
            "stimulus_name": setup.stimulus_name,
            "template_name": setup.template_name,
            "image_names": list(setup.image_names),
            "novel_images": [n for n, v in zip(setup.image_names, setup.novel) if v],
            "initial_image": setup.image_names[task.first_image],
            "n_flashes": int(layout.n_flashes),
            "n_omitted": int(omitted.sum()),
            "n_changes": int(is_change.sum()),
        },
    }


def _running_truth(running: dict) -> dict[str, float | None]:
    """Mean planted running speed (cm/s) in the task block, engaged and disengaged."""
    in_task, level, speed = running["in_task"], running["level"], running["true_speed"]
    engaged_frames = in_task & (level > 0.5)
    disengaged_frames = in_task & (level <= 0.5)
    return {
        "mean_speed_engaged": float(speed[engaged_frames].mean()) if engaged_frames.any() else None,
        "mean_speed_disengaged": float(speed[disengaged_frames].mean()) if disengaged_frames.any() else None,
    }


def _block_times(setup: _Setup, layout: _FrameLayout, ts: np.ndarray) -> list[dict]:
    delay = setup.monitor_delay
    last_flash_end = layout.onsets[-1] + FLASH_FRAMES
    task = {"stimulus_block": layout.task_block, "name": setup.task_block_name,
            "start_time": float(ts[layout.first_flash] + delay), "end_time": float(ts[last_flash_end] + delay)}
    if not layout.task_block:
        return [task]
    blocks = [
        {"stimulus_block": 0, "name": BLOCK_NAMES[0], "start_time": 0.0,
         "end_time": float(ts[layout.first_flash] + delay)},
        task,
        {"stimulus_block": 2, "name": BLOCK_NAMES[2], "start_time": float(ts[last_flash_end] + delay),
         "end_time": float(ts[min(layout.movie_start, layout.n_frames - 1)] + delay)},
    ]
    if layout.movie_rows:
        blocks.append({"stimulus_block": 3, "name": BLOCK_NAMES[3],
                       "start_time": float(ts[layout.movie_start] + delay),
                       "end_time": float(ts[-1] + delay)})
    return blocks
