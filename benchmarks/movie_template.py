#!/usr/bin/env python
"""Natural-movie template benchmark: vbo's warp against a per-frame, per-point baseline (api.md Q47).

    python benchmarks/movie_template.py [--frames N] [--workers W]

A movie of ``--frames`` frames at the real size (304 × 608 px, uint8) is turned into screen-sized ``unwarped``
and ``warped`` frames three ways, measured in the same run:

- **per-frame baseline** — the reference structure: for every frame, the screen's 2.3 M display points are
  built as Python tuples, the visible mask is collected point by point in a Python set, the warp coordinates
  are recomputed, then the frame is resized, placed and sampled;
- **vbo, first call** — geometry computed once with whole arrays, frames warped by threads and the warped
  movie written to the disk cache;
- **vbo, cached** — the same call again: the warped movie is mapped from disk, only ``unwarped`` is rebuilt.

Per-frame times are extrapolated to the 900 real frames. Target (printed, never asserted): the first call at
least 10× faster than the baseline per frame; outputs byte-identical.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REAL_FRAMES = 900
FRAME_SHAPE = (304, 608)


def baseline_frame(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame the reference way: per-point geometry rebuilt for this frame, then resize, place, sample."""
    from PIL import Image
    from scipy import ndimage

    from vbo import screen

    rows, columns = screen.SCREEN_SHAPE
    # the visible mask, one display point at a time
    points = np.array(list(itertools.product(np.arange(columns) - columns / 2, np.arange(rows) - rows / 2)))
    height, width = screen.MASK_PANEL_CM
    dx, dy = screen._texture_offsets(points[:, 0].copy(), points[:, 1].copy(), (float(columns), float(rows)),
                                     (width, height), screen.EYE_DISTANCE_CM)
    seen = set()
    for u, v in zip(dx.astype(int) + columns // 2, dy.astype(int) + rows // 2):
        seen.add((int(u), int(v)))
    mask = np.zeros((columns, rows))
    mask[tuple(np.array(sorted(seen)).T)] = 1
    mask = mask.T
    # the warp coordinates, from a Python list of display points
    points = np.array(list(itertools.product(np.arange(rows) - rows / 2, np.arange(columns) - columns / 2)))
    height, width = screen.panel_size_cm()
    r, c = screen._texture_offsets(points[:, 0].copy(), points[:, 1].copy(), (float(columns), float(rows)),
                                   (width, height), screen.EYE_DISTANCE_CM)
    coordinates = np.stack([r + rows / 2, c + columns / 2])
    placed = np.full(screen.SCREEN_SHAPE, screen.GRAY, dtype=np.uint8)
    placed[60:1140] = np.asarray(Image.fromarray(frame).resize((1920, 1080), Image.Resampling.BILINEAR))
    unwarped = placed.astype(float) * mask
    unwarped[mask == 0] = np.nan
    return unwarped, ndimage.map_coordinates(placed, coordinates).reshape(screen.SCREEN_SHAPE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16, help="movie frames (default 16; the real movie has 900)")
    parser.add_argument("--workers", type=int, default=None, help="vbo threads (default: all cores)")
    parser.add_argument("--baseline-frames", type=int, default=2, help="frames timed for the baseline")
    args = parser.parse_args()

    from vbo import screen

    rng = np.random.default_rng(0)
    movie = rng.integers(0, 256, size=(args.frames, *FRAME_SHAPE)).astype(np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        cache_file = Path(folder) / "Movie_TOE1.warped.npy"
        start = time.perf_counter()
        first = screen.movie_template(movie, n_workers=args.workers, cache_file=cache_file)
        t_first = time.perf_counter() - start
        start = time.perf_counter()
        cached = screen.movie_template(movie, n_workers=args.workers, cache_file=cache_file)
        t_cached = time.perf_counter() - start
        n_base = min(args.baseline_frames, args.frames)
        start = time.perf_counter()
        baseline = [baseline_frame(movie[i]) for i in range(n_base)]
        t_base = (time.perf_counter() - start) / n_base
        identical = all(np.array_equal(w, first.loc[i, "warped"]) and np.array_equal(w, cached.loc[i, "warped"])
                        and np.array_equal(u, first.loc[i, "unwarped"], equal_nan=True)
                        for i, (u, w) in enumerate(baseline))
        del first, cached

    per_first, per_cached = t_first / args.frames, t_cached / args.frames
    print(f"movie: {args.frames} frames of {FRAME_SHAPE[0]} x {FRAME_SHAPE[1]} px -> 1200 x 1920; "
          f"{args.workers or os.cpu_count()} thread(s); baseline timed on {n_base} frame(s)")
    print(f"{'workload':<20} {'s/frame':>9} {'900 frames (s)':>15} {'baseline/this':>14}")
    for name, per in (("per-frame baseline", t_base), ("vbo first call", per_first), ("vbo cached", per_cached)):
        print(f"{name:<20} {per:9.3f} {per * REAL_FRAMES:15.0f} {t_base / per:13.1f}x")
    ratio = t_base / per_first
    print(f"target: first call ≥10× faster than the baseline per frame: {'met' if ratio >= 10 else 'NOT met'} "
          f"({ratio:.1f}×); outputs byte-identical: {identical}")


if __name__ == "__main__":
    main()
