"""Figures: one function per figure, each returning a matplotlib Figure.

``behavior`` holds the behavior figures, ``neural`` the neural-activity figures; both are re-exported here.
"""

from vbo.plots.behavior import rolling_performance, stage_color, training_history
from vbo.plots.neural import experiment_overview

__all__ = ["training_history", "rolling_performance", "stage_color", "experiment_overview"]
