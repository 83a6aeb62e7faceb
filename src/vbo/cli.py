"""The ``vbo`` command: summaries, downloads, exports and reports of the Visual Behavior Ophys release.

Commands
--------
``vbo info PATH [--json]``
    What a session or experiment file holds: ids, subject, rig, counts, frame rates, imaging plane.
``vbo download`` / ``vbo verify``
    Fetch release files into a cache (verified, resumable) / re-hash and repair the cache.
``vbo tables`` / ``vbo export``
    The four metadata tables as CSV or Parquet / the release as Hive-partitioned Parquet datasets.
``vbo cell ID``
    Where one cell was imaged.
``vbo report``
    Self-contained HTML reports of the release, an experiment, a session, a mouse or a file.
``vbo simulate`` / ``vbo publish`` / ``vbo demo``
    Write a synthetic release / upload a release to a versioned bucket / run the workflows on a small release.

Importing this module is cheap: the commands' heavy libraries (h5py, pandas, numpy, matplotlib, pyarrow, dask:
the readers, analyses, figures and exports) are imported inside the commands, so ``vbo --help`` answers at once.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn, TransferSpeedColumn)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

import vbo
from vbo.errors import InvalidIdError, NwbFileError, VboError

try:  # recent typer vendors click; its exceptions are typer's own classes
    from typer import _click as click
except ImportError:  # pragma: no cover - typer that uses the click package
    import click

if TYPE_CHECKING:  # pragma: no cover
    from vbo.cache.download import DownloadProgress
    from vbo.session import BehaviorSession

# Exit status for a problem with the user's input (bad path, not an NWB file, ...), as click uses
# for usage errors.
EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 1
NETWORK_MODULES = ("botocore", "urllib3", "requests", "aiohttp", "aiobotocore", "s3fs", "fsspec")
TRACEBACK_ENV = "VBO_TRACEBACK"  # set to 1 to see the traceback of an unexpected error


def _red_line(message: str) -> None:
    """Print ``error: message`` as one red line on stderr, whatever newlines the message holds."""
    line = " ".join(str(message).split())
    Console(stderr=True, highlight=False, soft_wrap=True).print(Text(f"error: {line}", style="bold red"))


class OneLineErrors(TyperGroup):
    """The ``vbo`` command group: every failure is one red line on stderr and a non-zero exit, never a traceback.

    Bad arguments (click usage errors) exit 2, as do ``vbo.errors`` exceptions and file-system errors that
    escape a command; anything unexpected exits 1 (``VBO_TRACEBACK=1`` shows its traceback).
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.ClickException as err:
            hint = f" (see {err.ctx.command_path} --help)" if getattr(err, "ctx", None) is not None else ""
            if err.format_message().strip():  # empty when the help was shown instead (no arguments)
                _red_line(f"{err.format_message()}{hint}")
            code = err.exit_code
        except (getattr(click.exceptions, "Abort", typer.Abort), typer.Abort):
            _red_line("aborted")
            code = EXIT_INTERNAL_ERROR
        except Exception as err:
            if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
                raise
            code = self._report(err)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)

    @staticmethod
    def _report(err: Exception) -> int:
        if isinstance(err, VboError):
            _red_line(str(err))
            return EXIT_BAD_INPUT
        if isinstance(err, OSError):
            where = f"{err.filename}: " if getattr(err, "filename", None) else ""
            _red_line(f"{where}{err.strerror or err}")
            return EXIT_BAD_INPUT
        if type(err).__module__.split(".")[0] in NETWORK_MODULES:
            _red_line(f"network: {type(err).__name__}: {err}")
            return EXIT_INTERNAL_ERROR
        _red_line(f"unexpected {type(err).__name__}: {err} (a bug in vbo; please report it, with the traceback "
                  f"that {TRACEBACK_ENV}=1 prints)")
        return EXIT_INTERNAL_ERROR


app = typer.Typer(
    name="vbo",
    cls=OneLineErrors,
    help="Lazy, AllenSDK-compatible access to the Allen Visual Behavior Ophys dataset.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Lazy, AllenSDK-compatible access to the Allen Visual Behavior Ophys dataset."""
    # A callback keeps `vbo` a command group, so the command name is always typed (`vbo info PATH`).


# --------------------------------------------------------------------------------------------
# vbo info
# --------------------------------------------------------------------------------------------

# (key, label shown in the table) in display order, grouped into table sections. Keys are the
# JSON keys of `vbo info --json`; units are part of the key names.
_SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "file",
        [
            ("file", "file"),
            ("kind", "kind"),
            ("behavior_session_id", "behavior_session_id"),
            ("ophys_experiment_id", "ophys_experiment_id"),
            ("ophys_session_id", "ophys_session_id"),
        ],
    ),
    (
        "session",
        [
            ("session_type", "session_type"),
            ("mouse_id", "mouse_id"),
            ("full_genotype", "full_genotype"),
            ("cre_line", "cre_line"),
            ("equipment_name", "equipment"),
            ("date_of_acquisition", "date of acquisition"),
            ("stimulus_duration_s", "stimulus recording duration (s)"),
            ("stimulus_frames", "stimulus frames"),
            ("stimulus_frame_rate_hz", "stimulus frame rate (Hz)"),
        ],
    ),
    (
        "counts",
        [
            ("trials", "trials"),
            ("flashes", "image flashes (not omitted)"),
            ("omitted_flashes", "omitted flashes"),
            ("licks", "licks"),
            ("rewards", "rewards"),
            ("rois", "ROIs"),
        ],
    ),
    (
        "imaging",
        [
            ("ophys_frame_rate_hz", "ophys frame rate, metadata (Hz)"),
            ("ophys_frame_rate_empirical_hz", "ophys frame rate, from timestamps (Hz)"),
            ("ophys_frames", "ophys frames"),
            ("targeted_structure", "imaging area"),
            ("imaging_depth_um", "imaging depth (µm)"),
        ],
    ),
]

def _plain(value: Any) -> Any:
    """A JSON-ready Python value: numpy scalars → int/float/bool, datetimes → ISO text, NaN → None."""
    if value is None:
        return None
    if hasattr(value, "isoformat"):  # datetime, pandas Timestamp
        return value.isoformat()
    if isinstance(value, bool):
        return value
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


def summarize(obj: BehaviorSession, path: str | Path) -> dict[str, Any]:
    """The facts `vbo info` prints for an open session or experiment.

    Parameters
    ----------
    obj
        A ``vbo.BehaviorSession`` or ``vbo.BehaviorOphysExperiment``.
    path
        The file it was opened from (reported as given).

    Returns
    -------
    dict
        Keys in display order (see ``_SECTIONS``); ophys keys only for experiments. Durations in
        seconds, rates in Hz, depth in µm. Values are plain Python (JSON-ready).
    """
    import numpy as np  # deferred: `vbo --help` does not pay for numpy

    is_experiment = isinstance(obj, vbo.BehaviorOphysExperiment)
    md = obj.metadata
    out: dict[str, Any] = {
        "file": str(path),
        "kind": "behavior_ophys_experiment" if is_experiment else "behavior_session",
        "behavior_session_id": md.get("behavior_session_id"),
        "session_type": md.get("session_type"),
        "mouse_id": md.get("mouse_id"),
        "full_genotype": md.get("full_genotype"),
        "cre_line": md.get("cre_line"),
        "equipment_name": md.get("equipment_name"),
        "date_of_acquisition": md.get("date_of_acquisition"),
        "stimulus_frame_rate_hz": md.get("stimulus_frame_rate"),
    }

    ts = np.asarray(obj.stimulus_timestamps, dtype=float)
    out["stimulus_frames"] = int(ts.size)
    out["stimulus_duration_s"] = float(ts[-1] - ts[0]) if ts.size else 0.0

    out["trials"] = len(obj.trials)
    presentations = obj.stimulus_presentations
    if "image_name" in presentations.columns:
        names = presentations["image_name"]
        is_image = names.notna() & (names.astype(object) != "omitted")
    else:  # no image stimulus at all
        is_image = np.zeros(len(presentations), dtype=bool)
    if "omitted" in presentations.columns:
        omitted = presentations["omitted"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    else:
        omitted = np.zeros(len(presentations), dtype=bool)
    out["flashes"] = int(np.count_nonzero(np.asarray(is_image, dtype=bool) & ~omitted))
    out["omitted_flashes"] = int(np.count_nonzero(omitted))
    out["licks"] = len(obj.licks)
    out["rewards"] = len(obj.rewards)

    if is_experiment:
        out["ophys_experiment_id"] = md.get("ophys_experiment_id", obj.ophys_experiment_id)
        out["ophys_session_id"] = md.get("ophys_session_id", obj.ophys_session_id)
        out["rois"] = len(obj.cell_specimen_table)
        ots = np.asarray(obj.ophys_timestamps, dtype=float)
        out["ophys_frames"] = int(ots.size)
        out["ophys_frame_rate_hz"] = md.get("ophys_frame_rate")
        # the empirical rate of a stream (docs/analysis.md §6.1): 1 / mean(diff(timestamps))
        out["ophys_frame_rate_empirical_hz"] = (
            float(1.0 / np.mean(np.diff(ots))) if ots.size > 1 else None
        )
        out["targeted_structure"] = md.get("targeted_structure")
        out["imaging_depth_um"] = md.get("imaging_depth")

    order = [key for _, rows in _SECTIONS for key, _ in rows]
    return {key: _plain(out[key]) for key in order if key in out}


def _format(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if key == "ophys_frame_rate_empirical_hz":
            return f"{value:.4f}"
        if key == "stimulus_duration_s":
            return f"{value:.3f}"
        return f"{value:g}"
    return str(value)


def _render_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"vbo info — {Path(summary['file']).name}", show_header=True)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    first = True
    for _, rows in _SECTIONS:
        present = [(key, label) for key, label in rows if key in summary]
        if not present:
            continue
        if not first:
            table.add_section()
        first = False
        for key, label in present:
            table.add_row(label, _format(key, summary[key]))
    return table


def _fail(path: Path, message: str) -> typer.Exit:
    """Print one red line naming the file on stderr; return the exit to raise."""
    line = " ".join(message.split())  # one line, whatever the message holds
    _red_line(line if str(path) in line else f"{path}: {line}")
    return typer.Exit(code=EXIT_BAD_INPUT)


@app.command()
def info(
    path: Annotated[
        Path,
        typer.Argument(
            help="A behavior-session or behavior-ophys-experiment NWB file.", metavar="PATH", show_default=False
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as a JSON object instead of a table.")
    ] = False,
) -> None:
    """Summarize a session or experiment NWB file: ids, subject, rig, counts, frame rates."""
    try:
        with vbo.open_nwb(path) as obj:
            summary = summarize(obj, path)
    except NwbFileError as err:
        raise _fail(Path(err.path), str(err)) from None
    except VboError as err:
        raise _fail(path, str(err)) from None
    except OSError as err:  # the file system refused (permissions, a directory, ...)
        raise _fail(path, err.strerror or str(err)) from None

    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return
    console = Console()
    if not console.is_terminal:  # piped or captured: do not fold genotypes at 80 columns
        console = Console(width=max(console.width, 120))
    console.print(_render_table(summary))


def _progress_bar(description: str, *, transfer: bool = False,
                  console: Console | None = None) -> tuple[Progress, Callable]:
    """The command line's progress bar (rich) and the callback that drives it.

    The callback is ``update(done, total)`` for counted steps (sessions, uploads) or, with ``transfer``,
    ``update(state)`` for a :class:`vbo.cache.download.DownloadProgress` (bytes, rate, time left, files):
    the library reports progress through callbacks and draws nothing itself.
    """
    if transfer:
        columns = (DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[files]}"))
    else:
        columns = (MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    bar = Progress(TextColumn(description), BarColumn(), *columns, console=console, transient=False)
    task = bar.add_task(description, total=None, files="")

    def steps(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    def transferred(state: DownloadProgress) -> None:
        failed = f", {state.errors} failed" if state.errors else ""
        bar.update(task, completed=state.bytes_done, total=state.bytes_total or None,
                   files=f"{state.files_done}/{state.files_total} files{failed}")

    return bar, (transferred if transfer else steps)


@app.command()
def simulate(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the release into.", show_default=False)],
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    mice: Annotated[Optional[int], typer.Option(help="Number of mice (default: the scale's).")] = None,
    scale: Annotated[str, typer.Option(help="tiny (tests only: short sessions), small (demo, tutorials: real 60-min sessions, few cells) "
                                       "or full (real sessions and cell counts).")] = "tiny",
    versions: Annotated[int, typer.Option(help="Manifest versions to write: the last N of v0.1.0, v0.2.0, v0.3.0, v1.0.0, "
                                            "v1.0.1, v1.1.0 (1-6).")] = 1,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: CPUs, at most 4).")] = None,
) -> None:
    """Write a synthetic release in the bucket layout, with planted truth in OUT_DIR/ground_truth."""
    from vbo.simulate import SCALES  # deferred, as every command's library: numpy, h5py
    from vbo.simulate import simulate as run

    if scale not in SCALES:
        raise typer.BadParameter(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}", param_hint="--scale")
    for value, option in ((mice, "--mice"), (workers, "--workers")):
        if value is not None and value < 1:
            raise typer.BadParameter(f"{value}: give at least 1", param_hint=option)
    bar, update = _progress_bar("simulating sessions")
    with bar:
        try:
            release = run(out_dir, seed=seed, mice=mice, scale=scale, versions=versions, workers=workers,
                          progress=update)
        except ValueError as err:
            raise _fail(out_dir, str(err)) from None
    typer.echo(f"wrote {release.n_behavior_files} behavior and {release.n_experiment_files} experiment NWB files, "
               f"manifests {', '.join(release.versions)} to {release.root}")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option(help="Where figures and the summary go.")] = Path("vbo-demo"),
    cache_dir: Annotated[Optional[Path], typer.Option(help="Where the synthetic release is kept.")] = None,
) -> None:
    """Simulate a small release once, run the workflows on it, and save figures and a summary."""
    from vbo.demo import run_demo  # deferred: pandas, h5py, matplotlib

    bar, update = _progress_bar("simulating the demo release (first run only)")
    with bar:
        result = run_demo(out_dir, cache_dir, progress=update)
    typer.echo(result.summary.read_text())
    typer.echo(f"release: {result.release_dir}")
    typer.echo(f"figures and summary: {result.out_dir.resolve()} ({result.seconds:.1f} s)")


def _ids(text: Optional[str], option: str) -> list[int]:
    """Comma-separated ids (``1,2,3``) → ints; a bad id is a usage error naming ``option``."""
    from vbo.tables import normalize_id  # deferred: pandas

    try:
        return [normalize_id(part) for part in text.split(",") if part.strip()] if text else []
    except InvalidIdError as err:
        raise typer.BadParameter(str(err), param_hint=option) from None


def _open_cache(cache_dir: Path, bucket: Optional[str], endpoint_url: Optional[str], offline: bool,
                static: bool = False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vbo.errors.UpdatedStimulusPresentationTableWarning)
        if static:
            return vbo.VisualBehaviorOphysProjectCache.from_local_cache(cache_dir, use_static_cache=True)
        if offline:
            return vbo.VisualBehaviorOphysProjectCache.from_local_cache(cache_dir)
        return vbo.VisualBehaviorOphysProjectCache.from_s3_cache(cache_dir, bucket_name_override=bucket,
                                                                endpoint_url=endpoint_url)


@app.command()
def download(
    cache_dir: Annotated[Path, typer.Argument(help="The cache folder (AllenSDK-compatible layout).")],
    experiments: Annotated[Optional[str], typer.Option(help="Comma-separated ophys_experiment_ids.")] = None,
    sessions: Annotated[Optional[str], typer.Option(help="Comma-separated behavior_session_ids.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every file of the release.")] = False,
    bucket: Annotated[Optional[str], typer.Option(help="Bucket (default: the release bucket).")] = None,
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3 endpoint of a mirror or test server.")] = None,
    workers: Annotated[int, typer.Option(help="Parallel downloads.")] = 8,
) -> None:
    """Download files of the release into CACHE_DIR: verified, resumable, in parallel, with progress."""
    if not (experiments or sessions or everything):
        raise typer.BadParameter("name --experiments, --sessions or --all", param_hint="--experiments")
    if workers < 1:
        raise typer.BadParameter(f"{workers} workers: give at least 1", param_hint="--workers")
    session_ids, experiment_ids = _ids(sessions, "--sessions"), _ids(experiments, "--experiments")
    try:
        cache = _open_cache(cache_dir, bucket, endpoint_url, offline=False)
        bar, update = _progress_bar("downloading", transfer=True)
        with bar:
            paths = cache.download(session_ids, experiment_ids, everything, workers=workers, progress=update)
    except (VboError, KeyError, TypeError, RuntimeError) as err:
        raise _fail(cache_dir, str(err)) from None
    typer.echo(f"{len(paths)} files verified in {cache_dir}")


@app.command()
def verify(
    cache_dir: Annotated[Path, typer.Argument(help="The cache folder to check.")],
    repair: Annotated[bool, typer.Option(help="Download corrupt files again.")] = True,
    bucket: Annotated[Optional[str], typer.Option(help="Bucket (default: the release bucket).")] = None,
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3 endpoint of a mirror or test server.")] = None,
    offline: Annotated[bool, typer.Option(help="Only check; never touch the network.")] = False,
) -> None:
    """Re-hash every cached file of the current manifest; repair what is wrong. Exit 1 if corrupt files remain."""
    try:
        cache = _open_cache(cache_dir, bucket, endpoint_url, offline)
        report = cache.verify(repair=repair and not offline)
    except (VboError, RuntimeError) as err:
        raise _fail(cache_dir, str(err)) from None
    for path in report["repaired"]:
        typer.echo(f"repaired {path}")
    for path in report["corrupt"]:
        typer.echo(f"CORRUPT {path}", err=True)
    typer.echo(f"{len(report['ok'])} ok, {len(report['repaired'])} repaired, {len(report['corrupt'])} corrupt, "
               f"{len(report['missing'])} not downloaded ({cache.current_manifest()})")
    if report["corrupt"]:
        raise typer.Exit(code=1)


@app.command()
def cell(
    cache_dir: Annotated[Path, typer.Argument(help="The cache folder, or a copy of the bucket with --static.")],
    cell_specimen_id: Annotated[str, typer.Argument(help="A cell_specimen_id (matched across sessions).")],
    static: Annotated[bool, typer.Option(help="CACHE_DIR is a mirrored copy of the bucket.")] = False,
    offline: Annotated[bool, typer.Option(help="Never touch the network.")] = False,
    bucket: Annotated[Optional[str], typer.Option(help="Bucket (default: the release bucket).")] = None,
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3 endpoint of a mirror or test server.")] = None,
) -> None:
    """Where one cell was imaged: its experiments with session, date, area and depth (metadata only)."""
    from vbo.population import experiments_of_cell  # deferred: pandas, h5py, scipy

    given = _ids(cell_specimen_id, "CELL_SPECIMEN_ID")
    if len(given) != 1:
        raise typer.BadParameter(f"give one cell_specimen_id, not {len(given)}", param_hint="CELL_SPECIMEN_ID")
    try:  # the id as typed (checked above), so messages quote it as given
        rows = experiments_of_cell(_open_cache(cache_dir, bucket, endpoint_url, offline, static), cell_specimen_id)
    except (VboError, KeyError, TypeError, RuntimeError) as err:
        raise _fail(cache_dir, str(err.args[0] if isinstance(err, KeyError) and err.args else err)) from None
    columns = [c for c in ("ophys_experiment_id", "session_type", "experience_level", "date_of_acquisition",
                           "targeted_structure", "imaging_depth", "cre_line", "mouse_id") if c in rows.columns]
    table = rows.reset_index()[["cell_roi_id", *columns]]
    if "date_of_acquisition" in table:
        table["date_of_acquisition"] = table["date_of_acquisition"].dt.strftime("%Y-%m-%d")
    typer.echo(f"cell_specimen_id {cell_specimen_id}: {len(table)} experiments")
    typer.echo(table.to_string(index=False))


@app.command()
def publish(
    release_dir: Annotated[Path, typer.Argument(help="A release folder written by `vbo simulate`.")],
    target: Annotated[str, typer.Argument(help="s3://BUCKET (an existing, versioned bucket).", metavar="s3://BUCKET")],
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3 endpoint (mirror or test server).")] = None,
) -> None:
    """Upload a release to a versioned bucket and rewrite its manifests with the server's version ids."""
    from vbo.cache.publish import publish as upload_release  # deferred: the S3 modules, which `vbo --help` skips
    if not target.startswith("s3://") or not target[5:].strip("/"):
        raise typer.BadParameter(f"{target!r} is not s3://BUCKET", param_hint="TARGET")
    if not release_dir.is_dir():
        raise typer.BadParameter(f"{release_dir} is not a folder (a release written by `vbo simulate`)",
                                 param_hint="RELEASE_DIR")
    bar, update = _progress_bar("uploading")
    with bar:
        try:
            published = upload_release(release_dir, target[5:].strip("/"), endpoint_url=endpoint_url, progress=update)
        except (FileNotFoundError, ValueError) as err:
            raise _fail(release_dir, str(err)) from None
    typer.echo(f"published {', '.join(sorted(published))} to {target}")


# --------------------------------------------------------------------------------------------
# vbo report / vbo tables / vbo export
# --------------------------------------------------------------------------------------------


def _step_bar(description: str):
    """A rich progress bar and a ``progress(done, total, label)`` callback (labelled steps)."""
    bar, update = _progress_bar(description)

    def step(done: int, total: int, label: str = "") -> None:
        update(done, total)

    return bar, step


@app.command()
def report(
    source: Annotated[Path, typer.Argument(help="A cache folder (a bucket copy with --static), or an NWB file.")],
    experiment: Annotated[Optional[str], typer.Option(help="Report of one ophys_experiment_id.")] = None,
    session: Annotated[Optional[str], typer.Option(help="Report of one behavior_session_id.")] = None,
    mouse: Annotated[Optional[str], typer.Option(help="Report of one mouse (training history, sessions).")] = None,
    with_sessions: Annotated[bool, typer.Option(help="With --mouse: also every session and experiment report.")]
    = False,
    out: Annotated[Path, typer.Option(help="Folder for the HTML pages.")] = Path("vbo-reports"),
    static: Annotated[bool, typer.Option(help="SOURCE is a mirrored copy of the bucket.")] = False,
    offline: Annotated[bool, typer.Option(help="Never touch the network.")] = False,
    stream: Annotated[bool, typer.Option(help="Read session files from S3 by byte ranges, no download.")] = False,
    bucket: Annotated[Optional[str], typer.Option(help="Bucket (default: the release bucket).")] = None,
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3 endpoint of a mirror or test server.")] = None,
) -> None:
    """Self-contained HTML reports: the release overview (default), --experiment, --session, --mouse, or an NWB file."""
    from vbo import report as reports  # deferred: matplotlib, pandas, h5py

    if sum(x is not None for x in (experiment, session, mouse)) > 1:
        raise typer.BadParameter("give at most one of --experiment, --session, --mouse", param_hint="--experiment")
    bar, step = _step_bar("building the report")
    try:
        with bar, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if source.is_file():
                page = reports.nwb_report(source, out, progress=step)
            else:
                cache = _open_cache(source, bucket, endpoint_url, offline, static)
                if experiment is not None:
                    with cache.get_behavior_ophys_experiment(experiment, stream=stream) as opened:
                        page = reports.experiment_report(
                            opened, out / reports.experiment_page_name(opened.ophys_experiment_id), progress=step)
                elif session is not None:
                    with cache.get_behavior_session(session, stream=stream) as opened:
                        page = reports.session_report(
                            opened, out / reports.session_page_name(opened.behavior_session_id), progress=step)
                elif mouse is not None:
                    every = "all" if with_sessions else ()
                    page = reports.mouse_report(cache, mouse, out, behavior_session_ids=every,
                                                ophys_experiment_ids=every, stream=stream, progress=step)
                else:
                    page = reports.release_report(cache, out, progress=step)
    except (VboError, KeyError, TypeError, RuntimeError, FileNotFoundError) as err:
        raise _fail(source, str(err.args[0] if isinstance(err, KeyError) and err.args else err)) from None
    typer.echo(f"report: {page.resolve()}")


@app.command()
def tables(
    cache_dir: Annotated[Path, typer.Argument(help="The cache folder, or a copy of the bucket with --static.")],
    format: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    out: Annotated[Path, typer.Option(help="Folder for the four tables.")] = Path("."),
    static: Annotated[bool, typer.Option(help="CACHE_DIR is a mirrored copy of the bucket.")] = False,
    offline: Annotated[bool, typer.Option(help="Never touch the network.")] = False,
    bucket: Annotated[Optional[str], typer.Option(help="Bucket (default: the release bucket).")] = None,
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3 endpoint of a mirror or test server.")] = None,
) -> None:
    """Write the four metadata tables (behavior sessions, ophys sessions, experiments, cells) as CSV or Parquet."""
    from vbo.export import write_tables  # deferred: pandas, pyarrow

    if format not in ("csv", "parquet"):
        raise typer.BadParameter(f"{format!r} is not csv or parquet", param_hint="--format")
    try:
        written = write_tables(_open_cache(cache_dir, bucket, endpoint_url, offline, static), out, format)
    except (VboError, RuntimeError, FileNotFoundError) as err:
        raise _fail(cache_dir, str(err)) from None
    for path in written:
        typer.echo(str(path))


@app.command()
def export(
    cache_dir: Annotated[Path, typer.Argument(help="The cache folder, or a copy of the bucket with --static.")],
    out_dir: Annotated[Path, typer.Argument(help="Export folder (an earlier export there is updated).")],
    workers: Annotated[Optional[int], typer.Option(help="Local worker processes (default: one per CPU).")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="Address of a Dask scheduler (tcp://host:8786).")] = None,
    n_shuffles: Annotated[int, typer.Option(help="Gray-screen shuffles per response p-value.")] = 10_000,
    static: Annotated[bool, typer.Option(help="CACHE_DIR is a mirrored copy of the bucket.")] = False,
    offline: Annotated[bool, typer.Option(help="Never touch the network.")] = False,
    stream: Annotated[bool, typer.Option(help="Workers read the files from S3 by byte ranges.")] = False,
    bucket: Annotated[Optional[str], typer.Option(help="Bucket (default: the release bucket).")] = None,
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3 endpoint of a mirror or test server.")] = None,
) -> None:
    """The release as Hive-partitioned Parquet datasets: incremental, resumable, on processes or Dask."""
    from vbo.export import export as run  # deferred: pandas, pyarrow, h5py

    client = None
    try:
        cache = _open_cache(cache_dir, bucket, endpoint_url, offline, static)
        if scheduler:
            from dask.distributed import Client  # deferred: only with --scheduler

            client = Client(scheduler)
        bar, update = _progress_bar("exporting (sessions and experiments)")
        with bar:
            result = run(cache, out_dir, workers=workers, client=client, stream=stream, n_shuffles=n_shuffles,
                         progress=update)
    except (VboError, RuntimeError, FileNotFoundError, OSError) as err:
        raise _fail(cache_dir, str(err)) from None
    finally:
        if client is not None:
            client.close()
    typer.echo(f"{len(result.computed)} computed, {len(result.reused)} unchanged, {len(result.removed)} removed "
               f"({result.manifest}) in {result.seconds:.1f} s: {out_dir.resolve()}")


def main() -> None:  # pragma: no cover - thin wrapper for `python -m vbo`
    app(prog_name="vbo")
