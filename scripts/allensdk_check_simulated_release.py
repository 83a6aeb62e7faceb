"""Dev aid (by hand, not a test; never imported by vbo): does AllenSDK 2.16.2 open a simulated release?

Run with vbo's environment; AllenSDK runs in its own venv (``ALLENSDK_PYTHON``, default
``~/.cache/vbo-allensdk-venv/bin/python``)::

    PYTHONPATH=src .venv/bin/python scripts/allensdk_check_simulated_release.py --out /tmp/sdk-check \
        [--release DIR | --scale tiny --mice 4 --versions 6 --seed 0] [--dump 2]

1. simulates a release (or takes ``--release``), publishes it with ``vbo.cache.publish`` to a local moto S3
   server (127.0.0.1, versioned bucket);
2. in AllenSDK's venv, with boto3 pointed at that server (``AWS_ENDPOINT_URL``), runs
   ``VisualBehaviorOphysProjectCache.from_s3_cache(cache_dir, bucket_name_override=...)``: lists the
   manifests, loads each version (v0.x must raise ``BehaviorCloudCacheVersionException``), reads the four
   tables and loads behavior sessions and experiments of every kind (active, passive, Multiscope);
3. dumps AllenSDK's answer for ``--dump`` files of each kind (``shared/oracle/dump_allen_truth.py``) and
   compares it member by member with vbo (``shared/oracle/compare_truth.py --candidate vbo``).

Prints one report; exits non-zero when a step fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd

ORACLE = Path(__file__).resolve().parents[2] / "shared" / "oracle"
BUCKET = "vbo-simulated-release"

SDK_SESSION = textwrap.dedent('''
    import json, sys, warnings
    warnings.simplefilter("ignore")
    from allensdk.brain_observatory.behavior.behavior_project_cache import VisualBehaviorOphysProjectCache
    from allensdk.brain_observatory.behavior.behavior_project_cache.utils import BehaviorCloudCacheVersionException
    cache_dir, bucket, plan = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    report = {}
    cache = VisualBehaviorOphysProjectCache.from_s3_cache(cache_dir, bucket_name_override=bucket)
    report["manifests"] = cache.list_manifest_file_names()
    report["current"] = cache.current_manifest()
    versions = {}
    for name in report["manifests"]:
        try:
            cache.load_manifest(name)
            versions[name] = {"tables": {t: list(getattr(cache, "get_" + t)().shape) for t in (
                "behavior_session_table", "ophys_session_table", "ophys_experiment_table")}}
        except BehaviorCloudCacheVersionException as err:
            versions[name] = {"refused": type(err).__name__ + ": " + str(err)[:160]}
    report["versions"] = versions
    cache.load_latest_manifest()
    report["ophys_cells_table"] = list(cache.get_ophys_cells_table().shape)
    loaded = {}
    for kind, ident in plan["sessions"].items():
        s = cache.get_behavior_session(ident)
        loaded[kind] = {"trials": len(s.trials), "licks": len(s.licks), "presentations": len(s.stimulus_presentations),
                        "lick_times_total": int(sum(len(x) for x in s.trials.lick_times)),
                        "session_end_s": float(s.stimulus_timestamps[-1])}
    for kind, ident in plan["experiments"].items():
        e = cache.get_behavior_ophys_experiment(ident)
        cst = e.cell_specimen_table
        loaded[kind] = {"rois": len(cst), "unmatched": int(cst.index.isna().sum()), "index_dtype": str(cst.index.dtype),
                        "dff_frames": int(len(e.dff_traces.dff.iloc[0])), "trials": len(e.trials),
                        "lick_times_total": int(sum(len(x) for x in e.trials.lick_times)),
                        "session_end_s": float(e.stimulus_timestamps[-1]),
                        "blocks": sorted(set(e.stimulus_presentations.stimulus_block_name))}
    report["loaded"] = loaded
    print(json.dumps(report))
''')


def _simulate(out: Path, args) -> Path:
    from vbo.simulate import simulate

    release = out / "release"
    simulate(release, seed=args.seed, mice=args.mice, scale=args.scale, versions=args.versions)
    return release


def _pick(release: Path) -> tuple[dict, dict]:
    """Behavior sessions and experiments of each kind (by id) from the latest tables."""
    from vbo.cache import manifest as mf

    behavior = pd.read_csv(release / mf.metadata_key("behavior_session_table"))
    experiments = pd.read_csv(release / mf.metadata_key("ophys_experiment_table"))
    only = behavior[behavior["file_id"] != -999]
    sessions = {"behavior_training": int(only[only["session_type"].str.startswith("TRAINING")].iloc[0]
                                         ["behavior_session_id"])}
    ophys_only = only[only["session_type"].str.startswith("OPHYS")]
    if len(ophys_only):
        sessions["behavior_ophys_stage"] = int(ophys_only.iloc[0]["behavior_session_id"])
    kinds = {
        "experiment_active_single_plane": experiments[~experiments["passive"]
                                                      & experiments["equipment_name"].str.startswith("CAM2P")],
        "experiment_passive": experiments[experiments["passive"]],
        "experiment_mesoscope": experiments[experiments["equipment_name"].str.startswith("MESO")
                                            & ~experiments["passive"]],
    }
    chosen = {k: int(v.iloc[0]["ophys_experiment_id"]) for k, v in kinds.items() if len(v)}
    return sessions, chosen


def _run_allensdk(python: str, release: Path, out: Path, sessions: dict, experiments: dict) -> dict:
    from vbo.cache.publish import publish
    from moto.server import ThreadedMotoServer
    import boto3

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        admin = boto3.client("s3", endpoint_url=endpoint, region_name="us-west-2", aws_access_key_id="testing",
                             aws_secret_access_key="testing")
        admin.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        admin.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        publish(release, BUCKET, client=admin)
        env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_DEFAULT_REGION="us-west-2", PYTHONHASHSEED="0")
        env.pop("PYTHONPATH", None)
        cache_dir = out / "allensdk-cache"
        shutil.rmtree(cache_dir, ignore_errors=True)
        done = subprocess.run([python, "-c", SDK_SESSION, str(cache_dir), BUCKET,
                               json.dumps({"sessions": sessions, "experiments": experiments})],
                              env=env, capture_output=True, text=True)
    finally:
        server.stop()
    if done.returncode:
        raise SystemExit(f"AllenSDK failed on the simulated bucket:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _dump_and_compare(python: str, release: Path, out: Path, files: list[Path]) -> str:
    check = out / "truth-check"
    shutil.rmtree(check, ignore_errors=True)
    (check / "truth").mkdir(parents=True)
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("PYTHONPATH", None)
    for path in files:
        shutil.copy(path, check / path.name)
        done = subprocess.run([python, str(ORACLE / "dump_allen_truth.py"), str(check / path.name), "--out",
                               str(check / "truth" / path.stem)], env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"dump_allen_truth failed on {path.name}:\n{done.stderr[-3000:]}")
    done = subprocess.run([sys.executable, str(ORACLE / "compare_truth.py"), "--candidate", "vbo", "--json",
                           str(out / "compare.json"), str(check)], capture_output=True, text=True,
                          env=dict(os.environ, ALLENSDK_PYTHON=python))
    return done.stdout + done.stderr


def _real_duration_files(out: Path, scale: str, seed: int) -> list[Path]:
    """One passive Multiscope experiment and one active behavior-only session at ``scale`` (60-min task),
    written alone (a whole release at that scale is many GB)."""
    import numpy as np

    from vbo.cache import manifest as mf
    from vbo.nwb.write import write_nwb
    from vbo.simulate.mice import plan_release
    from vbo.simulate.neurons import make_container, simulate_ophys
    from vbo.simulate.plan import SCALES
    from vbo.simulate.task import simulate_behavior

    sc = SCALES[scale]
    sessions = plan_release(np.random.default_rng(seed), sc.default_mice, sc)
    passive = next(s for s in sessions if s.passive and s.equipment_name == "MESO.1" and s.experiments)
    active = next(s for s in sessions if not s.is_imaging and s.stage == "TRAINING_4")
    folder = out / f"real-duration-{scale}"
    folder.mkdir(parents=True, exist_ok=True)
    behavior, _ = simulate_behavior(passive, sc, np.random.default_rng([seed, 1]))
    experiment = passive.experiments[0]
    container = make_container(experiment.ophys_container_id, passive.mouse, experiment, sc,
                               np.random.default_rng([seed, 2]))
    ophys, _ = simulate_ophys(passive, experiment, container, behavior, sc, np.random.default_rng([seed, 3]))
    files = [write_nwb(ophys, folder / mf.experiment_nwb_key(experiment.ophys_experiment_id).rsplit("/", 1)[1])]
    behavior, _ = simulate_behavior(active, sc, np.random.default_rng([seed, 4]))
    files.append(write_nwb(behavior, folder / mf.behavior_nwb_key(active.behavior_session_id).rsplit("/", 1)[1]))
    return [Path(f) for f in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--release", type=Path)
    parser.add_argument("--scale", default="tiny")
    parser.add_argument("--mice", type=int, default=4)
    parser.add_argument("--versions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dump", type=int, default=1, help="files of each kind to dump and compare (0: none)")
    parser.add_argument("--real-duration-scale", default="",
                        help="also write one passive Multiscope experiment and one behavior-only session at this "
                             "scale (e.g. small) and compare them (instead of the release check)")
    parser.add_argument("--allensdk-python", default=os.environ.get(
        "ALLENSDK_PYTHON", str(Path.home() / ".cache/vbo-allensdk-venv/bin/python")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.real_duration_scale:
        files = _real_duration_files(args.out, args.real_duration_scale, args.seed)
        print(_dump_and_compare(args.allensdk_python, files[0].parent, args.out, files))
        return
    release = args.release or _simulate(args.out, args)
    sessions, experiments = _pick(release)
    report = _run_allensdk(args.allensdk_python, release, args.out, sessions, experiments)
    print(json.dumps(report, indent=1))
    if args.dump:
        from vbo.cache import manifest as mf

        files = [release / mf.behavior_nwb_key(b) for b in sessions.values()][:args.dump * 2]
        files += [release / mf.experiment_nwb_key(e) for e in experiments.values()]
        print(_dump_and_compare(args.allensdk_python, release, args.out, files))


if __name__ == "__main__":
    main()
