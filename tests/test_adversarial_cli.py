"""Bad arguments and malformed inputs for every `vbo` command: one red line on stderr, non-zero exit, no traceback.

Table-driven over all seven commands; only failures that happen before any network access are used, so
the cases run offline. Each case is recorded in the terminal summary table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
from adversarial_report import Outcome, record
from test_adversarial_files import _external_link, _fifo, _ragged_index, _swap_two, path_builder
from test_adversarial_files import malformed_copy as _copy
from typer.testing import CliRunner

from vbo.cli import app

runner = CliRunner()
STIMULUS_TIMES = "processing/stimulus/timestamps/timestamps"  # read by `vbo info`


_file = path_builder("a_file", lambda path: path.write_text("not a folder\n"))
_text = path_builder("notes.nwb", lambda path: path.write_text("text\n" * 50))


# (case, args builder(tmp, session_nwb) -> argv, text the error line must contain)
CASES: list[tuple[str, Callable[[Path, Path], list[str]], str]] = [
    ("info: missing file", lambda t, s: ["info", str(t / "gone.nwb")], "no such file"),
    ("info: directory", lambda t, s: ["info", str(t)], "directory"),
    ("info: FIFO", lambda t, s: ["info", str(_fifo(t))], "FIFO"),
    ("info: character device", lambda t, s: ["info", "/dev/null"], "character device"),
    ("info: text file", lambda t, s: ["info", str(_text(t)), "--json"], "not an HDF5 file"),
    ("info: decreasing lick index", lambda t, s: ["info", str(_copy(s, t, _ragged_index(_swap_two)))],
     "lick_times_index"),
    ("info: external link", lambda t, s: ["info", str(_copy(s, t, _external_link(STIMULUS_TIMES, "/secret")))],
     STIMULUS_TIMES),
    ("info: external link at a required group",
     lambda t, s: ["info", str(_copy(s, t, _external_link("general/metadata", "/meta")))], "external link"),
    ("info: no path", lambda t, s: ["info"], "Missing argument"),
    ("info: unknown option", lambda t, s: ["info", str(s), "--colour"], "No such option"),
    ("unknown command", lambda t, s: ["inspect", str(s)], "No such command"),
    ("simulate: unknown scale", lambda t, s: ["simulate", str(t / "r"), "--scale", "huge"], "unknown scale"),
    ("simulate: seed not a number", lambda t, s: ["simulate", str(t / "r"), "--seed", "abc"], "--seed"),
    ("simulate: ten versions", lambda t, s: ["simulate", str(t / "r"), "--versions", "10"], "versions"),
    ("simulate: negative mice", lambda t, s: ["simulate", str(t / "r"), "--mice", "-3"], "mice"),
    ("simulate: no mice", lambda t, s: ["simulate", str(t / "r"), "--mice", "0"], "--mice"),
    ("simulate: no workers", lambda t, s: ["simulate", str(t / "r"), "--workers", "0"], "--workers"),
    ("simulate: folder is a file", lambda t, s: ["simulate", str(_file(t))], "a_file"),
    ("demo: cache folder is a file", lambda t, s: ["demo", "--cache-dir", str(_file(t)), "--out-dir", str(t / "o")],
     "a_file"),
    ("download: nothing named", lambda t, s: ["download", str(t)], "--experiments"),
    ("download: superscript id", lambda t, s: ["download", str(t), "--experiments", "²"], "²"),
    ("download: text id", lambda t, s: ["download", str(t), "--sessions", "1,abc"], "abc"),
    ("download: huge id", lambda t, s: ["download", str(t), "--sessions", "9" * 5000], "digits"),
    ("download: no workers", lambda t, s: ["download", str(t), "--all", "--workers", "0"], "--workers"),
    ("verify: empty folder offline", lambda t, s: ["verify", str(t), "--offline"], "manifest"),
    ("verify: a file offline", lambda t, s: ["verify", str(_file(t)), "--offline"], "a_file"),
    ("cell: superscript id", lambda t, s: ["cell", str(t), "²"], "²"),
    ("cell: two ids", lambda t, s: ["cell", str(t), "1,2"], "one cell_specimen_id"),
    ("cell: empty folder offline", lambda t, s: ["cell", str(t), "5", "--offline"], "manifest"),
    ("cell: empty folder static", lambda t, s: ["cell", str(t), "5", "--static"], "manifests"),
    ("publish: target not s3", lambda t, s: ["publish", str(t), "bucket"], "s3://BUCKET"),
    ("publish: no release folder", lambda t, s: ["publish", str(t / "none"), "s3://b"], "not a folder"),
]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX special files")
@pytest.mark.parametrize("name,argv,text", CASES, ids=[c[0] for c in CASES])
def test_command_fails_with_one_red_line(name, argv, text, tmp_path, session_nwb):
    result = runner.invoke(app, argv(tmp_path, session_nwb))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    outcome = Outcome(name)
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    if escaped or "Traceback" in result.output:
        outcome.raw.append(f"{type(result.exception).__name__}: {result.exception}")
    elif result.exit_code == 0 or len(errors) != 1 or text not in errors[0]:
        outcome.wrong.append(f"exit {result.exit_code}, stderr {result.stderr!r:.300}")
    else:
        outcome.typed.append(f"exit {result.exit_code}")
    record("CLI commands (one red line, non-zero exit)", outcome)
    assert not outcome.raw and not outcome.wrong, outcome.raw + outcome.wrong
    assert result.exit_code in (1, 2)
    assert errors[0] == lines[-1], "the error is the last line"


def test_no_arguments_shows_help_and_fails(tmp_path):
    result = runner.invoke(app, [])
    assert result.exit_code == 2
    assert "info" in result.output and "Traceback" not in result.output


def test_traceback_on_request(monkeypatch, session_nwb):
    """Unexpected errors are one line too, unless VBO_TRACEBACK=1 asks for the traceback."""
    import vbo.cli as cli

    def broken(*args, **kwargs):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(cli, "summarize", broken)
    path = session_nwb
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 1 and "unexpected ZeroDivisionError: planted" in result.stderr
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    result = runner.invoke(app, ["info", str(path)])
    assert isinstance(result.exception, ZeroDivisionError)
