"""Write the same NWB file as :func:`vbo.nwb.write.write_nwb`, group by group with h5py (no pynwb objects).

pynwb builds, validates and maps several hundred Python objects per file (and loads its namespaces once
per process); for the simulator's hundreds of files that overhead, not the data, dominated. This writer
lays out the identical HDF5 tree directly: same groups, datasets, dtypes, chunking and compression,
attributes (``neurodata_type``, ``namespace``, ``object_id``), object references and soft links.
``tests/test_fastwrite.py`` writes the same content with both writers and compares the trees object by
object, and validates the result with pynwb.

The cached specifications (``/specifications``) do not depend on the content: they are written once by
pynwb into a small file (kept in the vbo cache folder, keyed by the pynwb and hdmf versions and the
extension YAML) and copied into every file. :func:`prepare` makes that file ahead of time, e.g. in a parent
process before workers start.

Example
-------
>>> from vbo.nwb.fastwrite import write_nwb_fast
>>> write_nwb_fast(content, "behavior_session_123.nwb")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
import threading
import uuid
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from vbo.nwb import layout
from vbo.nwb import write as ref
from vbo.nwb.content import BehaviorContent, OphysContent

__all__ = ["write_nwb_fast", "prepare", "spec_file"]

TEXT = h5py.string_dtype("utf-8")
ASCII = h5py.string_dtype("ascii")
REF = h5py.ref_dtype
NS_COMMON = layout.NS_HDMF_COMMON
NS_CORE = layout.NS_CORE
SERIES_DEFAULTS = {"comments": "no comments", "description": "no description"}
DATA_ATTRS = {"conversion": np.float64(1.0), "offset": np.float64(0.0), "resolution": np.float64(-1.0)}
TIMESTAMPS_ATTRS = {"interval": np.int64(1), "unit": "seconds"}
ELLIPSE_UNIT = "meters"
AGE_REFERENCE = "birth"
# the extension's attribute dtypes (ndx-aibs-behavior-ophys.extensions.yaml, BehaviorTaskParameters)
TASK_PARAMETER_FLOATS = ("auto_reward_volume", "omitted_flash_fraction", "reward_volume", "stimulus_duration_sec")
TASK_PARAMETER_INTS = ("n_stimulus_frames",)
TIMESERIES_REFERENCE_DTYPE = np.dtype([("idx_start", "<i4"), ("count", "<i4"), ("timeseries", REF)])

PARALLEL_BYTES = 4 * 1024 * 1024  # compressed datasets at least this big are deflated chunk by chunk in threads
_SPEC_LOCK = threading.Lock()


# --- the cached specifications ------------------------------------------------------------------

def _spec_fingerprint() -> str:
    """pynwb and hdmf versions and the extension YAML: what the cached specifications depend on."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"pynwb {version('pynwb')} hdmf {version('hdmf')}".encode())
    for path in sorted(ref.EXTENSIONS_DIR.glob("*.yaml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _spec_folder() -> Path:
    if os.environ.get("VBO_CACHE_DIR"):
        base = Path(os.environ["VBO_CACHE_DIR"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vbo"
    return base / "nwb-specifications"


def spec_file() -> Path:
    """The file holding ``/specifications`` as pynwb caches them (written by pynwb on first use)."""
    path = _spec_folder() / f"specifications-{_spec_fingerprint()}.nwb"
    with _SPEC_LOCK:
        if not path.exists():
            _write_spec_file(path)
    return path


def prepare() -> Path:
    """Make the specifications file now (call once before starting worker processes)."""
    return spec_file()


def _write_spec_file(path: Path) -> None:
    """A minimal NWB file written by pynwb with vbo's private type map: its specifications are the ones
    every file of the reference writer caches (pynwb and hdmf imported here: heavy, and only once per machine)."""
    from hdmf.build import BuildManager
    from pynwb import NWBFile, NWBHDF5IO

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    types = ref.nwb_types()
    nwbfile = NWBFile(session_description="specifications", identifier="specifications",
                      session_start_time=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with NWBHDF5IO(str(tmp), mode="w", manager=BuildManager(types.type_map)) as io:
                io.write(nwbfile)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- the writer's primitives --------------------------------------------------------------------

class _Tree:
    """An open file plus the rules every object follows (ids, typed groups, datasets)."""

    def __init__(self, h5: h5py.File, identifier: str):
        self.h5 = h5
        self.namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"vbo:{identifier}")

    def object_id(self, path: str) -> str:
        return str(uuid.uuid5(self.namespace, path))

    def typed(self, obj, neurodata_type: str, namespace: str = NS_CORE, **attrs):
        """Stamp ``obj`` with its NWB type, namespace, object id and ``attrs``."""
        attrs.update(namespace=namespace, neurodata_type=neurodata_type, object_id=self.object_id(obj.name))
        _set_attrs(obj, attrs)
        return obj

    def group(self, path: str, neurodata_type: str | None = None, namespace: str = NS_CORE, **attrs):
        group = self.h5.require_group(path)
        if neurodata_type is not None:
            self.typed(group, neurodata_type, namespace, **attrs)
        else:
            _set_attrs(group, attrs)
        return group

    def dataset(self, path: str, values, *, compress: bool | None = None, shuffle: bool = True,
                dtype=None, attrs: dict | None = None):
        """A dataset as AllenSDK's writer stored it: gzip in h5py's default chunks when ``compress`` (default:
        when at least ``write.COMPRESS_BYTES``), else contiguous; fixed shape (table columns too)."""
        kwargs = {}
        array = values if dtype is not None else np.asarray(values)
        if compress is None:
            compress = _nbytes(array) >= ref.COMPRESS_BYTES
        size = np.size(array) if dtype is None or dtype.kind != "O" else len(array)
        if compress and size:
            kwargs.update(compression="gzip", shuffle=shuffle, chunks=True)
        if "compression" in kwargs and _nbytes(array) >= PARALLEL_BYTES and array.dtype.kind in "biuf":
            dataset = self.h5.create_dataset(path, shape=array.shape, dtype=array.dtype, **kwargs)
            _write_compressed_chunks(dataset, array)
        else:
            dataset = self.h5.create_dataset(path, data=array, dtype=dtype, **kwargs)
        if attrs:
            _set_attrs(dataset, attrs)
        return dataset

    def text(self, path: str, values, *, encoding=TEXT, attrs: dict | None = None):
        """A text dataset (scalar or 1-D) of variable-length strings."""
        if isinstance(values, str):
            return self.dataset(path, values, dtype=encoding, attrs=attrs)
        array = np.empty(len(values), dtype=object)
        array[:] = [str(v) for v in values]
        return self.dataset(path, array, dtype=encoding, attrs=attrs)

    def link(self, path: str, target: str) -> None:
        self.h5[path] = h5py.SoftLink(target)


def _chunk_bytes(array: np.ndarray, index: tuple[int, ...], chunks: tuple[int, ...], shuffle: bool,
                 level: int) -> bytes:
    """One chunk as HDF5 stores it: padded with zeros to the full chunk shape, byte-shuffled, deflated."""
    slices = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, chunks, array.shape))
    block = array[slices]
    if block.shape != chunks:
        padded = np.zeros(chunks, dtype=array.dtype)
        padded[tuple(slice(0, n) for n in block.shape)] = block
        block = padded
    raw = np.ascontiguousarray(block).view(np.uint8).reshape(-1, array.dtype.itemsize)
    if shuffle and array.dtype.itemsize > 1:
        raw = raw.T
    return zlib.compress(np.ascontiguousarray(raw).tobytes(), level)


def _write_compressed_chunks(dataset, array: np.ndarray) -> None:
    """Fill a gzip (and shuffle) dataset chunk by chunk, deflating in threads (zlib releases the GIL):
    the file holds what h5py's own filter pipeline would write, on every core."""
    chunks = dataset.chunks
    level = int(dataset.compression_opts)
    shuffle = bool(dataset.shuffle)
    grid = [range(-(-n // c)) for n, c in zip(array.shape, chunks)]
    indices = list(itertools.product(*grid))
    workers = min(len(indices), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        compressed = pool.map(lambda index: _chunk_bytes(array, index, chunks, shuffle, level), indices)
        for index, data in zip(indices, compressed):
            dataset.id.write_direct_chunk(tuple(i * c for i, c in zip(index, chunks)), data)


def _nbytes(array) -> int:
    """Bytes as numpy counts them (8 per object of a text array), as the reference writer decides."""
    return np.asarray(array).nbytes


def _set_attrs(obj, attrs: dict) -> None:
    for key, value in attrs.items():
        if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype == object):
            obj.attrs.create(key, np.array([str(v) for v in value], dtype=object), dtype=TEXT)
        else:
            obj.attrs[key] = value


# --- time series --------------------------------------------------------------------------------

def _series(tree: _Tree, path: str, data, timestamps, unit: str, *, neurodata_type: str = "TimeSeries",
            namespace: str = NS_CORE, description: str | None = None, compress: bool | None = None,
            shuffle: bool = True, group_attrs: dict | None = None) -> None:
    """A TimeSeries-like group: ``data`` with its unit and scaling attributes, and ``timestamps`` (an
    array, or the path of a timestamps dataset to soft-link)."""
    attrs = dict(SERIES_DEFAULTS)
    if description is not None:
        attrs["description"] = description
    attrs.update(group_attrs or {})
    tree.group(path, neurodata_type, namespace, **attrs)
    tree.dataset(f"{path}/{layout.DATA}", data, compress=compress, shuffle=shuffle, attrs={**DATA_ATTRS, "unit": unit})
    if isinstance(timestamps, str):
        tree.link(f"{path}/{layout.TIMESTAMPS}", timestamps)
    else:
        tree.dataset(f"{path}/{layout.TIMESTAMPS}", ref.float_values(timestamps), attrs=TIMESTAMPS_ATTRS)


def _processing_module(tree: _Tree, name: str, description: str) -> str:
    path = f"{layout.PROCESSING}/{name}"
    tree.group(path, "ProcessingModule", description=description)
    return path


# --- tables -------------------------------------------------------------------------------------

def _column(tree: _Tree, path: str, values, description: str, neurodata_type: str = "VectorData",
            namespace: str = NS_COMMON, compress: bool | None = None, **extra) -> None:
    array = values if isinstance(values, np.ndarray) else np.asarray(values)
    if array.dtype == object:
        dataset = tree.text(path, array)
    else:
        dataset = tree.dataset(path, array, compress=compress)
    tree.typed(dataset, neurodata_type, namespace, description=description, **extra)


def _ragged_column(tree: _Tree, table: str, name: str, description: str, flat, ends) -> None:
    _column(tree, f"{table}/{name}", flat, description)
    index = tree.dataset(f"{table}/{name}{layout.INDEX_SUFFIX}", ends)
    tree.typed(index, "VectorIndex", NS_COMMON, description=f"Index for VectorData '{name}'",
               target=tree.h5[f"{table}/{name}"].ref)


def _table(tree: _Tree, path: str, neurodata_type: str, description: str, ids, colnames: list[str]) -> None:
    tree.group(path, neurodata_type, NS_CORE, colnames=list(colnames), description=description)
    ids = tree.dataset(f"{path}/{layout.ID}", np.asarray(ids, dtype=np.int64))
    tree.typed(ids, "ElementIdentifiers", NS_COMMON)


def _trials(tree: _Tree, trials: pd.DataFrame) -> None:
    path = layout.TRIALS
    ordered = [layout.START_TIME, layout.STOP_TIME] + [c for c in trials.columns
                                                       if c not in (layout.START_TIME, layout.STOP_TIME)]
    ids = trials.index.to_numpy(dtype=np.int64) if len(trials) else np.zeros(0, np.int64)
    _table(tree, path, "TimeIntervals", ref.TRIALS_DESCRIPTION, ids, ordered)
    for name in ordered:
        series = trials[name]
        description = ref.TRIALS_COLUMN_DESCRIPTION.format(name)
        column = f"{path}/{name}"
        if name in (layout.START_TIME, layout.STOP_TIME):
            _column(tree, column, series.to_numpy(dtype=np.float64), ref.PRESENTATION_COLUMN_DESCRIPTIONS[name])
        elif name == layout.LICK_TIMES and len(trials) and not any(np.size(v) for v in series):
            flat, ends = ref.no_licks_column(len(trials))  # the SDK's encoding of a session without licks
            _ragged_column(tree, path, name, description, flat, ends)
        elif name == layout.LICK_TIMES or ref.is_ragged(series):
            flat, ends = ref.ragged_values(series.to_list())
            _ragged_column(tree, path, name, description, flat, ends)
        elif name == "change_frame" and series.dtype.kind == "f":
            _column(tree, column, series.fillna(layout.INT_NA).to_numpy(dtype=np.int64), description)
        elif ref.is_text(series):
            _column(tree, column, ref.text_values(series.to_numpy(dtype=object), na=""), description)
        else:
            _column(tree, column, ref.column_values(series), description)


def _presentations(tree: _Tree, presentations: pd.DataFrame, stimulus_times: np.ndarray) -> None:
    frame = presentations.reset_index(drop=True)
    if layout.OMITTED in frame and "is_change" in frame and frame["is_change"].dtype == bool:
        is_change = frame["is_change"].astype("boolean")
        is_change[frame[layout.OMITTED].isna().to_numpy()] = pd.NA
        frame["is_change"] = is_change
    timestamps = ref.float_values(stimulus_times)
    order = ref.presentation_order(frame.columns)
    stimulus_series = tree.h5.require_group(f"{layout.PROCESSING}/{layout.STIMULUS_MODULE}/"
                                            f"{layout.STIMULUS_TIMESTAMPS_SERIES}")
    for stimulus_name in pd.unique(frame["stimulus_name"]):
        rows = frame[frame["stimulus_name"] == stimulus_name]
        path = f"{layout.INTERVALS}/{stimulus_name}{layout.PRESENTATIONS_SUFFIX}"
        start = rows[layout.START_TIME].to_numpy(dtype=np.float64)
        stop = rows["end_time"].to_numpy(dtype=np.float64)
        columns: list[tuple[str, np.ndarray]] = [(layout.START_TIME, start), (layout.STOP_TIME, stop)]
        for name in order:
            series = rows[name]
            if series.isna().all():
                continue
            columns.append((name, ref.column_values(series, nullable_bool=name in layout.PRESENTATION_NULLABLE_BOOLS)))
        n = len(rows)
        colnames = [c for c, _ in columns] + [layout.PRESENTATION_TAGS, layout.PRESENTATION_TIMESERIES]
        _table(tree, path, "TimeIntervals", ref.PRESENTATIONS_DESCRIPTION.format(stimulus_name), np.arange(n),
               colnames)
        for name, values in columns:
            _column(tree, f"{path}/{name}", values,
                    ref.PRESENTATION_COLUMN_DESCRIPTIONS.get(name, ref.NO_DESCRIPTION))
        ends = np.arange(1, n + 1, dtype=ref.index_dtype(n))
        tags = np.full(n, layout.PRESENTATION_TAG_VALUE, dtype=object)
        _ragged_column(tree, path, layout.PRESENTATION_TAGS,
                       ref.PRESENTATION_COLUMN_DESCRIPTIONS[layout.PRESENTATION_TAGS], tags, ends)
        first = np.searchsorted(timestamps, start, side="left")
        count = np.searchsorted(timestamps, stop, side="left") - first
        references = np.empty(n, dtype=TIMESERIES_REFERENCE_DTYPE)
        references["idx_start"] = first
        references["count"] = count
        references["timeseries"] = stimulus_series.ref
        column = f"{path}/{layout.PRESENTATION_TIMESERIES}"
        dataset = tree.dataset(column, references)
        tree.typed(dataset, "TimeSeriesReferenceVectorData", NS_CORE,
                   description=ref.PRESENTATION_COLUMN_DESCRIPTIONS[layout.PRESENTATION_TIMESERIES])
        index = tree.dataset(column + layout.INDEX_SUFFIX, ends)
        tree.typed(index, "VectorIndex", NS_COMMON,
                   description=f"Index for VectorData '{layout.PRESENTATION_TIMESERIES}'",
                   target=dataset.ref)


# --- the file -----------------------------------------------------------------------------------

def _iso(time: dt.datetime) -> str:
    if time.tzinfo is None:
        time = time.replace(tzinfo=dt.timezone.utc)
    return time.isoformat()


def _root(tree: _Tree, b: BehaviorContent, keywords: tuple[str, ...], nwb_version: str) -> None:
    h5 = tree.h5
    tree.typed(h5, "NWBFile", NS_CORE, nwb_version=nwb_version)
    start = _iso(b.session_start_time)
    tree.text(layout.FILE_CREATE_DATE, [start], encoding=ASCII)
    tree.text(layout.IDENTIFIER, b.identifier)
    tree.text(layout.SESSION_DESCRIPTION, b.session_type)
    tree.text(layout.SESSION_START_TIME, start, encoding=ASCII)
    tree.text(layout.TIMESTAMPS_REFERENCE_TIME, start, encoding=ASCII)
    for group in (layout.ACQUISITION, layout.ANALYSIS, layout.GENERAL, layout.INTERVALS, layout.PROCESSING,
                  layout.STIMULUS_PRESENTATION, layout.STIMULUS_TEMPLATES):
        h5.require_group(group)
    tree.text(layout.EXPERIMENT_DESCRIPTION, b.experiment_description)
    tree.text(layout.INSTITUTION, b.institution)
    tree.text(layout.KEYWORDS, list(keywords))


def _general(tree: _Tree, b: BehaviorContent, ophys: OphysContent | None) -> str:
    """Device, subject, metadata and task parameters; returns the device path."""
    equipment = str(b.metadata["equipment_name"])
    config = ref.MESOSCOPE_DEVICE if equipment.startswith(layout.MESOSCOPE_PREFIX) else ref.SCIENTIFICA_DEVICE
    device = f"{layout.DEVICES}/{equipment}"
    tree.group(device, "Device", NS_CORE, **config)

    subject = dict(b.subject)
    driver_line = subject.pop("driver_line", None)
    reporter_line = subject.pop("reporter_line", None)
    attrs = {"reporter_line": layout.NONE_STRING if reporter_line is None else str(reporter_line)}
    drivers = [str(d) for d in np.atleast_1d(driver_line)] if driver_line is not None else []
    if drivers:
        attrs["driver_line"] = drivers
    tree.group(layout.SUBJECT, "BehaviorSubject", layout.NS_BEHAVIOR_OPHYS, **attrs)
    for key, value in subject.items():
        if value is None:
            continue
        tree.text(f"{layout.SUBJECT}/{key}", str(value),
                  attrs={"reference": AGE_REFERENCE} if key == "age" else None)

    meta = b.metadata
    uuid_value = meta.get("behavior_session_uuid")
    fields = {
        "behavior_session_id": np.int64(meta["behavior_session_id"]),
        "behavior_session_uuid": layout.NONE_STRING if uuid_value is None else str(uuid_value),
        "equipment_name": equipment,
        "project_code": str(meta.get("project_code") or layout.MISSING_PROJECT_CODE),
        "session_type": str(meta["session_type"]),
        "stimulus_frame_rate": np.float64(meta["stimulus_frame_rate"]),
    }
    kind = "BehaviorMetadata"
    if ophys is not None:
        kind = "OphysBehaviorMetadata"
        group = meta.get("imaging_plane_group")
        fields.update({key: np.int64(meta[key]) for key in (
            "field_of_view_height", "field_of_view_width", "targeted_imaging_depth", "ophys_session_id",
            "imaging_depth", "ophys_container_id", "ophys_experiment_id")})
        fields["imaging_plane_group"] = np.int64(layout.NO_PLANE_GROUP if group is None else group)
        fields["imaging_plane_group_count"] = np.int64(meta.get("imaging_plane_group_count") or 0)
    tree.group(layout.METADATA, kind, layout.NS_BEHAVIOR_OPHYS, **fields)

    params = {}
    for key, value in b.task_parameters.items():
        if key == "image_set":
            continue
        if key in ("blank_duration_sec", "response_window_sec"):
            value = [v if isinstance(v, str) else str(float(v)) for v in value]
        elif isinstance(value, np.generic):
            value = value.item()
        if value is None:
            continue
        if key in TASK_PARAMETER_INTS:
            value = np.int64(value)
        elif key in TASK_PARAMETER_FLOATS:
            value = np.float64(value)
        elif isinstance(value, float):
            value = np.float64(value)
        elif isinstance(value, bool):
            value = np.bool_(value)
        elif isinstance(value, int):
            value = np.int64(value)
        params[key] = value
    tree.group(layout.TASK_PARAMETERS, "BehaviorTaskParameters", layout.NS_BEHAVIOR_OPHYS, **params)
    return device


def _behavior_streams(tree: _Tree, b: BehaviorContent) -> None:
    stimulus = _processing_module(tree, layout.STIMULUS_MODULE, ref.STIMULUS_MODULE_DESCRIPTION)
    _series(tree, f"{stimulus}/{layout.STIMULUS_TIMESTAMPS_SERIES}", ref.float_values(b.stimulus_timestamps),
            b.stimulus_timestamps, "s")
    running = _processing_module(tree, layout.RUNNING_MODULE, ref.RUNNING_MODULE_DESCRIPTION)
    ts = b.running_timestamps
    _series(tree, f"{running}/{layout.RUNNING_SPEED_SERIES}", ref.float_values(b.running_speed), ts, "cm/s")
    _series(tree, f"{running}/{layout.RAW_RUNNING_SPEED_SERIES}", ref.float_values(b.running_speed_unfiltered), ts,
            "cm/s")
    _series(tree, f"{running}/{layout.RUNNING_DX_SERIES}", np.asarray(b.running_dx, dtype=np.float32), ts, "cm",
            description=ref.DX_DESCRIPTION)
    _series(tree, layout.V_SIG, ref.float_values(b.v_sig), ts, "V", description=ref.V_SIG_DESCRIPTION)
    _series(tree, layout.V_IN, ref.float_values(b.v_in), ts, "V", description=ref.V_IN_DESCRIPTION)
    if b.licks is not None:
        licking = _processing_module(tree, layout.LICKING_MODULE, ref.LICKING_MODULE_DESCRIPTION)
        _series(tree, f"{licking}/{layout.LICKS_SERIES}", b.licks["frame"].to_numpy(dtype=np.int64),
                b.licks["timestamps"].to_numpy(dtype=np.float64), "N/A", description=ref.LICKS_DESCRIPTION)
    if b.rewards is not None:
        rewards = _processing_module(tree, layout.REWARDS_MODULE, ref.LICKING_MODULE_DESCRIPTION)
        times = b.rewards["timestamps"].to_numpy(dtype=np.float64)
        _series(tree, f"{rewards}/{layout.REWARD_VOLUME_SERIES}", b.rewards["volume"].to_numpy(dtype=np.float64),
                times, "mL")
        _series(tree, f"{rewards}/{layout.REWARD_AUTOREWARDED_SERIES}",
                b.rewards["auto_rewarded"].to_numpy(dtype=bool), times, "mL")


def _stimulus(tree: _Tree, b: BehaviorContent) -> None:
    frame = b.presentations
    for template in b.templates:
        n = len(template.image_names)
        path = f"{layout.STIMULUS_TEMPLATES}/{template.name}"
        _series(tree, path, np.asarray(template.warped, dtype=np.uint8), np.full(n, np.nan), ref.TEMPLATE_UNIT,
                neurodata_type="StimulusTemplate", namespace=layout.NS_STIMULUS_TEMPLATE)
        tree.dataset(f"{path}/{layout.TEMPLATE_UNWARPED}", ref.float_values(template.unwarped))
        tree.dataset(f"{path}/{layout.TEMPLATE_CONTROL}", np.arange(n, dtype=np.uint64))
        tree.text(f"{path}/{layout.TEMPLATE_IMAGE_NAMES}", [str(x) for x in template.image_names])
        tree.text(f"{path}/format", ref.TEMPLATE_FORMAT)
        if layout.PRESENTATION_IMAGE_SET not in frame:
            continue
        rows = frame[(frame[layout.PRESENTATION_IMAGE_SET] == template.name).fillna(False).to_numpy(bool)]
        if not len(rows):
            continue
        series = f"{layout.STIMULUS_PRESENTATION}/{template.name}"
        _series(tree, series, rows["image_index"].to_numpy(dtype=np.uint64), rows[layout.START_TIME], "N/A",
                neurodata_type="IndexSeries")
        tree.link(f"{series}/indexed_timeseries", path)


def _eye_tracking(tree: _Tree, b: BehaviorContent) -> None:
    eye = b.eye_tracking
    if eye is not None:
        group = f"{layout.ACQUISITION}/{layout.EYE_TRACKING_NAME}"
        tree.group(group, "EllipseEyeTracking", layout.NS_ELLIPSE_EYE_TRACKING)
        eye_path = f"{group}/{layout.ELLIPSE_SERIES['eye']}"
        shared_ts = f"{eye_path}/{layout.TIMESTAMPS}"
        for key, ellipse, timestamps in (("eye", eye.eye, eye.timestamps), ("pupil", eye.pupil, shared_ts),
                                         ("cr", eye.corneal_reflection, shared_ts)):
            path = f"{group}/{layout.ELLIPSE_SERIES[key]}"
            _series(tree, path, ref.float_values(ellipse.center), timestamps, ELLIPSE_UNIT,
                    neurodata_type="EllipseSeries", namespace=layout.NS_ELLIPSE_EYE_TRACKING)
            for field in ("area", "area_raw", "width", "height", "angle"):
                tree.dataset(f"{path}/{field}", ref.float_values(getattr(ellipse, field)))
            tree.text(f"{path}/reference_frame", layout.ELLIPSE_REFERENCE_FRAME)
        _series(tree, f"{group}/{layout.LIKELY_BLINK_SERIES}", np.asarray(eye.likely_blink, dtype=bool), shared_ts,
                "N/A", description=ref.LIKELY_BLINK_DESCRIPTION)
    rig = b.rig_geometry
    if rig is not None:
        module = _processing_module(tree, layout.EYE_RIG_MODULE, ref.EYE_RIG_MODULE_DESCRIPTION)
        path = f"{module}/{layout.EYE_RIG_NAME}"
        tree.group(path, "OphysEyeTrackingRigMetadata", layout.NS_BEHAVIOR_OPHYS, equipment=str(rig.equipment))
        for name, unit in ref.RIG_UNITS.items():
            tree.dataset(f"{path}/{name}", ref.float_values(getattr(rig, name)).reshape(3),
                         attrs={layout.EYE_RIG_UNIT_ATTR: unit})


def _ophys(tree: _Tree, o: OphysContent, device: str) -> None:
    """The imaging plane and the ophys module: ROI table, traces, events, motion correction, images."""
    plane_path = _imaging_plane(tree, o.imaging_plane, device)
    module = _processing_module(tree, layout.OPHYS_MODULE, ref.OPHYS_MODULE_DESCRIPTION)
    table = _roi_table(tree, module, o, plane_path)
    timestamps = ref.float_values(o.ophys_timestamps)
    _trace_series(tree, module, o, table, timestamps)
    table_ref = tree.h5[table].ref

    events = f"{module}/{layout.EVENTS_NAME}"
    _series(tree, events, ref.float_values(o.events), timestamps, ref.EVENT_UNIT, neurodata_type="OphysEventDetection",
            namespace=layout.NS_EVENT_DETECTION, compress=True, shuffle=False)
    tree.dataset(f"{events}/lambdas", ref.float_values(o.event_lambdas))
    tree.dataset(f"{events}/noise_stds", ref.float_values(o.event_noise_stds))
    event_rois = tree.dataset(f"{events}/{layout.ROIS}", np.asarray(o.event_rows, dtype=np.int64))
    tree.typed(event_rois, "DynamicTableRegion", NS_COMMON, description=ref.EVENT_ROIS_DESCRIPTION, table=table_ref)

    for name, values in ((layout.MOTION_X_SERIES, o.motion_x), (layout.MOTION_Y_SERIES, o.motion_y)):
        _series(tree, f"{module}/{name}", np.asarray(values, dtype=np.int64), timestamps, ref.MOTION_UNIT)

    images = f"{module}/{layout.IMAGES_INTERFACE}"
    tree.group(images, "Images", description=SERIES_DEFAULTS["description"])
    resolution = np.float64(float(o.pixel_size_mm) / layout.RESOLUTION_TO_MM)
    for name, data in ((layout.MAX_PROJECTION_NAME, o.max_projection),
                       (layout.AVERAGE_PROJECTION_NAME, o.average_projection),
                       (layout.SEGMENTATION_MASK_NAME, o.segmentation_mask)):
        image = tree.dataset(f"{images}/{name}", np.asarray(data), compress=False)  # never gzip (as AllenSDK)
        tree.typed(image, "GrayscaleImage", NS_CORE, description=ref.IMAGE_DESCRIPTION.format(name),
                   resolution=resolution)


def _imaging_plane(tree: _Tree, plane, device: str) -> str:
    """``/general/optophysiology/imaging_plane_1`` with its optical channel; returns its path."""
    plane_path = f"{layout.OPTOPHYSIOLOGY}/{layout.IMAGING_PLANE_NAME}"
    tree.group(plane_path, "ImagingPlane")
    channel = f"{plane_path}/{layout.OPTICAL_CHANNEL_NAME}"
    tree.group(channel, "OpticalChannel")
    tree.text(f"{channel}/description", ref.OPTICAL_CHANNEL_DESCRIPTION)
    tree.dataset(f"{channel}/emission_lambda", np.float64(plane.emission_lambda))
    tree.text(f"{plane_path}/description", plane.description)
    tree.link(f"{plane_path}/device", device)
    tree.dataset(f"{plane_path}/excitation_lambda", np.float64(plane.excitation_lambda))
    tree.dataset(f"{plane_path}/imaging_rate", np.float64(plane.imaging_rate))
    tree.text(f"{plane_path}/indicator", plane.indicator)
    tree.text(f"{plane_path}/location", plane.location)
    return plane_path


def _roi_table(tree: _Tree, module: str, o: OphysContent, plane_path: str) -> str:
    """The ROI table (``PlaneSegmentation``) with its masks; returns its path."""
    segmentation = f"{module}/{layout.IMAGE_SEGMENTATION}"
    tree.group(segmentation, "ImageSegmentation")
    table = f"{segmentation}/{layout.CELL_TABLE_NAME}"
    rois = o.rois.reset_index(drop=True)
    colnames = list(layout.CELL_TABLE_COLUMNS) + [layout.CELL_TABLE_MASK]
    _table(tree, table, "PlaneSegmentation", ref.CELL_TABLE_DESCRIPTION,
           rois["cell_roi_id"].to_numpy(dtype=np.int64), colnames)
    for name in layout.CELL_TABLE_COLUMNS:
        series = rois[name]
        if name == layout.CELL_SPECIMEN_ID_COLUMN:
            values = series.astype(object).where(series.notna(), layout.NULL_CELL_SPECIMEN_ID).to_numpy(np.int64)
        else:
            values = ref.column_values(series)
        _column(tree, f"{table}/{name}", values, ref.CELL_COLUMN_DESCRIPTIONS[name])
    _column(tree, f"{table}/{layout.CELL_TABLE_MASK}", np.asarray(o.roi_masks, dtype=bool),
            ref.CELL_COLUMN_DESCRIPTIONS[layout.CELL_TABLE_MASK])
    tree.link(f"{table}/imaging_plane", plane_path)
    tree.h5.require_group(f"{table}/reference_images")
    return table


def _trace_series(tree: _Tree, module: str, o: OphysContent, table: str, timestamps: np.ndarray) -> None:
    """dF/F (owning the ``rois`` region), corrected fluorescence with ``r``/``RMSE``, demixed and neuropil
    traces (their ``rois`` soft links to dF/F's)."""
    n_roi = len(o.rois)
    table_ref = tree.h5[table].ref
    dff_series = f"{module}/{layout.DFF_INTERFACE}/{layout.TRACES_SERIES}"
    region = f"{dff_series}/{layout.ROIS}"

    def traces(interface: str, data, name: str = layout.TRACES_SERIES, ts=None):
        path = f"{module}/{interface}/{name}"
        _series(tree, path, ref.float_values(data), timestamps if ts is None else ts, ref.TRACE_UNIT,
                neurodata_type="RoiResponseSeries")
        if path == dff_series:
            rois_dataset = tree.dataset(region, np.arange(n_roi, dtype=np.int64))
            tree.typed(rois_dataset, "DynamicTableRegion", NS_COMMON, description=ref.DFF_ROIS_DESCRIPTION,
                       table=table_ref)
        else:
            tree.link(f"{path}/{layout.ROIS}", region)

    tree.group(f"{module}/{layout.DFF_INTERFACE}", "DfOverF")
    traces(layout.DFF_INTERFACE, o.dff)
    tree.group(f"{module}/{layout.CORRECTED_FLUORESCENCE_INTERFACE}", "Fluorescence")
    traces(layout.CORRECTED_FLUORESCENCE_INTERFACE, o.corrected_fluorescence)
    dummy_times = np.arange(n_roi, dtype=np.float64)
    if o.r is not None:
        traces(layout.CORRECTED_FLUORESCENCE_INTERFACE, o.r, layout.R_SERIES, dummy_times)
    if o.rmse is not None:
        traces(layout.CORRECTED_FLUORESCENCE_INTERFACE, o.rmse, layout.RMSE_SERIES, dummy_times)
    if o.demixed is not None:
        tree.group(f"{module}/{layout.DEMIXED_INTERFACE}", "Fluorescence")
        traces(layout.DEMIXED_INTERFACE, o.demixed)
    if o.neuropil is not None:
        tree.group(f"{module}/{layout.NEUROPIL_INTERFACE}", "Fluorescence")
        traces(layout.NEUROPIL_INTERFACE, o.neuropil)


def _write_tree(h5: h5py.File, content: BehaviorContent | OphysContent, specifications: Path) -> None:
    ophys = content if isinstance(content, OphysContent) else None
    behavior = ophys.behavior if ophys is not None else content
    keywords = tuple(behavior.keywords)
    if ophys is not None and keywords == layout.BEHAVIOR_KEYWORDS:
        keywords = layout.EXPERIMENT_KEYWORDS
    with h5py.File(specifications, "r") as spec:
        nwb_version = spec.attrs[layout.NWB_VERSION_ATTR]
        nwb_version = nwb_version.decode() if isinstance(nwb_version, bytes) else str(nwb_version)
        spec.copy(spec[layout.SPECIFICATIONS], h5, layout.SPECIFICATIONS.strip("/"))
    tree = _Tree(h5, behavior.identifier)
    _root(tree, behavior, keywords, nwb_version)
    h5.attrs[layout.SPECLOC_ATTR] = h5[layout.SPECIFICATIONS].ref
    device = _general(tree, behavior, ophys)
    _behavior_streams(tree, behavior)
    _trials(tree, behavior.trials)
    _presentations(tree, behavior.presentations, behavior.stimulus_timestamps)
    _stimulus(tree, behavior)
    _eye_tracking(tree, behavior)
    if ophys is not None:
        _ophys(tree, ophys, device)


def write_nwb_fast(content: BehaviorContent | OphysContent, path: str | os.PathLike) -> Path:
    """Write ``content`` as :func:`vbo.nwb.write.write_nwb` does (same tree), directly with h5py.

    Parameters
    ----------
    content
        What the file holds (see :func:`vbo.nwb.write.write_nwb`).
    path
        Target file; written under a temporary name and renamed when complete.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    vbo.nwb.write.ContentError
        Inconsistent shapes or missing fields (nothing written).
    """
    ophys = content if isinstance(content, OphysContent) else None
    behavior = ophys.behavior if ophys is not None else content
    if not isinstance(behavior, BehaviorContent):
        raise TypeError(f"write_nwb_fast needs a BehaviorContent or an OphysContent, got {type(content)!r}")
    ref.check_behavior(behavior)
    if ophys is not None:
        ref.check_ophys(ophys)
    specifications = spec_file()
    path = Path(path)
    with ref.partial_file(path) as tmp, h5py.File(tmp, "w") as h5:
        _write_tree(h5, content, specifications)
    return path
