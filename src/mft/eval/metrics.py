"""The one mean-with-standard-error (`Estimate`); the debate's readings as its means: `mft.eval.outcomes`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error, and the sample size (None where a file read back does not give one).

    An undefined standard error is NaN: `pct`, `plain` and `err` show or draw it as n/a / no bar.
    """

    mean: float
    se: float
    n: int | None = None

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f}% ± {100 * self.se:.1f}"

    def pct(self) -> str:
        """As a percentage with one decimal, e.g. '31.2 ± 2.1' ('31.2 ± n/a' without a standard error)."""
        return f"{100 * self.mean:.1f} ± " + ("n/a" if math.isnan(self.se) else f"{100 * self.se:.1f}")

    def plain(self) -> str:
        """Unscaled with three decimals, e.g. '0.812 ± 0.013' (diversity metrics)."""
        return f"{self.mean:.3f} ± " + ("n/a" if math.isnan(self.se) else f"{self.se:.3f}")

    @property
    def err(self) -> float:
        """The standard error for error bars (0 where there is none)."""
        return 0.0 if math.isnan(self.se) else self.se


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


def strict_json(e: Estimate) -> dict[str, Any]:
    """`{"mean", "se", "n"}` with NaN (no data) as None, so the file is strict JSON (diversity.json)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(e).items()}


def as_dict(estimates: dict[str, Estimate]) -> dict[str, dict[str, Any]]:
    """results.json's `accuracy`: each reading as `{"mean", "se", "n"}` (NaN kept, as it always was)."""
    return {k: asdict(v) for k, v in estimates.items()}
