"""Behavior of one session, computed from the frames a session returns.

- :mod:`vbo.behavior.performance` — trial metrics: reward rate, rolling hit/false-alarm rates, d′, engagement,
  the 23-key performance metrics, trial and reward selections (``docs/analysis.md`` §1–§4);
- :mod:`vbo.behavior.streams` — the lick rate, pupil series and traces, windowed means (§5, §11);
- :mod:`vbo.behavior.flashes` — per-flash annotation of the change-detection block and the image-transition
  matrices (§9, §10).

The functions take ``trials``, ``rewards``, ``licks``, ``eye_tracking``, … frames and open no file;
:func:`annotate_session` alone takes a session (or experiment) object and reads its members. Every public name
is importable from ``vbo.behavior`` itself.
"""

from vbo.behavior.flashes import (CHANGE_DETECTION, NO_EVENT, OUTCOMES, TRIAL_COLUMNS, annotate_flashes,
                                  annotate_session, change_detection_flashes, dprime_matrix,
                                  response_probability_matrix)
from vbo.behavior.performance import (DPRIME_LIMITS, ENGAGEMENT_THRESHOLD, GO_CATCH_TYPES, MAX_DPRIME,
                                      PERFORMANCE_METRIC_KEYS, RESPONSE_TYPES, REWARD_RATE_INITIAL_TRIALS,
                                      REWARD_RATE_TRIAL_WINDOW, REWARD_WINDOW_S, ROLLING_COLUMNS, SLIDING_WINDOW,
                                      TRIAL_OUTCOMES, TRIAL_TYPES, dprime, engaged, is_engaged, is_passive,
                                      performance_metrics, reward_rate, reward_rate_latency, reward_times,
                                      rolling_dprime, rolling_performance, select_trials)
from vbo.behavior.streams import (DERIVED_PUPIL_SIZES, INITIAL_GRAY_SCREEN, LICK_RATE_BIN_FRAMES,
                                  gray_screen_interval, lick_rate, plain_bool, pupil_series, pupil_trace,
                                  window_mean)

__all__ = [
    # performance
    "SLIDING_WINDOW", "DPRIME_LIMITS", "REWARD_WINDOW_S", "REWARD_RATE_TRIAL_WINDOW", "REWARD_RATE_INITIAL_TRIALS",
    "ENGAGEMENT_THRESHOLD", "PERFORMANCE_METRIC_KEYS", "ROLLING_COLUMNS", "MAX_DPRIME", "GO_CATCH_TYPES",
    "TRIAL_OUTCOMES", "TRIAL_TYPES", "RESPONSE_TYPES", "reward_rate_latency", "reward_rate", "rolling_dprime",
    "is_passive", "rolling_performance", "performance_metrics", "dprime", "is_engaged", "engaged",
    "select_trials", "reward_times",
    # streams
    "LICK_RATE_BIN_FRAMES", "DERIVED_PUPIL_SIZES", "INITIAL_GRAY_SCREEN", "lick_rate", "plain_bool",
    "window_mean", "pupil_series", "gray_screen_interval", "pupil_trace",
    # flashes
    "CHANGE_DETECTION", "TRIAL_COLUMNS", "OUTCOMES", "NO_EVENT", "change_detection_flashes", "annotate_flashes",
    "annotate_session", "response_probability_matrix", "dprime_matrix",
]
