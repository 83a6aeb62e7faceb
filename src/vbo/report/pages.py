"""The four report kinds: one experiment, one behavior session, one mouse, the release overview."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from vbo import behavior, plots
from vbo.history import training_history
from vbo.known_issues import COLUMNS, issues_of, release_issues
from vbo.plots import stage_color
from vbo.plots.style import pyplot
from vbo.report import html
from vbo.responses import stimulus_responses

Progress = Callable[[int, int, str], None] | None
RELEASE_PAGE = "index.html"


def experiment_page_name(ophys_experiment_id) -> str:
    return f"experiment-{int(ophys_experiment_id)}.html"


def session_page_name(behavior_session_id) -> str:
    return f"session-{int(behavior_session_id)}.html"


def mouse_page_name(mouse_id) -> str:
    return f"mouse-{mouse_id}.html"


class _Steps:
    """Counts the steps of one page for a ``progress(done, total, label)`` callback."""

    def __init__(self, total: int, progress: Progress):
        self.total, self.done, self.progress = total, 0, progress

    def __call__(self, label: str) -> None:
        self.done += 1
        if self.progress:
            self.progress(min(self.done, self.total), self.total, label)


def _figure(make: Callable, caption: str, steps: _Steps) -> str:
    """A figure, or a visible note naming why it could not be drawn for this session (e.g. a passive session
    has no trial types)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = html.figure(make(), caption)
    except (ValueError, KeyError, IndexError, TypeError, ZeroDivisionError) as error:
        out = html.note(f"{caption}: not available for this session ({type(error).__name__}: {error})")
    steps(caption)
    return out


def _nav(out_dir: Path, mouse_id, mouse_page: bool) -> dict[str, str]:
    """Links to the mouse page and the release overview, when they exist (or are being built)."""
    nav = {}
    if mouse_id is not None and (mouse_page or (out_dir / mouse_page_name(mouse_id)).is_file()):
        nav[f"mouse {mouse_id}"] = mouse_page_name(mouse_id)
    if (out_dir / RELEASE_PAGE).is_file():
        nav["release overview"] = RELEASE_PAGE
    return nav


def _metrics_table(session, ident: str) -> str:
    metrics = session.get_performance_metrics()
    frame = pd.DataFrame({"metric": list(metrics), "value": [float(v) for v in metrics.values()]})
    return html.table(frame, ident, index=False)


def _issues(**ids) -> pd.DataFrame:
    return pd.DataFrame(issues_of(**ids), columns=COLUMNS)


def _qc_section(checks: list[tuple[str, object, bool]], issues: pd.DataFrame) -> str:
    frame = pd.DataFrame(checks, columns=["check", "value", "ok"])
    frame["flag"] = np.where(frame.pop("ok"), "ok", "CHECK")
    parts = [html.table(frame, "qc-table", index=False)]
    parts.append(html.note(f"{len(issues)} documented issue(s) in vbo.known_issues") if len(issues)
                 else "<p>No documented issue in <code>vbo.known_issues</code> for these ids.</p>")
    if len(issues):
        parts.append(html.table(issues, "known-issues", index=False))
    return html.section("QC flags and known issues", *parts, anchor="qc")


def _behavior_checks(session) -> list[tuple[str, object, bool]]:
    trials = session.trials
    metrics = session.get_performance_metrics()
    stimulus = session.stimulus_presentations
    return [("trials", len(trials), len(trials) > 0),
            ("engaged trials", int(metrics["engaged_trial_count"]), True),
            ("stimulus presentations", len(stimulus), len(stimulus) > 0),
            ("licks", len(session.licks), True),
            ("rewards", len(session.rewards), True)]


def _behavior_figures(session, steps: _Steps) -> list[str]:
    def probability():
        matrix = behavior.response_probability_matrix(behavior.annotate_session(session), engaged_only=False)
        return plots.response_probability_matrix(matrix)

    return [_figure(lambda: plots.session_summary(session), "behavior summary", steps),
            _figure(lambda: plots.rolling_performance(session.get_rolling_performance_df(),
                                                      start_time=session.trials), "rolling performance", steps),
            _figure(lambda: plots.trial_type_panels(session), "example trials by trial type", steps),
            _figure(probability, "response probability by image pair", steps)]


def session_report(session, out_path: str | Path, *, mouse_page: bool = False, progress: Progress = None) -> Path:
    """The report of one behavior session (no imaging): metadata, behavior figures, performance, QC.

    Parameters
    ----------
    session
        An open :class:`vbo.BehaviorSession` (or an experiment: its behavior is reported).
    out_path
        The HTML file to write.
    mouse_page
        Link to the mouse's page even if it is not written yet (it is being built alongside).
    progress
        ``progress(done, total, label)`` after each figure.
    """
    out_path = Path(out_path)
    steps = _Steps(5, progress)
    metadata = dict(session.metadata)
    sections = [html.section("Metadata", html.card(metadata), anchor="metadata")]
    sections.append(html.section("Behavior", *_behavior_figures(session, steps), anchor="behavior"))
    sections.append(html.section("Performance metrics", _metrics_table(session, "performance"),
                                 anchor="performance"))
    issues = _issues(behavior_session_id=session.behavior_session_id)
    sections.append(_qc_section(_behavior_checks(session), issues))
    steps("page")
    title = f"Behavior session {session.behavior_session_id}"
    subtitle = f"{metadata.get('session_type')} · mouse {metadata.get('mouse_id')} · {metadata.get('cre_line')}"
    document = html.page(title, subtitle, sections, _nav(out_path.parent, metadata.get("mouse_id"), mouse_page))
    return html.write(out_path, document)


def _experiment_checks(experiment) -> list[tuple[str, object, bool]]:
    table = experiment.cell_specimen_table
    dff = np.vstack(experiment.dff_traces["dff"].to_numpy()) if len(table) else np.empty((0, 0))
    finite = float(np.isfinite(dff).mean()) if dff.size else 0.0
    rate = float(experiment.metadata["ophys_frame_rate"])
    timestamps = experiment.ophys_timestamps
    measured = float(1.0 / np.median(np.diff(timestamps))) if len(timestamps) > 1 else float("nan")
    return [("ROIs", len(table), len(table) > 0),
            ("valid ROIs", int(table["valid_roi"].sum()), bool(table["valid_roi"].any())),
            ("finite dF/F samples", f"{finite:.1%}", finite > 0.99),
            ("ophys frame rate (Hz), stated / measured", f"{rate:.2f} / {measured:.2f}",
             bool(np.isfinite(measured) and abs(measured - rate) < 0.05 * rate)),
            *_behavior_checks(experiment)]


def experiment_report(experiment, out_path: str | Path, *, mouse_page: bool = False,
                      progress: Progress = None) -> Path:
    """The report of one imaging experiment: metadata card, max projection with ROI outlines, dF/F heatmap,
    behavior and neural activity in one window, change and omission responses by trial type, the image ×
    cell response heatmap, behavior figures, performance metrics, QC flags and known issues.

    Parameters
    ----------
    experiment
        An open :class:`vbo.BehaviorOphysExperiment`.
    out_path, mouse_page, progress
        As for :func:`session_report`.
    """
    out_path = Path(out_path)
    steps = _Steps(11, progress)
    metadata = dict(experiment.metadata)
    neural = [
        _figure(lambda: plots.roi_projection(experiment), "max projection with ROI outlines", steps),
        _figure(lambda: plots.dff_heatmap(experiment), "dF/F of every cell", steps),
        _figure(lambda: plots.behavior_neural_window(experiment), "behavior and neural activity, one window", steps),
        _figure(lambda: plots.change_responses_by_trial_type(experiment), "change responses by trial type", steps),
        _figure(lambda: plots.responses_by_cell_type([experiment], title="change and omission responses"),
                "change and omission responses", steps),
        _figure(lambda: plots.image_response_heatmap(stimulus_responses(experiment, "images", p_value=False)),
                "image × cell mean response", steps),
    ]
    sections = [html.section("Metadata", html.card(metadata), anchor="metadata"),
                html.section("Neural activity", *neural, anchor="neural"),
                html.section("Behavior", *_behavior_figures(experiment, steps), anchor="behavior"),
                html.section("Performance metrics", _metrics_table(experiment, "performance"), anchor="performance")]
    issues = _issues(ophys_experiment_id=experiment.ophys_experiment_id,
                     ophys_session_id=metadata.get("ophys_session_id"),
                     behavior_session_id=metadata.get("behavior_session_id"))
    sections.append(_qc_section(_experiment_checks(experiment), issues))
    steps("page")
    title = f"Ophys experiment {experiment.ophys_experiment_id}"
    subtitle = (f"{metadata.get('session_type')} · {metadata.get('cre_line')} · {metadata.get('targeted_structure')} "
                f"{metadata.get('imaging_depth')} µm · mouse {metadata.get('mouse_id')}")
    document = html.page(title, subtitle, sections, _nav(out_path.parent, metadata.get("mouse_id"), mouse_page))
    return html.write(out_path, document)


# --- mouse ---------------------------------------------------------------------------------------------


def _dprime_by_day(history: pd.DataFrame):
    """Max d′ against days since the first session, one marker per session in its stage colour."""
    plt = pyplot()
    dates = pd.to_datetime(history["date_of_acquisition"], utc=True)
    days = (dates - dates.min()).dt.total_seconds().to_numpy() / 86400.0
    levels = history["experience_level"] if "experience_level" in history else [None] * len(history)
    colors = [stage_color(str(t), e) for t, e in zip(history["session_type"], levels)]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot(days, history["max_dprime"].to_numpy(float), color="0.6", lw=1, zorder=1)
    ax.scatter(days, history["max_dprime"].to_numpy(float), c=colors, edgecolors="k", linewidths=0.5, zorder=2)
    ax.set_xlabel("days since the first session")
    ax.set_ylabel("max d′")
    ax.set_title("max d′ over days (colour: training stage)")
    fig.tight_layout()
    return fig


def _linked(value, href: str | None) -> str:
    return f'<a href="{html.escape(href)}">{html.escape(value)}</a>' if href else html.escape(value)


def _session_rows(history: pd.DataFrame, experiments: pd.DataFrame, out_dir: Path, planned: set[str]) -> str:
    """One row per session; ids link to their reports when they exist (or are being built)."""
    def exists(name: str) -> bool:
        return name in planned or (out_dir / name).is_file()

    columns = ["behavior_session_id", "date", "session_type", "experience_level", "equipment_name",
               "ophys_experiment_id", "trial_count", "hit_trial_count", "false_alarm_trial_count", "max_dprime"]
    head = "".join(f"<th>{c}</th>" for c in columns)
    rows = []
    for session_id, row in history.iterrows():
        page = session_page_name(session_id)
        planes = experiments.index[experiments["behavior_session_id"] == session_id].tolist()
        plane_links = ", ".join(_linked(str(p), experiment_page_name(p) if exists(experiment_page_name(p)) else None)
                                for p in planes)
        level = row.get("experience_level")
        color = stage_color(str(row["session_type"]), level if isinstance(level, str) else None)
        date = pd.Timestamp(row["date_of_acquisition"]).strftime("%Y-%m-%d")
        cells = [
            f'<td data-value="{int(session_id)}">{_linked(str(session_id), page if exists(page) else None)}</td>',
            f"<td>{date}</td>",
            f'<td><span class="swatch" style="background:{color}"></span>{html.escape(row["session_type"])}</td>',
            f"<td>{html.escape(html.text(level))}</td>",
            f"<td>{html.escape(html.text(row.get('equipment_name')))}</td>",
            f"<td>{plane_links}</td>",
            *[f'<td class="num" data-value="{row[c]}">{html.text(row[c])}</td>'
              for c in ("trial_count", "hit_trial_count", "false_alarm_trial_count", "max_dprime")]]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    box = (f'<input class="table-filter" type="search" placeholder="filter rows" data-filter-for="sessions" '
           f'aria-label="filter rows"> <span id="sessions-count">{len(rows)} rows</span>')
    return (f'{box}<table class="vbo-table" id="sessions"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def mouse_report(cache, mouse_id, out_dir: str | Path, *, behavior_session_ids: Iterable | str = (),
                 ophys_experiment_ids: Iterable | str = (), stream: bool = False, workers: int | None = None,
                 client=None, progress: Progress = None, **history_options) -> Path:
    """The page of one mouse: training history (stage colours, d′ by session and over days) and every session
    as a row linking to its report when it exists in ``out_dir``.

    Parameters
    ----------
    cache
        A :class:`vbo.VisualBehaviorOphysProjectCache`.
    mouse_id
        The mouse (int or str).
    out_dir
        Folder of the reports; the page is ``mouse-<id>.html``.
    behavior_session_ids, ophys_experiment_ids
        Also write the reports of these sessions / experiments of the mouse (``"all"``: every one), linked
        both ways with the mouse page.
    stream
        Read the session files by byte ranges (S3 cache).
    workers, client
        Where the training history's per-session metrics are computed (:func:`vbo.history.training_history`).
    progress
        ``progress(done, total, label)`` after each page part.
    **history_options
        ``passive``, ``cache_path``, ``use_disk_cache`` of :func:`vbo.history.training_history` (with
        ``passive=False`` the passive-viewing sessions are left out of the history and its table).
    """
    out_dir = Path(out_dir)
    history = training_history(cache, mouse_id, workers=workers, client=client, **history_options)
    key = str(history["mouse_id"].iloc[0])
    experiments = cache.get_ophys_experiment_table()
    experiments = experiments[experiments["mouse_id"].astype(str) == key]
    sessions = list(history.index) if behavior_session_ids == "all" else [int(i) for i in behavior_session_ids]
    planes = list(experiments.index) if ophys_experiment_ids == "all" else [int(i) for i in ophys_experiment_ids]
    planned = {session_page_name(i) for i in sessions} | {experiment_page_name(i) for i in planes}
    steps = _Steps(len(sessions) + len(planes) + 3, progress)
    figures = [_figure(lambda: plots.training_history(history), "max d′ of every session, in order", steps),
               _figure(lambda: _dprime_by_day(history), "max d′ over days", steps)]
    table = cache.get_behavior_session_table()
    left_out = int(table["mouse_id"].astype(str).eq(key).sum()) - len(history)
    if left_out:
        figures.append(html.note(f"{left_out} passive-viewing session{'s' if left_out > 1 else ''} (no task) "
                                 f"left out of the history and the session table."))
    first = history.iloc[0]
    card = {"mouse_id": key, "cre_line": first.get("cre_line"), "full_genotype": first.get("full_genotype"),
            "reporter_line": first.get("reporter_line"), "sex": first.get("sex"),
            "behavior sessions": len(history) + left_out,
            "imaging experiments": len(experiments),
            "first session": pd.Timestamp(history["date_of_acquisition"].min()).strftime("%Y-%m-%d"),
            "last session": pd.Timestamp(history["date_of_acquisition"].max()).strftime("%Y-%m-%d")}
    sections = [html.section("Mouse", html.card(card), anchor="metadata"),
                html.section("Training history", *figures, anchor="history"),
                html.section("Sessions", _session_rows(history, experiments, out_dir, planned), anchor="sessions")]
    nav = {"release overview": RELEASE_PAGE} if (out_dir / RELEASE_PAGE).is_file() else {}
    page = html.write(out_dir / mouse_page_name(key),
                      html.page(f"Mouse {key}", f"{card['cre_line']} · {card['behavior sessions']} behavior sessions",
                                sections, nav))
    steps("mouse page")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for session_id in sessions:
            with cache.get_behavior_session(session_id, stream=stream) as session:
                session_report(session, out_dir / session_page_name(session_id), mouse_page=True)
            steps(f"session {session_id}")
        for experiment_id in planes:
            with cache.get_behavior_ophys_experiment(experiment_id, stream=stream) as experiment:
                experiment_report(experiment, out_dir / experiment_page_name(experiment_id), mouse_page=True)
            steps(f"experiment {experiment_id}")
    return page


# --- release -------------------------------------------------------------------------------------------


def _counts(table: pd.DataFrame, column: str, ids: dict[str, str]) -> pd.DataFrame:
    """Distinct ids per value of ``column`` (missing values as "(missing)")."""
    keys = table[column].astype("string").fillna("(missing)")
    out = pd.DataFrame({label: table.groupby(keys, dropna=False)[source].nunique() if source != "index"
                        else table.groupby(keys, dropna=False).size() for label, source in ids.items()})
    return out.rename_axis(column).sort_index()


def _depth_column(experiments: pd.DataFrame) -> str:
    """The planned depth (a few values) when the table has it, else the measured one."""
    return "targeted_imaging_depth" if "targeted_imaging_depth" in experiments else "imaging_depth"


def _counts_figure(experiments: pd.DataFrame, sessions: pd.DataFrame):
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    by_cre = experiments.groupby(experiments["cre_line"].astype("string").fillna("(missing)")).size()
    left.barh(by_cre.index.astype(str), by_cre.to_numpy(), color="#1f78b4")
    left.set_xlabel("imaging experiments")
    left.set_title("experiments by Cre line")
    by_level = sessions.groupby(sessions["experience_level"].astype("string").fillna("(missing)")).size()
    right.barh(by_level.index.astype(str), by_level.to_numpy(), color="#33a02c")
    right.set_xlabel("behavior sessions")
    right.set_title("sessions by experience level")
    fig.tight_layout()
    return fig


def release_report(cache, out_dir: str | Path, *, progress: Progress = None) -> Path:
    """The release overview (``index.html``): manifest version and the changes since the previous version,
    counts by Cre line, reporter, rig, area, depth, session type and experience level, documented issues, and
    the mice (linked to their pages when they exist in ``out_dir``). Built from the metadata tables only."""
    out_dir = Path(out_dir)
    steps = _Steps(4, progress)
    experiments = cache.get_ophys_experiment_table()
    sessions = cache.get_behavior_session_table()
    manifest = cache.current_manifest()
    previous, changes = cache.previous_manifest_changes()
    version = {"manifest": manifest, "behavior sessions": len(sessions), "imaging sessions":
               experiments["ophys_session_id"].nunique(), "imaging experiments": len(experiments),
               "mice": sessions["mouse_id"].nunique(), "previous manifest": previous or "(none available)"}
    change_rows = pd.DataFrame([(group.replace("_changes", ""), path, message) for group, items in changes.items()
                                for path, message in items], columns=["kind", "file", "change"])
    steps("tables")
    exp_ids = {"experiments": "index", "imaging sessions": "ophys_session_id", "mice": "mouse_id"}
    session_ids = {"behavior sessions": "index", "mice": "mouse_id"}
    counts = [("Cre line", _counts(experiments, "cre_line", exp_ids), "count-cre"),
              ("reporter line", _counts(experiments, "reporter_line", exp_ids), "count-reporter"),
              ("rig", _counts(experiments, "equipment_name", exp_ids), "count-rig"),
              ("area", _counts(experiments, "targeted_structure", exp_ids), "count-area"),
              ("targeted imaging depth (µm)", _counts(experiments, _depth_column(experiments), exp_ids),
               "count-depth"),
              ("session type (behavior sessions)", _counts(sessions, "session_type", session_ids), "count-type"),
              ("experience level (behavior sessions)", _counts(sessions, "experience_level", session_ids),
               "count-level")]
    count_parts = [_figure(lambda: _counts_figure(experiments, sessions), "experiments and sessions", steps)]
    for label, frame, ident in counts:
        count_parts.append(f"<h3>{html.escape(label)}</h3>{html.table(frame, ident)}")
    mice = sessions.groupby(sessions["mouse_id"].astype(str)).agg(
        cre_line=("cre_line", "first"), behavior_sessions=("session_type", "size"),
        first_session=("date_of_acquisition", "min"), last_session=("date_of_acquisition", "max"))
    mouse_links = {m: mouse_page_name(m) for m in mice.index if (out_dir / mouse_page_name(m)).is_file()}
    issues = release_issues(cache)
    steps("issues")
    sections = [
        html.section("Release", html.card(version), anchor="release"),
        html.section(f"Changes since {previous}" if previous else "Changes since the previous version",
                     html.table(change_rows, "changes", index=False) if previous
                     else "<p>No earlier manifest is available in this cache.</p>", anchor="changes"),
        html.section("Counts", *count_parts, anchor="counts"),
        html.section("Mice", html.table(mice, "mice", links={"mouse_id": mouse_links}), anchor="mice"),
        html.section("Known issues", html.table(issues, "issues", index=False), anchor="issues"),
    ]
    page = html.write(out_dir / RELEASE_PAGE, html.page("Visual Behavior Ophys release", manifest or "", sections))
    steps("page")
    return page
