"""Two readings of the same problems compared problem by problem: the paired difference and its test.

For problems i read by both (matched by uid), d_i = x_i - y_i, each x, y a problem's score in [0, 1] (0 or 1
for the majority and debate readings, the share of agents right for the single reading):
- `difference`: the mean of d in points (x 100), `se` its standard error (sample sd / sqrt(n)), and a 95%
  interval, difference +/- 1.96 se (normal: the test splits here have hundreds of problems);
- `p`: McNemar's exact test, two-sided: of the problems where the two differ, b favour x and c favour y;
  under no difference b ~ Binomial(b + c, 1/2), p = min(1, 2 P(B <= min(b, c))). For 0/1 readings this is
  McNemar's exact test on the discordant pairs; for shares it is the exact sign test, its generalisation.
Pairing removes the problems' own difficulty from the comparison, so a paired difference is far tighter
than two independent standard errors would say. Importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mft.eval.metrics import mean_se

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


@dataclass(frozen=True)
class Paired:
    n: int  # problems read by both
    difference: float  # mean of x - y, in points
    se: float  # its standard error, in points
    ci_low: float
    ci_high: float
    p: float  # McNemar's exact / the exact sign test, two-sided
    better: int  # problems where x > y
    worse: int  # problems where x < y


def sign_test(better: int, worse: int) -> float:
    """Two-sided exact p-value of `better` against `worse` under Binomial(better + worse, 1/2)."""
    n, k = better + worse, min(better, worse)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / (1 << n))  # exact integers, one division: no overflow at any n


def paired(x: Mapping[str, float], y: Mapping[str, float]) -> Paired | None:
    """x against y on the problems both read (uid -> score in [0, 1]); None when they share none."""
    shared = [uid for uid in x if uid in y]
    if not shared:
        return None
    d = [x[uid] - y[uid] for uid in shared]
    est = mean_se(d)
    diff, se = 100 * est.mean, 100 * est.se
    better, worse = sum(v > 0 for v in d), sum(v < 0 for v in d)
    return Paired(len(d), diff, se, diff - Z95 * se, diff + Z95 * se, sign_test(better, worse), better, worse)
