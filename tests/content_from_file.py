"""Build writer content (``vbo.nwb.content``) from a released NWB file, through vbo's reader.

Everything vbo returns is taken from vbo; what vbo does not return as stored (stored areas and blink
flags, widths and angles that vbo blink-masks, ``dx``/``v_in``/``v_sig`` timestamps, the stored segmentation
mask, subject description, experiment description, the imaging plane's description and indicator, the
``image_set`` column) is read with h5py. Used by ``test_write.py`` to round-trip the shared files.
"""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pandas as pd

import vbo
from vbo.nwb import layout
from vbo.nwb.content import (BehaviorContent, Ellipse, EyeTracking, ImagingPlane, OphysContent, RigGeometry,
                             StimulusTemplate)


def _text(h5: h5py.File, path: str) -> str:
    value = h5[path][()]
    return value.decode() if isinstance(value, bytes) else str(value)


def _image_sets(h5: h5py.File, presentations: pd.DataFrame) -> pd.Series:
    """The stored ``image_set`` of every row of vbo's presentations (matched by stimulus and start time)."""
    out = pd.Series(np.nan, index=presentations.index, dtype=object)
    for name in h5[layout.INTERVALS]:
        group = h5[f"{layout.INTERVALS}/{name}"]
        if not name.endswith(layout.PRESENTATIONS_SUFFIX) or layout.PRESENTATION_IMAGE_SET not in group:
            continue
        stimulus = name[: -len(layout.PRESENTATIONS_SUFFIX)]
        stored = pd.Series(group[layout.PRESENTATION_IMAGE_SET].asstr()[()],
                           index=group[layout.START_TIME][()])
        rows = (presentations["stimulus_name"] == stimulus).to_numpy()
        out[rows] = stored.loc[presentations.loc[rows, "start_time"].to_numpy()].to_numpy()
    return out


def _behavior(session, h5: h5py.File) -> BehaviorContent:
    meta = session.metadata
    stored_meta = {k: v for k, v in session._metadata_attrs.items() if k not in layout.HDMF_BOOKKEEPING_ATTRS}
    metadata = {key: stored_meta[key] for key in ("behavior_session_id", "equipment_name", "project_code",
                                                  "session_type", "stimulus_frame_rate")}
    metadata["behavior_session_uuid"] = str(meta["behavior_session_uuid"])
    for key in ("field_of_view_height", "field_of_view_width", "imaging_plane_group_count",
                "targeted_imaging_depth", "ophys_session_id", "imaging_depth", "ophys_container_id",
                "ophys_experiment_id"):
        if key in meta:
            metadata[key] = meta[key]
    if "imaging_plane_group" in meta:
        metadata["imaging_plane_group"] = meta["imaging_plane_group"]
    subject = {
        "age": f"P{meta['age_in_days']}D",
        "description": _text(h5, "/general/subject/description"),
        "genotype": meta["full_genotype"],
        "sex": meta["sex"],
        "species": _text(h5, "/general/subject/species"),
        "subject_id": meta["mouse_id"],
        "driver_line": None if meta["driver_line"] is None else list(meta["driver_line"]),
        "reporter_line": meta["reporter_line"],
    }
    task = {k: v for k, v in session.task_parameters.items() if k != "image_set"}

    running = session.running_speed
    raw = session.raw_running_speed
    acquisition = session.running_acquisition
    presentations = session.stimulus_presentations.copy()
    presentations[layout.PRESENTATION_IMAGE_SET] = _image_sets(h5, presentations)

    templates = []
    frame = session.stimulus_templates
    if frame is not None:
        name = next(n for n in h5[layout.STIMULUS_TEMPLATES] if layout.MOVIE_TEMPLATE_MARKER not in n)
        templates.append(StimulusTemplate(name=name, image_names=list(frame.index),
                                          warped=np.stack(frame["warped"].to_list()),
                                          unwarped=np.stack(frame["unwarped"].to_list())))

    eye = None
    if layout.EYE_TIMESTAMPS in h5:
        frame = session.eye_tracking

        def ellipse(prefix: str) -> Ellipse:
            base = f"{layout.EYE_TRACKING}/{layout.ELLIPSE_SERIES[prefix]}"
            return Ellipse(center=np.column_stack([frame[f"{prefix}_center_x"], frame[f"{prefix}_center_y"]]),
                           area=h5[f"{base}/area"][()], area_raw=frame[f"{prefix}_area_raw"].to_numpy(),
                           width=h5[f"{base}/width"][()], height=h5[f"{base}/height"][()],
                           angle=h5[f"{base}/angle"][()])

        eye = EyeTracking(timestamps=frame["timestamps"].to_numpy(), eye=ellipse("eye"), pupil=ellipse("pupil"),
                          corneal_reflection=ellipse("cr"), likely_blink=h5[layout.STORED_LIKELY_BLINK][()])
    rig = None
    geometry = session.eye_tracking_rig_geometry
    if geometry:
        rig = RigGeometry(equipment=geometry["equipment"],
                          monitor_position=tuple(geometry["monitor_position_mm"]),
                          camera_position=tuple(geometry["camera_position_mm"]),
                          led_position=tuple(geometry["led_position"]),
                          monitor_rotation=tuple(geometry["monitor_rotation_deg"]),
                          camera_rotation=tuple(geometry["camera_rotation_deg"]))

    licks = session.licks if layout.LICKS in h5 else None
    rewards = session.rewards if layout.REWARD_VOLUME in h5 else None
    return BehaviorContent(
        identifier=_text(h5, layout.IDENTIFIER),
        session_start_time=meta["date_of_acquisition"],
        session_type=_text(h5, layout.SESSION_DESCRIPTION),
        experiment_description=_text(h5, "/general/experiment_description"),
        metadata=metadata, subject=subject, task_parameters=task,
        stimulus_timestamps=session.stimulus_timestamps,
        running_timestamps=running["timestamps"].to_numpy(),
        running_speed=running["speed"].to_numpy(), running_speed_unfiltered=raw["speed"].to_numpy(),
        running_dx=acquisition["dx"].to_numpy(), v_in=acquisition["v_in"].to_numpy(),
        v_sig=acquisition["v_sig"].to_numpy(),
        trials=session.trials, presentations=presentations, licks=licks, rewards=rewards,
        templates=templates, eye_tracking=eye, rig_geometry=rig,
        keywords=tuple(h5["/general/keywords"].asstr()[()]),
        institution=_text(h5, "/general/institution"),
    )


def _ophys(exp, h5: h5py.File, behavior: BehaviorContent) -> OphysContent:
    meta = exp.metadata
    cells = exp.cell_specimen_table
    rois = cells.drop(columns=["roi_mask"]).reset_index()
    rois["cell_specimen_id"] = [layout.NULL_CELL_SPECIMEN_ID if v is None or v != v else int(v)  # None, NaN
                                for v in rois["cell_specimen_id"]]
    roi_ids = rois["cell_roi_id"].to_numpy()

    def stack(frame, column):
        assert (frame["cell_roi_id"].to_numpy() == roi_ids).all()
        return np.stack(frame[column].to_list()).T  # frames × ROIs

    corrected = exp.corrected_fluorescence_traces
    demixed = exp.demixed_traces
    neuropil = exp.neuropil_traces
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        events = exp.events
    position = {roi: i for i, roi in enumerate(roi_ids)}
    event_rows = np.array([position[r] for r in events["cell_roi_id"]], dtype=np.int64)
    plane = ImagingPlane(description=_text(h5, f"{layout.IMAGING_PLANE}/description"),
                         excitation_lambda=meta["excitation_lambda"], emission_lambda=meta["emission_lambda"],
                         imaging_rate=meta["ophys_frame_rate"],
                         indicator=_text(h5, f"{layout.IMAGING_PLANE}/indicator"),
                         location=meta["targeted_structure"])
    motion = exp.motion_correction
    return OphysContent(
        behavior=behavior, imaging_plane=plane, rois=rois,
        roi_masks=np.stack(cells["roi_mask"].to_list()), ophys_timestamps=exp.ophys_timestamps,
        dff=stack(exp.dff_traces, "dff"),
        corrected_fluorescence=stack(corrected, "corrected_fluorescence"),
        neuropil=None if neuropil is None else stack(neuropil, "neuropil_trace"),
        demixed=None if demixed is None else stack(demixed, "demixed_trace"),
        r=corrected["r"].to_numpy() if "r" in corrected else None,
        rmse=corrected["RMSE"].to_numpy() if "RMSE" in corrected else None,
        events=np.stack(events["events"].to_list()).T if len(events) else np.zeros((len(exp.ophys_timestamps), 0)),
        event_lambdas=events["lambda"].to_numpy(), event_noise_stds=events["noise_std"].to_numpy(),
        event_rows=event_rows, motion_x=motion["x"].to_numpy(), motion_y=motion["y"].to_numpy(),
        max_projection=exp.max_projection.data, average_projection=exp.average_projection.data,
        segmentation_mask=h5[layout.STORED_SEGMENTATION_MASK][()],
        pixel_size_mm=exp.max_projection.spacing[0],
    )


def content_from_file(path) -> BehaviorContent | OphysContent:
    """The content of a released file: OphysContent for experiment files, BehaviorContent otherwise."""
    with h5py.File(path, "r") as h5:
        is_experiment = layout.OPHYS in h5
    cls = vbo.BehaviorOphysExperiment if is_experiment else vbo.BehaviorSession
    with cls.from_nwb_path(path) as obj, h5py.File(path, "r") as h5, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        behavior = _behavior(obj, h5)
        return _ophys(obj, h5, behavior) if is_experiment else behavior
