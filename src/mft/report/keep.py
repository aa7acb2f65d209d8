"""`mft report PATH --keep DIR`: the small files a report is written from, copied out of a run, a reproduce
directory or a reproduce over seeds into DIR (to commit beside a paper, or to share), then DIR's report.

Kept, wherever they lie under PATH: `manifest.json`, `timings.json`, `reproduce.json`, `seeds.json`, and per
iteration `eval/results.json`, `eval/outcomes.jsonl.gz` (every problem's answers, votes and gold),
`diversity.json`, `data/sizes.json` and `agents/<slot>/train_stats.json` (an objective's training curves);
a run's `transfer/<task>/` evaluations the same way. Not kept: the debates, the datasets, the adapters and
the trackers' logs (tens of MB a run). The report written from the kept files is the one written from PATH
but for the debate-dynamics section's training columns, which read the training debates.

No machine path leaves with the files: in a kept JSON file, a path under the directory that holds PATH (its
runs directory; for one seed's `seed_<s>/` of a reproduce over seeds, the one that holds that reproduce) is
written as `runs/...`, as if under the default runs directory.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from mft.errors import MftError
from mft.manifest import MANIFEST
from mft.records import write_text_atomic
from mft.rundir import OUTCOMES, REPRODUCE, SEEDS

KEPT = frozenset(
    {
        MANIFEST,
        "timings.json",
        REPRODUCE,
        SEEDS,
        "results.json",
        OUTCOMES,
        "diversity.json",
        "sizes.json",
        "train_stats.json",
    }
)


def keep(path: Path, out: Path) -> int:
    """Copy PATH's kept files into OUT (new or empty, outside PATH), with its runs directory's paths made
    relative; the number of files kept. One MftError, naming the directory, on a bad PATH or OUT."""
    src = Path(path).resolve()
    if not any((src / name).is_file() for name in (MANIFEST, REPRODUCE, SEEDS)):
        raise MftError(
            f"{path} is not a run, reproduce or seeds directory (no {MANIFEST}, {REPRODUCE} or {SEEDS})",
            hint="pass the directory `mft run` or `mft reproduce` wrote",
        )
    dst = Path(out).resolve()
    if dst == src or src in dst.parents:
        raise MftError(f"--keep {out} is inside {path}", hint="choose a directory outside the run")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise MftError(f"--keep {out} exists and is not an empty directory", hint="choose a new directory")
    runs_dir = src.parent
    if re.fullmatch(r"seed_\d+", src.name) and (runs_dir / SEEDS).is_file():
        runs_dir = runs_dir.parent  # one seed of a reproduce over seeds: the runs directory holds that
    # the runs directory as JSON spells it: as a whole value, then as the start of paths under it
    runs = json.dumps(str(runs_dir))
    relative = ((runs, '"runs"'), (runs[1:-1] + "/", "runs/"))
    files = sorted(p for p in src.rglob("*") if p.name in KEPT and p.is_file())
    for p in files:
        target = dst / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".json":
            text = p.read_text(encoding="utf-8")
            for absolute, kept in relative:
                text = text.replace(absolute, kept)
            write_text_atomic(target, text)
        else:
            shutil.copyfile(p, target)
    return len(files)


def keep_and_report(path: Path, out: Path) -> tuple[int, Path]:
    """`keep`, then the reports written from the kept files: each seed's and the mean's for a reproduce over
    seeds, else the one. (files kept, the top report.md)."""
    from mft.report.build import build_report, write_report
    from mft.report.document import write_document
    from mft.report.seeds import build_seeds_report, is_seeds, load_seeds

    n = keep(path, out)
    if not is_seeds(out):
        return n, write_report(out)
    seeded = load_seeds(out)  # each seed read once, for its own report and the mean's
    for _, study in seeded:
        write_document(build_report(study), study.path, "report")
    return n, write_document(build_seeds_report(out, seeded), Path(out), "report")
