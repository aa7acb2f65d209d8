"""The report's tables, from loaded studies: methods x tasks, per-iteration details, dataset sizes, cost.

Each function returns a `Table` (cells already formatted); the report and the comparison place them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mft import methods
from mft.eval.dynamics import POOLS, Pool
from mft.eval.metrics import Estimate
from mft.eval.outcomes import READINGS
from mft.methods import Reading
from mft.report.document import Table
from mft.report.load import DIVERSITY_METRICS, Iteration, Run, Study, with_base
from mft.rundir import parse_timing_key

NA = "n/a"
DIVERSITY_LABELS = {
    "consensus": "consensus",
    "agreement": "pairwise agreement",
    "embedding_dissimilarity": "embedding dissimilarity",
    "held_out_nll": "held-out critic NLL",
    "kl_from_base": "KL from base",
    "kl": "KL between critics",
}
STAGE_ORDER = ("debate", "build_data", "finetune", "eval")

TABLE_NOTE = (
    "Test accuracy in % (mean ± standard error). Base, Majority and Debate are iteration 0, the base model "
    "before any finetuning: one agent's first answer (mean over the agents), the majority vote of the N "
    "agents' independent first answers, and their debate. A finetuned method's number is read after its last "
    "iteration, as the paper evaluates it: Majority FT by the majority vote of the finetuned model's N "
    "independent samples; Single-agent FT (no debate) is the Single-agent FT model answering alone (one "
    "sample, mean over the N); every other method by the N agents x M rounds debate of its society, majority "
    "vote of the last round."
)


# -- the methods x tasks table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """A method row of the table: a run in a reading, after its last iteration or (`base`) of its own base
    society."""

    key: str
    label: str
    reading: Reading
    run: Run
    base: bool = False

    def at(self, k: int | None = None) -> Iteration | None:
        """Its evaluation at iteration k (None: its last finetuned one); a base row's is its run's iteration
        0, whatever k."""
        if self.base:
            return self.run.iterations.get(0)
        return self.run.last if k is None else self.run.iterations.get(k)


def reading_rows(study: Study) -> list[Row]:
    """Every method row: each run in its table reading, then the extra rows (another reading of a run
    present)."""
    rows = [Row(r.key, r.label, methods.reading_of(r.key), r) for r in study.runs]
    for extra in methods.EXTRA_ROWS:
        of = study.run(extra.of)
        if of is not None:
            rows.append(Row(extra.key, extra.label, extra.reading, of, extra.base))
    return rows


def own_base_note(keys: Iterable[str]) -> str:
    """A sentence per row among `keys` that reads a run's own iteration 0 (Cooperative (base)), for the
    notes that say the rows are read after the last iteration or at the shared base; empty without one."""
    present = set(keys)
    return "".join(
        f" {row.label} is the {methods.LABELS[row.of]} run's own iteration 0 (its base society), "
        f"{row.reading} reading."
        for row in methods.EXTRA_ROWS
        if row.base and row.key in present
    )


def own_setting_note(studies: Iterable[Study]) -> str:
    """A sentence naming each method that ran in another setting than the base readings (its own sampling
    temperature, the paper's Fig. 10; cooperative), for a table over several studies; empty without one."""
    own: dict[str, str] = {}
    for study in studies:
        for r in study.own_setting_runs:
            own[r.label] = r.harness + (", from its own iteration 0" if 0 in r.iterations else "")
    return "".join(f" {label} ran in its own setting: {h}." for label, h in own.items())


def table_entries(study: Study) -> dict[str, tuple[str, Estimate]]:
    """Row key -> (label, estimate) for one study: the iteration-0 readings, then each method's last."""
    out: dict[str, tuple[str, Estimate]] = {}
    if study.base is not None:
        # the baselines are listed in the readings' order: Base is one agent, Majority the vote, Debate
        for key, reading in zip(methods.BASELINES, READINGS, strict=True):
            out[key] = (methods.LABELS[key], study.base.accuracy[reading])
    for row in reading_rows(study):
        it = row.at()
        if it is not None:
            out[row.key] = (row.label, it.accuracy[row.reading])
    return out


def methods_table(columns: list[tuple[str, Study]]) -> Table:
    """Rows in the paper's order (unknown method keys after, as first seen); a column per study."""
    entries = [table_entries(s) for _, s in columns]
    rows = []
    for key in methods.in_report_order(k for e in entries for k in e):
        label = next(e[key][0] for e in entries if key in e)
        rows.append([label] + [e[key][1].pct() if key in e else NA for e in entries])
    return Table(["method"] + [c for c, _ in columns], rows)


def iterations_table(study: Study) -> Table | None:
    """The accuracy plot as numbers: a row per method (and extra row), its table reading after each
    iteration, iteration 0 the shared base in that reading; None when no run has a finetuned iteration."""
    rows_of = [
        (row.label, row.reading, with_base(row.run, study))
        for row in reading_rows(study)
        if not row.base and row.run.last is not None
    ]
    if not rows_of:
        return None
    ks = sorted({k for _, _, its in rows_of for k in its})
    rows = [
        [label, reading] + [its[k].accuracy[reading].pct() if k in its else NA for k in ks]
        for label, reading, its in rows_of
    ]
    return Table(["method", "reading"] + [f"iteration {iter_label(k)}" for k in ks], rows)


def column_detail(column: str, study: Study) -> str:
    """One line saying what a column's numbers are: harness, problems, which iterations."""
    parts = [f"{column}: {study.kind} directory `{study.name}`, task `{study.task}`"]
    harness = study.base_harness
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


def unfinished(study: Study) -> list[str]:
    """A note per run that has no finetuned iteration yet (it has no row, so the reader is told why)."""
    return [
        f"{r.label}: no finetuned iteration has finished yet (omitted from the table)"
        for r in study.runs
        if r.last is None
    ]


# -- per-method details -------------------------------------------------------------------------------------
def iter_label(k: int) -> str:
    """An iteration's row label; iteration 0 is the base model, which readers might otherwise miss."""
    return "0 (base)" if k == 0 else str(k)


def detail_table(run: Run) -> Table:
    """Per iteration: the three accuracy readings, the problem count and each diversity metric measured."""
    metrics = [m for m in DIVERSITY_METRICS if any(m in it.diversity for it in run.iterations.values())]
    header = ["iteration", "single", "majority", "debate", "problems"] + [
        DIVERSITY_LABELS[m] for m in metrics
    ]
    rows = []
    for k, it in run.iterations.items():
        row = [iter_label(k)] + [it.accuracy[r].pct() for r in READINGS]
        row.append(str(it.problems) if it.problems is not None else NA)
        row += [it.diversity[m].plain() if m in it.diversity else NA for m in metrics]
        rows.append(row)
    return Table(header, rows)


def agent_order(name: str) -> tuple[int, int, str]:
    """Generators, then critics, each by agent number (gen_10 after gen_9), then any other (`model`)."""
    m = re.fullmatch(r"(gen|critic)_(\d+)", name)
    if m:
        return (0 if m.group(1) == "gen" else 1, int(m.group(2)), name)
    return (2, 0, name)


def sizes_table(run: Run) -> tuple[Table, list[str]] | None:
    """Examples per agent per iteration, and notes saying what the extra numbers in a cell are."""
    its = [it for it in run.iterations.values() if it.sizes]
    if not its:
        return None
    agents = sorted({a for it in its for a in it.sizes or {}}, key=agent_order)
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


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}% of {whole:,}" if whole else NA


def _pool(pool: Pool | None) -> str:
    return _share(pool.right, pool.size) if pool is not None else NA


def dynamics_table(run: Run) -> Table | None:
    """Per iteration: the test debate's right->wrong and wrong->right changes (shares of the round-1 right and
    wrong answers), then the training debate's pools with the share whose target is right; None when the run
    has neither (one-round debates, or a task not buildable here)."""
    its = [it for it in run.iterations.values() if it.changes is not None or it.targets is not None]
    if not its:
        return None
    pools = [p for p in POOLS if any(p in (it.targets or {}) for it in its)]
    header = ["iteration", "right -> wrong (test)", "wrong -> right (test)"] + [
        f"{p} right (train)" for p in pools
    ]
    rows = []
    for it in its:
        c = it.changes
        row = [iter_label(it.k)]
        row += (
            [_share(c.right_to_wrong, c.right_first), _share(c.wrong_to_right, c.wrong_first)]
            if c
            else [NA] * 2
        )
        row += [_pool((it.targets or {}).get(p)) for p in pools]
        rows.append(row)
    return Table(header, rows)


def timing_stages(run: Run) -> tuple[dict[int, dict[str, float]], list[str]]:
    """Seconds per iteration per stage (timings.json keys are `iter_<k>/<stage>`, as `mft run` times them),
    and the stages in pipeline order, any stage this report does not know after them."""
    per: dict[int, dict[str, float]] = {}
    for key, seconds in run.timings.items():
        parsed = parse_timing_key(key)
        if parsed:
            per.setdefault(parsed[0], {})[parsed[1]] = seconds
    found = {s for stages in per.values() for s in stages}
    order = [s for s in STAGE_ORDER if s in found] + sorted(found - set(STAGE_ORDER))
    return dict(sorted(per.items())), order


def cost_table(run: Run) -> Table:
    """Per iteration: tokens generated by the test-split debate and seconds per stage, with a total row."""
    per, stages = timing_stages(run)
    ks = sorted(set(per) | set(run.iterations))
    header = ["iteration", "generated tokens (eval)"] + [f"{s} (s)" for s in stages] + ["total (s)"]
    rows = []
    tokens_total = 0
    stage_totals = dict.fromkeys(stages, 0.0)
    for k in ks:
        it = run.iterations.get(k)
        tokens = it.generated_tokens if it is not None else None
        tokens_total += tokens or 0
        row = [iter_label(k), f"{tokens:,}" if tokens is not None else NA]
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
