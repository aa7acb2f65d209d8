"""What each `mft` command does with its parsed arguments: build the config, call the library, print.

Each `cmd_<name>(args) -> int` returns the exit code; `mft.cli.main` picks one by the command's name and
turns the errors meant for people into one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from mft.backends import backend_class, backends_where
from mft.config import DebateConfig, RunConfig, load_config
from mft.errors import MftError


def _run_config(args: argparse.Namespace) -> RunConfig:
    return load_config(RunConfig, args.config, {k: getattr(args, k, None) for k in RunConfig.model_fields})


def _one_method_config(args: argparse.Namespace) -> RunConfig:
    """The settings of one method's run (`mft run`, a stage): at the method's own temperature where
    `method_temperatures` names it, as `mft reproduce` runs that method."""
    from mft.methods import of_run

    cfg = _run_config(args)
    return cfg.at_method_temperature(of_run(cfg.method, cfg.summarize, cfg.interaction).key)


def results_table(title: str, header: list[str], rows: list[list[str]], first_left: bool = True) -> Any:
    """A results table for the terminal: its title as a line of its own above it, not as the table's title,
    which rich wraps to the table's width (a narrow table turned an 80-column title into three centred
    fragments); the first column left-aligned, the numbers right-aligned."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i == 0 and first_left else "right")
    for row in rows:
        table.add_row(*row)
    return Group(Text(title, style="italic"), table)


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mft.pipeline.run import run

    cfg = _one_method_config(args)
    if args.dry_run:
        return _print_memory(cfg)
    results = run(cfg, progress=not args.no_progress, report=True)
    rows = [
        [
            "base" if res["iteration"] == 0 else str(res["iteration"]),
            *(
                f"{100 * res['accuracy'][m]['mean']:.1f}% ± {100 * res['accuracy'][m]['se']:.1f}"
                for m in ("single", "majority", "debate")
            ),
        ]
        for res in results
    ]
    title = f"{cfg.name}: test accuracy of the society's debate per iteration"
    header = ["iteration", "single agent", "majority", "debate"]
    Console().print(results_table(title, header, rows, first_left=False))
    print(f"report: {cfg.run_dir / 'report.md'}")
    print(f"artifacts: {cfg.run_dir}")
    return 0


def _print_memory(cfg: RunConfig) -> int:
    import torch

    from mft.backends.hf.memory import MemoryPlan, describe, estimate
    from mft.methods import of_run
    from mft.objectives import objective
    from mft.pipeline.assemble import build_task, objective_of

    if not backend_class(cfg.backend).estimates_memory:
        modelled = " or ".join(backends_where(lambda b: b.estimates_memory))
        raise MftError(f"--dry-run estimates the {modelled} backend's memory, not {cfg.backend}'s")
    dtype = {"float32": 4, "bfloat16": 2, "float16": 2}.get(str(cfg.backend_options.get("dtype")))
    # sequences per training item in one forward pass, the most of any slot's objective (a DPO batch of n
    # pairs is 2n sequences: chosen and rejected; a GRPO batch of n prompts n G sampled replies)
    slots = of_run(cfg.method, cfg.summarize, cfg.interaction).slot_names(cfg.n_agents)
    rows = max(objective(objective_of(cfg, s)).rows(cfg.grpo_group) for s in slots)
    micro = cfg.ft_micro_batch_size
    max_new_tokens = cfg.max_new_tokens or build_task(cfg).max_new_tokens
    for model in cfg.base_models():  # a mixed society: each base with its own agents, all in memory at once
        plan = MemoryPlan(
            model=model,
            agents=max(1, cfg.agent_models().count(model)),
            rounds=cfg.rounds,
            max_new_tokens=max_new_tokens,
            batch_size=cfg.batch_size,
            lora_rank=cfg.lora_rank,
            ft_method=cfg.ft_method,
            ft_batch_size=cfg.ft_batch_size * rows,
            ft_micro_batch_size=None if micro is None else micro * rows,
            ft_max_length=cfg.ft_max_length,
            gradient_checkpointing=cfg.ft_gradient_checkpointing,
            dtype_bytes=dtype,
            gpu=torch.cuda.is_available(),
        )
        print(f"{cfg.name}: estimated memory of {model} ({'GPU' if plan.gpu else 'CPU'}, docs/memory.md)")
        print("\n".join(describe(estimate(plan))))
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    """`mft eval --society RUN --task T`: the settings given (flags, and the keys of --config) go to the
    transfer, which keeps the run's society and debate settings and refuses a differing one."""
    import yaml

    from mft.pipeline.transfer import transfer

    given: dict[str, Any] = {}
    if args.config is not None:
        from_file = load_config(RunConfig, args.config)
        keys = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
        given.update({k: getattr(from_file, k) for k in keys if k in RunConfig.model_fields})
    given.update({k: v for k in RunConfig.model_fields if (v := getattr(args, k, None)) is not None})
    out, res = transfer(args.society, given, args.iteration, args.out, progress=not args.no_progress)
    print(json.dumps(res, indent=2))
    print(f"transfer: {out}")
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from mft.manifest import record_load_warnings
    from mft.pipeline import stages
    from mft.pipeline.assemble import build_backend, build_task
    from mft.pipeline.run import open_run
    from mft.rundir import RunDir

    if getattr(args, "society", None) is not None:
        return cmd_transfer(args)
    if getattr(args, "out", None) is not None:
        raise MftError("--out is for a transfer", hint="add --society RUN, or leave --out out")
    k = args.iteration
    if k is None:
        raise MftError("--iteration K is required", hint="e.g. --iteration 0 (the base) or the last one")
    cfg = _one_method_config(args)
    if k < (0 if args.command == "eval" else 1) or k > cfg.iterations:
        raise MftError(
            f"--iteration {k} is out of range", hint=f"use 1..{cfg.iterations} (eval: 0..{cfg.iterations})"
        )
    task = build_task(cfg)
    RunDir(cfg.run_dir).require_run(hint="start it with `mft run`")
    train, test = open_run(cfg, task)  # locked; the same settings and problems as the run's
    if args.command == "build-data":
        print(json.dumps(stages.stage_build_data(cfg, k, task), indent=2))
        return 0
    backend = build_backend(cfg, task)
    record_load_warnings(cfg.run_dir, backend.load_warnings)
    stages.check_max_new_tokens(backend, cfg.max_new_tokens or task.max_new_tokens)
    progress = not args.no_progress
    if args.command == "debate-train":
        stages.stage_debate(cfg, k, backend, task, train, progress)
    elif args.command == "finetune":
        stages.stage_finetune(cfg, k, backend, task, progress)
    else:
        res = stages.stage_eval(cfg, k, backend, task, test, progress)
        print(json.dumps(res, indent=2))
    return 0


def cmd_debate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mft.pipeline.debate import debate

    overrides = {k: getattr(args, k, None) for k in DebateConfig.model_fields}
    cfg = load_config(DebateConfig, args.config, overrides)
    outcome = debate(cfg, progress=not args.no_progress)
    size = f"{outcome.problems} problems, {cfg.n_agents} agents x {cfg.rounds} rounds"
    labels = {
        "single": "single agent (round 1, mean over agents)",
        "majority": f"majority vote of {cfg.n_agents} independent answers",
        "debate": f"debate ({cfg.rounds} rounds, majority of last round)",
    }
    rows = [[labels[key], str(est)] for key, est in outcome.accuracy.items()]
    console = Console()
    console.print(results_table(f"{cfg.task} / {cfg.split}: {size}", ["method", "accuracy (± s.e.)"], rows))
    console.print(f"records: {cfg.out / 'debate.jsonl'}   summary: {cfg.out / 'summary.json'}")
    return 0


def config_class_for(path: Path) -> type[DebateConfig] | type[RunConfig]:
    """The config class a file is for: the one that knows more of its keys (a run config has `iterations`,
    `name`, `n_train`...; a debate config `out`, `limit`, `split`), so a misspelt key is the only one
    reported; a tie is a debate config unless the file has `iterations`."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        return DebateConfig
    unknown_run = len(set(data) - set(RunConfig.model_fields))
    unknown_debate = len(set(data) - set(DebateConfig.model_fields))
    if unknown_run < unknown_debate or (unknown_run == unknown_debate and "iterations" in data):
        return RunConfig
    return DebateConfig


def validate_file(path: Path) -> str:
    """Check one config file (settings, task settings, backend settings); what it is, or an MftError."""
    from mft.backends import backend_settings
    from mft.pipeline.assemble import build_task

    cls = config_class_for(path)
    cfg = load_config(cls, path)
    build_task(cfg)  # task settings are checked too
    unknown = sorted(set(getattr(cfg, "backend_options", {})) - set(backend_settings(cfg.backend)))
    if unknown:
        raise MftError(
            f"{path}: backend {cfg.backend!r} has no setting {', '.join(map(repr, unknown))}",
            hint=f"its settings are: {', '.join(backend_settings(cfg.backend))}",
        )
    return f"{'run' if cls is RunConfig else 'debate'} config"


def cmd_validate(args: argparse.Namespace) -> int:
    """Every file is checked and reported (ok on stdout, one error line each on stderr); exit 2 if any is
    bad."""
    bad = 0
    for path in args.files:
        try:
            print(f"{path}: ok ({validate_file(path)})")
        except MftError as exc:
            if args.debug:
                raise
            bad += 1
            print(f"mft: error: {exc}", file=sys.stderr)
    return 2 if bad else 0


def cmd_toy(args: argparse.Namespace) -> int:
    from mft.toy.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(seed=args.seed)
    if args.steps is not None:
        cfg.steps = args.steps
    losses = pretrain(args.out, cfg)
    print(f"saved to {args.out}; final loss {losses[-1]:.4f}" if losses else f"saved to {args.out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from mft.serve import serve

    serve(
        model=args.model,
        run_dir=args.run_dir,
        iteration=args.iteration,
        agents=args.agents,
        rounds=args.rounds,
        task=args.task,
        host=args.host,
        port=args.port,
        society_name=args.society_name,
        batch_size=args.batch_size,
        log_level=args.log_level,
        api_key=args.api_key if args.api_key is not None else os.environ.get("MFT_API_KEY") or None,
        max_body_bytes=int(args.max_body_mb * 2**20),
        request_timeout_s=args.request_timeout,
        max_batch=args.max_batch,
        backend_name=args.backend,
    )
    return 0


def reproduce_title(task: str) -> str:
    return f"{task}: test accuracy after the last iteration (readings: see the report)"


def cmd_reproduce(args: argparse.Namespace) -> int:
    from mft.pipeline.reproduce import reproduce, reproduce_seeds

    cfg = _run_config(args)
    named = args.name is not None or (args.config is not None and "name:" in args.config.read_text())
    if not named:
        cfg = cfg.model_copy(update={"name": f"reproduce-{cfg.task}"})
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    if args.seeds is not None:
        root = reproduce_seeds(cfg, args.seeds, methods, progress=not args.no_progress)
    else:
        root = reproduce(cfg, methods, progress=not args.no_progress)
    from rich.console import Console

    from mft.report import load, methods_table
    from mft.report.seeds import accuracy_table, is_seeds, load_seeds

    if is_seeds(root):
        seeded = load_seeds(root)
        task, table = seeded[0][1].task, accuracy_table(seeded)
    else:
        study = load(root)
        task, table = study.task, methods_table([(study.task, study)])
    Console().print(results_table(reproduce_title(task), table.header, table.rows))
    print(f"report: {root / 'report.md'} (and report.html, plots in {root / 'plots'})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mft.report import write_report

    if args.keep is not None:
        if args.out is not None:
            raise MftError("--keep and --out both say where to write", hint="give one of them")
        from mft.report.keep import keep_and_report

        n, md = keep_and_report(args.path, args.keep)
        print(f"kept {n} files of {args.path} in {args.keep}")
    else:
        md = write_report(args.path, args.out)
    print(f"report: {md} (and {md.with_suffix('.html').name}, plots in {md.parent / 'plots'})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mft.report import write_compare

    md = write_compare(args.paths, args.out)
    print(f"comparison: {md} (and {md.with_suffix('.html').name}, plots in {md.parent / 'plots'})")
    return 0
