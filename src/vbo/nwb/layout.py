"""The Allen Visual Behavior NWB layout: every HDF5 path, name, sentinel and encoding, as data.

This is the only module that knows where things live inside a released file
(``docs/format.md`` §7, §10). Readers and writers ask it; nothing else spells an HDF5 path.
"""

from __future__ import annotations

# --- file-level fields ---------------------------------------------------------------------
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
IDENTIFIER = "/identifier"
SESSION_DESCRIPTION = "/session_description"
SESSION_START_TIME = "/session_start_time"
NWB_VERSION_ATTR = "nwb_version"

# extension fields are attributes of these groups (docs/format.md §7.2, §7.4)
METADATA = "/general/metadata"
SUBJECT = "/general/subject"
TASK_PARAMETERS = "/general/task_parameters"
SUBJECT_AGE = "/general/subject/age"
SUBJECT_SEX = "/general/subject/sex"
SUBJECT_GENOTYPE = "/general/subject/genotype"
SUBJECT_ID = "/general/subject/subject_id"

IMAGING_PLANE = "/general/optophysiology/imaging_plane_1"
EMISSION_LAMBDA = IMAGING_PLANE + "/channel_1/emission_lambda"
EXCITATION_LAMBDA = IMAGING_PLANE + "/excitation_lambda"
IMAGING_RATE = IMAGING_PLANE + "/imaging_rate"
IMAGING_LOCATION = IMAGING_PLANE + "/location"

# --- behavior streams (docs/format.md §7.3) -------------------------------------------------
STIMULUS_TIMESTAMPS = "/processing/stimulus/timestamps/timestamps"
RUNNING_SPEED = "/processing/running/speed"
RAW_RUNNING_SPEED = "/processing/running/speed_unfiltered"
RUNNING_DX = "/processing/running/dx"
V_IN = "/acquisition/v_in"
V_SIG = "/acquisition/v_sig"
LICKS = "/processing/licking/licks"
REWARD_VOLUME = "/processing/rewards/volume"
REWARD_AUTOREWARDED = "/processing/rewards/autorewarded"
TRIALS = "/intervals/trials"
INTERVALS = "/intervals"
PRESENTATIONS_SUFFIX = "_presentations"
STIMULUS_TEMPLATES = "/stimulus/templates"
MOVIE_TEMPLATE_MARKER = "movie"
TEMPLATE_IMAGE_NAMES = "control_description"  # image names, in template order
TEMPLATE_UNWARPED = "unwarped"  # `data` holds the warped images

# --- eye tracking ---------------------------------------------------------------------------
EYE_TRACKING = "/acquisition/EyeTracking"
EYE_TIMESTAMPS = EYE_TRACKING + "/eye_tracking/timestamps"
STORED_LIKELY_BLINK = EYE_TRACKING + "/likely_blink/data"
# column prefix -> ellipse series name
ELLIPSE_SERIES = {"eye": "eye_tracking", "pupil": "pupil_tracking", "cr": "corneal_reflection_tracking"}
ELLIPSE_FIELDS = ("data", "area_raw", "width", "height", "angle")  # data = (n, 2) centres
EYE_RIG_GEOMETRY = "/processing/eye_tracking_rig_metadata/eye_tracking_rig_metadata"
# returned key -> stored dataset name
EYE_RIG_VECTORS = {
    "camera_position_mm": "camera_position",
    "camera_rotation_deg": "camera_rotation",
    "led_position": "led_position",
    "monitor_position_mm": "monitor_position",
    "monitor_rotation_deg": "monitor_rotation",
}

# --- ophys streams --------------------------------------------------------------------------
OPHYS = "/processing/ophys"
CELL_TABLE = OPHYS + "/image_segmentation/cell_specimen_table"
CELL_TABLE_MASK = "image_mask"
CELL_SPECIMEN_ID = CELL_TABLE + "/cell_specimen_id"
CELL_SPECIMEN_ID_COLUMN = "cell_specimen_id"
VALID_ROI = CELL_TABLE + "/valid_roi"
DFF = OPHYS + "/dff/traces"
CORRECTED_FLUORESCENCE = OPHYS + "/corrected_fluorescence/traces"
CORRECTED_FLUORESCENCE_R = OPHYS + "/corrected_fluorescence/r"
CORRECTED_FLUORESCENCE_RMSE = OPHYS + "/corrected_fluorescence/RMSE"
DEMIXED = OPHYS + "/demixed_trace/traces"
NEUROPIL = OPHYS + "/neuropil_trace/traces"
EVENTS = OPHYS + "/event_detection"
EVENT_LAMBDAS = EVENTS + "/lambdas"
EVENT_NOISE_STDS = EVENTS + "/noise_stds"
MOTION_X = OPHYS + "/ophys_motion_correction_x/data"
MOTION_Y = OPHYS + "/ophys_motion_correction_y/data"
MAX_PROJECTION = OPHYS + "/images/max_projection"
AVERAGE_PROJECTION = OPHYS + "/images/average_image"
STORED_SEGMENTATION_MASK = OPHYS + "/images/segmentation_mask_image"
IMAGE_RESOLUTION_ATTR = "resolution"
# the stored resolution is mm/10 per pixel (labelled pixels/cm); spacing in mm = resolution * 10
RESOLUTION_TO_MM = 10.0

# --- generic NWB encodings -------------------------------------------------------------------
DATA = "data"
TIMESTAMPS = "timestamps"
ROIS = "rois"
ID = "id"
COLNAMES_ATTR = "colnames"
HDMF_BOOKKEEPING_ATTRS = ("namespace", "neurodata_type", "object_id")
INDEX_SUFFIX = "_index"
# presentation-table columns that readers skip (docs/format.md §7.5)
PRESENTATION_SKIP_COLUMNS = ("tags", "tags_index", "timeseries", "timeseries_index")

# --- sentinels (docs/format.md §10) ---------------------------------------------------------
INT_NA = -99
NULL_CELL_SPECIMEN_ID = -1
NO_PLANE_GROUP = -1
FILE_STRING_NA = "N/A"
NONE_STRING = "None"
MISSING_PROJECT_CODE = "Not Available"

# what a file must contain to count as a Visual Behavior session / experiment, checked when it is opened: what
# names the session (the root's identifier and start, /general's metadata, subject and task; for an experiment,
# its imaging plane), which the metadata reads next. The data interfaces under /processing are checked when read
# (MissingDataError naming the path): on a streamed file of the released storage, looking into /processing and
# its ophys module costs five more places in the file and a round trip (docs/format.md §13.5)
REQUIRED_BEHAVIOR = (METADATA, SUBJECT, TASK_PARAMETERS, IDENTIFIER, SESSION_START_TIME)
REQUIRED_OPHYS = (IMAGING_PLANE,)

# --- names used when writing (docs/format.md §7.2-§7.7); each agrees with the paths above ----
PROCESSING = "/processing"
ACQUISITION = "/acquisition"
DEVICES = "/general/devices"
STIMULUS_PRESENTATION = "/stimulus/presentation"
STIMULUS_MODULE = "stimulus"  # /processing/stimulus
STIMULUS_TIMESTAMPS_SERIES = "timestamps"  # /processing/stimulus/timestamps
RUNNING_MODULE = "running"
RUNNING_SPEED_SERIES = "speed"
RAW_RUNNING_SPEED_SERIES = "speed_unfiltered"
RUNNING_DX_SERIES = "dx"
V_IN_SERIES = "v_in"  # in /acquisition
V_SIG_SERIES = "v_sig"
LICKING_MODULE = "licking"
LICKS_SERIES = "licks"
REWARDS_MODULE = "rewards"
REWARD_VOLUME_SERIES = "volume"
REWARD_AUTOREWARDED_SERIES = "autorewarded"
TRIALS_TABLE = "trials"  # /intervals/trials
PRESENTATION_TAGS = "tags"
PRESENTATION_TAG_VALUE = "stimulus_time_interval"
PRESENTATION_TIMESERIES = "timeseries"
START_TIME = "start_time"
STOP_TIME = "stop_time"
LICK_TIMES = "lick_times"  # the ragged trials column
# stored column order of a presentation table after start/stop time; columns missing from a stimulus
# are skipped, stimulus-specific extras (gratings: orientation, ...) go before stimulus_name
PRESENTATION_STORED_ORDER = (
    "stimulus_block", "stimulus_block_name", "image_index", "image_name", "movie_frame_index", "duration",
    "start_frame", "end_frame", "is_change", "is_image_novel", "omitted", "movie_repeat",
    "flashes_since_change", "trials_id", "image_set", "active", "is_sham_change",
)
PRESENTATION_LAST = "stimulus_name"
# nullable booleans stored as float 0/1/NaN (docs/format.md §7.5)
PRESENTATION_NULLABLE_BOOLS = ("omitted", "is_image_novel", "is_change")
PRESENTATION_IMAGE_SET = "image_set"
OMITTED = "omitted"
TEMPLATE_CONTROL = "control"
EYE_TRACKING_NAME = "EyeTracking"  # /acquisition/EyeTracking
LIKELY_BLINK_SERIES = "likely_blink"
ELLIPSE_REFERENCE_FRAME = "nose"
EYE_RIG_MODULE = "eye_tracking_rig_metadata"
EYE_RIG_NAME = "eye_tracking_rig_metadata"
EYE_RIG_UNIT_ATTR = "unit_of_measurement"
OPHYS_MODULE = "ophys"
IMAGE_SEGMENTATION = "image_segmentation"
CELL_TABLE_NAME = "cell_specimen_table"
# stored column order of the cell table (image_mask last)
CELL_TABLE_COLUMNS = ("cell_specimen_id", "height", "mask_image_plane", "max_correction_down",
                      "max_correction_left", "max_correction_right", "max_correction_up", "valid_roi", "width",
                      "x", "y")
TRACES_SERIES = "traces"  # RoiResponseSeries name inside dff / corrected_fluorescence / demixed / neuropil
DFF_INTERFACE = "dff"
CORRECTED_FLUORESCENCE_INTERFACE = "corrected_fluorescence"
R_SERIES = "r"
RMSE_SERIES = "RMSE"
DEMIXED_INTERFACE = "demixed_trace"
NEUROPIL_INTERFACE = "neuropil_trace"
EVENTS_NAME = "event_detection"
MOTION_X_SERIES = "ophys_motion_correction_x"
MOTION_Y_SERIES = "ophys_motion_correction_y"
IMAGES_INTERFACE = "images"
MAX_PROJECTION_NAME = "max_projection"
AVERAGE_PROJECTION_NAME = "average_image"
SEGMENTATION_MASK_NAME = "segmentation_mask_image"
IMAGING_PLANE_NAME = "imaging_plane_1"
OPTICAL_CHANNEL_NAME = "channel_1"
METADATA_NAME = "metadata"  # /general/metadata (LabMetaData)
TASK_PARAMETERS_NAME = "task_parameters"
MESOSCOPE_PREFIX = "MESO"  # equipment names of Multiscope rigs
BEHAVIOR_KEYWORDS = ("visual", "behavior", "task")
EXPERIMENT_KEYWORDS = ("2-photon", "calcium imaging", "visual cortex", "behavior", "task")

# extension namespaces (docs/format.md §7.1, §7.4): name -> version
NS_BEHAVIOR_OPHYS = "ndx-aibs-behavior-ophys"
NS_ELLIPSE_EYE_TRACKING = "ndx-ellipse-eye-tracking"
NS_STIMULUS_TEMPLATE = "ndx-aibs-stimulus-template"
NS_EVENT_DETECTION = "ndx-aibs-ophys-event-detection"
EXTENSION_NAMESPACES = {NS_BEHAVIOR_OPHYS: "0.2.0", NS_ELLIPSE_EYE_TRACKING: "0.1.0",
                        NS_STIMULUS_TEMPLATE: "0.1.0", NS_EVENT_DETECTION: "0.1.0"}

# --- the NWB file skeleton the direct (h5py) writer spells out (pynwb knows these itself) ----
GENERAL = "/general"
ANALYSIS = "/analysis"
STIMULUS = "/stimulus"
SPECIFICATIONS = "/specifications"
SPECLOC_ATTR = ".specloc"
OPTOPHYSIOLOGY = "/general/optophysiology"
FILE_CREATE_DATE = "/file_create_date"
TIMESTAMPS_REFERENCE_TIME = "/timestamps_reference_time"
EXPERIMENT_DESCRIPTION = "/general/experiment_description"
INSTITUTION = "/general/institution"
KEYWORDS = "/general/keywords"
NS_CORE = "core"
NS_HDMF_COMMON = "hdmf-common"

# --- what a streamed read fetches ahead (docs/format.md §13.4-§13.6) ----------------------------
# members that opening a file and its metadata never read, by the name of their group: a streamed read does not
# fetch their headers ahead when it reads the group (docs/format.md §13.4); read later, they hint as usual. In
# OPHYS the bulk traces, events, motion and images (dff is followed: dff_traces, the trace read first, then
# starts at its chunk index); in the root the raw streams, templates and presentations, cached schemas, the
# interval tables (the first table read finds them, then fetches them whole: PREFETCHED_DEEPER) and the processing
# modules (the open checks /general and the root: REQUIRED_BEHAVIOR; the first data member read looks into them)
NOT_PREFETCHED = {OPHYS.rsplit("/", 1)[1]: frozenset(path.split("/")[3] for path in (
    CORRECTED_FLUORESCENCE, DEMIXED, NEUROPIL, EVENTS, MOTION_X, MOTION_Y, MAX_PROJECTION)),
    "/": frozenset(path.split("/")[1] for path in (EYE_TRACKING, STIMULUS, ANALYSIS, SPECIFICATIONS, INTERVALS,
                                                   PROCESSING))}
# (the root goes by the name "/", vbo.nwb.prefetch.ROOT_NAME)

# groups whose whole extent is fetched, and whose members are followed this many group levels down, when a
# streamed read looks into them, by name (docs/format.md §13.6). INTERVALS: reading the trials fetches the
# presentation tables' columns (read next) in the same round. GENERAL: the open's look-up of the metadata
# fetches the subject's and the imaging plane's small datasets, which HDF5 keeps MBs away (in the block of
# small data it had open when they were written), for the metadata read next
PREFETCHED_DEEPER = {INTERVALS.rsplit("/", 1)[1]: 2, GENERAL.rsplit("/", 1)[1]: 3}
# root members whose header the writer places inside an earlier member's extent (docs/format.md §13.6): the cached
# schemas, written before the last interval table's columns; they do not end the interval tables' extent
INSIDE_EXTENTS = {"/": frozenset({SPECIFICATIONS.rsplit("/", 1)[1]})}
# datasets whose small data a streamed open fetches with their header, by group: the session's start, which the
# metadata reads (pynwb's writer puts the root's small data MBs away from their headers)
DATA_PREFETCHED = {"/": frozenset({SESSION_START_TIME.lstrip("/")})}

# --- stored kinds of table columns, checked on read (a text "True" must not pass for a boolean) -----
TRIAL_BOOLEAN_COLUMNS = ("aborted", "auto_rewarded", "catch", "correct_reject", "false_alarm", "go", "hit",
                         "is_change", "miss")
TRIAL_NUMBER_COLUMNS = ("start_time", "stop_time", "change_frame", "change_time", "response_latency",
                        "response_time", "reward_time", "reward_volume", "trial_length", "lick_times")
TRIAL_TEXT_COLUMNS = ("change_image_name", "initial_image_name")
# nullable booleans may be stored as float 0/1/NaN (docs/format.md §7.5)
PRESENTATION_BOOLEAN_COLUMNS = ("omitted", "is_image_novel", "is_change", "active", "is_sham_change")
PRESENTATION_NUMBER_COLUMNS = ("start_time", "stop_time", "duration", "start_frame", "end_frame", "image_index",
                               "flashes_since_change", "trials_id", "stimulus_block", "movie_frame_index",
                               "movie_repeat")
PRESENTATION_TEXT_COLUMNS = ("image_name", "stimulus_name", "stimulus_block_name", "image_set")
CELL_TABLE_NUMBER_COLUMNS = ("height", "width", "x", "y", "max_correction_down", "max_correction_left",
                             "max_correction_right", "max_correction_up", "mask_image_plane")
