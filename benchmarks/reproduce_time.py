"""How much of a comparison's time goes to measuring (evaluation and diversity) rather than to the method.

Runs `mft reproduce` with its default methods on the bundled model (default 100 train / 100 test problems,
1 iteration, every other setting the run config's default) in a temporary directory, or reads a finished
reproduce directory (`--read DIR`, e.g. results/reproduce-arithmetic), then sums every method's
`timings.json` by stage. A stage another method had already computed is copied, not run again, and counts
only the copy. The last line is `measuring share: X% (diversity Y%)`: eval + diversity, and diversity alone,
as shares of all stage time.

    python benchmarks/reproduce_time.py [--n-train 100] [--n-test 100] [--iterations 1] [--out DIR]
    python benchmarks/reproduce_time.py --read results/reproduce-arithmetic
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mft.cli import main as mft_main
from mft.rundir import parse_timing_key

MEASURING = ("eval", "diversity")


def stage_seconds(root: Path) -> dict[str, float]:
    """Seconds per stage, summed over every method's run directory under `root` and its iterations."""
    totals: dict[str, float] = {}
    for path in sorted(root.glob("*/timings.json")):
        for key, seconds in json.loads(path.read_text()).items():
            parsed = parse_timing_key(key)
            if parsed is not None:
                totals[parsed[1]] = totals.get(parsed[1], 0.0) + float(seconds)
    if not totals:
        raise SystemExit(f"no */timings.json under {root}: is it a reproduce directory?")
    return totals


def report(totals: dict[str, float]) -> str:
    whole = sum(totals.values())
    lines = [f"{'stage':<12} {'seconds':>9} {'share':>7}"]
    for stage, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"{stage:<12} {seconds:9.1f} {100 * seconds / whole:6.1f}%")
    lines.append(f"{'all':<12} {whole:9.1f}")
    measuring = sum(totals.get(s, 0.0) for s in MEASURING)
    diversity = totals.get("diversity", 0.0)
    lines.append(
        f"measuring share: {100 * measuring / whole:.0f}% (diversity {100 * diversity / whole:.0f}%)"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--read", type=Path, help="a finished reproduce directory: read its timings, run nothing")
    ap.add_argument("--n-train", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--out", type=Path, help="runs directory to keep (default: a temporary one)")
    args = ap.parse_args()
    if args.read is not None:
        print(report(stage_seconds(args.read)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.out or Path(tmp)
        argv = ["reproduce", "--n-train", str(args.n_train), "--n-test", str(args.n_test)]
        argv += [
            "--iterations",
            str(args.iterations),
            "--runs-dir",
            str(runs),
            "--name",
            "timed",
            "--no-progress",
        ]
        start = time.perf_counter()
        rc = mft_main(argv)
        wall = time.perf_counter() - start
        if rc != 0:
            raise SystemExit(rc)
        print(f"mft reproduce {' '.join(argv[1:7])}: {wall:.0f} s wall")
        print(report(stage_seconds(runs / "timed")))


if __name__ == "__main__":
    main()
