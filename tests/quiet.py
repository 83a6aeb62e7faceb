"""Test helper: build an object with its warnings silenced (e.g. the SDK-compatible reminders a cache gives).

Usage (no conftest needed)::

    from quiet import quiet
    cache = quiet(vbo.VisualBehaviorOphysProjectCache.from_local_cache, root, use_static_cache=True)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any


def quiet(factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``factory(*args, **kwargs)`` with every warning it raises ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return factory(*args, **kwargs)
