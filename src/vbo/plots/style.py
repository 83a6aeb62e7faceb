"""Shared figure plumbing: pyplot with a non-interactive backend when there is no display (used by the figures
and the report pages)."""

from __future__ import annotations

import os


def pyplot():
    """matplotlib.pyplot, switched to the Agg backend when no display is available."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg") and not has_display():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
