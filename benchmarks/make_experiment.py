#!/usr/bin/env python
"""Write one release-sized simulated experiment for the read and streaming benchmarks.

    python benchmarks/make_experiment.py OUT.nwb [--cells 200] [--release-storage] [--seed 0]

A single-plane (31 Hz) active imaging session of the ``full`` scale (real durations), its field of view drawn
until its number of ROIs is the closest to ``--cells`` (release files hold ~100-300). Written by vbo's pynwb
writer, stored as the AllenSDK-written reference files are (gzip for datasets of 256 KB or more), or with
``--release-storage`` as the released files are (only the event data compressed: the shared files' README).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vbo.nwb import write
from vbo.simulate.mice import plan_release
from vbo.simulate.neurons import make_container, simulate_ophys
from vbo.simulate.plan import SCALES
from vbo.simulate.task import simulate_behavior

DRAWS = 40  # fields of view drawn per candidate session


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--cells", type=int, default=200, help="ROIs wanted (the closest draw is kept)")
    parser.add_argument("--release-storage", action="store_true", help="compress only the event data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    scale = SCALES["full"]
    best = None
    for session in plan_release(np.random.default_rng([args.seed, 0]), 12, scale):
        if not (session.is_imaging and not session.passive and session.experiments):
            continue
        experiment = session.experiments[0]
        for draw in range(DRAWS):
            container = make_container(experiment.ophys_container_id, session.mouse, experiment, scale,
                                       np.random.default_rng([args.seed, 1, draw]))
            if best is None or abs(len(container.cells) - args.cells) < abs(len(best[3].cells) - args.cells):
                best = (session, experiment, draw, container)
        if len(best[3].cells) == args.cells:
            break
    session, experiment, _, container = best
    behavior, _ = simulate_behavior(session, scale, np.random.default_rng([args.seed, 2]))
    ophys, _ = simulate_ophys(session, experiment, container, behavior, scale, np.random.default_rng([args.seed, 3]))
    if args.release_storage:
        write.COMPRESS_BYTES = 1 << 62  # events stay gzip (written with always=True)
    start = time.perf_counter()
    write.write_nwb(ophys, args.out)
    print(f"{args.out}: {session.session_type}, {session.mouse.cre_line}, {len(container.cells)} cells drawn, "
          f"written in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
