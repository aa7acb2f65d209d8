"""The report's sections beyond the main table: the paper's numbers beside this run's, and zero-shot transfer.

Both are read from saved files only: the paper's numbers from `report.paper`, the transfers from each run's
`transfer/<task>/` directories (`mft eval --society RUN --task T`).
"""

from __future__ import annotations

from mft import methods
from mft.eval.outcomes import READINGS
from mft.report.document import Block, Heading, Para, Table
from mft.report.load import Run, Study, read_run
from mft.report.paper import matching_rows, paper_model
from mft.report.tables import NA, iter_label, table_entries
from mft.rundir import TRANSFER, RunDir

PAPER_NOTE = (
    "The paper's accuracy in % (± standard error) for the row of its table with this setting (base model, "
    "task, N agents x M rounds), beside this study's (its Accuracy table: the debate reading after the last "
    "iteration; Base, Majority, Debate and Cooperative (base) at iteration 0). The settings match only in "
    "these; the test problems, prompts, iterations and finetuning differ as docs/faithfulness.md lists, so "
    "read the orderings rather than the numbers. Source: `mft/report/paper.py`."
)


def paper_blocks(study: Study) -> list[Block]:
    """'Paper vs this run': the paper's rows for this study's setting, or a line saying there are none."""
    ref = study.base_from or study.runs[0]
    configured = ref.config.get("agents")
    # a mixed society is no setting of the paper's (each of its tables has one base model)
    model = str(ref.config.get("model", "?"))
    mixed = isinstance(configured, list)
    agents, rounds = ref.n_agents or 0, ref.config.get("rounds", 0)
    rows = {} if mixed else matching_rows(model, study.task, int(agents), int(rounds))
    blocks: list[Block] = [Heading(2, "Paper vs this run")]
    if not rows:
        setting = "a mixed society" if mixed else f"base model `{model}`"
        blocks.append(
            Para(
                f"No table of the paper has this setting ({setting}, task `{study.task}`, "
                f"{agents} agents x {rounds} rounds). Its tables report GPT-3.5, Phi-3, Mistral 7B and "
                "LLaMA-3 8B on arithmetic, GSM8K and MATH with 3 agents x 2 rounds (Tables 1, 2 and 5), "
                "and GPT-3.5 and Phi-3 with 5 agents x 2 rounds (Table 4)."
            )
        )
        return blocks
    entries = table_entries(study)
    table_rows = []
    for key in methods.in_report_order(rows):
        row = rows[key]
        mine = entries[key][1].pct() if key in entries else NA
        label = methods.LABELS.get(key, key)
        paper = f"{row.mean:.2f}" + ("" if row.se is None else f" ± {row.se:.2f}")
        table_rows.append([label, row.table, paper, mine])
    name = paper_model(model)
    blocks.append(Table(["method", "paper's table", f"paper ({name})", "this run"], table_rows))
    blocks.append(Para(PAPER_NOTE + f" {NA}: this study has no finished run of that method."))
    return blocks


def transfers(study: Study) -> list[tuple[Run, Run]]:
    """(society's run, its transfer) for every `transfer/<task>/` run directory of the study's runs."""
    out = []
    for run in study.runs:
        root = run.path / TRANSFER
        if not root.is_dir():
            continue
        for sub in sorted(p for p in root.iterdir() if RunDir(p).is_run()):
            out.append((run, read_run(sub)))
    return out


def transfer_blocks(study: Study) -> list[Block]:
    """'Zero-shot transfer': each society evaluated on another task (nothing when none was)."""
    found = transfers(study)
    if not found:
        return []
    rows = []
    for run, moved in found:
        for k, it in moved.iterations.items():
            rows.append(
                [run.label, run.task, moved.task, iter_label(k)]
                + [it.accuracy[r].pct() for r in READINGS]
                + [str(it.problems) if it.problems is not None else NA]
            )
    header = ["society", "trained on", "evaluated on", "iteration", *READINGS, "problems"]
    return [
        Heading(2, "Zero-shot transfer"),
        Para(
            "Societies finetuned on one task, evaluated on another by the same debate (`mft eval --society "
            "RUN --task T`, written to `RUN/transfer/<task>/`): test accuracy in % (± standard error). "
            "Iteration 0 is the base model on that task, the reference a finetuned society is read against."
        ),
        Table(header, rows),
    ]
