"""`mft compare`: several run or reproduce directories side by side, as compare.md, compare.html and plots/.

The methods x tasks table (one column per input) and the accuracy per iteration of each input's Ours run.
"""

from __future__ import annotations

from pathlib import Path

from mft.report import plots
from mft.report.document import Bullets, Document, Heading, Para, write_document
from mft.report.load import Study, load
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
