"""Shared fixtures: where the read-only ../shared/data lives, and the AllenSDK reference files in it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VBO_SHARED_DATA", REPO.parent / "shared" / "data"))
SDK_FILES = SHARED_DATA / "sdk-files"
EXPERIMENT_NWB = SDK_FILES / "behavior_ophys_experiment_1091765022.nwb"
SESSION_NWB = SDK_FILES / "behavior_session_1089912433.nwb"


def _require_shared() -> Path:
    if SDK_FILES.is_dir():
        return SHARED_DATA
    message = (
        f"shared test data not found at {SHARED_DATA} "
        "(set VBO_SHARED_DATA to the folder holding sdk-files/ and release-tables/)"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; skipped on a user's machine without it, failing under CI=true."""
    return _require_shared()


@pytest.fixture(scope="session")
def experiment_nwb(shared_data) -> Path:
    return EXPERIMENT_NWB


@pytest.fixture(scope="session")
def session_nwb(shared_data) -> Path:
    return SESSION_NWB


@pytest.fixture(scope="session")
def load_truth(shared_data):
    """The ``load_truth(folder)`` function shipped beside the SDK files."""
    sys.path.insert(0, str(SDK_FILES))
    try:
        from load_truth import load_truth as _load
    finally:
        sys.path.remove(str(SDK_FILES))
    return _load


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory):
    """A tiny synthetic release (4 mice, two manifest versions), simulated once per test session."""
    from vbo.simulate import simulate

    return simulate(tmp_path_factory.mktemp("release"), seed=7, scale="tiny", versions=2)


@pytest.fixture(scope="session")
def tiny_cache(tiny_release):
    """The tiny release opened as a mirrored bucket: a static ``VisualBehaviorOphysProjectCache``."""
    import warnings

    from vbo.cache.project import VisualBehaviorOphysProjectCache

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK-compatible reminder about stimulus blocks
        return VisualBehaviorOphysProjectCache.from_local_cache(tiny_release.root, use_static_cache=True)


def pytest_terminal_summary(terminalreporter):
    """Print the adversarial-input tables (cases, typed errors, raw errors, wrong answers) when any ran."""
    try:
        from adversarial_report import TABLES, format_tables
    except ImportError:  # pragma: no cover - the module sits beside this file
        return
    if TABLES:
        terminalreporter.section("malformed input: cases / typed errors / raw errors / wrong answers")
        for line in format_tables():
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True, scope="session")
def _block_digests_in_a_temporary_folder(tmp_path_factory):
    """Streamed reads record block digests (vbo.source.digests.BlockDigests): keep them out of the user's home."""
    previous = os.environ.get("VBO_BLOCK_DIGESTS")
    os.environ["VBO_BLOCK_DIGESTS"] = str(tmp_path_factory.mktemp("block-digests"))
    yield
    if previous is None:
        os.environ.pop("VBO_BLOCK_DIGESTS", None)
    else:
        os.environ["VBO_BLOCK_DIGESTS"] = previous
