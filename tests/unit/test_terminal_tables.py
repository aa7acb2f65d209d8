"""The tables the commands print fit an 80-column terminal: the title on a line of its own, the header row
on one line, no line wider than the terminal (the demo's table used to wrap its title into three centred
fragments over a narrow table)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from mft.cli.commands import reproduce_title, results_table
from mft.methods import LABELS
from mft.report import load, methods_table

FIXTURES = Path(__file__).parent.parent / "fixtures" / "report"


def _render(renderable: object) -> list[str]:
    console = Console(width=80, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_the_demo_table_fits_80_columns() -> None:
    study = load(FIXTURES / "arithmetic")  # a `mft reproduce` directory, as `make demo` writes
    table = methods_table([(study.task, study)])
    # every row a method can have, so the widest label is in it
    rows = table.rows + [[label, "100.0% ± 0.0"] for label in LABELS.values()]
    lines = _render(results_table(reproduce_title("arithmetic"), table.header, rows))
    assert all(len(line) <= 80 for line in lines)
    assert lines[0] == reproduce_title("arithmetic")  # the whole title, on one line
    header = next(line for line in lines if "method" in line)
    assert all(col in header for col in table.header)
    body = "\n".join(lines)
    assert all(label in body for label in LABELS.values())  # no label broken over two lines


def test_the_run_and_debate_tables_fit_80_columns() -> None:
    run_title = "arithmetic-toy: test accuracy of the society's debate per iteration"
    header = ["iteration", "single agent", "majority", "debate"]
    rows = [["base", "39.9% ± 1.4", "48.2% ± 2.2", "65.8% ± 2.1"], ["3"] + ["100.0% ± 0.0"] * 3]
    lines = _render(results_table(run_title, header, rows, first_left=False))
    assert lines[0] == run_title and all(len(line) <= 80 for line in lines)
    assert all(col in next(line for line in lines[1:] if "iteration" in line) for col in header)
    title = "arithmetic / test: 500 problems, 3 agents x 2 rounds"
    rows = [["single agent (round 1, mean over agents)", "39.9% ± 1.4"]]
    lines = _render(results_table(title, ["method", "accuracy (± s.e.)"], rows))
    assert lines[0] == title and all(len(line) <= 80 for line in lines)
