"""Synthetic Visual Behavior Ophys releases with planted ground truth (``vbo simulate``).

``plan.py`` (scales, session records) → ``mice.py`` (cohort, histories, tables) → ``task.py`` (behaviour of a
session) and ``neurons.py`` (cells and ophys streams) → ``release.py`` (files, manifests, truth).
"""

from vbo.simulate.plan import SCALES
from vbo.simulate.release import Release, simulate

__all__ = ["simulate", "Release", "SCALES"]
