"""Compose the report and the comparison from loaded studies: tables, plots, text.

`build_report` / `build_compare` return the document blocks and the PNG bytes of its plots; `write_report` /
`write_compare` write them (Markdown, self-contained HTML, plots/*.png), each file through a temp name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mft.errors import MftError
from mft.report import plots
from mft.report.document import (
    Block,
    Bullets,
    Heading,
    Image,
    Para,
    Table,
    to_html,
    to_markdown,
    write_atomic,
)
from mft.report.load import (
    DIVERSITY_METRICS,
    LABELS,
    METHOD_ORDER,
    READINGS,
    Estimate,
    Iteration,
    Run,
    Study,
    load,
)

NA = "n/a"
DIVERSITY_LABELS = {
    "agreement": "agreement",
    "consensus_rate": "consensus rate",
    "embedding_dissimilarity": "embedding dissimilarity",
    "cross_nll": "cross NLL",
    "kl": "KL",
}
STAGE_ORDER = ("debate", "build_data", "finetune", "eval")
# The run whose datasets get a bar chart: the paper's method first.
_OURS_PREFERENCE = ("ours", "ours_no_summary", "ours_no_critic")

TABLE_NOTE = (
    "Test accuracy in % (mean ± standard error). Base, Majority and Debate are iteration 0, the base model "
    "before any finetuning: one agent's first answer (mean over the agents), the majority vote of the N "
    "agents' independent first answers, and their debate. Every finetuned method is scored by the same "
    "inference harness, N agents x M rounds of debate with the majority vote of the last round: its number "
    "is that debate reading after its last iteration."
)


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)
    plots: dict[str, bytes] = field(default_factory=dict)  # "plots/x.png" -> PNG bytes

    def add_plot(self, name: str, png: bytes, alt: str) -> None:
        path = f"plots/{name}.png"
        self.plots[path] = png
        self.blocks.append(Image(path, alt))


# -- the methods x tasks table ------------------------------------------------------------------------------
def table_entries(study: Study) -> dict[str, tuple[str, Estimate]]:
    """Row key -> (label, estimate) for one study: the iteration-0 readings, then each method's last."""
    out: dict[str, tuple[str, Estimate]] = {}
    if study.base is not None:
        for key, reading in zip(("base", "majority", "debate"), READINGS, strict=True):
            out[key] = (LABELS[key], study.base.accuracy[reading])
    for run in study.runs:
        if run.last is not None:
            out[run.key] = (run.label, run.last.accuracy["debate"])
    return out


def methods_table(columns: list[tuple[str, Study]]) -> Table:
    """Rows in the paper's order (unknown method keys after, as first seen); a column per study."""
    entries = [table_entries(s) for _, s in columns]
    seen = list(dict.fromkeys(k for e in entries for k in e))
    order = [k for k in METHOD_ORDER if k in seen] + [k for k in seen if k not in METHOD_ORDER]
    rows = []
    for key in order:
        label = next(e[key][0] for e in entries if key in e)
        rows.append([label] + [e[key][1].pct() if key in e else NA for e in entries])
    return Table(["method"] + [c for c, _ in columns], rows)


def column_detail(column: str, study: Study) -> str:
    """One line saying what a column's numbers are: harness, problems, which iterations."""
    parts = [f"{column}: {study.kind} directory `{study.name}`, task `{study.task}`"]
    ref = study.base_from or study.runs[0]
    harness = ref.harness
    problems = study.base.problems if study.base is not None else None
    parts.append(f"{harness}" + (f", {problems} test problems" if problems else ""))
    if study.base_from is not None:
        parts.append(f"Base / Majority / Debate from the {study.base_from.label} run's iteration 0")
    done = []
    for run in study.runs:
        if run.last is None:
            continue
        text = f"{run.label} {run.last.k}" + (f" of {run.planned}" if run.last.k < run.planned else "")
        if run.harness != harness:
            text += f" ({run.harness})"
        done.append(text)
    if done:
        parts.append("after iteration " + ", ".join(done))
    return "; ".join(parts)


def _unfinished(study: Study) -> list[str]:
    return [
        f"{r.label}: no finetuned iteration has finished yet (omitted from the table)"
        for r in study.runs
        if r.last is None
    ]


# -- per-method details -------------------------------------------------------------------------------------
def _iter_label(k: int) -> str:
    return "0 (base)" if k == 0 else str(k)


def detail_table(run: Run) -> Table:
    metrics = [m for m in DIVERSITY_METRICS if any(m in it.diversity for it in run.iterations.values())]
    header = ["iteration", "single", "majority", "debate", "problems"] + [
        DIVERSITY_LABELS[m] for m in metrics
    ]
    rows = []
    for k, it in run.iterations.items():
        row = [_iter_label(k)] + [it.accuracy[r].pct() for r in READINGS]
        row.append(str(it.problems) if it.problems is not None else NA)
        row += [it.diversity[m].plain() if m in it.diversity else NA for m in metrics]
        rows.append(row)
    return Table(header, rows)


def _agent_order(name: str) -> tuple[int, int, str]:
    m = re.fullmatch(r"(gen|critic)_(\d+)", name)
    if m:
        return (0 if m.group(1) == "gen" else 1, int(m.group(2)), name)
    return (2, 0, name)


def sizes_table(run: Run) -> tuple[Table, list[str]] | None:
    """Examples per agent per iteration, and notes saying what the extra numbers in a cell are."""
    its = [it for it in run.iterations.values() if it.sizes]
    if not its:
        return None
    agents = sorted({a for it in its for a in it.sizes or {}}, key=_agent_order)
    notes: dict[str, str] = {}
    rows = []
    for it in its:
        row = [str(it.k)]
        for agent in agents:
            entry = (it.sizes or {}).get(agent)
            if entry is None:
                row.append(NA)
                continue
            extra = [k for k in entry if k != "examples"]
            cell = str(entry["examples"])
            if extra:
                cell += " (" + " / ".join(str(entry[k]) for k in extra) + ")"
                role = re.sub(r"_\d+$", "_n", agent)
                notes.setdefault(role, f"`{role}` cells: examples, then in parentheses " + " / ".join(extra))
            row.append(cell)
        rows.append(row)
    return Table(["iteration"] + agents, rows), list(notes.values())


def _timing_stages(run: Run) -> tuple[dict[int, dict[str, float]], list[str]]:
    per: dict[int, dict[str, float]] = {}
    for key, seconds in run.timings.items():
        m = re.fullmatch(r"iter_(\d+)/(.+)", key)
        if m:
            per.setdefault(int(m.group(1)), {})[m.group(2)] = seconds
    found = {s for stages in per.values() for s in stages}
    order = [s for s in STAGE_ORDER if s in found] + sorted(found - set(STAGE_ORDER))
    return dict(sorted(per.items())), order


def cost_table(run: Run) -> Table:
    per, stages = _timing_stages(run)
    ks = sorted(set(per) | set(run.iterations))
    header = ["iteration", "generated tokens (eval)"] + [f"{s} (s)" for s in stages] + ["total (s)"]
    rows = []
    tokens_total = 0
    stage_totals = dict.fromkeys(stages, 0.0)
    for k in ks:
        it = run.iterations.get(k)
        tokens = it.generated_tokens if it is not None else None
        tokens_total += tokens or 0
        row = [_iter_label(k), f"{tokens:,}" if tokens is not None else NA]
        for s in stages:
            value = per.get(k, {}).get(s)
            stage_totals[s] += value or 0.0
            row.append(f"{value:.1f}" if value is not None else "-")
        row.append(f"{sum(per.get(k, {}).values()):.1f}" if k in per else NA)
        rows.append(row)
    any_tokens = any(it.generated_tokens is not None for it in run.iterations.values())
    rows.append(
        ["total", f"{tokens_total:,}" if any_tokens else NA]
        + [f"{stage_totals[s]:.1f}" for s in stages]
        + [f"{sum(stage_totals.values()):.1f}" if per else NA]
    )
    return Table(header, rows)


# -- plots --------------------------------------------------------------------------------------------------
def _with_base(run: Run, study: Study) -> dict[int, Iteration]:
    """The run's iterations, with the shared iteration 0 filled in where the run has none."""
    its = dict(run.iterations)
    if 0 not in its and study.base is not None:
        its[0] = study.base
    return dict(sorted(its.items()))


def accuracy_series(study: Study, run: Run, label: str, colour: str) -> plots.Series:
    its = _with_base(run, study)
    acc = [it.accuracy["debate"] for it in its.values()]
    return plots.Series(label, list(its), [100 * a.mean for a in acc], [100 * a.err for a in acc], colour)


def _harness_text(study: Study) -> str:
    return (study.base_from or study.runs[0]).harness


# -- the report ---------------------------------------------------------------------------------------------
def build_report(study: Study) -> Document:
    doc = Document(f"mft report: {study.name}")
    b = doc.blocks
    b.append(Heading(1, f"Report: {study.name}"))
    if study.kind == "run":
        run = study.runs[0]
        intro = (
            f"Run directory `{study.name}`: method {run.label} (`{run.config.get('method') or 'ours'}`, "
            f"summarize {str(bool(run.config.get('summarize'))).lower()}) on task `{study.task}`, "
            f"{run.harness}, model `{run.config.get('model', '?')}`; "
            f"{len([k for k in run.iterations if k >= 1])} of {run.planned} iterations evaluated."
        )
    else:
        intro = (
            f"Reproduce directory `{study.name}` on task `{study.task}`: "
            + ", ".join(f"{r.label} (`{r.path.name}/`)" for r in study.runs)
            + "."
        )
    b.append(Para(intro))
    b.append(Para("Written by `mft report` from the saved files only; no model is loaded or run."))

    b.append(Heading(2, "Accuracy"))
    b.append(methods_table([(study.task, study)]))
    b.append(Para(TABLE_NOTE))
    notes = [column_detail(study.task, study)] + _unfinished(study) + study.notes
    b.append(Bullets(notes))

    b.append(Heading(2, "Accuracy per iteration"))
    series = [accuracy_series(study, r, r.label, plots.colour(r.key, i)) for i, r in enumerate(study.runs)]
    doc.add_plot(
        "accuracy",
        plots.line_plot(series, f"{study.task}: debate accuracy per iteration", "test accuracy, debate (%)"),
        "debate accuracy per iteration",
    )
    b.append(
        Para(
            f"The debate reading ({_harness_text(study)}, majority of the last round) after each iteration, "
            "with ± 1 standard error bars; iteration 0 is the shared base model."
        )
    )

    b.append(Heading(2, "Diversity per iteration"))
    metrics = [
        m
        for m in DIVERSITY_METRICS
        if any(m in it.diversity for r in study.runs for it in r.iterations.values())
    ]
    if not metrics:
        b.append(Para("No `iter_<k>/diversity.json` files were found."))
    for m in metrics:
        series = []
        for i, r in enumerate(study.runs):
            if not any(m in it.diversity for it in r.iterations.values()):
                continue  # a run without its own measurements gets no line (not even the shared base)
            its = {k: it.diversity[m] for k, it in _with_base(r, study).items() if m in it.diversity}
            if its:
                series.append(
                    plots.Series(
                        r.label,
                        list(its),
                        [e.mean for e in its.values()],
                        [e.err for e in its.values()],
                        plots.colour(r.key, i),
                    )
                )
        name = DIVERSITY_LABELS[m]
        b.append(Heading(3, name[0].upper() + name[1:]))
        doc.add_plot(
            f"diversity_{m}",
            plots.line_plot(series, f"{study.task}: {name} per iteration", name),
            f"{name} per iteration",
        )
    if metrics:
        b.append(
            Para(
                "Means over the evaluated problems with ± 1 standard error bars (`iter_<k>/diversity.json`)."
            )
        )

    b.append(Heading(2, "Per-iteration details"))
    b.append(
        Para(
            "Test accuracy in % (single agent, majority vote of the first answers, debate) and the diversity "
            "metrics (unscaled means ± standard error) of each iteration's society."
        )
    )
    for r in study.runs:
        b.append(Heading(3, r.label))
        b.append(detail_table(r))

    b.append(Heading(2, "Dataset sizes"))
    b.append(Para("Training examples per agent per iteration (`iter_<k>/data/sizes.json`)."))
    any_sizes = False
    chart_run = next((r for key in _OURS_PREFERENCE for r in study.runs if r.key == key), study.runs[0])
    for r in study.runs:
        result = sizes_table(r)
        if result is None:
            continue
        any_sizes = True
        table, notes = result
        b.append(Heading(3, r.label))
        b.append(table)
        if notes:
            b.append(Bullets(notes))
        if r is chart_run:  # a bar chart for the paper's method
            its = [it for it in r.iterations.values() if it.sizes]
            agents = sorted({a for it in its for a in it.sizes or {}}, key=_agent_order)
            bars = {
                f"iteration {it.k}": [float((it.sizes or {}).get(a, {}).get("examples", 0)) for a in agents]
                for it in its
            }
            doc.add_plot(
                "dataset_sizes",
                plots.grouped_bars(agents, bars, f"{r.label}: training examples per agent", "examples"),
                f"{r.label}: training examples per agent",
            )
    if not any_sizes:
        b.append(Para("No `iter_<k>/data/sizes.json` files were found."))

    b.append(Heading(2, "Cost"))
    b.append(
        Para(
            "Tokens generated by each iteration's test-split debate (`usage` in `eval/results.json`; n/a for "
            "runs that did not record it) and wall time per stage in seconds (`timings.json`)."
        )
    )
    panels = []
    for r in study.runs:
        b.append(Heading(3, r.label))
        b.append(cost_table(r))
        per, stages = _timing_stages(r)
        if per:
            panels.append(
                (r.label, [str(k) for k in per], {s: [per[k].get(s, 0.0) for k in per] for s in stages})
            )
    if panels:
        doc.add_plot(
            "wall_time",
            plots.stacked_bars(panels, f"{study.task}: wall time per iteration", "seconds"),
            "wall time per iteration, stacked by stage",
        )
    return doc


def _write(doc: Document, out: Path, stem: str) -> Path:
    """Plots first, then the HTML, the Markdown last (it links the plots)."""
    md = out / f"{stem}.md"
    try:
        for path, png in doc.plots.items():
            write_atomic(out / path, png)
        write_atomic(out / f"{stem}.html", to_html(doc.blocks, doc.title, doc.plots))
        write_atomic(md, to_markdown(doc.blocks))
    except (PermissionError, NotADirectoryError, FileExistsError) as exc:
        raise MftError(
            f"cannot write the {stem} into {out} ({exc.strerror or exc})",
            hint="choose a writable directory with --out DIR",
        ) from None
    return md


def write_report(path: Path, out: Path | None = None) -> Path:
    """Read PATH (a run or reproduce directory) and write report.md, report.html and plots/ into OUT
    (default: PATH). Returns the path of report.md."""
    study = load(Path(path))
    return _write(build_report(study), Path(out) if out is not None else Path(path), "report")


# -- the comparison -----------------------------------------------------------------------------------------
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
        notes += [f"{label}: {n}" for n in _unfinished(s) + s.notes]
    b.append(Bullets(notes))

    b.append(Heading(2, "Ours: accuracy per iteration"))
    series, used = [], []
    for i, (label, s) in enumerate(zip(labels, studies, strict=True)):
        run = next((r for key in _OURS_PREFERENCE for r in s.runs if r.key == key), None)
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
    return _write(build_compare(studies), Path(out), "compare")
