"""Accuracy of the debate's three readings, each with its standard error over problems."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mft.records import DebateRecord
from mft.tasks.base import Task


@dataclass(frozen=True)
class Estimate:
    mean: float
    se: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f}% ± {100 * self.se:.1f}"


def mean_se(values: Sequence[float]) -> Estimate:
    """Mean and standard error of the mean (sample std with ddof=1, over sqrt(n)); se is 0 for n < 2."""
    n = len(values)
    if n == 0:
        return Estimate(float("nan"), float("nan"), 0)
    mean = sum(values) / n
    if n < 2:
        return Estimate(mean, 0.0, n)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return Estimate(mean, math.sqrt(var / n), n)


def debate_accuracies(records: Sequence[DebateRecord], task: Task) -> dict[str, Estimate]:
    """single: mean over agents of round-1 correctness; majority: vote of the N independent round-1
    answers; debate: vote of the last round. All on the same problems and samples."""
    single = [
        sum(task.is_equivalent(a, r.problem.answer) for a in r.answers[0]) / len(r.answers[0])
        for r in records
    ]
    majority = [float(task.is_equivalent(r.round_consensus[0], r.problem.answer)) for r in records]
    debate = [float(r.correct) for r in records]
    return {"single": mean_se(single), "majority": mean_se(majority), "debate": mean_se(debate)}


def as_dict(estimates: dict[str, Estimate]) -> dict[str, dict[str, float]]:
    return {k: asdict(v) for k, v in estimates.items()}
