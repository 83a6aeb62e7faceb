"""Small edge-case NWB files written the way AllenSDK 2.16.2's writer writes them, for ``tests/data/allensdk-truth``.

Each case is one short session simulated by ``vbo.simulate`` (a few ROIs, a few seconds of traces), edited
into an edge case the release has (passive sessions without licks, unmatched ROIs, a single ROI, no eye
tracking, no rewards, aborted-only trials, every session-type family, Scientifica and Mesoscope rigs, a
retake), written with vbo's writer, then given the encodings AllenSDK's writer produces that vbo's writer
does not (:func:`apply_sdk_writer_quirks`). AllenSDK's answers for these files are recorded beside them
(``truth/<stem>/``) by ``../shared/oracle/dump_allen_truth.py``; ``test_allensdk_cases.py`` compares vbo
with them in CI, without AllenSDK.

Regenerate (same bytes for the same code; then re-dump the truth with the AllenSDK oracle)::

    PYTHONPATH=src python tests/allensdk_cases.py tests/data/allensdk-truth [--dump]

``--dump`` runs ``$ALLENSDK_PYTHON ../shared/oracle/dump_allen_truth.py`` on every file (the AllenSDK
2.16.2 venv of ``../shared/oracle/setup.sh``); ``timings.json`` is not kept (it changes on every run).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pandas as pd

from vbo.nwb import layout
from vbo.nwb.content import BehaviorContent, OphysContent
from vbo.simulate.neurons import make_container, simulate_ophys
from vbo.simulate.plan import ExperimentPlan, Scale, example_mouse, example_session
from vbo.simulate.task import simulate_behavior

HERE = Path(__file__).resolve().parent
CASES_DIR = HERE / "data" / "allensdk-truth"
ORACLE = HERE.parents[1] / "shared" / "oracle" / "dump_allen_truth.py"

# short sessions: 1 s gray, a 22 s (imaging) or 35 s (training) task, 0.5 s gray, a 10-frame movie;
# 3-4 ROIs on a 32 x 32 field of view; 12 x 20 px templates
MICRO = Scale("micro", default_mice=1, initial_gray_s=1.0, task_s=22.0, final_gray_s=0.5, movie_repeats=1,
              movie_frames=10, training_task_s=35.0, cells_per_plane=(3, 4), interneuron_cells_per_plane=(3, 4),
              field_of_view=(32, 32), template_shape=(12, 20), sessions_per_training_stage=1, mesoscope_planes=2)
# one longer training session, so that some go and catch trials come after the automatic rewards
LONGER = dataclasses.replace(MICRO, name="longer", training_task_s=70.0)

TEXT = h5py.string_dtype("utf-8")


# --- the encodings of AllenSDK's writer (format.md §7.6) ------------------------------------------------


def apply_sdk_writer_quirks(path: Path) -> None:
    """Store ``lick_times`` as AllenSDK 2.16.2's writer does, whatever vbo's writer chose.

    - no lick in any trial: the flat data is one empty **string** and every index entry is 0;
    - as many licks in total as trials: a plain (not ragged) float column of the flattened licks.
    """
    with h5py.File(path, "r+") as f:
        trials = f[layout.TRIALS]
        name, index_name = layout.LICK_TIMES, layout.LICK_TIMES + layout.INDEX_SUFFIX
        if index_name not in trials:
            return
        flat = trials[name][()]
        ends = trials[index_name][()]
        if len(flat) == 0:
            _replace(trials, name, np.array([""], dtype=object), TEXT)
            _relink_index(trials, name, index_name)
        elif len(flat) == len(ends):
            _replace(trials, name, np.asarray(flat, dtype=np.float64), np.float64)
            del trials[index_name]


def _replace(group: h5py.Group, name: str, data: np.ndarray, dtype) -> h5py.Dataset:
    """Rewrite ``group[name]`` with ``data``, keeping its attributes."""
    attributes = [(k, group[name].attrs[k], group[name].attrs.get_id(k).dtype) for k in group[name].attrs]
    del group[name]
    new = group.create_dataset(name, data=data, dtype=dtype)
    for key, value, stored in attributes:
        new.attrs.create(key, value, dtype=stored)
    return new


def _relink_index(group: h5py.Group, name: str, index_name: str) -> None:
    group[index_name].attrs.create("target", group[name].ref, dtype=h5py.ref_dtype)


# --- simulated content -------------------------------------------------------------------------------


def behavior_content(session_type: str, behavior_session_id: int, seed: int, *, imaging: bool = False,
                     scale: Scale = MICRO, **plan_fields) -> BehaviorContent:
    """One simulated session of ``scale`` length (a behavior-only session unless ``imaging``)."""
    passive = session_type.endswith("_passive")
    gratings = "gratings" in session_type
    fields = dict(behavior_session_id=behavior_session_id, passive=passive, is_imaging=imaging,
                  image_set=None if gratings else session_type.split("_images_")[1][0] if "_images_" in session_type
                  else "A",
                  equipment_name=plan_fields.pop("equipment_name", "CAM2P.4" if imaging else "BEH.B-Box2"),
                  has_omissions=session_type.startswith("OPHYS") and not session_type.startswith("OPHYS_0"))
    fields.update(plan_fields)
    plan = example_session(session_type, **fields)
    content, _ = simulate_behavior(plan, scale, np.random.default_rng(seed))
    return content


def experiment_content(session_type: str, ophys_experiment_id: int, seed: int, *, equipment_name: str = "CAM2P.4",
                       plane_group: int | None = None, plane_group_count: int = 0, structure: str = "VISp",
                       depth: int = 175, **plan_fields) -> OphysContent:
    """One simulated imaging plane of :data:`MICRO` length."""
    experiment = ExperimentPlan(ophys_experiment_id, ophys_experiment_id - 10_000_000, structure, depth, depth,
                                plane_group, plane_group_count)
    passive = session_type.endswith("_passive")
    letter = session_type.split("_images_")[1][0]
    mouse = example_mouse(equipment_name=equipment_name,
                          familiar_image_set="A" if letter in "AB" else "G",
                          novel_image_set="B" if letter in "AB" else "H")
    plan = example_session(session_type, mouse=mouse, behavior_session_id=ophys_experiment_id - 20_000_000,
                           equipment_name=equipment_name, passive=passive, image_set=letter,
                           ophys_session_id=ophys_experiment_id - 30_000_000, experiments=[experiment],
                           **plan_fields)
    rng = np.random.default_rng(seed)
    behavior, _ = simulate_behavior(plan, MICRO, rng)
    container = make_container(experiment.ophys_container_id, mouse, experiment, MICRO, rng)
    content, _ = simulate_ophys(plan, experiment, container, behavior, MICRO, rng)
    return content


# --- edits into edge cases ---------------------------------------------------------------------------


def keep_rois(o: OphysContent, rows: list[int]) -> OphysContent:
    """The same plane with only the ROIs of ``rows`` (traces, masks, events and images follow)."""
    rows = np.asarray(rows, dtype=np.int64)
    event_keep = np.isin(o.event_rows, rows)
    new_position = {int(r): i for i, r in enumerate(rows)}
    masks = o.roi_masks[rows]
    return dataclasses.replace(
        o, rois=o.rois.iloc[rows].reset_index(drop=True), roi_masks=masks,
        dff=o.dff[:, rows], corrected_fluorescence=o.corrected_fluorescence[:, rows],
        neuropil=None if o.neuropil is None else o.neuropil[:, rows],
        demixed=None if o.demixed is None else o.demixed[:, rows],
        r=None if o.r is None else o.r[rows], rmse=None if o.rmse is None else o.rmse[rows],
        events=o.events[:, event_keep], event_lambdas=o.event_lambdas[event_keep],
        event_noise_stds=o.event_noise_stds[event_keep],
        event_rows=np.array([new_position[int(r)] for r in o.event_rows[event_keep]], dtype=np.int64),
        segmentation_mask=masks.any(axis=0).astype(np.int64))


def unmatch(o: OphysContent, rows: list[int] | None = None) -> OphysContent:
    """ROIs of ``rows`` (all when None) not matched across sessions: ``cell_specimen_id`` −1."""
    rois = o.rois.copy()
    rows = list(range(len(rois))) if rows is None else rows
    rois.loc[rows, "cell_specimen_id"] = layout.NULL_CELL_SPECIMEN_ID
    return dataclasses.replace(o, rois=rois)


def without_eye_tracking(o: OphysContent) -> OphysContent:
    """An experiment whose eye-tracking video failed: no ``/acquisition/EyeTracking`` (rig geometry kept)."""
    return dataclasses.replace(o, behavior=dataclasses.replace(o.behavior, eye_tracking=None))


def as_released_before_v1_1(o: OphysContent) -> OphysContent:
    """An experiment file of release v1.0.x: no demixed or neuropil traces, no ``r`` / ``RMSE``."""
    return dataclasses.replace(o, demixed=None, neuropil=None, r=None, rmse=None)


def events_without(o: OphysContent, row: int) -> OphysContent:
    """Event detection that left out the ROI of ``row`` (its ``rois`` region is a subset of the table)."""
    keep = o.event_rows != row
    return dataclasses.replace(o, events=o.events[:, keep], event_lambdas=o.event_lambdas[keep],
                               event_noise_stds=o.event_noise_stds[keep], event_rows=o.event_rows[keep])


def invalidate(o: OphysContent, row: int) -> OphysContent:
    """The ROI of ``row`` marked ``valid_roi`` False (left out by ``exclude_invalid_rois``, the default)."""
    rois = o.rois.copy()
    rois.loc[row, "valid_roi"] = False
    return dataclasses.replace(o, rois=rois)


def without_rewards(b: BehaviorContent) -> BehaviorContent:
    """An active session in which no reward was delivered (no ``rewards`` module; hits become misses)."""
    trials = b.trials.copy()
    trials["reward_time"] = np.nan
    trials["reward_volume"] = 0.0
    trials["auto_rewarded"] = False
    trials["miss"] = trials["miss"] | trials["hit"]
    trials["hit"] = False
    return dataclasses.replace(b, rewards=None, trials=trials)


def aborted_only(b: BehaviorContent) -> BehaviorContent:
    """Every trial aborted (early licks): no go/catch outcome, no change, no reward."""
    trials = without_rewards(b).trials
    for column in ("go", "catch", "hit", "miss", "false_alarm", "correct_reject", "is_change"):
        trials[column] = False
    trials["aborted"] = True
    for column in ("change_time", "response_time", "response_latency"):
        trials[column] = np.nan
    trials["change_frame"] = layout.INT_NA
    trials["change_image_name"] = trials["initial_image_name"]
    return dataclasses.replace(b, rewards=None, trials=trials)


def one_lick_per_trial(b: BehaviorContent) -> BehaviorContent:
    """As many licks as trials (the first lick of each trial, or one at its start): the SDK writer then
    stores ``lick_times`` as a plain float column (format.md §7.6)."""
    trials = b.trials.copy()
    trials["lick_times"] = [np.array([lt[0] if len(lt) else start + 0.1])
                            for lt, start in zip(trials["lick_times"], trials["start_time"])]
    licks = pd.DataFrame({"timestamps": np.concatenate(trials["lick_times"].to_list()),
                          "frame": np.searchsorted(b.stimulus_timestamps,
                                                   np.concatenate(trials["lick_times"].to_list()))})
    return dataclasses.replace(b, trials=trials, licks=licks)


def unknown_subject_details(b: BehaviorContent) -> BehaviorContent:
    """A subject stored without the optional ``driver_line`` attribute and with age ``"null"``."""
    subject = {**b.subject, "driver_line": None, "age": "null"}
    return dataclasses.replace(b, subject=subject)


# --- the cases -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One edge-case file: its folder name, file stem, what it exercises, and how to make its content."""

    name: str
    stem: str
    what: str
    content: Callable[[], BehaviorContent | OphysContent]


def _session(stem_id: int, session_type: str, seed: int, edit=None, **fields):
    def make():
        content = behavior_content(session_type, stem_id, seed, **fields)
        return edit(content) if edit else content
    return make


def _experiment(stem_id: int, session_type: str, seed: int, edit=None, **fields):
    def make():
        content = experiment_content(session_type, stem_id, seed, **fields)
        return edit(content) if edit else content
    return make


def _behavior_edit(edit):
    """Apply a behavior edit to the behavior part of an experiment."""
    return lambda o: dataclasses.replace(o, behavior=edit(o.behavior))


CASES = (
    Case("passive_nolick_experiment", "behavior_ophys_experiment_1190100001",
         "OPHYS_2 passive imaging plane, CAM2P.4: no licks (lick_times one empty string), no licking/rewards "
         "modules; some unmatched ROIs (float64 index with NaN)",
         _experiment(1190100001, "OPHYS_2_images_A_passive", 11, edit=lambda o: unmatch(o, [1]))),
    Case("passive_nolick_session_retake", "behavior_session_1190000001",
         "OPHYS_5 passive session released as a behavior-only file (its imaging failed QC; a retake): "
         "no licks (lick_times one empty string)",
         _session(1190000001, "OPHYS_5_images_B_passive", 12, equipment_name="CAM2P.3",
                  prior_exposures_to_image_set=5, experience_level="Novel >1", novel_images=False)),
    Case("mesoscope_passive_all_unmatched", "behavior_ophys_experiment_1190100002",
         "OPHYS_5 passive plane on MESO.1 (plane group 2 of 4, 11 Hz): every ROI unmatched (object index of "
         "None), no licks, no eye tracking",
         _experiment(1190100002, "OPHYS_5_images_B_passive", 13, equipment_name="MESO.1", plane_group=2,
                     plane_group_count=4, structure="VISl", depth=225, novel_images=False,
                     edit=lambda o: without_eye_tracking(unmatch(o)))),
    Case("single_roi_no_eye_tracking", "behavior_ophys_experiment_1190100003",
         "OPHYS_4 active plane with novel images B (is_image_novel), CAM2P.3, a single (matched) ROI: int64 "
         "index, no eye tracking",
         _experiment(1190100003, "OPHYS_4_images_B", 14, equipment_name="CAM2P.3", novel_images=True,
                     experience_level="Novel 1", prior_exposures_to_image_set=0,
                     edit=lambda o: without_eye_tracking(keep_rois(
                         o, [next(i for i, c in enumerate(o.rois["cell_specimen_id"]) if c != -1)])))),
    Case("single_unmatched_roi", "behavior_ophys_experiment_1190100004",
         "OPHYS_3 active plane, CAM2P.5, a single unmatched ROI, no eye tracking",
         _experiment(1190100004, "OPHYS_3_images_A", 15, equipment_name="CAM2P.5",
                     edit=lambda o: without_eye_tracking(unmatch(keep_rois(o, [0]))))),
    Case("mesoscope_active_experiment", "behavior_ophys_experiment_1190100006",
         "OPHYS_6 active plane on MESO.1 (plane group 0 of 4), images H",
         _experiment(1190100006, "OPHYS_6_images_H", 17, equipment_name="MESO.1", plane_group=0,
                     plane_group_count=4, structure="VISp", depth=75)),
    Case("v1_0_events_subset_invalid_roi", "behavior_ophys_experiment_1190100007",
         "OPHYS_6 plane as released before v1.1.0 (no demixed/neuropil traces, no r/RMSE), events on a subset of "
         "the ROIs, one invalid ROI, no eye tracking",
         _experiment(1190100007, "OPHYS_6_images_B", 18, novel_images=False, experience_level="Novel >1",
                     edit=lambda o: without_eye_tracking(invalidate(events_without(as_released_before_v1_1(o), 0),
                                                                    2)))),
    Case("training_0_gratings_autorewards", "behavior_session_1190000002",
         "TRAINING_0 gratings with automatic rewards on every change",
         _session(1190000002, "TRAINING_0_gratings_autorewards_15min", 21, equipment_name="BEH.B-Box3")),
    Case("training_1_gratings_aborted_only", "behavior_session_1190000003",
         "TRAINING_1 gratings, every trial aborted, no rewards module",
         _session(1190000003, "TRAINING_1_gratings", 22, edit=aborted_only)),
    Case("training_2_gratings_flashed_no_rewards", "behavior_session_1190000004",
         "TRAINING_2 flashed gratings, licks but no reward delivered (no rewards module)",
         _session(1190000004, "TRAINING_2_gratings_flashed", 23, hit_probability=0.0, edit=without_rewards)),
    Case("training_3_images_10uL", "behavior_session_1190000005",
         "TRAINING_3 images A with 10 uL rewards, 70 s: hits, misses, false alarms, correct rejections",
         _session(1190000005, "TRAINING_3_images_A_10uL_reward", 24, scale=LONGER)),
    Case("training_4_one_lick_per_trial", "behavior_session_1190000006",
         "TRAINING_4 images A with exactly one lick per trial (lick_times stored as a plain float column)",
         _session(1190000006, "TRAINING_4_images_A_training", 25, edit=one_lick_per_trial)),
    Case("training_5_epilogue", "behavior_session_1190000007",
         "TRAINING_5 images A epilogue (handoff lapsed mouse)",
         _session(1190000007, "TRAINING_5_images_A_epilogue", 26)),
    Case("ophys_0_habituation", "behavior_session_1190000008",
         "OPHYS_0 habituation on the imaging rig without imaging (behavior-only file); subject without "
         "driver_line attribute and age 'null'",
         _session(1190000008, "OPHYS_0_images_A_habituation", 27, equipment_name="CAM2P.4",
                  edit=unknown_subject_details)),
)


def write_case(case: Case, folder: Path) -> Path:
    """Write the NWB file of ``case`` into ``folder`` (as ``<stem>.nwb``) and return its path."""
    from vbo.nwb import write as nwb_write

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case.stem}.nwb"
    compress = nwb_write.COMPRESS_BYTES
    nwb_write.COMPRESS_BYTES = 1  # gzip every array (a storage choice: same dtypes, shapes, values)
    try:
        nwb_write.write_nwb(case.content(), path)
    finally:
        nwb_write.COMPRESS_BYTES = compress
    apply_sdk_writer_quirks(path)
    return path


def dump_truth(path: Path, python: str) -> Path:
    """Record AllenSDK's answer for ``path`` in ``truth/<stem>/`` beside it (without the timings)."""
    out = path.parent / "truth" / path.stem
    if out.exists():
        shutil.rmtree(out)
    subprocess.run([python, str(ORACLE), str(path), "--out", str(out)], check=True,
                   env={**os.environ, "PYTHONHASHSEED": "0"})
    (out / "timings.json").unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, nargs="?", default=CASES_DIR)
    parser.add_argument("--dump", action="store_true", help="record AllenSDK's answers ($ALLENSDK_PYTHON)")
    parser.add_argument("--only", nargs="*", help="case names to (re)make")
    args = parser.parse_args(argv)
    python = os.environ.get("ALLENSDK_PYTHON", str(Path.home() / ".cache/vbo-allensdk-venv/bin/python"))
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        path = write_case(case, args.out / case.name)
        print(f"{case.name}: {path.stat().st_size / 1e6:.2f} MB", flush=True)
        if args.dump:
            dump_truth(path, python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
