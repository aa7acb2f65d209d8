"""The report of a reproduce over several seeds (`mft reproduce --seeds`): every seed, and their mean.

ROOT/seeds.json lists the seeds' reproduce directories (`seed_<s>/`, each with its own report). This report
reads them all (`load`) and shows:
- the methods table with a column per seed and the mean over seeds with its seed-to-seed standard error
  (the sample standard deviation of the seeds' numbers over sqrt(seeds));
- the paired differences against Ours (`report/paired.py`) of each seed at its last iteration, and their
  mean over seeds with the seed-to-seed standard error and a 95% interval from Student's t with seeds - 1
  degrees of freedom. paired.json holds every seed's rows (each with its `seed`) and the mean rows
  (`seed`: "mean", `p`: null: the seeds share their test problems, so their p-values do not combine).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mft import methods
from mft.errors import MftError
from mft.eval.metrics import Estimate, mean_se
from mft.report.document import Bullets, Document, Heading, Para, Table
from mft.report.files import read_json
from mft.report.holds import holds_blocks
from mft.report.load import Study, load
from mft.report.paired import PAIRED_NOTE, cell, paired_json, paired_rows
from mft.report.tables import NA, TABLE_NOTE, own_base_note, own_setting_note, table_entries
from mft.rundir import REPRODUCE, SEEDS

# Student's t 97.5% quantiles for 1..10 degrees of freedom (more: the normal's 1.96 is within 2.5%)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def is_seeds(path: Path) -> bool:
    return (Path(path) / SEEDS).exists()


def load_seeds(path: Path) -> list[tuple[str, Study]]:
    """(seed, its study) for each seed listed in PATH/seeds.json whose directory has a reproduce run."""
    hint = "it is written by `mft reproduce --seeds`; re-run that command"
    data = read_json(Path(path) / SEEDS, hint)
    listed = data.get("seeds") if isinstance(data, dict) else None
    if not isinstance(listed, dict) or not listed:
        raise MftError(f"{Path(path) / SEEDS}: field 'seeds' is missing or empty", hint=hint)
    out = []
    for seed, sub in sorted(listed.items(), key=lambda kv: int(kv[0])):
        if (Path(path) / sub / REPRODUCE).exists():
            out.append((str(seed), load(Path(path) / sub)))
    if not out:
        raise MftError(f"{path}: no seed has run yet", hint="run `mft reproduce --seeds ...` first")
    return out


def t975(df: int) -> float:
    return T975[df - 1] if 1 <= df <= len(T975) else 1.959963984540054


def mean_rows(rows: list[dict[str, Any]], seeds: int) -> list[dict[str, Any]]:
    """Per (method, reading, iteration) present in every seed: the mean difference over seeds, its
    seed-to-seed standard error and a t interval."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["reading"], r["iteration"]), []).append(r)
    out = []
    for (key, reading, k), rs in groups.items():
        if len(rs) != seeds:
            continue
        est = mean_se([r["difference"] for r in rs])
        half = t975(seeds - 1) * est.se if seeds > 1 else math.nan
        out.append(
            {
                "seed": "mean",
                "method": key,
                "against": rs[0]["against"],
                "reading": reading,
                "iteration": k,
                "n": sum(r["n"] for r in rs),
                "difference": est.mean,
                "se": est.se,
                "ci_low": est.mean - half,
                "ci_high": est.mean + half,
                "p": None,
            }
        )
    return out


def mean_cell(row: dict[str, Any]) -> str:
    if math.isnan(row["ci_low"]):
        return f"{row['difference']:+.1f}"
    return f"{row['difference']:+.1f} ± {row['se']:.1f} [{row['ci_low']:+.1f}, {row['ci_high']:+.1f}]"


def mean_over_seeds(entries: list[dict[str, tuple[str, Estimate]]], key: str) -> str:
    """Row `key`'s mean over the seeds' `table_entries` ± its seed-to-seed standard error; n/a where a seed
    has no such row."""
    means = [e[key][1].mean for e in entries if key in e]
    return mean_se(means).pct() if means and len(means) == len(entries) else NA


def accuracy_table(seeded: list[tuple[str, Study]]) -> Table:
    """A row per method (the report's order), a column per seed, then the mean over seeds ± seed s.e."""
    entries = [table_entries(study) for _, study in seeded]
    body = []
    for key in methods.in_report_order(k for e in entries for k in e):
        label = next(e[key][0] for e in entries if key in e)
        cells = [e[key][1].pct() if key in e else NA for e in entries]
        body.append([label, *cells, mean_over_seeds(entries, key)])
    return Table(["method"] + [f"seed {s}" for s, _ in seeded] + ["mean ± seed s.e."], body)


def paired_table(rows: list[dict[str, Any]], seeds: list[str]) -> Table | None:
    """Each method minus Ours at the last iteration: a column per seed, then the mean over seeds."""
    if not rows:
        return None
    k = max(r["iteration"] for r in rows)
    at = [r for r in rows if r["iteration"] == k]
    by = {(r["method"], str(r["seed"])): r for r in at}
    body = []
    for key in methods.in_report_order(r["method"] for r in at):
        cells = [cell(by[key, s]) if (key, s) in by else NA for s in seeds]
        mean = by.get((key, "mean"))
        body.append([str(methods.LABELS.get(key, key)), *cells, mean_cell(mean) if mean else NA])
    return Table(
        ["method"] + [f"seed {s}, iteration {k}" for s in seeds] + ["mean over seeds ± s.e. [95%]"], body
    )


def build_seeds_report(path: Path, seeded: list[tuple[str, Study]]) -> Document:
    name = Path(path).name
    seeds = [s for s, _ in seeded]
    doc = Document(f"mft report: {name}")
    b = doc.blocks
    task = seeded[0][1].task
    b.append(Heading(1, f"Report: {name} (seeds {', '.join(seeds)})"))
    b.append(
        Para(
            f"A reproduce directory per seed on task `{task}`, the same problems in each: "
            + ", ".join(f"seed {s} (`{Path(st.path).name}/`, its own report.md)" for s, st in seeded)
            + ". Written by `mft report` from the saved files only; no model is loaded or run."
        )
    )
    b.append(Heading(2, "Accuracy"))
    b.append(accuracy_table(seeded))
    b.append(
        Para(
            TABLE_NOTE
            + own_base_note(k for _, study in seeded for k in table_entries(study))
            + own_setting_note(study for _, study in seeded)
            + " The last column is the mean of the seeds' numbers with its seed-to-seed standard "
            "error (their sample standard deviation over sqrt(seeds)); n/a where a seed has no such row."
        )
    )
    rows = [{"seed": s, **row} for s, study in seeded for row in paired_rows(study)]
    rows += mean_rows(rows, len(seeded))
    table = paired_table(rows, seeds)
    if table is not None:
        doc.data["paired.json"] = paired_json(rows)
        b.append(Heading(2, "Paired differences against Ours"))
        b.append(table)
        b.append(
            Para(
                PAIRED_NOTE
                + own_base_note(r["method"] for r in rows)
                + " The last column is the mean of the seeds' differences ± its seed-to-seed "
                "standard error, with a 95% interval from Student's t (seeds - 1 degrees of freedom); the "
                "seeds share their test problems, so no p-value is given for it."
            )
        )
    holds_blocks(doc, [study for _, study in seeded])
    notes = [f"seed {s}: {n}" for s, st in seeded for n in st.notes]
    if notes:
        b.append(Bullets(notes))
    return doc
