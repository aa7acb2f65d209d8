"""Per-problem outcomes of an evaluation, and the accuracies as their means.

Every evaluation (a run's `iter_<k>/eval/`, `mft debate`'s output directory) writes `outcomes.jsonl.gz`
beside its results, one line per problem in the debate file's order:

    {"uid": "arith-test-17", "gold": "42",
     "answers": [["42", "41", null], ["42", "42", "42"]],   # every agent's answer in every round
     "majority": "42",                                      # the vote of the round-1 answers
     "debate": "42",                                        # the vote of the last round
     "correct": {"single": 0.3333333333333333, "majority": 1, "debate": 1}}

`correct.single` is the share of the agents right in round 1; `majority` and `debate` are 0 or 1. The
accuracies of results.json are the means of these three columns (`accuracies`), and `debate_accuracies`
computes them that way, so the two files cannot disagree. Two methods' outcomes on the same problems give
paired statistics (`mft.eval.paired`). Compressed with no timestamp in the gzip header: the same outcomes
are the same bytes. Importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mft.errors import MftError
from mft.eval.metrics import Estimate, mean_se
from mft.records import DebateRecord, write_text_atomic
from mft.tasks.base import Task

READINGS = ("single", "majority", "debate")


def outcome(record: DebateRecord, task: Task) -> dict[str, Any]:
    """One problem's line (module docstring)."""
    gold = record.problem.answer
    first = record.answers[0] if record.answers else []
    majority = record.round_consensus[0] if record.round_consensus else None
    single = sum(task.is_equivalent(a, gold) for a in first) / len(first) if first else 0.0
    return {
        "uid": record.problem.id,
        "gold": gold,
        "answers": [list(r) for r in record.answers],
        "majority": majority,
        "debate": record.consensus,
        "correct": {
            "single": single,
            "majority": int(bool(task.is_equivalent(majority, gold))),
            "debate": int(record.correct),
        },
    }


def outcomes_of(records: Sequence[DebateRecord], task: Task) -> list[dict[str, Any]]:
    return [outcome(r, task) for r in records]


def accuracies(outcomes: Sequence[dict[str, Any]]) -> dict[str, Estimate]:
    """Each reading's accuracy: the mean of its `correct` column with its standard error over problems."""
    return {r: mean_se([float(o["correct"][r]) for o in outcomes]) for r in READINGS}


def debate_accuracies(records: Sequence[DebateRecord], task: Task) -> dict[str, Estimate]:
    """single: mean over agents of round-1 correctness; majority: vote of the N independent round-1
    answers; debate: vote of the last round. All on the same problems and samples (`accuracies` of the
    records' outcomes)."""
    return accuracies(outcomes_of(records, task))


def write_outcomes(path: Path, outcomes: Sequence[dict[str, Any]]) -> None:
    """outcomes.jsonl.gz, atomically (a temp name, then a rename), byte-identical for the same outcomes."""
    text = "".join(json.dumps(o, sort_keys=True, separators=(",", ":")) + "\n" for o in outcomes)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    write_text_atomic(path, buffer.getvalue())


def read_outcomes(path: Path) -> list[dict[str, Any]]:
    """The lines of an outcomes file, each checked for what paired statistics read; an MftError names the
    file and the line otherwise."""
    hint = "it is written with the evaluation's results; delete both and re-run the evaluation"
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise MftError(f"{path} is missing", hint=hint) from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise MftError(f"{path} cannot be read ({exc})", hint=hint) from None
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ok = isinstance(row["uid"], str) and all(
                isinstance(row["correct"][r], int | float) and not isinstance(row["correct"][r], bool)
                for r in READINGS
            )
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            needs = "uid and correct." + "/".join(READINGS)
            raise MftError(f"{path}:{i}: not an outcome line (needs {needs})", hint=hint)
        out.append(row)
    return out
