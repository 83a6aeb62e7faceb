"""Objects hold no file: any number of live sessions and experiments under a small open-file limit.

Each object borrows its file from the bounded pool of :mod:`vbo.nwb.pool` while it reads a member; the
pool closes the least recently used files and reopens them on demand. The big checks run in a subprocess
whose soft ``RLIMIT_NOFILE`` is 64 (set before vbo is imported, so the pool's bound is derived from it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import h5py
import pandas as pd
import pytest

import vbo
from vbo import errors as E
from vbo.nwb import pool as file_pool
from s3_server import module_proxy, moto_s3, proxy, server  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]
SESSION_NAME = "behavior_session_1089912433.nwb"
EXPERIMENT_NAME = "behavior_ophys_experiment_1091765022.nwb"
LIVE_OBJECTS = 1_000  # at least this many live objects at once
N_SDK_SESSIONS, N_SDK_EXPERIMENTS = 120, 60  # objects on hard links of the shared SDK files
N_STREAMED = 120
BUCKET = "handles"

# Runs in a fresh interpreter: lower the limit first, then import vbo; print a JSON summary.
LIMITED_SCRIPT = r'''
import gc, json, os, random, resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

import h5py, numpy as np, pandas as pd, psutil
import vbo
from vbo.errors import SessionClosedError
from vbo.nwb import pool

args = json.loads(sys.stdin.read())
CLASSES = {"session": vbo.BehaviorSession, "experiment": vbo.BehaviorOphysExperiment}
MEMBERS = {"session": ["metadata", "licks", "rewards", "trials"],
           "experiment": ["metadata", "ophys_timestamps", "motion_correction", "licks"]}

def values_of(path, kind):
    """Reference values of one file, read by an object of its own, not interleaved with others."""
    with CLASSES[kind].from_nwb_path(path) as ref:
        return {name: getattr(ref, name) for name in MEMBERS[kind]}

expected = {}
for path, kind in args["objects"] + [[url, "session"] for url in args["urls"][:1]]:
    if path not in expected:
        expected[path] = values_of(path, kind)

live = [(CLASSES[kind].from_nwb_path(path), path, kind) for path, kind in args["objects"]]
live += [(vbo.BehaviorSession.from_nwb_path(url), url, "session") for url in args["urls"]]
summary = {"bound": pool.max_open_files(), "live": len(live), "files": len(expected)}

def check(obj, path, name):
    value, ref = getattr(obj, name), expected[path][name]
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(value, ref)
    elif isinstance(value, np.ndarray):
        np.testing.assert_array_equal(value, ref)
    else:
        assert value == ref, (path, name)
    if name == "metadata":  # the object reads its own file, not another one's
        assert str(value["ophys_experiment_id" if isinstance(obj, vbo.BehaviorOphysExperiment)
                         else "behavior_session_id"]) in path, (path, value)

jobs = [(obj, path, name) for obj, path, kind in live for name in MEMBERS[kind]]
random.Random(0).shuffle(jobs)  # interleaved: consecutive reads land on different objects and files
max_fds = 0
for i, (obj, path, name) in enumerate(jobs):
    check(obj, path, name)
    if i % 50 == 0:
        max_fds = max(max_fds, len(os.listdir("/proc/self/fd")))
        assert pool.open_files() <= pool.max_open_files()
summary["reads"] = len(jobs)
summary["max_fds"] = max_fds
summary["reopens"] = sum(obj._handle.reopens for obj, _, _ in live)
summary["open_pooled"] = pool.open_files()

# the limit is real: holding the same files open directly fails
held = []
try:
    for p in args["distinct"]:
        held.append(h5py.File(p, "r"))
    summary["direct_open_failed_after"] = None
except OSError as err:
    summary["direct_open_failed_after"] = len(held)
    summary["direct_open_error"] = str(err)
for f in held:
    f.close()
del held

# close() and `with` still work; closing gives the slot back
victim, victim_path, _ = next(item for item in live if item[2] == "session")
victim.close()
try:
    victim.running_speed
    summary["read_after_close"] = "no error"
except SessionClosedError:
    summary["read_after_close"] = "SessionClosedError"
pd.testing.assert_frame_equal(victim.trials, expected[victim_path]["trials"])  # read before close: still there
exp_path = next(path for _, path, kind in live if kind == "experiment")
with vbo.BehaviorOphysExperiment.from_nwb_path(exp_path) as exp:
    np.testing.assert_array_equal(exp.ophys_timestamps, expected[exp_path]["ophys_timestamps"])
try:
    exp.events
    summary["read_after_with"] = "no error"
except SessionClosedError:
    summary["read_after_with"] = "SessionClosedError"

# RSS flat over a loop of open / read / close while the 1,000+ objects stay alive
session_paths = sorted({path for _, path, kind in live if kind == "session" and "://" not in path})

def cycle(i):
    path = session_paths[i % len(session_paths)]
    with vbo.BehaviorSession.from_nwb_path(path) as s:
        pd.testing.assert_frame_equal(s.trials, expected[path]["trials"])
        s.licks, s.rewards, s.metadata
    dropped = vbo.BehaviorSession.from_nwb_path(path)  # never closed: garbage collection gives it back
    dropped.licks

def rss():
    gc.collect()
    return psutil.Process().memory_info().rss

for i in range(20):
    cycle(i)
before = rss()
for i in range(300):
    cycle(i)
summary["rss_growth"] = rss() - before
summary["open_pooled_end"] = pool.open_files()
print(json.dumps(summary))
'''


@pytest.fixture(scope="module")
def many_files(tmp_path_factory, shared_data, tiny_release):
    """Paths of distinct NWB files (the tiny simulated release) and many hard links to the two SDK files."""
    root = tmp_path_factory.mktemp("many")
    linked = []
    for name, kind, count in ((SESSION_NAME, "session", N_SDK_SESSIONS), (EXPERIMENT_NAME, "experiment",
                                                                          N_SDK_EXPERIMENTS)):
        original = root / name
        shutil.copyfile(shared_data / "sdk-files" / name, original)
        for i in range(count):
            link = root / f"{i:04d}_{name}"
            os.link(original, link)
            linked.append([str(link), kind])
    distinct = [[str(p), "experiment" if "ophys_experiment" in p.name else "session"]
                for p in sorted(tiny_release.root.rglob("*.nwb"))]
    return distinct, linked


@pytest.fixture(scope="module")
def streamed_urls(shared_data):
    server = moto_s3()
    server.create_bucket(BUCKET)
    key = f"nwb/{SESSION_NAME}"
    version = server.put_file(BUCKET, key, shared_data / "sdk-files" / SESSION_NAME)
    return [f"{server.endpoint}/{BUCKET}/{key}?versionId={version}"] * N_STREAMED


def test_a_thousand_live_objects_under_a_64_file_limit(many_files, streamed_urls):
    distinct, linked = many_files
    assert len({os.stat(p).st_ino for p, _ in distinct}) == len(distinct) > 64  # really distinct files
    copies = -(-(LIVE_OBJECTS - len(linked) - N_STREAMED) // len(distinct))  # objects per distinct file
    objects = distinct * copies + linked
    args = {"objects": objects, "urls": streamed_urls, "distinct": [p for p, _ in distinct]}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop(file_pool.MAX_OPEN_FILES_ENV, None)
    done = subprocess.run([sys.executable, "-c", LIMITED_SCRIPT], input=json.dumps(args), capture_output=True,
                          text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])

    assert summary["live"] == len(objects) + N_STREAMED >= LIVE_OBJECTS
    assert summary["files"] == len(distinct) + len(linked) + 1
    assert summary["bound"] == 16  # a quarter of the soft limit of 64
    assert summary["max_fds"] <= 64
    assert summary["reads"] == 4 * summary["live"]
    assert summary["reopens"] > summary["live"], "interleaved reads must have reopened evicted files"
    assert summary["open_pooled"] <= summary["bound"]
    # negative control: keeping the distinct files open directly runs out of descriptors
    assert summary["direct_open_failed_after"] is not None and summary["direct_open_failed_after"] < 64
    assert "Too many open files" in summary["direct_open_error"]
    assert summary["read_after_close"] == "SessionClosedError"
    assert summary["read_after_with"] == "SessionClosedError"
    assert summary["rss_growth"] < 40 * 2**20, f"RSS grew {summary['rss_growth'] / 2**20:.1f} MB over 300 cycles"
    assert summary["open_pooled_end"] <= summary["bound"]


# --- in-process checks of the pool's behaviour -------------------------------------------------------------


@pytest.fixture
def small_pool():
    """The process pool shrunk to 2 slots for one test."""
    old = file_pool.max_open_files()
    file_pool.set_max_open_files(2)
    yield file_pool.POOL
    file_pool.set_max_open_files(old)


def test_evicted_files_reopen_transparently(small_pool, session_nwb, experiment_nwb):
    objects = [vbo.BehaviorSession.from_nwb_path(session_nwb) for _ in range(4)]
    objects.append(vbo.BehaviorOphysExperiment.from_nwb_path(experiment_nwb))
    assert len(small_pool) <= 2
    assert sum(o._handle.is_open for o in objects) <= 2
    reference = {type(o): o.trials for o in objects[:1] + objects[-1:]}
    for obj in objects:
        pd.testing.assert_frame_equal(obj.trials, reference[type(obj)])
    # the first four were evicted by later opens and reopened once; the last was read while still open
    assert [o._handle.reopens for o in objects] == [1, 1, 1, 1, 0]
    for obj in objects:
        obj.close()
    assert len(small_pool) == 0


def test_member_reads_pin_the_file(small_pool, session_nwb):
    """A member being read keeps its file open even when other objects open theirs meanwhile."""
    a = vbo.BehaviorSession.from_nwb_path(session_nwb)
    b = vbo.BehaviorSession.from_nwb_path(session_nwb)
    others = []
    with a._reading() as h5_a, b._reading() as h5_b:
        for _ in range(3):  # more than the pool holds
            others.append(vbo.BehaviorSession.from_nwb_path(session_nwb))
        assert h5_a.id.valid and h5_b.id.valid
        # the two pinned files fill the pool: each new file is closed as soon as its object is built
        assert a._handle.is_open and b._handle.is_open and not any(o._handle.is_open for o in others)
    assert len(small_pool) <= 2
    pd.testing.assert_frame_equal(a.licks, others[0].licks)
    for obj in [a, b, *others]:
        obj.close()


def test_threads_share_the_pool(small_pool, session_nwb, experiment_nwb):
    objects = [vbo.BehaviorSession.from_nwb_path(session_nwb) for _ in range(6)]
    objects += [vbo.BehaviorOphysExperiment.from_nwb_path(experiment_nwb) for _ in range(3)]
    expected = {}
    for cls, path in ((vbo.BehaviorSession, session_nwb), (vbo.BehaviorOphysExperiment, experiment_nwb)):
        with cls.from_nwb_path(path) as ref:
            expected[cls] = {"licks": ref.licks, "trials": ref.trials}
            if cls is vbo.BehaviorOphysExperiment:
                expected[cls]["motion_correction"] = ref.motion_correction
    failures: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(len(objects)):
                obj = objects[(i + offset) % len(objects)]
                for name, value in expected[type(obj)].items():
                    pd.testing.assert_frame_equal(getattr(obj, name), value)
        except BaseException as err:  # noqa: BLE001 (reported below)
            failures.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    assert len(small_pool) <= 2


_FORKED_OBJECTS: list = []


def _read_in_child(index: int) -> list:
    obj = _FORKED_OBJECTS[index]
    return [float(obj.running_speed["speed"].sum()), len(obj.trials), os.getpid()]


def test_objects_work_in_forked_workers(small_pool, session_nwb):
    _FORKED_OBJECTS[:] = [vbo.BehaviorSession.from_nwb_path(session_nwb) for _ in range(3)]
    try:
        for obj in _FORKED_OBJECTS:
            obj.metadata  # opened (some evicted) in the parent before the fork
        with ProcessPoolExecutor(max_workers=2, mp_context=get_context("fork")) as workers:
            results = list(workers.map(_read_in_child, range(3)))
        expected = [float(_FORKED_OBJECTS[0].running_speed["speed"].sum()), len(_FORKED_OBJECTS[0].trials)]
        assert all(r[:2] == expected for r in results)
        assert all(r[2] != os.getpid() for r in results)
        for obj in _FORKED_OBJECTS:  # the parent's files still work
            assert obj.licks.shape == _FORKED_OBJECTS[0].licks.shape
    finally:
        for obj in _FORKED_OBJECTS:
            obj.close()
        _FORKED_OBJECTS.clear()


def test_streamed_objects_reopen_the_pinned_version_without_head_requests(small_pool, server, proxy, session_nwb,
                                                                         tmp_path):
    key = "nwb/reopen/behavior_session_1089912433.nwb"
    first = server.put_file(BUCKET, key, session_nwb)
    url = f"{proxy.endpoint}/{BUCKET}/{key}"  # no version in the URL: the one seen at opening is pinned
    streamed = vbo.BehaviorSession.from_nwb_path(url)
    other_file = tmp_path / "other.nwb"
    other_file.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 4096)  # a different object under the same key
    server.put_file(BUCKET, key, other_file)
    locals_ = [vbo.BehaviorSession.from_nwb_path(session_nwb) for _ in range(2)]  # evict the streamed file
    assert not streamed._handle.is_open
    pd.testing.assert_frame_equal(streamed.trials, locals_[0].trials)  # reopened: still the first version
    assert streamed._handle.reopens == 1
    assert not proxy.requests(method="HEAD", match=key), "opening and reopening make no HeadObject request"
    gets = [g.path for g in proxy.requests(method="GET", match=key)]
    unpinned = [i for i, g in enumerate(gets) if f"versionId={first}" not in g]
    # only the first opening's ranged GETs (first block and tail, in parallel) name no version; every later
    # request, the reopening's included, is pinned to the version seen then
    assert len(unpinned) <= 2 and unpinned == list(range(len(unpinned))), gets
    for obj in [streamed, *locals_]:
        obj.close()


def test_a_file_changed_on_disk_is_not_read_silently(small_pool, session_nwb, tmp_path):
    path = tmp_path / SESSION_NAME
    shutil.copyfile(session_nwb, path)
    obj = vbo.BehaviorSession.from_nwb_path(path)
    others = [vbo.BehaviorSession.from_nwb_path(session_nwb) for _ in range(2)]  # evict obj's file
    assert not obj._handle.is_open
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(E.FileChangedError) as info:
        obj.licks
    assert isinstance(info.value, E.NwbFileError) and str(path) in str(info.value)
    path.unlink()
    with pytest.raises(E.NwbFileNotFoundError):
        obj.licks
    for o in others + [obj]:
        o.close()


def test_user_supplied_files_are_kept_and_not_pooled(small_pool, session_nwb):
    h5 = h5py.File(session_nwb, "r")
    with open(session_nwb, "rb") as fileobj:
        from_h5 = vbo.BehaviorSession.from_nwb(h5)
        from_fileobj = vbo.BehaviorSession.from_nwb_path(fileobj)
        assert len(small_pool) == 0
        pooled = [vbo.BehaviorSession.from_nwb_path(session_nwb) for _ in range(3)]
        assert from_h5._handle.is_open and from_fileobj._handle.is_open
        pd.testing.assert_frame_equal(from_h5.trials, pooled[0].trials)
        pd.testing.assert_frame_equal(from_fileobj.trials, pooled[0].trials)
        from_fileobj.close()
        assert not fileobj.closed  # the caller's file object stays the caller's
    from_h5.close()
    assert not h5.id.valid  # close() closes an h5py.File given to from_nwb, as before
    for obj in pooled:
        obj.close()


def test_finaliser_never_waits_for_the_pool(small_pool, session_nwb):
    """``__del__`` may run inside another thread's HDF5 call while that thread holds the pool's lock:
    it must not wait (a deadlock), the file is closed at the pool's next use instead."""
    dropped = vbo.BehaviorSession.from_nwb_path(session_nwb)
    other = vbo.BehaviorSession.from_nwb_path(session_nwb)
    handle = dropped._handle
    locked, release = threading.Event(), threading.Event()

    def hold_lock():
        with small_pool._lock:
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait(10)
    finaliser = threading.Thread(target=dropped.__del__)
    finaliser.start()
    finaliser.join(5)
    finished_while_locked = not finaliser.is_alive()
    release.set()
    holder.join()
    assert finished_while_locked, "__del__ waited for the pool's lock"
    assert not handle.closed  # deferred
    other.licks  # the pool's next use closes it
    assert handle.closed and not handle.is_open
    other.close()


def test_default_bound_follows_the_open_file_limit(monkeypatch):
    import resource

    monkeypatch.delenv(file_pool.MAX_OPEN_FILES_ENV, raising=False)
    for soft, bound in ((64, 16), (256, 64), (1024, 128), (8, 4)):
        monkeypatch.setattr(resource, "getrlimit", lambda _: (soft, 1 << 20))
        assert file_pool.default_max_open_files() == bound
    monkeypatch.setenv(file_pool.MAX_OPEN_FILES_ENV, "7")
    assert file_pool.default_max_open_files() == 7
    with pytest.raises(ValueError):
        file_pool.set_max_open_files(0)


# Opens a session on argv[1] (a streamed URL, or a local path read through a file object), then leaves it
# referenced by a daemon thread: the file is still open when the interpreter exits.
LEFT_OPEN_SCRIPT = r'''
import sys, threading, time
import vbo
target = sys.argv[1] if sys.argv[2] == "url" else open(sys.argv[1], "rb")
session = vbo.BehaviorSession.from_nwb_path(target)
session.trials
threading.Thread(target=lambda kept=session: time.sleep(600), daemon=True).start()
print("read", flush=True)
'''


@pytest.mark.parametrize("kind", ["url", "file object"])
def test_a_session_left_open_at_exit_does_not_crash_the_interpreter(kind, server, proxy, session_nwb, tmp_path):
    """HDF5 closes files left open from its own exit handler, after Python is gone; for a file read through a
    Python file object (every streamed file) that crashed the process (SIGSEGV). vbo closes them first."""
    target = str(session_nwb)
    if kind == "url":
        key = "nwb/left-open/behavior_session_1089912433.nwb"
        server.put_file(BUCKET, key, session_nwb)
        target = f"{proxy.endpoint}/{BUCKET}/{key}"
    done = subprocess.run([sys.executable, "-c", LEFT_OPEN_SCRIPT, target, kind], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, VBO_BLOCK_DIGESTS=str(tmp_path / "digests")))
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "read"
