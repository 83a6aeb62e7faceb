#!/usr/bin/env python
"""Read benchmark: vbo against plain pynwb and the raw-h5py floor on Visual Behavior Ophys NWB files.

    python benchmarks/read.py FILE [FILE ...] [--repeat N] [--markdown] [--json-out PATH]
                              [--allensdk-python PATH]

For every file and every reader (vbo; pynwb ``NWBHDF5IO(path, "r", load_namespaces=True)`` reading
the same datasets through pynwb objects; h5py reading the same datasets whole with ``ds[()]``) it
measures, each in a fresh Python process so that peak RSS belongs to one reader and one phase:

  open      open the file and read the session metadata
  streams   open, then the first access of each stream, timed one by one
            (vbo also times its derived members: performance metrics, masks, legacy methods)
  all       open + read every stream + close ("everything")

Times are the best of ``--repeat`` runs; RSS figures are the median. Ratios vbo/h5py and
pynwb/h5py come from the same run. Targets (printed, never asserted): "everything" within 1.5x of
the h5py floor; open + metadata under 0.2 s; peak RSS above the import within 1.2x of the bytes the
reader holds at the end (its arrays and tables, each buffer counted once). The file is read once before timing so that every
reader starts from a warm page cache.

With ``--allensdk-python`` (the interpreter of an environment holding AllenSDK, e.g. the oracle's venv; AllenSDK
is never a dependency of vbo) it also times, in the same run, "every member": ``from_nwb_path`` and the first
access to each member of ``list_data_attributes_and_methods()`` (the legacy methods called without arguments),
for AllenSDK and for vbo alike. Target (printed): vbo at least 5x faster than AllenSDK.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

READERS = ("vbo", "pynwb", "h5py")
PHASES = ("open", "streams", "all")
TARGET_OPEN_S = 0.2
TARGET_ALL_RATIO = 1.5
TARGET_RSS_RATIO = 1.2  # peak RSS above the import ÷ bytes the reader holds
TARGET_SDK_RATIO = 5.0  # AllenSDK's "every member" time ÷ vbo's
EVERY = "every"  # the phase that reads every member through the SDK-shaped API (vbo and AllenSDK)
EXCLUDED_TABLE_COLUMNS = {"tags", "tags_index", "timeseries", "timeseries_index"}
# vbo members that cannot be called without arguments or only raise by design
VBO_SKIP = {"update_targeted_imaging_depth", "get_cell_specimen_indices"}


# ---------------------------------------------------------------------------------------------
# what each reader reads, stream by stream
# ---------------------------------------------------------------------------------------------


def _h5_read(f, *paths):
    return [f[p][()] for p in paths]


def _h5_table(group):
    """Every column of a DynamicTable group (and its id), whole, minus tags/timeseries."""
    return {
        name: ds[()]
        for name, ds in group.items()
        if name not in EXCLUDED_TABLE_COLUMNS and not hasattr(ds, "keys")
    }


def _h5_presentations(f):
    return {
        name: _h5_table(g) for name, g in f["/intervals"].items() if name.endswith("_presentations")
    }


def _h5_templates(f):
    out = {}
    for name, g in f["/stimulus/templates"].items():
        if "movie" in name:
            continue
        out[name] = [g[k][()] for k in ("control_description", "data", "unwarped") if k in g]
    return out


def _h5_eye(f):
    base = f["/acquisition/EyeTracking"]
    out = {"timestamps": base["eye_tracking/timestamps"][()]}
    for series in ("eye_tracking", "pupil_tracking", "corneal_reflection_tracking"):
        g = base[series]
        out[series] = [g[k][()] for k in ("data", "area_raw", "width", "height", "angle")]
    return out


def _h5_rig(f):
    g = f["/processing/eye_tracking_rig_metadata/eye_tracking_rig_metadata"]
    return dict(g.attrs), {k: (ds[()], dict(ds.attrs)) for k, ds in g.items()}


def _h5_traces(path):
    return lambda f: _h5_read(f, f"{path}/data", f"{path}/rois")


def _h5_image(name):
    def read(f):
        ds = f[f"/processing/ophys/images/{name}"]
        return ds[()], dict(ds.attrs)

    return read


def _h5_open(f, ophys: bool):
    md = dict(f["/general/metadata"].attrs)
    subject = f["/general/subject"]
    md.update({k: ds[()] for k, ds in subject.items()})
    md.update(subject.attrs)
    md["session_start_time"] = f["/session_start_time"][()]
    md["identifier"] = f["/identifier"][()]
    if ophys:
        plane = f["/general/optophysiology/imaging_plane_1"]
        for k in ("excitation_lambda", "imaging_rate", "indicator", "location", "channel_1/emission_lambda"):
            md[k] = plane[k][()]
    return md


def _nwb_series(module, name):
    def read(n):
        ts = n.processing[module][name]
        return ts.data[:], ts.timestamps[:]

    return read


def _nwb_presentations(n):
    import pandas as pd

    frames = [
        table.to_dataframe(exclude=EXCLUDED_TABLE_COLUMNS)
        for name, table in n.intervals.items()
        if name.endswith("_presentations")
    ]
    return pd.concat(frames, sort=False)


def _nwb_templates(n):
    return {
        name: (t.control_description[:], t.data[:], t.unwarped[:])
        for name, t in n.stimulus_template.items()
        if "movie" not in name
    }


def _nwb_eye(n):
    et = n.acquisition["EyeTracking"]
    out = {"timestamps": et.eye_tracking.timestamps[:]}
    for series in (et.eye_tracking, et.pupil_tracking, et.corneal_reflection_tracking):
        out[series.name] = [series.data[:], series.area_raw[:], series.width[:], series.height[:], series.angle[:]]
    return out


def _nwb_rig(n):
    import numpy as np

    rig = n.processing["eye_tracking_rig_metadata"]["eye_tracking_rig_metadata"]
    return {k: (np.asarray(v) if not isinstance(v, str) else v) for k, v in rig.fields.items()}


def _nwb_rrs(container, series=None):
    def read(n):
        obj = n.processing["ophys"][container]
        ts = obj[series] if series else obj
        return ts.data[:], ts.rois.data[:]

    return read


def _nwb_corrected(n):
    cf = n.processing["ophys"]["corrected_fluorescence"]
    return cf["traces"].data[:], cf["traces"].rois.data[:], cf["r"].data[:], cf["RMSE"].data[:]


def _nwb_events(n):
    ev = n.processing["ophys"]["event_detection"]
    return ev.data[:], ev.rois.data[:], ev.lambdas[:], ev.noise_stds[:]


def _nwb_image(name):
    return lambda n: n.processing["ophys"]["images"][name].data[:]


def _nwb_open(n, ophys: bool):
    md = dict(n.lab_meta_data["metadata"].fields)
    md.update(n.subject.fields)
    md["session_start_time"] = n.session_start_time
    md["identifier"] = n.identifier
    if ophys:
        plane = n.imaging_planes["imaging_plane_1"]
        md.update(plane.fields)
        md["emission_lambda"] = plane.optical_channel[0].emission_lambda
    return md


@dataclass(frozen=True)
class Stream:
    """One stream of a file: the vbo member(s) that return it and the equivalent raw reads."""

    name: str
    vbo: tuple[str, ...]
    probe: str  # an HDF5 path present iff the file has this stream
    h5: Callable[[Any], Any]
    nwb: Callable[[Any], Any]
    ophys: bool = False  # only in experiment files


def _series_stream(member: str, module: str, series: str) -> Stream:
    """The stream of a TimeSeries ``/processing/<module>/<series>``: its data and timestamps."""
    path = f"/processing/{module}/{series}"
    return Stream(member, (member,), path, lambda f: _h5_read(f, f"{path}/data", f"{path}/timestamps"),
                  _nwb_series(module, series))


def _traces_stream(member: str, interface: str) -> Stream:
    """The stream of a RoiResponseSeries ``traces`` in the ``ophys`` module's ``interface``."""
    path = f"/processing/ophys/{interface}/traces"
    return Stream(member, (member,), path, _h5_traces(path), _nwb_rrs(interface, "traces"), ophys=True)


STREAMS: list[Stream] = [
    Stream(
        "task_parameters", ("task_parameters",), "/general/task_parameters",
        lambda f: dict(f["/general/task_parameters"].attrs),
        lambda n: dict(n.lab_meta_data["task_parameters"].fields),
    ),
    Stream(
        "stimulus_timestamps", ("stimulus_timestamps",), "/processing/stimulus/timestamps",
        lambda f: _h5_read(f, "/processing/stimulus/timestamps/timestamps"),
        lambda n: n.processing["stimulus"]["timestamps"].timestamps[:],
    ),
    _series_stream("licks", "licking", "licks"),
    Stream(
        "rewards", ("rewards",), "/processing/rewards/volume",
        lambda f: _h5_read(
            f, "/processing/rewards/volume/data", "/processing/rewards/volume/timestamps",
            "/processing/rewards/autorewarded/data",
        ),
        lambda n: (*_nwb_series("rewards", "volume")(n), n.processing["rewards"]["autorewarded"].data[:]),
    ),
    _series_stream("running_speed", "running", "speed"),
    _series_stream("raw_running_speed", "running", "speed_unfiltered"),
    Stream(
        "trials", ("trials",), "/intervals/trials",
        lambda f: _h5_table(f["/intervals/trials"]),
        lambda n: n.trials.to_dataframe(),
    ),
    Stream(
        "stimulus_presentations", ("stimulus_presentations",), "/intervals",
        _h5_presentations, _nwb_presentations,
    ),
    Stream("stimulus_templates", ("stimulus_templates",), "/stimulus/templates", _h5_templates, _nwb_templates),
    Stream("eye_tracking", ("eye_tracking",), "/acquisition/EyeTracking", _h5_eye, _nwb_eye),
    Stream(
        "eye_tracking_rig_geometry", ("eye_tracking_rig_geometry",),
        "/processing/eye_tracking_rig_metadata/eye_tracking_rig_metadata", _h5_rig, _nwb_rig,
    ),
    Stream(
        "ophys_timestamps", ("ophys_timestamps",), "/processing/ophys/dff/traces/timestamps",
        lambda f: _h5_read(f, "/processing/ophys/dff/traces/timestamps"),
        lambda n: n.processing["ophys"]["dff"]["traces"].timestamps[:],
        ophys=True,
    ),
    Stream(
        "cell_specimen_table", ("cell_specimen_table",),
        "/processing/ophys/image_segmentation/cell_specimen_table",
        lambda f: _h5_table(f["/processing/ophys/image_segmentation/cell_specimen_table"]),
        lambda n: n.processing["ophys"]["image_segmentation"]["cell_specimen_table"].to_dataframe(),
        ophys=True,
    ),
    _traces_stream("dff_traces", "dff"),
    Stream(
        "corrected_fluorescence_traces", ("corrected_fluorescence_traces",),
        "/processing/ophys/corrected_fluorescence/traces",
        lambda f: _h5_read(
            f, "/processing/ophys/corrected_fluorescence/traces/data",
            "/processing/ophys/corrected_fluorescence/traces/rois",
            "/processing/ophys/corrected_fluorescence/r/data",
            "/processing/ophys/corrected_fluorescence/RMSE/data",
        ),
        _nwb_corrected, ophys=True,
    ),
    _traces_stream("demixed_traces", "demixed_trace"),
    _traces_stream("neuropil_traces", "neuropil_trace"),
    Stream(
        "events", ("events",), "/processing/ophys/event_detection",
        lambda f: _h5_read(
            f, *(f"/processing/ophys/event_detection/{k}" for k in ("data", "rois", "lambdas", "noise_stds"))
        ),
        _nwb_events, ophys=True,
    ),
    Stream(
        "motion_correction", ("motion_correction",), "/processing/ophys/ophys_motion_correction_x",
        lambda f: _h5_read(
            f, "/processing/ophys/ophys_motion_correction_x/data", "/processing/ophys/ophys_motion_correction_y/data"
        ),
        lambda n: (
            n.processing["ophys"]["ophys_motion_correction_x"].data[:],
            n.processing["ophys"]["ophys_motion_correction_y"].data[:],
        ),
        ophys=True,
    ),
    Stream(
        "max_projection", ("max_projection",), "/processing/ophys/images/max_projection",
        _h5_image("max_projection"), _nwb_image("max_projection"), ophys=True,
    ),
    Stream(
        "average_projection", ("average_projection",), "/processing/ophys/images/average_image",
        _h5_image("average_image"), _nwb_image("average_image"), ophys=True,
    ),
]
STREAM_BY_NAME = {s.name: s for s in STREAMS}


# ---------------------------------------------------------------------------------------------
# worker: one reader, one phase, one file, in its own process
# ---------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    try:
        import psutil
    except ImportError:  # e.g. AllenSDK's environment: Linux's own count (resident pages × page size)
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return psutil.Process().memory_info().rss


def _peak_rss_bytes() -> int:
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return int(getattr(psutil.Process().memory_info(), "peak_wset", _rss_bytes()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes; Linux: KiB


def _touch(value: Any) -> None:
    """Make sure a lazily returned value is really materialised (vbo Images are array-like)."""
    import numpy as np

    if hasattr(value, "data") and not isinstance(value, (np.ndarray, dict)) and hasattr(value, "spacing"):
        np.asarray(value.data)


def _held_bytes(value: Any, seen: set[int] | None = None) -> int:
    """Bytes of the numeric data a value holds (arrays, frames, their object cells), each buffer counted once."""
    import numpy as np
    import pandas as pd

    seen = set() if seen is None else seen
    if isinstance(value, np.ndarray):
        base = value
        while isinstance(base.base, np.ndarray):
            base = base.base
        if value.dtype == object:
            return value.nbytes + sum(_held_bytes(v, seen) for v in value.ravel())
        if id(base) in seen:
            return 0
        seen.add(id(base))
        return base.nbytes
    if isinstance(value, pd.DataFrame):
        return sum(_held_bytes(value[c].to_numpy(), seen) for c in value.columns) + \
            _held_bytes(value.index.to_numpy(), seen)
    if isinstance(value, pd.Series):
        return _held_bytes(value.to_numpy(), seen) + _held_bytes(value.index.to_numpy(), seen)
    if isinstance(value, dict):
        return sum(_held_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_held_bytes(v, seen) for v in value)
    data = getattr(value, "data", None)
    return _held_bytes(data, seen) if isinstance(data, np.ndarray) else 0


def _call_member(obj, name: str):
    import inspect

    value = getattr(obj, name)
    if callable(value):
        params = inspect.signature(value).parameters.values()
        required = [
            p for p in params
            if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if required:
            return None
        value = value()
    _touch(value)
    return value


class _Reader:
    """A reader of one file: ``open``, ``read`` streams (keeping what it reads), ``held_bytes``, ``close``."""

    def __init__(self, path: str, ophys: bool):
        self.path, self.ophys = path, ophys
        self.kept: list[Any] = []  # what was read, kept as vbo keeps its members: same memory story

    def held_bytes(self, streams: list[str]) -> int:
        return _held_bytes(self.kept)


class _VboReader(_Reader):
    def open(self):
        import vbo

        cls = vbo.BehaviorOphysExperiment if self.ophys else vbo.BehaviorSession
        self.obj = cls.from_nwb_path(self.path)
        _ = self.obj.metadata

    def read(self, stream: Stream):
        for member in stream.vbo:
            _call_member(self.obj, member)

    def members(self) -> list[str]:
        return list(self.obj.list_data_attributes_and_methods())

    def held_bytes(self, streams: list[str]) -> int:
        seen: set[int] = set()
        names = {m for name in streams for m in STREAM_BY_NAME[name].vbo}
        return sum(_held_bytes(self.obj.__dict__.get(m), seen) for m in names)

    def read_member(self, name: str):
        _call_member(self.obj, name)

    def close(self):
        self.obj.close()


class _PynwbReader(_Reader):
    def open(self):
        from pynwb import NWBHDF5IO

        self.io = NWBHDF5IO(self.path, "r", load_namespaces=True)
        self.nwb = self.io.read()
        _nwb_open(self.nwb, self.ophys)

    def read(self, stream: Stream):
        self.kept.append(stream.nwb(self.nwb))

    def close(self):
        self.io.close()


class _H5pyReader(_Reader):
    def open(self):
        import h5py

        self.f = h5py.File(self.path, "r")
        _h5_open(self.f, self.ophys)

    def read(self, stream: Stream):
        self.kept.append(stream.h5(self.f))

    def close(self):
        self.f.close()


class _AllenSdkReader(_VboReader):
    """AllenSDK 2.16.2 through the same API (run by ``--allensdk-python``): the eager ``from_nwb_path``."""

    def open(self):
        from allensdk.brain_observatory.behavior.behavior_ophys_experiment import BehaviorOphysExperiment
        from allensdk.brain_observatory.behavior.behavior_session import BehaviorSession

        cls = BehaviorOphysExperiment if self.ophys else BehaviorSession
        self.obj = cls.from_nwb_path(self.path)
        _ = self.obj.metadata

    def close(self):
        self.obj = None  # AllenSDK reads everything at construction and keeps no file open


def _import(reader: str):
    if reader == "allensdk":
        import allensdk.brain_observatory.behavior.behavior_ophys_experiment  # noqa: F401
        return _AllenSdkReader
    if reader == "vbo":
        import vbo

        vbo.BehaviorSession, vbo.BehaviorOphysExperiment  # noqa: B018 - `import vbo` is lazy; load the readers
        return _VboReader
    if reader == "pynwb":
        import pynwb  # noqa: F401
        return _PynwbReader
    import h5py  # noqa: F401
    return _H5pyReader


def _worker(reader: str, phase: str, path: str, ophys: bool, streams: list[str]) -> dict[str, Any]:
    import warnings

    warnings.simplefilter("ignore")  # legacy-method and namespace warnings are not the point here
    clock = time.perf_counter
    out: dict[str, Any] = {"reader": reader, "phase": phase, "errors": {}}

    t0 = clock()
    cls = _import(reader)
    import numpy  # noqa: F401  (every reader needs it; keep it out of the open time)

    out["import_s"] = clock() - t0
    out["rss_after_import"] = _rss_bytes()

    r = cls(path, ophys)
    t0 = clock()
    r.open()
    out["open_s"] = clock() - t0

    if phase == "streams":
        times: dict[str, float] = {}
        for name in streams:
            t0 = clock()
            try:
                r.read(STREAM_BY_NAME[name])
            except Exception as err:  # report, keep going: a benchmark is not a test
                out["errors"][name] = f"{type(err).__name__}: {err}"
                continue
            times[name] = clock() - t0
        out["streams"] = times
        if reader == "vbo":
            covered = {m for name in streams for m in STREAM_BY_NAME[name].vbo} | {"metadata"}
            extra: dict[str, float] = {}
            for member in r.members():
                if member in covered or member in VBO_SKIP:
                    continue
                t0 = clock()
                try:
                    r.read_member(member)
                except Exception as err:
                    out["errors"][member] = f"{type(err).__name__}: {err}"
                    continue
                extra[member] = clock() - t0
            out["derived"] = extra
        r.close()
    elif phase == "all":
        t0 = clock()
        for name in streams:
            try:
                r.read(STREAM_BY_NAME[name])
            except Exception as err:
                out["errors"][name] = f"{type(err).__name__}: {err}"
        out["all_s"] = out["open_s"] + (clock() - t0)
        out["held_bytes"] = r.held_bytes(streams)  # before close (untimed): what the reader keeps
        t_close = clock()
        r.close()
        out["all_s"] += clock() - t_close
    elif phase == EVERY:
        t0 = clock()
        read = []
        for member in r.members():
            if member in VBO_SKIP:
                continue
            try:
                r.read_member(member)
                read.append(member)
            except Exception as err:
                out["errors"][member] = f"{type(err).__name__}: {err}"
        r.close()
        out["every_s"] = out["open_s"] + (clock() - t0)
        out["members_read"] = read
    else:
        r.close()
    out["peak_rss"] = _peak_rss_bytes()
    return out


# ---------------------------------------------------------------------------------------------
# parent: run workers, aggregate, print
# ---------------------------------------------------------------------------------------------


@dataclass
class FileResult:
    path: Path
    ophys: bool
    size: int
    streams: list[str]
    present: dict[str, bool]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    def best(self, reader: str, phase: str, key: str) -> float | None:
        values = [run[key] for run in self.runs.get((reader, phase), []) if key in run]
        return min(values) if values else None

    def median(self, reader: str, phase: str, key: str) -> float | None:
        values = [run[key] for run in self.runs.get((reader, phase), []) if key in run]
        return statistics.median(values) if values else None

    def best_stream(self, reader: str, name: str, where: str = "streams") -> float | None:
        values = [
            run[where][name] for run in self.runs.get((reader, "streams"), []) if name in run.get(where, {})
        ]
        return min(values) if values else None

    def errors(self) -> dict[str, str]:
        out = {}
        for (reader, phase), runs in self.runs.items():
            for run in runs:
                for what, msg in run.get("errors", {}).items():
                    out[f"{reader} {phase} {what}"] = msg
        return out


def _inspect(path: Path) -> tuple[bool, dict[str, bool]]:
    import h5py

    with h5py.File(path, "r") as f:
        ophys = "/processing/ophys" in f
        present = {s.name: s.probe in f for s in STREAMS if ophys or not s.ophys}
    return ophys, present


def _prime(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(1 << 23):
            pass


def _run_worker(reader: str, phase: str, fr: FileResult, python: str = sys.executable) -> dict[str, Any]:
    streams = fr.streams if reader == "vbo" else [s for s in fr.streams if fr.present[s]]
    cmd = [
        python, str(Path(__file__).resolve()), "--_worker", reader, phase, str(fr.path),
        "1" if fr.ophys else "0", ",".join(streams),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"errors": {"process": f"exit {proc.returncode}: {tail[0]}"}}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(paths: list[Path], repeat: int, progress: Callable[[str], None],
        allensdk_python: str | None = None) -> list[FileResult]:
    results = []
    for path in paths:
        ophys, present = _inspect(path)
        fr = FileResult(path, ophys, path.stat().st_size, list(present), present)
        _prime(path)
        for i in range(repeat):
            for phase in PHASES:
                for reader in READERS:
                    progress(f"{path.name}: run {i + 1}/{repeat}, {reader} {phase}")
                    fr.runs.setdefault((reader, phase), []).append(_run_worker(reader, phase, fr))
            if allensdk_python:  # alternating, so that both see the same machine state
                for reader, python in (("vbo", sys.executable), ("allensdk", allensdk_python)):
                    progress(f"{path.name}: run {i + 1}/{repeat}, {reader} every member")
                    fr.runs.setdefault((reader, EVERY), []).append(_run_worker(reader, EVERY, fr, python))
        results.append(fr)
    return results


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3f}" if x >= 0.01 else f"{x * 1e3:.2f} ms"


def _fmt_mb(x: float | None) -> str:
    return "—" if x is None else f"{x / 2**20:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "—"
    return f"{a / b:.2f}x"


def _derived(fr: FileResult) -> tuple[float | None, list[str]]:
    """Best total time of vbo's members without a raw equivalent, and their names."""
    runs = [run.get("derived", {}) for run in fr.runs.get(("vbo", "streams"), []) if run.get("derived")]
    if not runs:
        return None, []
    return min(sum(d.values()) for d in runs), sorted(runs[0])


def rows_for(fr: FileResult) -> list[list[str]]:
    """Table rows: measure, vbo, pynwb, h5py, vbo/h5py, pynwb/h5py, target."""
    rows: list[list[str]] = []

    def timing(label, v, p, h, target=""):
        rows.append([label, _fmt_s(v), _fmt_s(p), _fmt_s(h), _ratio(v, h), _ratio(p, h), target])

    def memory(label, phase, subtract_import=False):
        vals = []
        for reader in READERS:
            peak = fr.median(reader, phase, "peak_rss")
            if subtract_import and peak is not None:
                peak -= fr.median(reader, phase, "rss_after_import") or 0
            vals.append(peak)
        rows.append([label, *(_fmt_mb(x) for x in vals), _ratio(vals[0], vals[2]), _ratio(vals[1], vals[2]), ""])

    imports = [fr.best(r, "open", "import_s") for r in READERS]
    opens = [fr.best(r, "open", "open_s") for r in READERS]
    timing("import of the reader's modules (s)", *imports)
    v = opens[0]
    status = "" if v is None else (" ✓" if v < TARGET_OPEN_S else " ✗")
    timing("open + metadata (s)", *opens, f"vbo < {TARGET_OPEN_S} s{status}")
    cold = [
        None if i is None or o is None else min(
            run["import_s"] + run["open_s"] for run in fr.runs[(r, "open")] if "open_s" in run
        )
        for r, i, o in zip(READERS, imports, opens, strict=True)
    ]
    timing("cold start: import + open + metadata (s)", *cold)
    for name in fr.streams:
        label = f"first {name} (s)" + ("" if fr.present[name] else " [absent in file]")
        timing(label, *(fr.best_stream(r, name) for r in READERS))
    total, _ = _derived(fr)
    if total is not None:
        timing("vbo-only derived members (s) [1]", total, None, None)
    v, p, h = (fr.best(r, "all", "all_s") for r in READERS)
    status = "" if v is None or h is None else (" ✓" if v <= TARGET_ALL_RATIO * h else " ✗")
    timing("everything: open + all streams + close (s)", v, p, h, f"vbo ≤ {TARGET_ALL_RATIO}x h5py{status}")
    memory("peak RSS, open + metadata (MB)", "open")
    memory("  minus RSS after import (MB)", "open", subtract_import=True)
    memory("peak RSS, everything (MB)", "all")
    memory("  minus RSS after import (MB)", "all", subtract_import=True)
    held = [fr.median(r, "all", "held_bytes") for r in READERS]
    rows.append(["bytes held after everything (MB)", *(_fmt_mb(x) for x in held), _ratio(held[0], held[2]),
                 _ratio(held[1], held[2]), ""])
    over = []
    for reader, h in zip(READERS, held):
        peak, after_import = fr.median(reader, "all", "peak_rss"), fr.median(reader, "all", "rss_after_import")
        over.append(None if None in (peak, after_import) or not h else (peak - after_import) / h)
    status = "" if over[0] is None else (" ✓" if over[0] <= TARGET_RSS_RATIO else " ✗")
    rows.append(["peak RSS above import ÷ bytes held", *("—" if x is None else f"{x:.2f}x" for x in over), "", "",
                 f"vbo ≤ {TARGET_RSS_RATIO}x{status}"])
    return rows


SDK_HEADER = ["measure", "vbo", "AllenSDK", "AllenSDK/vbo", "target"]


def sdk_rows_for(fr: FileResult) -> list[list[str]]:
    """Table rows against AllenSDK (empty without an ``--allensdk-python`` run): measure, vbo, AllenSDK, ratio."""
    if not fr.runs.get(("allensdk", EVERY)):
        return []
    def timing(label: str, key: str, target: str = "") -> list[str]:
        v, a = (fr.best(reader, EVERY, key) for reader in ("vbo", "allensdk"))
        return [label, _fmt_s(v), _fmt_s(a), _ratio(a, v), target]

    v, a = fr.best("vbo", EVERY, "every_s"), fr.best("allensdk", EVERY, "every_s")
    status = "" if v is None or a is None else (" ✓" if a >= TARGET_SDK_RATIO * v else " ✗")
    peaks = [fr.median(reader, EVERY, "peak_rss") for reader in ("vbo", "allensdk")]
    return [timing("import of the reader's modules (s)", "import_s"),
            timing("from_nwb_path + metadata (s)", "open_s"),
            timing("every member: open + first access of each (s)", "every_s", f"≥ {TARGET_SDK_RATIO:g}x{status}"),
            ["peak RSS, every member (MB)", *(_fmt_mb(x) for x in peaks), _ratio(peaks[1], peaks[0]), ""]]


def _notes(fr: FileResult) -> list[str]:
    notes = []
    _, names = _derived(fr)
    if names:
        notes.append(f"[1] computed by vbo with no raw-reader equivalent: {', '.join(names)}")
    notes.append(
        "Times exclude interpreter start-up; 'open + metadata' and 'everything' exclude the import, "
        "shown separately. Every reader keeps what it read until close."
    )
    return notes


HEADER = ["measure", "vbo", "pynwb", "h5py", "vbo/h5py", "pynwb/h5py", "target"]


def _title(fr: FileResult, repeat: int) -> str:
    kind = "experiment" if fr.ophys else "behavior session"
    return f"{fr.path.name} ({fr.size / 1e6:.1f} MB, {kind}; best of {repeat}, fresh process per reader and phase)"


def _versions() -> str:
    import importlib.metadata as md

    parts = [f"Python {platform.python_version()}"]
    for dist in ("vbo", "pynwb", "hdmf", "h5py", "numpy", "pandas"):
        try:
            parts.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    parts.append(f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs")
    return ", ".join(parts)


def _tables(fr: FileResult, repeat: int) -> list[tuple[str, list[str], list[list[str]]]]:
    """The tables of one file: (title, header, rows); the first column is the measure, the last the target."""
    tables = [(_title(fr, repeat), HEADER, rows_for(fr))]
    sdk = sdk_rows_for(fr)
    if sdk:
        tables.append((f"{fr.path.name}: every member against AllenSDK (same run, alternating)", SDK_HEADER, sdk))
    return tables


def print_markdown(results: list[FileResult], repeat: int) -> None:
    print(f"_{_versions()}_\n")
    for fr in results:
        for title, header, rows in _tables(fr, repeat):
            print(f"**{title}**\n")
            print("| " + " | ".join(header) + " |")
            print("|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|")
            for row in rows:
                print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
            print()
        for note in _notes(fr):
            print(f"{note}  ")
        print()
        _print_errors(fr, print)


def print_rich(results: list[FileResult], repeat: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))
    console.print(_versions(), style="dim")
    for fr in results:
        for title, header, rows in _tables(fr, repeat):
            table = Table(title=title)
            for i, col in enumerate(header):
                table.add_column(col, justify="left" if i in (0, len(header) - 1) else "right")
            for row in rows:
                table.add_row(*row)
            console.print(table)
        for note in _notes(fr):
            console.print(note, style="dim", markup=False)
        _print_errors(fr, lambda s: console.print(s, style="red", markup=False))


def _print_errors(fr: FileResult, emit: Callable[[str], None]) -> None:
    for what, msg in fr.errors().items():
        emit(f"error in {fr.path.name}: {what}: {msg}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_worker"]:
        reader, phase, path, ophys, streams = argv[1:6]
        result = _worker(reader, phase, path, ophys == "1", [s for s in streams.split(",") if s])
        print(json.dumps(result))
        return 0

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="NWB files to read")
    parser.add_argument("--repeat", type=int, default=3, help="runs per reader and phase (best time kept)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables (for README)")
    parser.add_argument("--json-out", type=Path, help="also write the raw measurements here")
    parser.add_argument("--allensdk-python", help="Python of an environment with AllenSDK (e.g. "
                        "~/.cache/vbo-allensdk-venv/bin/python): also time every member against AllenSDK")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    for path in args.files:
        if not path.is_file():
            parser.error(f"{path}: no such file")
    if args.allensdk_python and not os.access(args.allensdk_python, os.X_OK):
        parser.error(f"--allensdk-python {args.allensdk_python}: not an executable (the python of a venv with "
                     "AllenSDK, e.g. one built by ../shared/oracle/setup.sh)")

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = run(args.files, args.repeat, progress, args.allensdk_python)
    if args.markdown:
        print_markdown(results, args.repeat)
    else:
        print_rich(results, args.repeat)
    if args.json_out:
        raw = [
            {
                "file": str(fr.path), "ophys": fr.ophys, "size": fr.size, "present": fr.present,
                "runs": {f"{r}/{p}": runs for (r, p), runs in fr.runs.items()},
            }
            for fr in results
        ]
        args.json_out.write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
