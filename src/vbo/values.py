"""Small immutable value types returned by sessions: images with pixel spacing, 3-D rig coordinates."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Image(NamedTuple):
    """A 2-D image with its pixel size; behaves as its array (``np.asarray(img)``, ``plt.imshow(img)``).

    Attributes
    ----------
    data : numpy.ndarray
        Pixel values, shape (rows, columns).
    spacing : tuple of float
        Pixel size along (rows, columns), in ``unit``.
    unit : str
        Unit of ``spacing`` (``"mm"``).
    """

    data: np.ndarray
    spacing: tuple[float, float]
    unit: str = "mm"

    def __array__(self, dtype=None, copy=None):
        if dtype is None:
            return self.data if not copy else self.data.copy()
        return self.data.astype(dtype, copy=bool(copy) or self.data.dtype != dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype


class Coordinates(NamedTuple):
    """An (x, y, z) triple of the eye-tracking rig geometry (mm or degrees)."""

    x: float
    y: float
    z: float
