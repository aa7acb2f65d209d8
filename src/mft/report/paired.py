"""Each row of the methods table against Ours on the same problems: paired.json and the report's table.

For every iteration k >= 1 that Ours has evaluated, each row of the methods table is paired with Ours'
own table reading (its debate) at iteration k, problem by problem (`mft.eval.paired`): a finetuned method
at its iteration k in its table reading (Majority FT its majority vote, Single-agent FT (no debate) its
single reading, ...), and Base, Majority and Debate, the base model, at iteration 0 whatever k is (as is
a row of a method's own base society, Cooperative (base)). Only
evaluations that kept their per-problem outcomes (`outcomes.jsonl.gz`) take part; a row without them is
left out, and the report says so.

paired.json is a list of rows: `method` (its key), `against` ("ours"), `reading`, `iteration` (k), `n`,
`difference` (method - Ours, points), `se`, `ci_low`, `ci_high` (95%), `p` (McNemar's exact, two-sided).
"""

from __future__ import annotations

import json
from typing import Any

from mft import methods
from mft.eval.outcomes import READINGS
from mft.eval.paired import Paired, paired
from mft.report.document import Table
from mft.report.load import Iteration, Study
from mft.report.tables import NA, reading_rows

AGAINST = "ours"
PAIRED_NOTE = (
    "Each row minus Ours, problem by problem on the same test problems, in points: the mean difference, "
    "its 95% interval (± 1.96 standard errors of the paired differences) and McNemar's exact two-sided "
    "p-value (the exact sign test for the single reading, a share of agents). Ours is read by its debate at "
    "the column's iteration; a finetuned method by its table reading at the same iteration; Base, Majority "
    "and Debate are the base model (iteration 0). The numbers are in paired.json."
)


def scores_of(it: Iteration | None, reading: str) -> dict[str, float] | None:
    """An evaluation's per-problem scores in `reading` (uid -> score in [0, 1]); None without outcomes."""
    if it is None or it.outcomes is None:
        return None
    return {uid: float(correct[reading]) for uid, correct in it.outcomes.items()}


def paired_rows(study: Study) -> list[dict[str, Any]]:
    """The rows of paired.json for one study (module docstring); empty without an Ours run."""
    ours = study.run(AGAINST)
    if ours is None:
        return []
    ours_reading = methods.reading_of(AGAINST)
    rows = []
    for k in sorted(k for k in ours.iterations if k >= 1):
        y = scores_of(ours.iterations[k], ours_reading)
        if y is None:
            continue
        # (row key, reading, its evaluation paired with Ours' at k): the base model's readings, then each run
        at_k = [(key, reading, study.base) for key, reading in zip(methods.BASELINES, READINGS, strict=True)]
        at_k += [(row.key, row.reading, row.at(k)) for row in reading_rows(study) if row.key != AGAINST]
        for key, reading, it in at_k:
            x = scores_of(it, reading)
            got = paired(x, y) if x is not None else None
            if got is not None:
                rows.append(_row(key, reading, k, got))
    return rows


def _row(key: str, reading: str, k: int, got: Paired) -> dict[str, Any]:
    return {
        "method": key,
        "against": AGAINST,
        "reading": reading,
        "iteration": k,
        "n": got.n,
        "difference": got.difference,
        "se": got.se,
        "ci_low": got.ci_low,
        "ci_high": got.ci_high,
        "p": got.p,
    }


def paired_json(rows: list[dict[str, Any]]) -> bytes:
    return (json.dumps(rows, indent=2) + "\n").encode()


def cell(row: dict[str, Any]) -> str:
    """'-3.6 [-7.1, -0.1], p 0.04': the difference in points, its 95% interval and p."""
    p = row["p"]
    shown = f"{p:.2g}" if p >= 0.001 else "< 0.001"
    return f"{row['difference']:+.1f} [{row['ci_low']:+.1f}, {row['ci_high']:+.1f}], p {shown}"


def paired_table(rows: list[dict[str, Any]]) -> Table | None:
    """A row per method (the report's order), a column per iteration: method - Ours on the same problems."""
    if not rows:
        return None
    ks = sorted({r["iteration"] for r in rows})
    by = {(r["method"], r["iteration"]): r for r in rows}
    body = []
    for key in methods.in_report_order(r["method"] for r in rows):
        reading = next(r["reading"] for r in rows if r["method"] == key)
        body.append(
            [methods.LABELS.get(key, key), reading] + [cell(by[key, k]) if (key, k) in by else NA for k in ks]
        )
    return Table(["method", "reading"] + [f"vs Ours, iteration {k}" for k in ks], body)


def missing(study: Study) -> list[str]:
    """The evaluations that kept no per-problem outcomes (so have no paired row)."""
    out = []
    if study.base is not None and study.base.outcomes is None:
        out.append("the base model (iteration 0)")
    for run in study.runs:
        if any(it.outcomes is None for k, it in run.iterations.items() if k >= 1):
            out.append(run.label)
    return out
