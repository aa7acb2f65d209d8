"""What an objective measured per optimizer step while it trained (GRPO's reward, KL, groups without a
signal), read from each agent's `iter_<k>/agents/<slot>/train_stats.json` (its `curves`, written by the hf
trainer) when a run is loaded for the report."""

from __future__ import annotations

import json
from pathlib import Path

from mft.rundir import RunDir

Curves = dict[int, dict[str, dict[str, list[float]]]]  # iteration -> slot -> measure -> per step


def read_curves(path: Path) -> Curves:
    """Each iteration's agents' per-step measures (iteration -> slot -> name -> values); only agents whose
    objective recorded some."""
    rd = RunDir(path)
    out: Curves = {}
    for k in sorted(rd.iterations_on_disk()):
        agents = rd.iteration(k) / "agents"
        for stats in sorted(agents.glob("*/train_stats.json")) if agents.is_dir() else []:
            try:
                curves = json.loads(stats.read_text(encoding="utf-8")).get("curves")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(curves, dict) and curves:
                out.setdefault(k, {})[stats.parent.name] = curves
    return out
