"""Self-contained HTML reports (figures inline, sortable and filterable tables): experiment, behavior session,
mouse and release overview.

Every page is one HTML file that opens offline with no server. Pages written into the same folder link to each
other (``index.html``, ``mouse-<id>.html``, ``session-<id>.html``, ``experiment-<id>.html``).

>>> from vbo import report
>>> report.release_report(cache, "reports")                        # index.html, metadata tables only
>>> report.mouse_report(cache, 445002, "reports", behavior_session_ids="all")
>>> with cache.get_behavior_ophys_experiment(951980471, stream=True) as experiment:
...     report.experiment_report(experiment, "reports/experiment-951980471.html")
"""

from __future__ import annotations

import warnings
from pathlib import Path

import vbo
from vbo.experiment import BehaviorOphysExperiment
from vbo.report.pages import (
    RELEASE_PAGE,
    experiment_page_name,
    experiment_report,
    mouse_page_name,
    mouse_report,
    release_report,
    session_page_name,
    session_report,
)

__all__ = ["experiment_report", "session_report", "mouse_report", "release_report", "nwb_report",
           "experiment_page_name", "session_page_name", "mouse_page_name", "RELEASE_PAGE"]


def nwb_report(path: str | Path, out_dir: str | Path, progress=None) -> Path:
    """The report of one NWB file (experiment or behavior session, told apart by its content), written as
    ``experiment-<id>.html`` or ``session-<id>.html`` in ``out_dir``; no project cache needed."""
    out_dir = Path(out_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with vbo.open_nwb(path) as opened:
            if isinstance(opened, BehaviorOphysExperiment):
                target = out_dir / experiment_page_name(opened.ophys_experiment_id)
                return experiment_report(opened, target, progress=progress)
            return session_report(opened, out_dir / session_page_name(opened.behavior_session_id),
                                  progress=progress)
