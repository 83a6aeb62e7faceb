"""Figures: one function per figure, each returning a matplotlib Figure.

``behavior`` holds the behavior figures, ``neural`` the neural-activity figures; both are re-exported here.
"""

from vbo.plots.behavior import rolling_performance, stage_color, training_history
from vbo.plots.neural import container_projections, experiment_overview, plane_population_traces, stimulus_template
from vbo.plots.neural import (behavior_neural_window, cell_trace, change_responses_by_trial_type, dff_heatmap,
                               image_response_heatmap, responses_by_cell_type, roi_projection)
from vbo.plots.behavior import (behavior_window, dprime_matrix, image_colors, response_probability_matrix,
                                session_summary, trial_type_panels)

__all__ = ["training_history", "rolling_performance", "stage_color", "experiment_overview", "container_projections",
           "plane_population_traces", "stimulus_template"]
__all__ += ["roi_projection", "dff_heatmap", "cell_trace", "behavior_neural_window", "change_responses_by_trial_type",
            "image_response_heatmap", "responses_by_cell_type"]
__all__ += ["behavior_window", "trial_type_panels", "response_probability_matrix", "dprime_matrix",
            "session_summary", "image_colors"]
