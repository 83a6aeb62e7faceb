"""The `vbo` command line: `vbo info` on both reference files, error exits, and the read benchmark."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from vbo.cache.download import DownloadProgress
from vbo.cli import _progress_bar, app

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = REPO / "benchmarks" / "read.py"

runner = CliRunner()


def _truth_dir(nwb: Path) -> Path:
    return nwb.parent / "truth" / nwb.stem


@pytest.fixture(scope="module")
def experiment_truth(experiment_nwb, load_truth):
    return load_truth(_truth_dir(experiment_nwb))


@pytest.fixture(scope="module")
def session_truth(session_nwb, load_truth):
    return load_truth(_truth_dir(session_nwb))


def _info_json(path: Path) -> dict:
    result = runner.invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _expected(truth: dict, path: Path) -> dict:
    """What `vbo info --json` must say, computed from AllenSDK's answers."""
    md = truth["metadata"]
    presentations = truth["stimulus_presentations"]
    omitted = presentations["omitted"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    is_image = presentations["image_name"].notna().to_numpy() & (presentations["image_name"] != "omitted").to_numpy()
    ts = truth["stimulus_timestamps"]
    out = {
        "file": str(path),
        "behavior_session_id": int(md["behavior_session_id"]),
        "session_type": md["session_type"],
        "mouse_id": md["mouse_id"],
        "full_genotype": md["full_genotype"],
        "cre_line": md["cre_line"],
        "equipment_name": md["equipment_name"],
        "date_of_acquisition": md["date_of_acquisition"].isoformat(),
        "stimulus_frames": len(ts),
        "stimulus_duration_s": pytest.approx(float(ts[-1] - ts[0]), abs=1e-9),
        "stimulus_frame_rate_hz": float(md["stimulus_frame_rate"]),
        "trials": len(truth["trials"]),
        "flashes": int(np.count_nonzero(is_image & ~omitted)),
        "omitted_flashes": int(np.count_nonzero(omitted)),
        "licks": len(truth["licks"]),
        "rewards": len(truth["rewards"]),
    }
    if "ophys_timestamps" in truth:
        ots = truth["ophys_timestamps"]
        out.update(
            {
                "kind": "behavior_ophys_experiment",
                "ophys_experiment_id": int(md["ophys_experiment_id"]),
                "ophys_session_id": int(md["ophys_session_id"]),
                "rois": len(truth["cell_specimen_table"]),
                "ophys_frames": len(ots),
                "ophys_frame_rate_hz": float(md["ophys_frame_rate"]),
                "ophys_frame_rate_empirical_hz": pytest.approx(1.0 / np.mean(np.diff(ots)), rel=1e-9),
                "targeted_structure": md["targeted_structure"],
                "imaging_depth_um": int(md["imaging_depth"]),
            }
        )
    else:
        out["kind"] = "behavior_session"
    return out


# --- vbo info on the reference files ------------------------------------------------------------


def test_info_json_experiment_matches_truth(experiment_nwb, experiment_truth):
    got = _info_json(experiment_nwb)
    assert got == _expected(experiment_truth, experiment_nwb)
    # the README's figures for this file, as a cross-check of the truth-derived expectations
    assert got["session_type"] == "OPHYS_1_images_A"
    assert (got["trials"], got["rois"], got["licks"], got["rewards"]) == (29, 120, 177, 13)
    assert (got["flashes"], got["omitted_flashes"]) == (293, 18)
    assert got["ophys_frame_rate_hz"] == 31.0
    assert got["ophys_frame_rate_empirical_hz"] == pytest.approx(31.0, abs=0.01)
    assert (got["targeted_structure"], got["imaging_depth_um"]) == ("VISp", 175)
    assert got["equipment_name"] == "CAM2P.4"


def test_info_json_session_matches_truth(session_nwb, session_truth):
    got = _info_json(session_nwb)
    assert got == _expected(session_truth, session_nwb)
    assert got["session_type"] == "TRAINING_5_images_A_handoff_ready"
    assert (got["trials"], got["licks"], got["rewards"], got["omitted_flashes"]) == (77, 400, 33, 0)
    assert got["equipment_name"] == "BEH.B-Box4"
    # a behavior-only file reports no imaging fields at all
    assert not {"rois", "ophys_experiment_id", "ophys_frame_rate_hz", "imaging_depth_um"} & got.keys()


def test_info_table_experiment(experiment_nwb, experiment_truth):
    result = runner.invoke(app, ["info", str(experiment_nwb)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    md = experiment_truth["metadata"]
    for text in (
        experiment_nwb.name,
        "OPHYS_1_images_A",
        str(md["ophys_experiment_id"]),
        str(md["ophys_session_id"]),
        str(md["behavior_session_id"]),
        md["full_genotype"],  # not folded, even on a narrow captured console
        md["cre_line"],
        "CAM2P.4",
        "VISp",
        "ROIs",
        "omitted flashes",
    ):
        assert text in out, f"{text!r} missing from:\n{out}"
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.splitlines() if line.count("│") == 3}
    assert rows["trials"] == "29"
    assert rows["ROIs"] == "120"
    assert rows["licks"] == "177"
    assert rows["rewards"] == "13"
    assert rows["omitted flashes"] == "18"
    assert rows["imaging depth (µm)"] == "175"
    assert rows["ophys frame rate, metadata (Hz)"] == "31"
    assert rows["ophys frame rate, from timestamps (Hz)"] == "31.0000"


def test_info_table_session(session_nwb):
    result = runner.invoke(app, ["info", str(session_nwb)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "TRAINING_5_images_A_handoff_ready" in out
    assert "behavior_session" in out
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.splitlines() if line.count("│") == 3}
    assert rows["trials"] == "77"
    assert rows["behavior_session_id"] == "1089912433"
    assert "ROIs" not in rows and "imaging area" not in rows


# --- errors ---------------------------------------------------------------------------------------


def test_info_missing_file_exits_2_naming_it(tmp_path):
    missing = tmp_path / "no_such_session.nwb"
    result = runner.invoke(app, ["info", str(missing)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, however long the path
    assert lines[0].startswith("error: ") and str(missing) in lines[0]
    assert "Traceback" not in result.output


def test_info_not_hdf5_exits_2(tmp_path):
    bogus = tmp_path / "notes.nwb"
    bogus.write_text("this is not an HDF5 file\n" * 10)
    result = runner.invoke(app, ["info", str(bogus), "--json"])
    assert result.exit_code == 2
    assert str(bogus) in result.stderr
    assert result.stdout == ""  # nothing half-printed on stdout
    assert "Traceback" not in result.output


def test_info_truncated_file_exits_2(tmp_path, session_nwb):
    partial = tmp_path / "partial_download.nwb"
    partial.write_bytes(session_nwb.read_bytes()[: 1 << 20])
    result = runner.invoke(app, ["info", str(partial)])
    assert result.exit_code == 2
    assert str(partial) in result.stderr
    assert "Traceback" not in result.output


def test_info_hdf5_but_not_visual_behavior_exits_2(tmp_path):
    import h5py

    other = tmp_path / "someone_elses.nwb"
    with h5py.File(other, "w") as f:
        f.create_dataset("identifier", data="123")
    result = runner.invoke(app, ["info", str(other)])
    assert result.exit_code == 2
    assert str(other) in result.stderr
    assert "Traceback" not in result.output


def test_help_lists_info():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "info" in result.stdout


# --- the installed entry points -------------------------------------------------------------------


def test_python_dash_m_vbo(experiment_nwb, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vbo", "info", str(experiment_nwb), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert (got["trials"], got["rois"], got["session_type"]) == (29, 120, "OPHYS_1_images_A")

    missing = tmp_path / "gone.nwb"
    proc = subprocess.run(
        [sys.executable, "-m", "vbo", "info", str(missing)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_script(session_nwb):
    script = Path(sys.executable).with_name("vbo")
    if not script.exists():
        found = shutil.which("vbo")
        if found is None:
            pytest.skip("the `vbo` console script is not installed (pip install -e .)")
        script = Path(found)
    proc = subprocess.run(
        [str(script), "info", str(session_nwb), "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert (got["trials"], got["session_type"]) == (77, "TRAINING_5_images_A_handoff_ready")


def test_one_progress_bar_draws_transfers_and_steps():
    """The command line's one progress bar: byte transfers (the library's DownloadProgress) and counted steps."""
    out = io.StringIO()
    bar, update = _progress_bar("downloading", transfer=True,
                                console=Console(file=out, force_terminal=False, width=100))
    with bar:
        update(DownloadProgress(500, 1000, 1, 2, 1.0, 500.0, 1.0, errors=1))
        update(DownloadProgress(1000, 1000, 2, 2, 2.0, 500.0, 0.0, finished=True, errors=1))
    assert "2/2 files, 1 failed" in out.getvalue()
    out = io.StringIO()
    bar, update = _progress_bar("simulating", console=Console(file=out, force_terminal=False, width=100))
    with bar:
        update(3, 7)
    assert "3/7" in out.getvalue()


def test_importing_the_cli_is_light():
    """`vbo --help` must not pay for h5py/pandas/numpy imports."""
    code = (
        "import sys, vbo.cli; "
        "heavy = sorted(m for m in ('h5py', 'pandas', 'numpy', 'scipy', 'pynwb') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


# --- benchmarks/read.py smoke test ----------------------------------------------------------------


def test_benchmark_smoke(session_nwb):
    """The benchmark script runs end to end on the small behavior file and prints all three readers.

    Bounded: one repeat on a 9.5 MB file; the subprocess is killed (test fails) after 60 s.
    """
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, str(BENCHMARK), str(session_nwb), "--repeat", "1", "--markdown"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.startswith("| measure"))
    for reader in ("vbo", "pynwb", "h5py", "vbo/h5py", "pynwb/h5py", "target"):
        assert f" {reader} " in header
    for measure in ("open + metadata (s)", "first trials (s)", "everything", "peak RSS"):
        assert measure in out
    assert "error in" not in out, out
    everything = next(line for line in out.splitlines() if line.startswith("| everything"))
    cells = [c.strip() for c in everything.strip("|").split("|")]
    assert all(c not in ("", "—") for c in cells[1:6]), everything  # three timings and two ratios


def test_benchmark_every_member_phase(session_nwb):
    """The phase timed against AllenSDK (``--allensdk-python``) reads every member of vbo's API, error-free."""
    proc = subprocess.run([sys.executable, str(BENCHMARK), "--_worker", "vbo", "every", str(session_nwb), "0", ""],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {} and result["every_s"] >= result["open_s"] > 0, result
    import vbo

    with vbo.BehaviorSession.from_nwb_path(session_nwb) as session:  # its 16 members, none skipped
        assert sorted(result["members_read"]) == sorted(session.list_data_attributes_and_methods())
    refused = subprocess.run([sys.executable, str(BENCHMARK), str(session_nwb), "--allensdk-python", "/nonexistent"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "not an executable" in refused.stderr


def test_stream_benchmark_smoke(experiment_nwb):
    """benchmarks/stream.py runs end to end (moto server, proxy, cold and warm vbo) and counts every job's GETs.

    The other tools need the ``bench`` extra; vbo's rows need only the test one. Bounded: a 3 ms link.
    """
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "stream.py"), str(experiment_nwb), "--tools",
                           "vbo,vbo (warm)", "--rtt-ms", "3", "--mb-per-s", "500", "--cell", "0", "--markdown"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith("| job")}
    assert set(rows) == {"open + metadata", "trials + presentations", "dff_traces", "one cell's dF/F"}, proc.stdout
    assert "error" not in proc.stdout, proc.stdout
    opened = rows["open + metadata"]  # job, 2 times, 2 GET counts, 2 MB, 2 targets
    assert int(opened[3]) > 0 and "≤ 10 GETs" in opened[7], opened
    assert all(float(row[1]) > 0 and int(row[3]) >= 0 for row in rows.values()), rows


def test_analysis_modules_are_reachable_from_a_plain_import():
    """`import vbo` stays light; `vbo.population`, `vbo.behavior`, … are imported on first use."""
    code = (
        "import sys, vbo; "
        "before = 'vbo.population' in sys.modules or 'pandas' in sys.modules; "
        "f = vbo.population.cells_table; g = vbo.behavior.pupil_trace; h = vbo.screen.warp; "
        "print(before, 'vbo.population' in sys.modules, vbo.errors.UnknownIdError.__name__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "UnknownIdError"]
