"""`mft compare`: several run or reproduce directories side by side, as compare.md, compare.html and plots/.

The methods x tasks table (one column per input), each method against Ours of the same input on the same
problems (paired.json beside compare.md), and the accuracy per iteration of each input's Ours run.

An input that is a reproduce over several seeds (`mft reproduce --seeds`: seeds.json) is read as its seeds'
mean: its column is each method's mean over the seeds ± the seed-to-seed standard error, and its paired
cell the mean difference over the seeds with its t interval (`report/seeds.py`), as in its own report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mft.methods import LABELS, in_report_order
from mft.report import plots
from mft.report.document import Bullets, Document, Heading, Para, Table, write_document
from mft.report.load import Study, load
from mft.report.paired import cell, paired_json, paired_rows
from mft.report.seeds import is_seeds, load_seeds, mean_cell, mean_over_seeds, mean_rows
from mft.report.series import accuracy_series, ours_run
from mft.report.tables import NA, TABLE_NOTE, column_detail, table_entries, unfinished


@dataclass(frozen=True)
class Input:
    """One input: a run or reproduce directory (seeds: [None]), or a reproduce over several seeds."""

    name: str  # its directory's name (`parent/seed_<s>` for one seed's directory)
    seeded: list[tuple[str | None, Study]]

    @property
    def task(self) -> str:
        return self.seeded[0][1].task

    @property
    def over_seeds(self) -> bool:
        return self.seeded[0][0] is not None


def read_input(path: Path) -> Input:
    resolved = Path(path).resolve()
    name = resolved.name
    if re.fullmatch(r"seed_\d+", name):  # one seed of a reproduce over seeds: say which
        name = f"{resolved.parent.name}/{name}"
    if is_seeds(path):
        return Input(name, [(seed, study) for seed, study in load_seeds(path)])
    return Input(name, [(None, load(Path(path)))])


def column_labels(inputs: list[Input]) -> list[str]:
    """Tasks when every input has its own task (the paper's methods x tasks table), else directory names."""
    tasks = [i.task for i in inputs]
    labels = tasks if len(set(tasks)) == len(tasks) else [i.name for i in inputs]
    out: list[str] = []
    for label in labels:
        unique, n = label, 2
        while unique in out:
            unique, n = f"{label} ({n})", n + 1
        out.append(unique)
    return out


COMPARE_PAIRED_NOTE = (
    "Each row minus Ours of the same input, problem by problem, at that input's last iteration with "
    "per-problem outcomes: the difference in points, its 95% interval and McNemar's exact p-value (see the "
    "report's note). Every iteration is in paired.json, each row with its input."
)


def compare_methods_table(labels: list[str], inputs: list[Input]) -> Table:
    """Rows in the paper's order, a column per input: its number, or its seeds' mean ± seed s.e. (n/a
    where a seed lacks the row)."""
    entries = [[table_entries(study) for _, study in i.seeded] for i in inputs]
    rows = []
    for key in in_report_order(k for per in entries for e in per for k in e):
        label = next(e[key][0] for per in entries for e in per if key in e)
        cells = [
            (per[0][key][1].pct() if key in per[0] else NA) if len(per) == 1 else mean_over_seeds(per, key)
            for per in entries
        ]
        rows.append([label, *cells])
    return Table(["method"] + labels, rows)


def input_rows(label: str, inp: Input) -> list[dict[str, Any]]:
    """paired.json's rows of one input: each with `input`; over seeds, each seed's (with `seed`) and the mean
    rows (`seed`: "mean")."""
    if not inp.over_seeds:
        return [{"input": label, **row} for row in paired_rows(inp.seeded[0][1])]
    rows = [{"seed": seed, **row} for seed, study in inp.seeded for row in paired_rows(study)]
    return [{"input": label, **row} for row in rows + mean_rows(rows, len(inp.seeded))]


def compare_paired_table(rows: list[dict[str, Any]], labels: list[str]) -> Table:
    """A row per method, a column per input: method - Ours at the input's last paired iteration (an input
    over seeds: the mean over its seeds, `seed` "mean")."""
    rows = [r for r in rows if r.get("seed", "mean") == "mean"]
    last: dict[str, int] = {}
    for r in rows:
        last[r["input"]] = max(last.get(r["input"], 0), r["iteration"])
    shown = [r for r in rows if r["iteration"] == last[r["input"]]]
    by = {(r["method"], r["input"]): r for r in shown}
    columns = [label for label in labels if label in last]

    def show(r: dict[str, Any]) -> str:
        return mean_cell(r) if "seed" in r else cell(r)

    body = [
        [str(LABELS.get(key, key))] + [show(by[key, c]) if (key, c) in by else NA for c in columns]
        for key in in_report_order(r["method"] for r in shown)
    ]
    return Table(["method"] + [f"{c} (iteration {last[c]})" for c in columns], body)


def build_compare(inputs: list[Input]) -> Document:
    """The comparison's blocks and plot: the methods x inputs table and each input's Ours accuracy line."""
    labels = column_labels(inputs)
    doc = Document("mft comparison: " + ", ".join(labels))
    b = doc.blocks
    b.append(Heading(1, "Comparison: " + ", ".join(labels)))
    b.append(Para("Written by `mft compare` from the saved files only; no model is loaded or run."))
    b.append(Heading(2, "Accuracy"))
    b.append(compare_methods_table(labels, inputs))
    note = TABLE_NOTE + f" {NA}: the method has no finished run in that input."
    if any(i.over_seeds for i in inputs):
        note += (
            " An input over several seeds shows the mean of its seeds' numbers ± their seed-to-seed standard "
            "error (n/a where a seed has no such row)."
        )
    b.append(Para(note))
    notes = []
    for label, inp in zip(labels, inputs, strict=True):
        seed, first = inp.seeded[0]
        where = f"`{inp.name}`"
        if inp.over_seeds:
            where += f" over seeds {', '.join(str(s) for s, _ in inp.seeded)} (seed {seed}'s settings below)"
        notes.append(column_detail(label, first).replace(f"`{first.name}`", where, 1))
        for s, study in inp.seeded:
            where = label if s is None else f"{label}, seed {s}"
            notes += [f"{where}: {n}" for n in unfinished(study) + study.notes]
    b.append(Bullets(notes))

    rows = [row for label, inp in zip(labels, inputs, strict=True) for row in input_rows(label, inp)]
    if rows:
        doc.data["paired.json"] = paired_json(rows)
        b.append(Heading(2, "Paired differences against Ours"))
        b.append(compare_paired_table(rows, labels))
        paired_note = COMPARE_PAIRED_NOTE
        if any(i.over_seeds for i in inputs):
            paired_note += (
                " An input over several seeds shows the mean of its seeds' differences ± its seed-to-seed "
                "standard error [95% interval from Student's t]; its seeds' own rows are in paired.json."
            )
        b.append(Para(paired_note))

    b.append(Heading(2, "Ours: accuracy per iteration"))
    series, used = [], []
    i = 0
    for label, inp in zip(labels, inputs, strict=True):
        for s, study in inp.seeded:
            name = label if s is None else f"{label}, seed {s}"
            run = ours_run(study)
            if run is None and study.kind == "run":
                run = study.runs[0]
            if run is None:
                used.append(f"{name}: no Ours run (not plotted)")
                continue
            line = name if run.key == "ours" else f"{name}: {run.label}"
            series.append(accuracy_series(study, run, line, plots.colour("", i)))
            used.append(f"{name}: {run.label} (`{run.path.name}`)")
            i += 1
    doc.add_plot(
        "compare_accuracy",
        plots.line_plot(series, "debate accuracy per iteration", "test accuracy, debate (%)"),
        "debate accuracy per iteration of each input's Ours run",
    )
    b.append(
        Para(
            "The debate reading of each input's Ours run after each iteration (an input over several seeds: "
            "each seed's), with ± 1 standard error bars; iteration 0 is that input's base model."
        )
    )
    b.append(Bullets(used))
    return doc


def write_compare(paths: list[Path], out: Path) -> Path:
    """Read each run / reproduce directory (or reproduce over seeds) and write compare.md, compare.html and
    plots/ into OUT."""
    inputs = [read_input(Path(p)) for p in paths]
    return write_document(build_compare(inputs), Path(out), "compare")
