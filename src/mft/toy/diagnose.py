"""The bundled model's answers in a debate file against the worked solution, line by line.

`python -m mft.toy.diagnose DEBATE_FILE` prints, for each round: the share of answers right; the share whose
whole work is the slip-free solution, one of the corpus's slip patterns (`corpus.SLIP_OFFSETS`, one to three
slips), or something else; how often each slip appears in an answer that is exactly a slip pattern; and how
often each line of the work is the slip-free line. docs/toy-model.md quotes these for the shipped model's
`mft debate --config configs/arithmetic-debate.yaml` run.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from mft.records import read_debates
from mft.toy.corpus import SLIP_OFFSETS, chain

LINES = ("first product", "second product", "first sum", "second sum", "difference")
# each slip of `corpus.SLIP_OFFSETS` in an answer that is exactly a slip pattern
SLIPS = ("slip 1 (first product's tens)", "slip 2 (second product's hundreds)", "slip 3 (difference's units)")


def diagnose(path: Path) -> list[dict[str, float]]:
    """Per round: `right`, `slip_free`, `slip_pattern`, `other`, each slip's and line's share (fractions)."""
    records = read_debates(path)
    rounds = max(len(r.responses) for r in records)
    out = []
    for r in range(rounds):
        counts = dict.fromkeys(("answers", "right", "slip_free", "slip_pattern", "other", *SLIPS, *LINES), 0)
        for rec in records:
            if r >= len(rec.responses):
                continue
            ops = tuple(rec.problem.meta["ops"])  # the arithmetic task keeps each problem's operands
            combos = [(offs, chain(ops, offs)) for offs in itertools.product(*((0, o) for o in SLIP_OFFSETS))]
            truth = combos[0][1]
            for response, answer in zip(rec.responses[r], rec.answers[r], strict=True):
                counts["answers"] += 1
                counts["right"] += answer == rec.problem.answer
                text = response.strip()
                match = next((offs for offs, c in combos if text == c.render()), None)
                kind = "other" if match is None else "slip_free" if not any(match) else "slip_pattern"
                counts[kind] += 1
                for name, off in zip(SLIPS, match or (0, 0, 0), strict=True):
                    counts[name] += off != 0
                written = text.split("\n")
                for i, name in enumerate(LINES):
                    counts[name] += i < len(written) and written[i] == truth.lines[i]
        n = max(1, counts.pop("answers"))
        out.append({k: v / n for k, v in counts.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mft.toy.diagnose DEBATE_FILE (a debate.jsonl of the bundled model)")
        return 2
    for r, row in enumerate(diagnose(Path(args[0])), start=1):
        print(f"round {r}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
