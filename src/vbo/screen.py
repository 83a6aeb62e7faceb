"""The stimulus monitor: where movie frames land on the screen and how the spherical warp bends them.

Visual Behavior shows its stimuli on the Brain Observatory monitor (1200 × 1920 px, 61.214 cm diagonal,
15 cm from the eye). Every image is warped so that equal distances on the screen subtend equal visual angles
at the eye; pixels the warp never samples are invisible to the mouse. This module computes, once and with
whole-array numpy, the warp's sampling coordinates and the visible-pixel mask, and applies them to frames
with the same arithmetic as the AllenSDK (cubic-spline sampling; the movie file: ``docs/format.md`` §5.7), so warped frames are
byte-identical to the SDK's.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np

SCREEN_SHAPE = (1200, 1920)  # rows, columns (px)
PANEL_DIAGONAL_CM = 61.214
EYE_DISTANCE_CM = 15.0
GRAY = 127  # background gray level (uint8)
MOVIE_SCREEN_SHAPE = (1080, 1920)  # rows, columns a movie frame is resized to before it is centred (px)
# The visible-area mask was defined once with nominal panel dimensions that differ slightly from the
# diagonal-derived ones used for the warp; both are kept so the mask matches the released templates.
MASK_PANEL_CM = (32.5, 51.0)  # height, width


def panel_size_cm(shape: tuple[int, int] = SCREEN_SHAPE,
                  diagonal_cm: float = PANEL_DIAGONAL_CM) -> tuple[float, float]:
    """Physical (height, width) of the panel in cm, from its diagonal and its pixel aspect ratio."""
    aspect = shape[1] / shape[0]
    height = float(np.sqrt(diagonal_cm**2 / (1 + aspect**2)))
    return height, height * aspect


def _texture_offsets(first: np.ndarray, second: np.ndarray, resolution: tuple[float, float],
                     size_cm: tuple[float, float], distance_cm: float) -> tuple[np.ndarray, np.ndarray]:
    """Where the spherical warp samples the source for screen points given in px from the screen centre.

    ``first``/``second`` are scaled by ``resolution[0]``/``[1]`` and ``size_cm[0]``/``[1]`` (the first axis
    plays the horizontal role). A point at distance r from the eye is moved to the arc length
    ``distance · acos(distance / r)`` along its own direction from the centre. Returns offsets in px.
    """
    eps = np.finfo(np.float32).eps
    # (kept in the reference's operation order so the result is bit-identical)
    x = (first / resolution[0] + 0.5) * size_cm[0] - 0.5 * size_cm[0]
    y = (second / resolution[1] + 0.5) * size_cm[1] - 0.5 * size_cm[1]
    r = np.sqrt(x * x + y * y + distance_cm * distance_cm)
    azimuth = np.arctan(x / distance_cm)
    altitude = np.arcsin(y / r)
    azimuth[azimuth == 0] = eps
    altitude[altitude == 0] = eps
    arc = np.arccos(np.cos(altitude) * np.cos(np.abs(azimuth))) * distance_cm
    direction = np.arctan2(distance_cm * (1 + y / r) - distance_cm, distance_cm * (1 + x / r) - distance_cm)
    return (arc * np.cos(direction) / size_cm[0] * resolution[0],
            arc * np.sin(direction) / size_cm[1] * resolution[1])


@cache
def warp_coordinates(shape: tuple[int, int] = SCREEN_SHAPE) -> np.ndarray:
    """Source (row, column) sampled by each screen pixel, shape (2, rows × columns), float64 px.

    ``shape``: the screen's resolution; the real 1200 × 1920 by default (other resolutions model the same
    panel with coarser pixels, as the simulator's small templates do). Computed once per process and shape
    (about 0.5 s at full resolution); read-only.
    """
    rows, columns = shape
    height, width = panel_size_cm()
    row_offset, column_offset = np.meshgrid(np.arange(rows) - rows / 2, np.arange(columns) - columns / 2,
                                            indexing="ij")
    # the reference implementation feeds (row, column) offsets where it names them (x, y)
    source_row, source_column = _texture_offsets(row_offset.ravel(), column_offset.ravel(),
                                                 (float(columns), float(rows)), (width, height),
                                                 EYE_DISTANCE_CM)
    coordinates = np.stack([source_row + rows / 2, source_column + columns / 2])
    coordinates.flags.writeable = False
    return coordinates


@cache
def visible_mask(shape: tuple[int, int] = SCREEN_SHAPE) -> np.ndarray:
    """Screen pixels the warp shows to the mouse (bool, ``shape``, default 1200 × 1920): every pixel some
    warped pixel samples. Computed once per process and shape; read-only.
    """
    rows, columns = shape
    x, y = np.meshgrid(np.arange(columns) - columns / 2, np.arange(rows) - rows / 2, indexing="ij")
    height, width = MASK_PANEL_CM
    dx, dy = _texture_offsets(x.ravel(), y.ravel(), (float(columns), float(rows)), (width, height),
                              EYE_DISTANCE_CM)
    mask = np.zeros(shape, dtype=bool)
    # offsets truncate toward zero, as the reference does
    mask[dy.astype(np.int64) + rows // 2, dx.astype(np.int64) + columns // 2] = True
    mask.flags.writeable = False
    return mask


def movie_frames_to_screen(frames: np.ndarray) -> np.ndarray:
    """Place movie frames on the screen as shown: bilinear resize to 1080 × 1920, centred on gray.

    Parameters
    ----------
    frames : np.ndarray
        uint8, (n, rows, columns) or one (rows, columns) frame.

    Returns
    -------
    np.ndarray
        uint8, (n, 1200, 1920) (or (1200, 1920) for one frame), background 127.
    """
    from PIL import Image

    frames = np.asarray(frames)
    if frames.ndim not in (2, 3):
        raise ValueError(f"movie frames must be (n,) rows x columns, got shape {frames.shape}")
    single = frames.ndim == 2
    stack = frames[None] if single else frames
    if stack.dtype != np.uint8:
        raise TypeError(f"movie frames must be uint8, got {stack.dtype}")
    screen = np.full((len(stack), *SCREEN_SHAPE), GRAY, dtype=np.uint8)
    top = (SCREEN_SHAPE[0] - MOVIE_SCREEN_SHAPE[0]) // 2
    left = (SCREEN_SHAPE[1] - MOVIE_SCREEN_SHAPE[1]) // 2
    size = (MOVIE_SCREEN_SHAPE[1], MOVIE_SCREEN_SHAPE[0])  # PIL wants (width, height)
    for i, frame in enumerate(stack):
        screen[i, top:top + MOVIE_SCREEN_SHAPE[0], left:left + MOVIE_SCREEN_SHAPE[1]] = \
            np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))
    return screen[0] if single else screen


def unwarped(screen: np.ndarray) -> np.ndarray:
    """Screen images as float64 with NaN where the mouse cannot see (outside :func:`visible_mask`)."""
    out = np.asarray(screen, dtype=np.float64).copy()
    out[..., ~visible_mask(out.shape[-2:])] = np.nan
    return out


def warp(screen: np.ndarray, n_workers: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Warp screen images as the monitor showed them (cubic-spline sampling at :func:`warp_coordinates`).

    Parameters
    ----------
    screen : np.ndarray
        (n, rows, columns) or one (rows, columns) image at the screen's resolution (1200 × 1920 for the real
        monitor); the output keeps its dtype (uint8 stays uint8, rounded half up and clipped).
    n_workers : int, optional
        Threads warping frames in parallel; default: all cores.
    out : np.ndarray, optional
        Where to write the result (e.g. a memory-mapped array), same shape as ``screen``.

    Returns
    -------
    np.ndarray
        The warped images, same shape and dtype as ``screen``.
    """
    from scipy import ndimage

    screen = np.asarray(screen)
    if screen.ndim not in (2, 3) or min(screen.shape[-2:]) < 4:
        raise ValueError(f"screen images must be (n,) rows x columns with at least 4 px a side, got {screen.shape}")
    if screen.ndim == 2:
        return warp(screen[None], n_workers)[0]
    shape = tuple(int(n) for n in screen.shape[-2:])
    coordinates = warp_coordinates(shape)
    if out is None:
        out = np.empty_like(screen)

    def one(i: int) -> None:
        out[i] = ndimage.map_coordinates(screen[i], coordinates, order=3).reshape(shape)

    workers = n_workers or os.cpu_count() or 1
    if workers == 1 or len(screen) == 1:
        for i in range(len(screen)):
            one(i)
    else:  # scipy releases the GIL while it samples: threads scale with cores
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, range(len(screen))))
    return out


# --- the natural movie as shown ---------------------------------------------------------------------

MOVIE_NAME = "natural_movie_one"
FRAMES_PER_CHUNK = 16  # movie frames placed and warped together (bounded memory: about 40 MB per frame)


def movie_template(movie: np.ndarray, frames=None, *, n_workers: int | None = None,
                   cache_file: str | os.PathLike | None = None):
    """Every (or the chosen) movie frame as placed on the screen and as warped, like the AllenSDK's template.

    Parameters
    ----------
    movie : np.ndarray
        uint8 (frames, rows, columns), e.g. ``Movie_TOE1.npy``.
    frames : int, slice or sequence of int, optional
        Movie frames to return (default: all). Each returned frame costs about 18 MB (``unwarped`` is
        float64 at screen size, as in the SDK): the 900 real frames take about 17 GB.
    n_workers : int, optional
        Threads warping frames (default: all cores).
    cache_file : path, optional
        Where the warped movie (uint8, frames × 1200 × 1920) is kept between calls. Written once, atomically,
        when all frames are asked for; read memory-mapped afterwards (also for subsets). Its name gets the
        movie's content hash, so a different movie never reuses it.

    Returns
    -------
    pd.DataFrame
        Index ``movie_frame_index`` (int64, the presentations' ``movie_frame_index``); columns ``unwarped``
        (float64 1200 × 1920, NaN where the mouse cannot see) and ``warped`` (uint8 1200 × 1920), one array per
        frame. ``DataFrame.name`` is ``natural_movie_one``.
    """
    import pandas as pd

    movie = np.asarray(movie)
    if movie.ndim != 3 or movie.dtype != np.uint8:
        raise ValueError(f"a movie must be uint8 frames × rows × columns, got {movie.dtype} {movie.shape}")
    chosen = _frame_numbers(frames, len(movie))
    _check_memory(len(chosen))
    cached = _cached_warp(movie, cache_file, build=frames is None, n_workers=n_workers) \
        if cache_file is not None else None
    unwarped_frames = np.empty((len(chosen), *SCREEN_SHAPE), dtype=np.float64)
    warped_frames = None if cached is not None else np.empty((len(chosen), *SCREEN_SHAPE), dtype=np.uint8)
    for start in range(0, len(chosen), FRAMES_PER_CHUNK):
        part = slice(start, start + FRAMES_PER_CHUNK)
        screen = movie_frames_to_screen(movie[chosen[part]])
        unwarped_frames[part] = screen
        if warped_frames is not None:
            warp(screen, n_workers, out=warped_frames[part])
    unwarped_frames[:, ~visible_mask()] = np.nan
    index = pd.Index(chosen, name="movie_frame_index", dtype=np.int64)
    warped_cells = [cached[i] for i in chosen] if cached is not None else list(warped_frames)
    template = pd.DataFrame({"unwarped": pd.Series(list(unwarped_frames), index=index, dtype=object),
                             "warped": pd.Series(warped_cells, index=index, dtype=object)}, index=index)
    template.name = MOVIE_NAME
    return template


def _check_memory(n_frames: int) -> None:
    """MemoryError up front (not an out-of-memory kill later) when the float64 frames cannot fit in RAM."""
    needed = n_frames * SCREEN_SHAPE[0] * SCREEN_SHAPE[1] * (8 + 1)
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): let the allocation decide
        return
    if needed > total:
        raise MemoryError(f"{n_frames} movie frames at screen size need {needed / 2**30:.1f} GiB "
                          f"(float64 unwarped + uint8 warped) but this machine has {total / 2**30:.1f} GiB; "
                          "ask for part of the movie with frames=, e.g. frames=range(0, 300)")


def _frame_numbers(frames, n_frames: int) -> np.ndarray:
    """Movie frame numbers as int64 from None, an int, a slice or a sequence; IndexError names a bad one."""
    if frames is None:
        return np.arange(n_frames, dtype=np.int64)
    if isinstance(frames, slice):
        return np.arange(n_frames, dtype=np.int64)[frames]
    numbers = np.atleast_1d(np.asarray(frames))
    if numbers.ndim != 1 or (numbers.size and not np.issubdtype(numbers.dtype, np.integer)):
        raise TypeError(f"frames must be an int, a slice or a sequence of int, got {frames!r}")
    numbers = numbers.astype(np.int64)
    outside = numbers[(numbers < 0) | (numbers >= n_frames)]
    if outside.size:
        raise IndexError(f"movie frame {int(outside[0])} does not exist: the movie has frames 0..{n_frames - 1}")
    return numbers


def _cached_warp(movie: np.ndarray, cache_file, *, build: bool, n_workers: int | None) -> np.ndarray | None:
    """The warped movie from ``cache_file`` (memory-mapped, copy-on-write); built first when ``build``.

    Returns None when there is no usable cache and ``build`` is False. The file appears only complete
    (written under a lock to a temporary name, then renamed); leftovers of an interrupted build are removed.
    """
    import hashlib
    from pathlib import Path

    from filelock import FileLock

    base = Path(cache_file)
    key = hashlib.blake2b(np.ascontiguousarray(movie).data, digest_size=8).hexdigest()
    path = base.with_name(f"{base.stem}.{key}{base.suffix or '.npy'}")
    shape = (len(movie), *SCREEN_SHAPE)

    def load() -> np.ndarray | None:
        try:
            stack = np.load(path, mmap_mode="c")
        except (OSError, ValueError):
            return None
        return stack if stack.shape == shape and stack.dtype == np.uint8 else None

    stack = load()
    if stack is not None or not build:
        return stack
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        stack = load()  # another process may have built it while we waited
        if stack is not None:
            return stack
        for leftover in path.parent.glob(f"{base.stem}.*.tmp"):
            leftover.unlink(missing_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            for start in range(0, len(movie), FRAMES_PER_CHUNK):
                part = slice(start, start + FRAMES_PER_CHUNK)
                warp(movie_frames_to_screen(movie[part]), n_workers, out=out[part])
            out.flush()
            del out
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        for stale in path.parent.glob(f"{base.stem}.*{base.suffix or '.npy'}"):
            if stale != path:
                stale.unlink(missing_ok=True)
    return load()
