"""`mft report`: one run or reproduce directory as report.md, report.html and plots/*.png.

`build_report` composes the document, one function per section (`SECTIONS`; tables from `tables`, plot lines
from `series`), and returns its blocks and the PNG bytes of its plots; `write_report` writes them, each file
through a temp name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mft.report import plots
from mft.report.document import Bullets, Document, Heading, Para, write_document
from mft.report.experiments import paper_blocks, transfer_blocks
from mft.report.holds import holds_blocks
from mft.report.load import DIVERSITY_METRICS, Run, Study, load
from mft.report.paired import PAIRED_NOTE, missing, paired_json, paired_rows, paired_table
from mft.report.seeds import build_seeds_report, is_seeds, load_seeds
from mft.report.series import (
    accuracy_series,
    accuracy_vs_diversity,
    diversity_series,
    dynamics_series,
    kl_agent_series,
    ours_run,
)
from mft.report.tables import (
    DIVERSITY_LABELS,
    TABLE_NOTE,
    agent_order,
    column_detail,
    cost_table,
    detail_table,
    dynamics_table,
    iterations_table,
    methods_table,
    own_base_note,
    sizes_table,
    table_entries,
    timing_stages,
    unfinished,
)
from mft.report.training import training_section

DIVERSITY_NOTE = (
    "Means over the evaluated test problems with ± 1 standard error bars (`iter_<k>/diversity.json`), all "
    "on the final debate round: consensus (share of the final answers that equal the majority answer; "
    "lower = more diverse), pairwise agreement, embedding dissimilarity, the NLL of each critic's response "
    "under the other slots' critics (held-out critic NLL, the paper's likelihood diversity; higher = more "
    "diverse), the mean KL of the agents from the base model, and the KL between critics."
)
KL_AGENTS_NOTE = (
    "Per-token KL(agent || base) on each agent's own test responses (generator n: round 1 of slot n; critic "
    "n: the later rounds), mean ± 1 s.e. over problems; iteration 0 is the base itself (0)."
)
ACCURACY_VS_NOTE = (
    "Debate accuracy against each diversity measure, one point per iteration (labelled), ± 1 s.e. on both "
    "axes; the paper's Figure 4 plots the same relation."
)
DYNAMICS_NOTE = (
    "Read with the gold answers, for this section only (no dataset is built from them). Test: each agent's "
    "answer from round 1 to the last round of the test debate (its debate file, else its outcomes.jsonl.gz); "
    "right -> wrong is the share of its right "
    "round-1 answers that the later rounds turned wrong, wrong -> right the share of its wrong ones they "
    "turned right. Train: the training debate the iteration's data was built from; per pool, the share whose "
    "target (the consensus) is the gold answer: the consensus itself (per problem), D_G (round-1 answers "
    "that agree with it), D_C- (first answer differed, final agrees) and D_C+ (both agree), per (problem, "
    "agent), where the training debate's file is there (no train columns where none was kept). A critic "
    "trains on all of its D_C- and part of its D_C+ (`critic_corrected_share`)."
)
ACCURACY_VS = ("held_out_nll", "embedding_dissimilarity", "consensus")  # the accuracy-vs-diversity panels


def _has_kl_agents(run: Run) -> bool:
    return any(it.kl_agents for it in run.iterations.values())


def build_report(study: Study) -> Document:
    """The report's blocks and plots, one section after another: accuracy table, accuracy and diversity per
    iteration, details, dataset sizes, debate dynamics, cost. Reads nothing and writes nothing (the study is
    already loaded)."""
    doc = Document(f"mft report: {study.name}")
    for section in SECTIONS:
        section(doc, study)
    return doc


def _intro(doc: Document, study: Study) -> None:
    doc.blocks.append(Heading(1, f"Report: {study.name}"))
    if study.kind == "run":
        run = study.runs[0]
        intro = (
            f"Run directory `{study.name}`: method {run.label} (`{run.config.get('method') or 'ours'}`, "
            f"summarize {str(bool(run.config.get('summarize'))).lower()}) on task `{study.task}`, "
            f"{run.harness}, {run.models}; "
            f"{len([k for k in run.iterations if k >= 1])} of {run.planned} iterations evaluated."
        )
    else:
        intro = (
            f"Reproduce directory `{study.name}` on task `{study.task}`: "
            + ", ".join(f"{r.label} (`{r.path.name}/`)" for r in study.runs)
            + "."
        )
    doc.blocks.append(Para(intro))
    doc.blocks.append(Para("Written by `mft report` from the saved files only; no model is loaded or run."))


def _accuracy(doc: Document, study: Study) -> None:
    b = doc.blocks
    b.append(Heading(2, "Accuracy"))
    b.append(methods_table([(study.task, study)]))
    b.append(Para(TABLE_NOTE + own_base_note(table_entries(study))))
    notes = [column_detail(study.task, study)] + unfinished(study) + study.notes
    b.append(Bullets(notes))


def _paired(doc: Document, study: Study) -> None:
    """Each row against Ours on the same problems (`report/paired.py`); its numbers in paired.json."""
    rows = paired_rows(study)
    table = paired_table(rows)
    if table is None:
        return
    doc.data["paired.json"] = paired_json(rows)
    b = doc.blocks
    b.append(Heading(2, "Paired differences against Ours"))
    b.append(table)
    b.append(Para(PAIRED_NOTE + own_base_note(r["method"] for r in rows)))
    left_out = missing(study)
    if left_out:
        b.append(Bullets([f"no per-problem outcomes kept (no paired row): {', '.join(left_out)}"]))


def _holds(doc: Document, study: Study) -> None:
    holds_blocks(doc, [study])


def _experiments(doc: Document, study: Study) -> None:
    """The paper's experiments found in the study, and its societies' transfers to other tasks."""
    doc.blocks.extend(paper_blocks(study) + transfer_blocks(study))


def _accuracy_per_iteration(doc: Document, study: Study) -> None:
    b = doc.blocks
    b.append(Heading(2, "Accuracy per iteration"))
    harness = study.base_harness
    series = [accuracy_series(study, r, r.label, plots.colour(r.key, i)) for i, r in enumerate(study.runs)]
    doc.add_plot(
        "accuracy",
        plots.line_plot(series, f"{study.task}: test accuracy per iteration", "test accuracy (%)"),
        "test accuracy per iteration",
    )
    b.append(
        Para(
            f"Each method's reading in the table after each iteration: the debate ({harness}, majority of "
            "the last round), Majority FT's majority vote of its N samples; with ± 1 standard error bars; "
            "iteration 0 is the shared base model in the same reading"
            + "".join(
                f"; {r.label}'s is its own base society's ({r.harness})"
                for r in study.own_setting_runs
                if 0 in r.iterations
            )
            + "."
        )
    )
    per_iteration = iterations_table(study)
    if per_iteration is not None:
        b.append(per_iteration)


def _diversity_metrics(study: Study) -> list[str]:
    """The diversity metrics some iteration of the study measured, in the report's order."""
    return [
        m
        for m in DIVERSITY_METRICS
        if any(m in it.diversity for r in study.runs for it in r.iterations.values())
    ]


def _diversity(doc: Document, study: Study) -> None:
    b = doc.blocks
    b.append(Heading(2, "Diversity per iteration"))
    metrics = _diversity_metrics(study)
    if not metrics and not any(it.diversity_outdated for r in study.runs for it in r.iterations.values()):
        b.append(Para("No `iter_<k>/diversity.json` files were found."))
    for m in metrics:
        name = DIVERSITY_LABELS[m]
        b.append(Heading(3, name[0].upper() + name[1:]))
        doc.add_plot(
            f"diversity_{m}",
            plots.line_plot(diversity_series(study, m), f"{study.task}: {name} per iteration", name),
            f"{name} per iteration",
        )
    if metrics:
        b.append(Para(DIVERSITY_NOTE))
    outdated = [
        f"{r.label}: iteration {k}"
        for r in study.runs
        for k, it in r.iterations.items()
        if it.diversity_outdated
    ]
    if outdated:
        b.append(
            Para(
                "Not shown: `diversity.json` of an older definition (round-1 metrics) for "
                + ", ".join(outdated)
                + "; `mft run` on that directory measures it again."
            )
        )


def _kl_from_base(doc: Document, study: Study) -> None:
    """A subsection of the diversity: each agent's KL from the base model (Ours' run where it has them)."""
    kl_run = next((r for r in [ours_run(study), *study.runs] if r and _has_kl_agents(r)), None)
    if kl_run is None:
        return
    doc.blocks.append(Heading(3, "KL from the base model per agent"))
    doc.add_plot(
        "kl_from_base_agents",
        plots.line_plot(
            kl_agent_series(study, kl_run),
            f"{kl_run.label}: KL from the base model per agent",
            "KL(agent || base) per token",
        ),
        f"{kl_run.label}: KL from the base model per agent",
    )
    doc.blocks.append(Para(KL_AGENTS_NOTE))


def _accuracy_vs_diversity(doc: Document, study: Study) -> None:
    """A subsection of the diversity: accuracy against each measured diversity metric of `ACCURACY_VS`."""
    metrics = _diversity_metrics(study)
    scatter = [(DIVERSITY_LABELS[m], accuracy_vs_diversity(study, m)) for m in ACCURACY_VS if m in metrics]
    if not scatter:
        return
    doc.blocks.append(Heading(3, "Accuracy vs diversity"))
    doc.add_plot(
        "accuracy_vs_diversity",
        plots.scatter_panels(scatter, f"{study.task}: accuracy vs diversity", "test accuracy, debate (%)"),
        "accuracy vs diversity",
    )
    doc.blocks.append(Para(ACCURACY_VS_NOTE))


def _details(doc: Document, study: Study) -> None:
    b = doc.blocks
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


def _dataset_sizes(doc: Document, study: Study) -> None:
    b = doc.blocks
    b.append(Heading(2, "Dataset sizes"))
    b.append(Para("Training examples per agent per iteration (`iter_<k>/data/sizes.json`)."))
    any_sizes = False
    chart_run = ours_run(study) or study.runs[0]
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
            _sizes_chart(doc, r)
    if not any_sizes:
        b.append(Para("No `iter_<k>/data/sizes.json` files were found."))


def _sizes_chart(doc: Document, run: Run) -> None:
    """Bars of the training examples of each agent of `run`, a group per iteration."""
    its = [it for it in run.iterations.values() if it.sizes]
    agents = sorted({a for it in its for a in it.sizes or {}}, key=agent_order)
    bars = {
        f"iteration {it.k}": [float((it.sizes or {}).get(a, {}).get("examples", 0)) for a in agents]
        for it in its
    }
    doc.add_plot(
        "dataset_sizes",
        plots.grouped_bars(agents, bars, f"{run.label}: training examples per agent", "examples"),
        f"{run.label}: training examples per agent",
    )


def _dynamics(doc: Document, study: Study) -> None:
    dynamics = [(r, t) for r in study.runs if (t := dynamics_table(r)) is not None]
    if not dynamics:
        return
    b = doc.blocks
    b.append(Heading(2, "Debate dynamics and training targets"))
    b.append(Para(DYNAMICS_NOTE))
    for r, dyn in dynamics:
        b.append(Heading(3, r.label))
        b.append(dyn)
    lines = dynamics_series(study)
    if lines:
        doc.add_plot(
            "dynamics",
            plots.line_plot(lines, f"{study.task}: what the debate changes", "% of answers"),
            "answers turned right -> wrong and wrong -> right per iteration",
        )


def _cost(doc: Document, study: Study) -> None:
    b = doc.blocks
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
        per, stages = timing_stages(r)
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


# The report's sections, in order: each adds its blocks (and plots) to the document.
SECTIONS: tuple[Callable[[Document, Study], None], ...] = (
    _intro,
    _accuracy,
    _paired,
    _holds,
    _experiments,
    _accuracy_per_iteration,
    _diversity,
    _kl_from_base,
    _accuracy_vs_diversity,
    _details,
    _dataset_sizes,
    _dynamics,
    training_section,
    _cost,
)


def write_report(path: Path, out: Path | None = None) -> Path:
    """Read PATH (a run or reproduce directory, or a reproduce over several seeds) and write report.md,
    report.html, plots/, paired.json and holds.json into OUT (default: PATH). Returns report.md's path."""
    target = Path(out) if out is not None else Path(path)
    if is_seeds(path):  # a reproduce over several seeds
        return write_document(build_seeds_report(path, load_seeds(path)), target, "report")
    return write_document(build_report(load(Path(path))), target, "report")
