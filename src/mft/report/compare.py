"""`mft compare`: several run or reproduce directories side by side, as compare.md, compare.html and plots/.

The methods x tasks table (one column per input), each method against Ours of the same input on the same
problems (paired.json beside compare.md), and the accuracy per iteration of each input's Ours run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mft.methods import LABELS, in_report_order
from mft.report import plots
from mft.report.document import Bullets, Document, Heading, Para, Table, write_document
from mft.report.load import Study, load
from mft.report.paired import cell, paired_json, paired_rows
from mft.report.series import accuracy_series, ours_run
from mft.report.tables import NA, TABLE_NOTE, column_detail, methods_table, unfinished


def column_labels(studies: list[Study]) -> list[str]:
    """Tasks when every input has its own task (the paper's methods x tasks table), else directory names."""
    tasks = [s.task for s in studies]
    labels = tasks if len(set(tasks)) == len(tasks) else [s.name for s in studies]
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


def compare_paired_table(rows: list[dict[str, Any]], labels: list[str]) -> Table:
    """A row per method, a column per input: method - Ours at the input's last paired iteration."""
    last: dict[str, int] = {}
    for r in rows:
        last[r["input"]] = max(last.get(r["input"], 0), r["iteration"])
    shown = [r for r in rows if r["iteration"] == last[r["input"]]]
    by = {(r["method"], r["input"]): r for r in shown}
    columns = [label for label in labels if label in last]
    body = [
        [str(LABELS.get(key, key))] + [cell(by[key, c]) if (key, c) in by else NA for c in columns]
        for key in in_report_order(r["method"] for r in shown)
    ]
    return Table(["method"] + [f"{c} (iteration {last[c]})" for c in columns], body)


def build_compare(studies: list[Study]) -> Document:
    """The comparison's blocks and plot: the methods x inputs table and each input's Ours accuracy line."""
    labels = column_labels(studies)
    doc = Document("mft comparison: " + ", ".join(labels))
    b = doc.blocks
    b.append(Heading(1, "Comparison: " + ", ".join(labels)))
    b.append(Para("Written by `mft compare` from the saved files only; no model is loaded or run."))
    b.append(Heading(2, "Accuracy"))
    b.append(methods_table(list(zip(labels, studies, strict=True))))
    b.append(Para(TABLE_NOTE + f" {NA}: the method has no finished run in that input."))
    notes = [column_detail(label, s) for label, s in zip(labels, studies, strict=True)]
    for label, s in zip(labels, studies, strict=True):
        notes += [f"{label}: {n}" for n in unfinished(s) + s.notes]
    b.append(Bullets(notes))

    pairs = zip(labels, studies, strict=True)
    rows = [{"input": label, **row} for label, s in pairs for row in paired_rows(s)]
    if rows:
        doc.data["paired.json"] = paired_json(rows)
        b.append(Heading(2, "Paired differences against Ours"))
        b.append(compare_paired_table(rows, labels))
        b.append(Para(COMPARE_PAIRED_NOTE))

    b.append(Heading(2, "Ours: accuracy per iteration"))
    series, used = [], []
    for i, (label, s) in enumerate(zip(labels, studies, strict=True)):
        run = ours_run(s)
        if run is None and s.kind == "run":
            run = s.runs[0]
        if run is None:
            used.append(f"{label}: no Ours run (not plotted)")
            continue
        name = label if run.key == "ours" else f"{label}: {run.label}"
        series.append(accuracy_series(s, run, name, plots.colour("", i)))
        used.append(f"{label}: {run.label} (`{run.path.name}`)")
    doc.add_plot(
        "compare_accuracy",
        plots.line_plot(series, "debate accuracy per iteration", "test accuracy, debate (%)"),
        "debate accuracy per iteration of each input's Ours run",
    )
    b.append(
        Para(
            "The debate reading of each input's Ours run after each iteration, with ± 1 standard error bars; "
            "iteration 0 is that input's base model."
        )
    )
    b.append(Bullets(used))
    return doc


def write_compare(paths: list[Path], out: Path) -> Path:
    """Read each run / reproduce directory and write compare.md, compare.html and plots/ into OUT."""
    studies = [load(Path(p)) for p in paths]
    return write_document(build_compare(studies), Path(out), "compare")
