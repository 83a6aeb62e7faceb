"""``vbo demo``: simulate a small release once, then run the existing workflows on it and save figures.

The release is simulated into the user's cache folder (``$XDG_CACHE_HOME/vbo`` or ``~/.cache/vbo``) and
reused by later runs. It is opened exactly as a mirrored bucket is, through
``VisualBehaviorOphysProjectCache.from_local_cache(folder, use_static_cache=True)``; figures and a summary go to
the output folder (``./vbo-demo``).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

import vbo
from vbo import behavior
from vbo.cache import manifest as mf
from vbo.history import training_history
from vbo.nwb import layout
from vbo.simulate import simulate
from vbo.simulate.release import RELEASE_VERSIONS, release_marker
from vbo.tables import is_passive

DEMO_SEED = 2024
DEMO_SCALE = "small"
EXPERIMENTS_PER_CRE_LINE = 2  # at most this many active experiments per Cre line in the cell-type figure


@dataclass(frozen=True)
class DemoTargets:
    """What the demo's workflows open, chosen from the metadata tables alone (so a release can be
    simulated with only these files, see :func:`demo_files`)."""

    mouse_id: str  # training history
    experiment_id: int  # the one-experiment figures
    by_cre_line: tuple[int, ...]  # change and omission responses by cell type
    ophys_container_id: int  # the container's fields of view
    ophys_session_id: int  # the session with the most planes: population traces of every plane
    first_novel_sst: int | None = None  # load-one-experiment tutorial: Sst, session 4, first exposure
    novel_vip_multiscope_session: int | None = None  # manifest tutorial: a Vip Multiscope "Novel 1" session


def _indexed(table: pd.DataFrame, key: str) -> pd.DataFrame:
    return table.set_index(key) if key in table.columns else table


def demo_targets(behavior_sessions: pd.DataFrame, experiments: pd.DataFrame) -> DemoTargets:
    """The mouse, experiments, container and session the demo's workflows use (metadata tables only).

    The choices overlap where they can, so the demo opens (and a demo release holds) few files: the
    session with the most planes (the manifest tutorial's novel Vip Multiscope session when it is one of
    them), its lowest active plane (its mouse's history and container), and per Cre line the experiments
    the other workflows open anyway (up to :data:`EXPERIMENTS_PER_CRE_LINE`), else one more file, a Multiscope
    plane when there is one."""
    experiments = _indexed(experiments, "ophys_experiment_id").sort_index()
    active = experiments[~experiments["passive"].astype(bool)]
    novel_sst, novel_vip_session = _tutorial_choices(experiments)
    session_id = _most_planes_session(experiments, active, prefer=novel_vip_session)
    in_session = active.index[active["ophys_session_id"] == session_id]
    experiment_id = int(in_session.min()) if len(in_session) else int(active.index.min())
    row = experiments.loc[experiment_id]
    opened = set(experiments.index[(experiments["ophys_session_id"].isin([session_id, novel_vip_session]))
                                   | (experiments["ophys_container_id"] == row["ophys_container_id"])])
    opened |= {novel_sst} - {None}
    # then Multiscope planes: a third of the frames of a single-plane rig, the same 70-min session
    single_plane = ~active["equipment_name"].astype(str).str.startswith(layout.MESOSCOPE_PREFIX)
    ranked = active.assign(_elsewhere=[i not in opened for i in active.index], _single=single_plane.to_numpy())
    ranked = ranked.sort_values(["_elsewhere", "_single"], kind="stable")
    already = ranked[~ranked["_elsewhere"]].groupby("cre_line", sort=True).head(EXPERIMENTS_PER_CRE_LINE)
    one_more = ranked[~ranked["cre_line"].isin(already["cre_line"])].groupby("cre_line", sort=True).head(1)
    by_cre = pd.concat([already, one_more])
    return DemoTargets(mouse_id=str(row["mouse_id"]), experiment_id=experiment_id,
                       by_cre_line=tuple(int(i) for i in sorted(by_cre.index)),
                       ophys_container_id=int(row["ophys_container_id"]), ophys_session_id=session_id,
                       first_novel_sst=novel_sst, novel_vip_multiscope_session=novel_vip_session)


def _tutorial_choices(experiments: pd.DataFrame) -> tuple[int | None, int | None]:
    """The tutorials' own filters (docs/tutorials.md), the first row each selects: an Sst experiment of a
    first novel session 4, and a Vip Multiscope "Novel 1" session."""
    novel_sst = experiments.index[(experiments["cre_line"] == "Sst-IRES-Cre") & (experiments["session_number"] == 4)
                                  & (experiments["prior_exposures_to_image_set"] == 0)]
    novel_vip = experiments[(experiments["project_code"] == "VisualBehaviorMultiscope")
                            & (experiments["cre_line"] == "Vip-IRES-Cre")
                            & (experiments["experience_level"] == "Novel 1")]
    return (int(novel_sst[0]) if len(novel_sst) else None,
            int(novel_vip["ophys_session_id"].iloc[0]) if len(novel_vip) else None)


def _most_planes_session(experiments: pd.DataFrame, active: pd.DataFrame, prefer: int | None) -> int:
    """The active session with the most planes (``prefer`` among equals, else the first); any session
    when none is active."""
    planes = active.groupby("ophys_session_id").size()
    if not len(planes):
        return int(experiments.groupby("ophys_session_id").size().idxmax())
    if prefer is not None and planes.get(prefer, 0) == planes.max():
        return int(prefer)
    return int(planes.idxmax())


def demo_files(tables: dict[str, pd.DataFrame]) -> set[str]:
    """Manifest keys of the NWB files the demo opens (pass as ``simulate(write_only=demo_files)``).

    The demo looks at active sessions: its training history and its container figure leave the
    passive-viewing sessions out (no task, so no performance), and their files are not written."""
    return _opened_files(tables, passive=False)


def tutorial_files(tables: dict[str, pd.DataFrame]) -> set[str]:
    """:func:`demo_files` plus the passive-viewing sessions of the demo's mouse and container: the files the
    tutorial notebooks open (``docs/tutorials.md``; the mouse-history notebook scores every session)."""
    return _opened_files(tables, passive=True)


def _opened_files(tables: dict[str, pd.DataFrame], passive: bool) -> set[str]:
    behavior = _indexed(tables["behavior_session_table"], "behavior_session_id")
    experiments = _indexed(tables["ophys_experiment_table"], "ophys_experiment_id")
    targets = demo_targets(behavior, experiments)
    wanted = {targets.experiment_id, *targets.by_cre_line}
    container = experiments[experiments["ophys_container_id"] == targets.ophys_container_id]
    wanted |= set(container.index if passive else container.index[~is_passive(container)])
    wanted |= set(experiments.index[experiments["ophys_session_id"] == targets.ophys_session_id])
    if targets.first_novel_sst is not None:
        wanted.add(targets.first_novel_sst)
    if targets.novel_vip_multiscope_session is not None:
        wanted |= set(experiments.index[experiments["ophys_session_id"] == targets.novel_vip_multiscope_session])
    keys = {mf.experiment_nwb_key(int(i)) for i in wanted}
    history = behavior[behavior["mouse_id"].astype(str) == targets.mouse_id]
    for session_id, row in (history if passive else history[~is_passive(history)]).iterrows():
        file_id, experiment_ids = row["file_id"], row["ophys_experiment_id"]
        if pd.notna(file_id) and int(file_id) >= 0:
            keys.add(mf.behavior_nwb_key(int(session_id)))
        elif isinstance(experiment_ids, (list, tuple)) and len(experiment_ids):
            # an imaging session: its behavior is read from its lowest experiment file
            keys.add(mf.experiment_nwb_key(int(min(experiment_ids))))
    return keys


def default_cache_dir() -> Path:
    """Where vbo keeps data it makes or downloads: ``$VBO_CACHE_DIR``, else ``$XDG_CACHE_HOME/vbo``."""
    if os.environ.get("VBO_CACHE_DIR"):
        return Path(os.environ["VBO_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vbo"


@dataclass
class DemoResult:
    """What the demo wrote and the headline numbers it printed."""

    out_dir: Path
    release_dir: Path
    figures: list[Path] = field(default_factory=list)
    reports: dict[str, Path] = field(default_factory=dict)
    summary: Path | None = None
    simulated: bool = False
    seconds: float = 0.0


def _release_is_current(release_dir: Path, seed: int, scale: str, files: str) -> bool:
    """True when the release there was made by this simulator with this seed, scale and file selection."""
    marker = release_dir / "ground_truth" / "release.json"
    return marker.exists() and json.loads(marker.read_text()) == release_marker(seed, scale, files)


FILE_SELECTIONS = {"demo": demo_files, "tutorials": tutorial_files, "all": None}


def ensure_release(cache_dir: Path, seed: int = DEMO_SEED, scale: str = DEMO_SCALE,
                   progress: Callable[[int, int], None] | None = None, *,
                   files: str = "demo") -> tuple[Path, bool]:
    """The demo release in ``cache_dir`` (simulated if absent or stale); returns (folder, simulated now).

    Every session is simulated (the metadata tables are complete) but only the NWB files the demo opens
    (``files="demo"``, :func:`demo_files`) are written; ``"tutorials"`` adds the passive sessions the
    tutorial notebooks open (:func:`tutorial_files`) and ``"all"`` writes every file (for benchmarks that
    open every file). Each selection has its own folder."""
    if files not in FILE_SELECTIONS:
        raise ValueError(f"files must be one of {sorted(FILE_SELECTIONS)}, not {files!r}")
    selection = FILE_SELECTIONS[files]
    suffix = "" if files == "demo" else f"-{files}"
    release_dir = cache_dir / f"synthetic-release-{scale}-seed{seed}{suffix}"
    if _release_is_current(release_dir, seed, scale, "all" if selection is None else selection.__name__):
        return release_dir, False
    simulate(release_dir, seed=seed, scale=scale, versions=len(RELEASE_VERSIONS), progress=progress,
             write_only=selection)
    return release_dir, True


def run_demo(out_dir: str | Path = "vbo-demo", cache_dir: str | Path | None = None, seed: int = DEMO_SEED,
             scale: str = DEMO_SCALE, progress: Callable[[int, int], None] | None = None,
             release_dir: str | Path | None = None) -> DemoResult:
    """Simulate (once) and analyse a synthetic release; write figures and ``summary.md`` to ``out_dir``.

    Parameters
    ----------
    out_dir
        Folder for figures and the summary.
    cache_dir
        Where the synthetic release lives (default :func:`default_cache_dir`).
    seed, scale
        Which synthetic release.
    progress
        Called as ``progress(done, total)`` while simulating.
    release_dir
        Use this existing release folder (a bucket copy) instead of the cached synthetic one.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if release_dir is not None:
        release_dir, simulated = Path(release_dir), False
    else:
        release_dir, simulated = ensure_release(Path(cache_dir) if cache_dir else default_cache_dir(), seed, scale,
                                                progress)
    result = DemoResult(out, release_dir, simulated=simulated)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK-compatible reminder about stimulus blocks
        cache = vbo.VisualBehaviorOphysProjectCache.from_local_cache(release_dir, use_static_cache=True)
    sessions = cache.get_behavior_session_table().sort_values("date_of_acquisition", kind="stable")
    experiments = cache.get_ophys_experiment_table()
    truth = pd.read_parquet(release_dir / "ground_truth" / "sessions.parquet").set_index("behavior_session_id")
    targets = demo_targets(sessions, experiments)

    history = _history_workflow(cache, targets.mouse_id, truth, result)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        numbers = _experiment_workflow(cache, targets.experiment_id, result)
        _release_workflows(cache, targets, result)
        # workflow 5: one HTML report of each kind (experiment, behavior session, mouse, release), linked together
        result.reports = _reports(cache, out / "reports", targets.experiment_id, out / HISTORY_CACHE)

    lines = [
        "# vbo demo",
        "",
        f"Synthetic release: `{release_dir}` ({'simulated now' if simulated else 'reused'}; seed {seed}, scale {scale}).",
        f"{sessions['mouse_id'].nunique()} mice, {len(sessions)} behavior sessions, {len(experiments)} imaging planes.",
        "",
        *_summary_lines(targets, history, numbers, result, sessions),
    ]
    result.summary = out / "summary.md"
    result.summary.write_text("\n".join(lines) + "\n")
    result.seconds = time.perf_counter() - start
    return result


HISTORY_CACHE = "behavior_performance.parquet"  # the history's per-session metrics, reused by the mouse report


def _history_workflow(cache, mouse: str, truth: pd.DataFrame, result: DemoResult) -> pd.DataFrame:
    """Workflow 1: one imaged mouse's training history (mouse-history tutorial) over its active sessions,
    computed in parallel and cached on disk, with the planted probabilities beside the measured ones."""
    out = result.out_dir
    history = training_history(cache, mouse, passive=False, cache_path=out / HISTORY_CACHE)
    history = history.join(truth[["hit_probability", "false_alarm_probability"]].add_prefix("planted_"))
    history.to_csv(out / "training_history.csv")
    result.figures.append(_save(_plots().training_history(history), out / "training_history.png"))
    return history


def _experiment_workflow(cache, experiment_id: int, result: DemoResult) -> dict:
    """Workflow 2: one active imaging experiment (load-one-experiment and trial-type tutorials); returns the
    numbers the summary reports."""
    plots, out = _plots(), result.out_dir
    with cache.get_behavior_ophys_experiment(experiment_id) as experiment:
        result.figures.append(_save(plots.experiment_overview(experiment), out / "experiment_overview.png"))
        rolling = experiment.get_rolling_performance_df()
        result.figures.append(_save(plots.rolling_performance(rolling, f"experiment {experiment_id}",
                                                              start_time=experiment.trials),
                                    out / "rolling_performance.png"))
        result.figures.append(_save(plots.session_summary(experiment), out / "session_summary.png"))
        result.figures.append(_save(plots.trial_type_panels(experiment), out / "trial_type_panels.png"))
        probabilities = behavior.response_probability_matrix(behavior.annotate_session(experiment),
                                                             engaged_only=False)
        result.figures.append(_save(plots.response_probability_matrix(probabilities),
                                    out / "response_probability_matrix.png"))
        templates = experiment.stimulus_templates
        result.figures.append(_save(plots.stimulus_template(templates, templates.index[0]),
                                    out / "stimulus_template.png"))
        result.figures.append(_save(plots.roi_projection(experiment), out / "roi_projection.png"))
        result.figures.append(_save(plots.dff_heatmap(experiment), out / "dff_heatmap.png"))
        result.figures.append(_save(plots.change_responses_by_trial_type(experiment),
                                    out / "change_responses_by_trial_type.png"))
        return {"n_cells": len(experiment.cell_specimen_table), "session_type": experiment.metadata["session_type"],
                "metrics": experiment.get_performance_metrics()}


def _release_workflows(cache, targets: DemoTargets, result: DemoResult) -> None:
    """Workflows 3 and 4: responses by cell type over a few experiments per Cre line, a natural-movie frame,
    and the manifest tutorial's figures (one container's fields of view, every plane of one session)."""
    plots, out = _plots(), result.out_dir

    def opened(ids):
        for oeid in ids:
            with cache.get_behavior_ophys_experiment(int(oeid)) as each:
                yield each

    result.figures.append(_save(plots.responses_by_cell_type(opened(targets.by_cre_line),
                                                             title="change and omission responses by cell type"),
                                out / "responses_by_cell_type.png"))
    # the natural movie as the mouse saw it (the warped movie is computed once per cache; one frame here)
    movie = cache.get_natural_movie_template(frames=[0])
    result.figures.append(_save(plots.stimulus_template(movie, 0), out / "natural_movie_frame.png"))
    result.figures.append(_save(plots.container_projections(cache, targets.ophys_container_id, passive=False),
                                out / "container_projections.png"))
    result.figures.append(_save(plots.plane_population_traces(cache, targets.ophys_session_id, t_range=None),
                                out / "plane_population_traces.png"))


def _summary_lines(targets: DemoTargets, history: pd.DataFrame, numbers: dict, result: DemoResult,
                   sessions: pd.DataFrame) -> list[str]:
    """``summary.md`` after its header: the mouse's sessions, the experiment's trial counts, figures, reports."""
    metrics = numbers["metrics"]
    mouse = sessions[sessions["mouse_id"].astype(str) == targets.mouse_id]
    passive = mouse.loc[is_passive(mouse), "session_type"]
    return [
        f"## Mouse {targets.mouse_id}: {len(mouse)} sessions",
        "",
        *([f"Passive-viewing sessions (no task, left out, not opened): {', '.join(passive)}.", ""]
          if len(passive) else []),
        "| session_type | max d′ | planted hit p | planted FA p |",
        "|---|---:|---:|---:|",
        *[f"| {r.session_type} | {r.max_dprime:.2f} | {r.planted_hit_probability:.2f} | "
          f"{r.planted_false_alarm_probability:.2f} |" for r in history.itertuples()],
        "",
        f"## Experiment {targets.experiment_id} ({numbers['session_type']}, {numbers['n_cells']} cells)",
        "",
        f"trials {metrics['trial_count']}, hits {metrics['hit_trial_count']}, misses {metrics['miss_trial_count']}, "
        f"false alarms {metrics['false_alarm_trial_count']}, correct rejects {metrics['correct_reject_trial_count']}, "
        f"max d′ {metrics['max_dprime']:.2f}",
        "",
        "Figures: " + ", ".join(p.name for p in result.figures),
        "",
        "## Reports (self-contained HTML, open offline)",
        "",
        *[f"- {kind}: [{path.name}]({path.relative_to(result.out_dir).as_posix()})"
          for kind, path in result.reports.items()],
    ]


def _reports(cache, folder: Path, experiment_id: int, history_cache: Path) -> dict[str, Path]:
    """The experiment's page, a behavior-only session of the same mouse, the mouse's page, the release page."""
    from vbo import report  # imported here: it loads matplotlib

    experiments = cache.get_ophys_experiment_table()
    sessions = cache.get_behavior_session_table()
    mouse = experiments.loc[experiment_id, "mouse_id"]
    training = sessions[(sessions["mouse_id"] == mouse) & sessions["ophys_session_id"].isna()
                        & ~is_passive(sessions)].index
    session_id = int(training[-1])
    mouse_page = report.mouse_report(cache, mouse, folder, behavior_session_ids=[session_id],
                                     ophys_experiment_ids=[experiment_id], cache_path=history_cache, passive=False)
    return {"release overview": report.release_report(cache, folder), "mouse": mouse_page,
            "behavior session": folder / report.session_page_name(session_id),
            "experiment": folder / report.experiment_page_name(experiment_id)}


def _plots():
    """:mod:`vbo.plots`, imported on first use: it loads matplotlib."""
    from vbo import plots

    return plots


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt  # heavy: imported when the first figure is saved

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
