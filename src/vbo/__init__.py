"""vbo: lazy, fast, AllenSDK-compatible access to the Allen Visual Behavior Optical Physiology dataset.

Heavy modules are imported on first use, so ``import vbo`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "BehaviorSession": "vbo.session",
    "BehaviorOphysExperiment": "vbo.experiment",
    "BehaviorOphysSession": "vbo.experiment",
    "Image": "vbo.values",
    "Coordinates": "vbo.values",
    "VisualBehaviorOphysProjectCache": "vbo.cache.project",
}
_SUBMODULES = ("errors", "behavior", "history", "responses", "population", "plots", "screen", "tables")
"""Modules reachable as ``vbo.<name>`` after a plain ``import vbo`` (imported on first use)."""

__all__ = ["BehaviorSession", "BehaviorOphysExperiment", "BehaviorOphysSession", "Image", "Coordinates",
           "VisualBehaviorOphysProjectCache", "errors", "open_nwb", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from vbo import errors
    from vbo.cache.project import VisualBehaviorOphysProjectCache
    from vbo.experiment import BehaviorOphysExperiment, BehaviorOphysSession
    from vbo.session import BehaviorSession
    from vbo.values import Coordinates, Image


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"vbo.{name}")
    raise AttributeError(f"module 'vbo' has no attribute {name!r}")


def open_nwb(path, **kwargs):
    """Open a released NWB file as a ``BehaviorOphysExperiment`` if it holds imaging data, else a ``BehaviorSession``.

    Parameters
    ----------
    path
        Path, ``s3://``/``https://`` URL (streamed) or binary file-like object of a behavior session or
        ophys experiment NWB file.
    **kwargs
        Reading options of the chosen class's ``from_nwb_path``; options that only experiments take
        are ignored for behavior-only files.
    """
    # deferred, as every member of this facade: `import vbo` does not load h5py, pandas or numpy
    from vbo.experiment import BehaviorOphysExperiment
    from vbo.nwb import layout
    from vbo.nwb import read as nwb
    from vbo.session import BehaviorSession, adopt, open_source

    session_options = ("eye_tracking_z_threshold", "eye_tracking_dilation_frames",
                       "add_is_change_to_stimulus_presentations_table")

    def build(handle):
        with handle.pinned() as h5:
            # the imaging plane first: on a streamed file it is read with the metadata, the ophys module is a chain
            # of round trips away (docs/format.md §13.5); exists refuses an external link rather than following it
            is_experiment = nwb.exists(h5, layout.IMAGING_PLANE) or nwb.exists(h5, layout.OPHYS)
        if is_experiment:
            return BehaviorOphysExperiment(handle, **kwargs)
        return BehaviorSession(handle, **{k: v for k, v in kwargs.items() if k in session_options})

    return adopt(build, open_source(path))
