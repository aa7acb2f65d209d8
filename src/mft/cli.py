"""The `mft` command. `main(argv) -> int` so tests can call it; errors print one line and exit non-zero."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mft import __version__
from mft.config import DebateConfig, add_config_arguments, load_config
from mft.errors import MftError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mft",
        description="Multiagent finetuning: debate, build per-agent data, finetune a society of agents.",
    )
    p.add_argument("--version", action="version", version=f"mft {__version__}")
    p.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser(
        "debate",
        help="Run a multiagent debate on a task and print single / majority / debate accuracy.",
        description="Run N agents x M rounds of debate on a task split; records go to OUT/debate.jsonl "
        "(resumable: re-running the same command continues where it stopped).",
    )
    d.add_argument("--config", type=Path, default=None, help="YAML file of settings; flags override it.")
    d.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    add_config_arguments(d, DebateConfig)

    v = sub.add_parser("validate", help="Check config files without running anything.")
    v.add_argument("files", nargs="+", type=Path)

    t = sub.add_parser("toy", help="The bundled tiny base model: rebuild it from its recipe.")
    tsub = t.add_subparsers(dest="toy_command", required=True, metavar="TOY_COMMAND")
    tp = tsub.add_parser("pretrain", help="Rebuild the bundled model from its seeded recipe (~15 min on 2 cores).")
    tp.add_argument("--out", type=Path, required=True, help="Directory to save the new checkpoint in.")
    tp.add_argument("--seed", type=int, default=0, help="Seed of the corpus and the initialisation.")
    tp.add_argument("--steps", type=int, default=None, help="Training steps (default: the recipe's).")
    return p


def cmd_debate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    overrides = {k: getattr(args, k) for k in DebateConfig.model_fields}
    cfg = load_config(DebateConfig, args.config, overrides)

    from mft.backends import get_backend
    from mft.debate.engine import DebateSettings, Society, run_debate
    from mft.eval.metrics import as_dict, debate_accuracies
    from mft.records import write_json_atomic
    from mft.tasks import get_task
    from mft.backends.base import Sampling

    task = get_task(cfg.task)
    problems = task.load(cfg.split, cfg.limit, seed=cfg.split_seed)
    backend = get_backend(cfg.backend, cfg.model, batch_size=cfg.batch_size)
    settings = DebateSettings(
        rounds=cfg.rounds,
        summarize=cfg.summarize,
        sampling=Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens),
        seed=cfg.seed,
        chunk_size=cfg.chunk_size,
    )
    cfg.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    records = run_debate(
        backend, task, problems, Society.of_base(cfg.agents), settings, cfg.out / "debate.jsonl",
        progress=not args.no_progress,
    )
    acc = debate_accuracies(records, task)
    summary = {
        "config": json.loads(cfg.model_dump_json()),
        "accuracy": as_dict(acc),
        "seconds_this_invocation": round(time.time() - start, 2),
        "generated_tokens_this_invocation": backend.stats.completion_tokens,
    }
    write_json_atomic(cfg.out / "summary.json", summary)
    table = Table(title=f"{cfg.task} / {cfg.split}: {len(records)} problems, {cfg.agents} agents x {cfg.rounds} rounds")
    table.add_column("method")
    table.add_column("accuracy (± s.e.)", justify="right")
    labels = {
        "single": "single agent (round 1, mean over agents)",
        "majority": f"majority vote of {cfg.agents} independent answers",
        "debate": f"debate ({cfg.rounds} rounds, majority of last round)",
    }
    for key, est in acc.items():
        table.add_row(labels[key], str(est))
    console = Console()
    console.print(table)
    console.print(f"records: {cfg.out / 'debate.jsonl'}   summary: {cfg.out / 'summary.json'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    for path in args.files:
        load_config(DebateConfig, path)
        print(f"{path}: ok")
    return 0


def cmd_toy(args: argparse.Namespace) -> int:
    from mft.toy.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(seed=args.seed)
    if args.steps is not None:
        cfg.steps = args.steps
    losses = pretrain(args.out, cfg)
    print(f"saved to {args.out}; final loss {losses[-1]:.4f}" if losses else f"saved to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handlers = {"debate": cmd_debate, "validate": cmd_validate, "toy": cmd_toy}
    try:
        return handlers[args.command](args)
    except MftError as exc:
        if args.debug:
            raise
        print(f"mft: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mft: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def entrypoint() -> None:
    sys.exit(main())
