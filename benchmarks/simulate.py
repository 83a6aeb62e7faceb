#!/usr/bin/env python
"""Simulator benchmark: the pynwb writer vs the direct h5py writer, 1 vs 2 workers, and the demo.

    python benchmarks/simulate.py [--scale small] [--full] [--no-baseline]

Every measure is taken in this run, each release and demo in a fresh process with an empty cache
(wall time, and CPU time of the process and its workers: on a shared machine wall time follows the load,
CPU time much less)
(``XDG_CACHE_HOME`` pointed at a new folder, so the fast writer's specifications file is made too):

- **one file** — simulate one imaging session of ``--scale`` (and with ``--full`` one of the ``full`` scale),
  then write its behavior and first experiment file with ``vbo.nwb.write`` (pynwb; the first write of a
  process loads pynwb's namespaces, shown apart) and with ``vbo.nwb.fastwrite`` (h5py);
- **release** — ``simulate(scale="tiny")`` with the fast writer on 1 and 2 workers and the pynwb writer on
  2 workers (wall time of the whole process, import included);
- **demo** — ``python -m vbo demo`` from an empty cache (simulates the demo's files, runs the workflows),
  wall time and bytes written; the baseline (unless ``--no-baseline``) simulates every file of the demo
  release with the pynwb writer, as the demo did before.

Targets (printed, never asserted): ``vbo simulate --scale tiny`` ≤ 20 s; one ``full`` experiment file ≤ 10 s;
the demo ≤ 2 min and ≤ 500 MB.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

PYTHON = sys.executable
SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))  # this checkout's vbo, also in the child processes (PYTHONPATH below)

import vbo  # noqa: E402
from vbo.nwb.fastwrite import prepare, write_nwb_fast  # noqa: E402
from vbo.nwb.write import write_nwb  # noqa: E402
from vbo.simulate import release as simulated_release  # noqa: E402
from vbo.simulate.mice import plan_release  # noqa: E402
from vbo.simulate.neurons import make_container, simulate_ophys  # noqa: E402
from vbo.simulate.plan import SCALES  # noqa: E402
from vbo.simulate.task import simulate_behavior  # noqa: E402


def _env(cache_home: Path) -> dict:
    env = dict(os.environ, XDG_CACHE_HOME=str(cache_home))
    env.pop("VBO_CACHE_DIR", None)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _bytes(*folders: Path) -> int:
    return sum(p.stat().st_size for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file())


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(code_or_args: list[str], cache_home: Path) -> tuple[float, float]:
    """Wall time and CPU time (user + system, the process and its workers) of a fresh interpreter."""
    start, cpu = time.perf_counter(), _cpu_of_children()
    subprocess.run([PYTHON, *code_or_args], env=_env(cache_home), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, _cpu_of_children() - cpu


def _one_session(scale_name: str):
    scale = SCALES[scale_name]
    sessions = plan_release(simulated_release._seed(0, 0), scale.default_mice, scale)
    session = next(s for s in sessions if s.is_imaging and not s.passive)
    experiment = session.experiments[0]
    container = make_container(experiment.ophys_container_id, session.mouse, experiment, scale,
                               simulated_release._seed(0, 1, experiment.ophys_container_id))
    start = time.process_time()
    behavior, _ = simulate_behavior(session, scale, simulated_release._seed(0, session.behavior_session_id))
    behavior_s = time.process_time() - start
    start = time.process_time()
    ophys, _ = simulate_ophys(session, experiment, container, behavior, scale,
                              simulated_release._seed(0, session.behavior_session_id, experiment.ophys_experiment_id))
    ophys_s = time.process_time() - start
    return behavior, ophys, behavior_s, ophys_s


def _timed_write(writer, content, path: Path) -> tuple[float, int]:
    """CPU time of this process (all its threads) for one write, and the file's size."""
    start = time.process_time()
    writer(content, path)
    return time.process_time() - start, path.stat().st_size


def per_file(scales: list[str], folder: Path) -> list[str]:
    """Rows: file, size, simulate, pynwb first write, pynwb later write, fast write, ratio."""
    start = time.process_time()
    prepare()
    spec_s = time.process_time() - start
    rows = []
    first = True
    for scale in scales:
        behavior, ophys, behavior_s, ophys_s = _one_session(scale)
        for kind, content, sim_s in (("behavior", behavior, behavior_s), ("experiment", ophys, ophys_s)):
            pynwb_first = None
            if first:
                pynwb_first, _ = _timed_write(write_nwb, content, folder / "first.nwb")
                first = False
            pynwb_s, size = _timed_write(write_nwb, content, folder / "pynwb.nwb")
            fast_s, fast_size = _timed_write(write_nwb_fast, content, folder / "fast.nwb")
            rows.append(f"| {scale} {kind} | {size / 1e6:.1f} MB | {sim_s:.2f} s | "
                        f"{'—' if pynwb_first is None else f'{pynwb_first:.2f} s'} | {pynwb_s:.2f} s | "
                        f"{fast_s:.2f} s | {pynwb_s / fast_s:.1f}× | {sim_s + fast_s:.2f} s |")
            for name in ("first.nwb", "pynwb.nwb", "fast.nwb"):
                (folder / name).unlink(missing_ok=True)
    rows.append(f"| (fast writer: specifications file made once per machine) | | | | | {spec_s:.2f} s | | |")
    return rows


def release(folder: Path) -> list[str]:
    rows = []
    for label, workers, writer in (("fast writer, 1 worker", 1, "fast"), ("fast writer, 2 workers", 2, "fast"),
                                   ("pynwb writer, 2 workers", 2, "pynwb")):
        out = folder / f"tiny-{workers}-{writer}"
        code = (f"from vbo.simulate import simulate; simulate({str(out)!r}, scale='tiny', workers={workers}, "
                f"writer={writer!r})")
        cache_home = Path(tempfile.mkdtemp(dir=folder))
        wall, cpu = _run(["-c", code], cache_home)
        rows.append((label, wall, cpu, _bytes(out), len(list(out.rglob("*.nwb")))))
        shutil.rmtree(out, ignore_errors=True)
    base_wall, base_cpu = rows[-1][1], rows[-1][2]
    return [f"| {label} | {files} | {wall:.1f} s | {cpu:.1f} s | {size / 1e6:.0f} MB | {base_wall / wall:.2f}× | "
            f"{base_cpu / cpu:.2f}× |" for label, wall, cpu, size, files in rows]


def demo(folder: Path, baseline: bool) -> list[str]:
    rows = []
    cache_home = Path(tempfile.mkdtemp(dir=folder))
    out, cache = folder / "demo-out", folder / "demo-cache"
    wall, cpu = _run(["-m", "vbo", "demo", "--out-dir", str(out), "--cache-dir", str(cache)], cache_home)
    files = len(list(cache.rglob("*.nwb")))
    rows.append(("`vbo demo`, empty cache (demo's files only, fast writer)", wall, cpu, _bytes(out, cache, cache_home),
                 files))
    wall, cpu = _run(["-m", "vbo", "demo", "--out-dir", str(out), "--cache-dir", str(cache)], cache_home)
    rows.append(("`vbo demo` again (release reused: the workflows alone)", wall, cpu, 0, files))
    if baseline:
        base_home = Path(tempfile.mkdtemp(dir=folder))
        base_out = folder / "baseline"
        code = ("from vbo.demo import DEMO_SCALE, DEMO_SEED; from vbo.simulate import simulate; "
                f"simulate({str(base_out)!r}, seed=DEMO_SEED, scale=DEMO_SCALE, writer='pynwb')")
        sim_wall, sim_cpu = _run(["-c", code], base_home)
        size, base_files = _bytes(base_out), len(list(base_out.rglob("*.nwb")))
        code = (f"from vbo.demo import run_demo; "
                f"run_demo({str(folder / 'baseline-out')!r}, release_dir={str(base_out)!r})")
        run_wall, run_cpu = _run(["-c", code], base_home)
        rows.append(("baseline: every file, pynwb writer, then the workflows", sim_wall + run_wall, sim_cpu + run_cpu,
                     size, base_files))
        shutil.rmtree(base_out, ignore_errors=True)
    ref_wall, ref_cpu = rows[-1][1], rows[-1][2]
    return [f"| {label} | {files} | {wall:.1f} s | {cpu:.1f} s | {size / 1e6:.0f} MB | "
            + (f"{ref_wall / wall:.2f}× | {ref_cpu / cpu:.2f}× |" if baseline else f"{wall / rows[0][1]:.2f} | — |")
            for label, wall, cpu, size, files in rows]


def _machine() -> str:
    load = os.getloadavg()
    return (f"_Python {platform.python_version()}, vbo {vbo.__version__}, pynwb {version('pynwb')}, hdmf "
            f"{version('hdmf')}, h5py {version('h5py')}, numpy {version('numpy')}, {platform.system()} "
            f"{platform.machine()}, {os.cpu_count()} CPUs, load average at start {load[0]:.1f}_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small", help="scale of the one-file measures (tiny, small, full)")
    parser.add_argument("--full", action="store_true", help="also one file of the full scale (60-min sessions)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the slow pre-change demo baseline")
    parser.add_argument("--only", choices=("file", "release", "demo"), help="run one part only")
    args = parser.parse_args()
    print(_machine())
    with tempfile.TemporaryDirectory(prefix="vbo-bench-sim-") as tmp:
        folder = Path(tmp)
        if args.only in (None, "file"):
            scales = [args.scale] + (["full"] if args.full and args.scale != "full" else [])
            print("\n**one file** (content simulated once, then written by each writer; CPU time of this process)\n")
            print("| file | size | simulate | pynwb, first write of a process | pynwb | fast (h5py) | "
                  "pynwb / fast | simulate + fast |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            print("\n".join(per_file(scales, folder)))
        if args.only in (None, "release"):
            print("\n**`simulate(scale='tiny')`** (fresh process, empty cache)\n")
            print("| run | NWB files | wall time | CPU time | bytes | wall: pynwb / this | CPU: pynwb / this |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            print("\n".join(release(folder)))
        if args.only in (None, "demo"):
            print("\n**demo** (fresh process, empty cache)\n")
            ratio = "wall: baseline / this | CPU: baseline / this" if not args.no_baseline else \
                "wall: this / first run | —"
            print(f"| run | NWB files | wall time | CPU time | bytes written | {ratio} |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            print("\n".join(demo(folder, not args.no_baseline)))
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
