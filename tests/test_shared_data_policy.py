"""Tests needing ../shared/data skip with a reason on a user's machine without it, and fail under CI=true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TARGET = f"{TESTS / 'test_conformance.py'}::test_running_acquisition"


def run_without_shared(ci: str | None, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["VBO_SHARED_DATA"] = str(tmp_path / "nowhere")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", TARGET],
                          capture_output=True, text=True, env=env, cwd=TESTS.parent, timeout=120)


def test_skipped_with_reason_without_ci(tmp_path):
    result = run_without_shared(None, tmp_path)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and "shared test data not found" in result.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_fails_under_ci(tmp_path, ci):
    result = run_without_shared(ci, tmp_path)
    assert result.returncode != 0
    assert "shared test data not found" in result.stdout
