"""Collects the outcome of every adversarial case (``conftest.py`` prints the tables at the end of the run), and
runs a case's call with a bound on its time."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Outcome:
    """What reading one malformed input gave: typed errors, raw errors, wrong answers, correct values."""

    case: str
    typed: list[str] = field(default_factory=list)  # "member: ErrorClass"
    raw: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    correct: int = 0


TABLES: dict[str, list[Outcome]] = {}


def record(table: str, outcome: Outcome) -> None:
    """Add one case's outcome to the named table (replacing an earlier run of the same case)."""
    rows = TABLES.setdefault(table, [])
    rows[:] = [r for r in rows if r.case != outcome.case] + [outcome]


def _cell(items: list[str], width: int) -> str:
    text = ", ".join(sorted(set(items))) if items else "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def format_tables() -> list[str]:
    """The tables as text lines: one row per case, totals at the end of each table."""
    lines: list[str] = []
    for name, rows in TABLES.items():
        lines.append(f"{name}: {len(rows)} cases")
        lines.append(f"  {'case':42s} {'ok':>3s}  {'typed errors':60s} {'raw':>4s} {'wrong':>5s}")
        for r in rows:
            lines.append(f"  {r.case[:42]:42s} {r.correct:3d}  {_cell(r.typed, 60):60s} {len(r.raw):4d} "
                         f"{len(r.wrong):5d}")
            lines += [f"      RAW   {x}" for x in r.raw] + [f"      WRONG {x}" for x in r.wrong]
        totals = [sum(len(r.typed) for r in rows), sum(len(r.raw) for r in rows), sum(len(r.wrong) for r in rows)]
        lines.append(f"  total: {totals[0]} typed errors, {totals[1]} raw errors, {totals[2]} wrong answers")
    return lines


def finish_within(call: Callable[[], Any], seconds: float, what: str) -> Any:
    """``call()`` in a thread: its result, or the exception it raised; fail (not hang) when it takes longer than
    ``seconds`` (``what`` names the call in the failure)."""
    box: list = []

    def run():
        try:
            box.append(call())
        except BaseException as err:
            box.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{what} did not finish in {seconds} s"
    return box[0]
