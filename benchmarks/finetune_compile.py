"""A whole finetune stage with the training forward compiled (torch.compile) against the same stage eager.

Reads a finished run (`--run-dir`, e.g. from `mft run --iterations 1`): iteration 1's datasets and the
run's finetune settings. Each mode runs in a fresh process (so compilation is paid as a run would pay it,
nothing cached in memory) and trains every slot of the iteration from scratch into a temporary directory,
as `stage_finetune` does; `--compile` wraps the shared PeftModel in `torch.compile(dynamic=True)` for the
training forward only. Printed: the stage's seconds per mode, compilation included, the mean final loss of
each (they must agree to within training noise: same seeds, other kernels), and the ratio, last.

    python benchmarks/finetune_compile.py --run-dir runs/NAME [--modes eager compiled eager compiled]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def stage(run_dir: Path, compiled: bool) -> dict[str, Any]:
    """Train every slot of iteration 1 of `run_dir` into a temporary directory; seconds and final losses."""
    import torch

    import mft.backends.hf.train as train
    from mft.backends.base import Agent
    from mft.config import RunConfig
    from mft.data.examples import read_training_data
    from mft.methods import of_run
    from mft.pipeline.assemble import build_backend, build_task, finetune_settings, objective_of
    from mft.rundir import RunDir

    rd = RunDir(run_dir)
    cfg = RunConfig.model_validate(rd.manifest_config())
    backend = build_backend(cfg, build_task(cfg))
    settings = finetune_settings(cfg, 1)
    if compiled:
        plain = train.token_loss_sum
        cache: dict[int, Any] = {}

        def token_loss_sum(model: Any, batch: dict[str, Any], keep_logits: bool) -> Any:
            if id(model) not in cache:
                cache[id(model)] = torch.compile(model, dynamic=True)
            return plain(cache[id(model)], batch, keep_logits)

        train.token_loss_sum = token_loss_sum
    losses = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in of_run(cfg.method, cfg.summarize, cfg.interaction).slot_names(cfg.n_agents):
            objective = objective_of(cfg, name)
            data = read_training_data(rd.examples(1, name), objective)
            out = Path(tmp) / name
            backend.finetune(Agent(name, None), data, out, settings)
            stats = json.loads((out / "train_stats.json").read_text())
            losses[name] = round(stats["last_loss"], 4)
    return {"seconds": time.perf_counter() - start, "losses": losses, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--modes", nargs="+", choices=["eager", "compiled"], default=["eager", "compiled"])
    ap.add_argument("--one", choices=["eager", "compiled"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(stage(args.run_dir, args.one == "compiled")))
        return
    best: dict[str, float] = {}
    for mode in args.modes:
        out = (
            subprocess.run(
                [sys.executable, __file__, "--run-dir", str(args.run_dir), "--one", mode],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        got = json.loads(out)
        best[mode] = min(best.get(mode, float("inf")), got["seconds"])
        print(f"{mode:9s} {got['seconds']:7.1f} s  final losses {got['losses']}", flush=True)
    if "eager" in best and "compiled" in best:
        ratio = best["eager"] / best["compiled"]
        print(f"finetune stage, compiled vs eager (compilation included): {ratio:.2f}x")


if __name__ == "__main__":
    main()
