"""The per-iteration scalars of a run, read from its saved files (the same files the report reads):

    accuracy/single, accuracy/majority, accuracy/debate   (each with accuracy/<reading>_se)   results.json
    tokens/eval, tokens/train_debate                      generated tokens                   results.json
    data/D_G, data/D_C_minus, data/D_C_plus               summed over agents                 data/sizes.json
    data/<slot>/<count>                                   each agent's counts, e.g. data/gen_0/examples,
                                                          data/critic_0/D_C_minus
    diversity/<metric>                                    (each with diversity/<metric>_se)  diversity.json

Seconds per stage (`seconds/<stage>`) and the training curves are logged as they happen (`session.py`).
Each file is read only once it exists, and it exists only once complete (written whole, then renamed).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from mft.rundir import RunDir

USAGE_NAMES = {"generated_tokens": "tokens/eval", "train_debate_generated_tokens": "tokens/train_debate"}
# the critics' counts of sizes.json summed into the paper's D_C- / D_C+ (D_C+: what was available to mix)
SIZE_TOTALS = {"corrected (D_C-)": "data/D_C_minus", "kept available (D_C+)": "data/D_C_plus"}


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    loaded = json.loads(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def metric_name(text: str) -> str:
    """A count's label as a scalar name every tracker accepts: 'corrected (D_C-)' -> 'corrected_D_C'."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_")


def _estimates(prefix: str, entries: dict[str, Any]) -> dict[str, float]:
    """`prefix/<name>` and `prefix/<name>_se` of every {mean, se} entry."""
    out: dict[str, float] = {}
    for name, est in entries.items():
        if isinstance(est, dict) and _number(est.get("mean")):
            out[f"{prefix}/{name}"] = float(est["mean"])
            if _number(est.get("se")):
                out[f"{prefix}/{name}_se"] = float(est["se"])
    return out


def iteration_scalars(rd: RunDir, k: int) -> dict[str, float]:
    """Every per-iteration scalar iteration k's finished files give (none for a file not written yet)."""
    out: dict[str, float] = {}
    results = _read(rd.results(k))
    out.update(_estimates("accuracy", results.get("accuracy") or {}))
    for key, value in (results.get("usage") or {}).items():
        if _number(value):
            out[USAGE_NAMES.get(key, f"tokens/{metric_name(key)}")] = float(value)
    sizes = _read(rd.sizes(k))
    generators = [s for slot, s in sizes.items() if slot.startswith("gen_") and isinstance(s, dict)]
    if generators:  # methods that train generators (one-model methods have no D_G)
        out["data/D_G"] = float(sum(s.get("examples", 0) for s in generators))
    for slot, counts in sizes.items():
        for label, value in (counts if isinstance(counts, dict) else {}).items():
            if not _number(value):
                continue
            total = SIZE_TOTALS.get(label)
            out[f"data/{slot}/{total.removeprefix('data/') if total else metric_name(label)}"] = float(value)
            if total:
                out[total] = out.get(total, 0.0) + value
    out.update(_estimates("diversity", _read(rd.diversity(k))))
    return out
