"""The `mft` command. `main(argv) -> int` so tests can call it; errors print one line and exit non-zero."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from mft import __version__
from mft.backends import backend_class, backends_where
from mft.config import DebateConfig, RunConfig, load_config
from mft.config_flags import add_config_arguments
from mft.errors import MftError
from mft.methods import LABELS, METHODS
from mft.tasks import TASKS

_DEFAULT = [m for m in METHODS if m.in_default]  # what a plain `mft reproduce` runs


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

    r = sub.add_parser(
        "run",
        help="The whole method: iterations of debate -> per-agent data -> finetune -> eval.",
        description="Multiagent finetuning. Artifacts go to RUNS_DIR/NAME; killing the process and "
        "re-running the same command continues from the last finished unit.",
    )
    _run_args(r)
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="Print the estimated peak memory of this run (hf backend: weights, adapters, optimizer, "
        "activations, loss, KV cache) and exit without loading the model.",
    )
    stages = {
        "debate-train": "Stage 1 of iteration K: the society of iteration K-1 debates the train split.",
        "build-data": "Stage 2 of iteration K: per-agent generator and critic datasets from its debate.",
        "finetune": "Stage 3 of iteration K: finetune each agent on its own dataset.",
        "eval": "Stage 4 of iteration K: the society of iteration K debates the test split (K=0: the base).",
    }
    for stage, text in stages.items():
        sp = sub.add_parser(stage, help=text, description=text + " Reads and writes the run directory.")
        sp.add_argument(
            "--iteration",
            type=int,
            required=stage != "eval",
            help="Iteration K (1-based; eval accepts 0; with --society: default the run's latest).",
        )
        _run_args(sp)
        if stage == "eval":
            sp.add_argument(
                "--society",
                type=Path,
                default=None,
                metavar="RUN",
                help="Zero-shot transfer: evaluate the society of run directory RUN (iteration K) on --task "
                "instead; RUN is only read, results go to RUN/transfer/<task>/ (see docs/experiments.md).",
            )
            sp.add_argument(
                "--out",
                type=Path,
                default=None,
                metavar="DIR",
                help="With --society: write the transfer into DIR instead of RUN/transfer/<task>/.",
            )

    v = sub.add_parser("validate", help="Check config files without running anything.")
    v.add_argument("files", nargs="+", type=Path)

    s = sub.add_parser(
        "serve",
        help="Serve a society of agents over an OpenAI-compatible HTTP API (chat completions).",
        description="OpenAI-compatible server (hf or vllm backend): model=<agent> runs one agent, "
        "model=<base model> the bare base model, model=society a whole debate on the last user message "
        "(the consensus response, plus the transcript in `mft_debate`). GET /v1/models lists them. "
        "See docs/backends.md.",
    )
    s.add_argument(
        "--model",
        default=None,
        help="Base model: 'bundled', a local path or a hub id (default: "
        "the run's model with --run-dir, else bundled).",
    )
    s.add_argument("--run-dir", type=Path, default=None, help="Serve the society of this run (runs/<name>).")
    s.add_argument(
        "--iteration",
        type=int,
        default=None,
        help="Which iteration's society to serve (needs --run-dir; default: its latest; 0: base).",
    )
    s.add_argument("--agents", type=int, default=None, help="Number of agents N (default 3; a run's own N).")
    s.add_argument(
        "--rounds", type=int, default=None, help="Debate rounds per society request (default 2; a run's own)."
    )
    s.add_argument(
        "--task",
        default=None,
        choices=list(TASKS),
        help="Task for answer extraction and voting (default arithmetic; a run's own).",
    )
    s.add_argument("--society-name", default="society", help="Model name of the society (default: society).")
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="Address to listen on (default 127.0.0.1: this machine only; any other address warns unless "
        "an API key is set).",
    )
    s.add_argument(
        "--port", type=_port, default=8000, help="Port 0-65535 (default 8000; 0: any free port, printed)."
    )
    s.add_argument(
        "--api-key",
        default=None,
        help="Require 'Authorization: Bearer KEY' on every route (401 otherwise); default: the "
        "MFT_API_KEY environment variable, else no key.",
    )
    s.add_argument(
        "--max-body-mb",
        type=_positive(float),
        default=4.0,
        help="Largest request body in MiB (default 4; larger: 413).",
    )
    s.add_argument(
        "--request-timeout",
        type=_positive(float),
        default=600.0,
        metavar="SECONDS",
        help="A request still unanswered after this long gets a 504 and is abandoned (default 600).",
    )
    s.add_argument(
        "--max-batch",
        type=_positive(int),
        default=64,
        help="Most concurrent requests batched together (default 64; 1: one at a time, so a sampled "
        "reply depends only on its request and seed).",
    )
    s.add_argument(
        "--batch-size", type=_positive(int), default=256, help="hf backend batch size (default 256)."
    )
    s.add_argument(
        "--backend",
        default="hf",
        choices=backends_where(lambda b: b.loads_adapters),
        help="Engine that generates (default hf; vllm: every agent a LoRA adapter on one vLLM engine).",
    )
    s.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level (default info).",
    )

    rp = sub.add_parser(
        "report",
        help="Tables and plots from a run or reproduce directory (reads saved files; runs no model).",
        description="Write PATH/report.md, PATH/report.html (self-contained) and PATH/plots/*.png from a run "
        "directory (runs/<name>) or a reproduce directory (reproduce.json). See docs/report.md.",
    )
    rp.add_argument("path", type=Path, metavar="PATH", help="A run directory or a reproduce directory.")
    rp.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="Write into this directory instead of PATH."
    )

    cp = sub.add_parser(
        "compare",
        help="Several runs / reproduce directories side by side (methods x tasks table, Ours curves).",
        description="Write DIR/compare.md, DIR/compare.html and DIR/plots/: one table with a column per "
        "input (the task when each input has its own, else the directory name). See docs/report.md.",
    )
    cp.add_argument("paths", type=Path, nargs="+", metavar="RUN", help="Run or reproduce directories.")
    cp.add_argument("--out", type=Path, required=True, metavar="DIR", help="Directory to write into.")

    rr = sub.add_parser(
        "reproduce",
        help="Every method of the paper's comparison on one task (same problems and seeds), then the report.",
        description=f"Runs {', '.join(m.label for m in _DEFAULT[:-1])} and {_DEFAULT[-1].label} "
        f"({LABELS['base']}, {LABELS['majority']} and {LABELS['debate']} are iteration 0; "
        f"{', '.join(m.label for m in METHODS if not m.in_default)} when named in --methods) into "
        "RUNS_DIR/NAME/<method>, then writes "
        "RUNS_DIR/NAME/report.md|html. Resumable like `mft run`. NAME defaults to reproduce-<task>.",
    )
    rr.add_argument(
        "--methods",
        default=None,
        help=f"Comma list of methods to run (default: {', '.join(m.key for m in _DEFAULT)}; also "
        f"{', '.join(m.key for m in METHODS if not m.in_default)}).",
    )
    _run_args(rr)

    t = sub.add_parser("toy", help="The bundled tiny base model: rebuild it from its recipe.")
    tsub = t.add_subparsers(dest="toy_command", required=True, metavar="TOY_COMMAND")
    tp = tsub.add_parser(
        "pretrain", help="Rebuild the bundled model from its seeded recipe (~17 min on 2 cores)."
    )
    tp.add_argument("--out", type=Path, required=True, help="Directory to save the new checkpoint in.")
    tp.add_argument("--seed", type=int, default=0, help="Seed of the corpus and the initialisation.")
    tp.add_argument("--steps", type=int, default=None, help="Training steps (default: the recipe's).")
    return p


def _port(text: str) -> int:
    """argparse type of --port: an integer 0-65535 (argparse turns the ValueError into one usage line)."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port: use 0-65535 (0: any free port)")
    return port


def _positive(kind: type[int] | type[float]) -> Any:
    """argparse type: a number of `kind` above zero."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} must be above 0")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value" messages
    return parse


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="YAML file of settings; flags override it.")
    p.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    add_config_arguments(p, RunConfig)


def _run_config(args: argparse.Namespace) -> RunConfig:
    return load_config(RunConfig, args.config, {k: getattr(args, k, None) for k in RunConfig.model_fields})


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

    cfg = _run_config(args)
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

    from mft.backends.hf_memory import MemoryPlan, describe, estimate
    from mft.methods import of_run
    from mft.pipeline.assemble import build_task
    from mft.pipeline.stages import objective_of

    if not backend_class(cfg.backend).estimates_memory:
        modelled = " or ".join(backends_where(lambda b: b.estimates_memory))
        raise MftError(f"--dry-run estimates the {modelled} backend's memory, not {cfg.backend}'s")
    dtype = {"float32": 4, "bfloat16": 2, "float16": 2}.get(str(cfg.backend_options.get("dtype")))
    # a DPO batch of n pairs is 2n sequences in one forward pass (chosen and rejected)
    rows = (
        2
        if any(
            objective_of(cfg, s) == "dpo" for s in of_run(cfg.method, cfg.summarize).slot_names(cfg.n_agents)
        )
        else 1
    )
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
    cfg = _run_config(args)
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
    stages.check_max_new_tokens(backend, cfg.max_new_tokens or task.max_new_tokens)
    progress = not args.no_progress
    if args.command == "debate-train":
        stages.stage_debate(cfg, k, backend, task, train, progress)
    elif args.command == "finetune":
        stages.stage_finetune(cfg, k, backend, progress)
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
    from mft.pipeline.reproduce import reproduce

    cfg = _run_config(args)
    named = args.name is not None or (args.config is not None and "name:" in args.config.read_text())
    if not named:
        cfg = cfg.model_copy(update={"name": f"reproduce-{cfg.task}"})
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    root = reproduce(cfg, methods, progress=not args.no_progress)
    from rich.console import Console

    from mft.report import load, methods_table

    study = load(root)
    table = methods_table([(study.task, study)])
    Console().print(results_table(reproduce_title(study.task), table.header, table.rows))
    print(f"report: {root / 'report.md'} (and report.html, plots in {root / 'plots'})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mft.report import write_report

    md = write_report(args.path, args.out)
    print(f"report: {md} (and {md.with_suffix('.html').name}, plots in {md.parent / 'plots'})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mft.report import write_compare

    md = write_compare(args.paths, args.out)
    print(f"comparison: {md} (and {md.with_suffix('.html').name}, plots in {md.parent / 'plots'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.debug:
        # Library deprecation chatter (e.g. peft calling deprecated transformers APIs) is not for users.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # peft notes each time a finetuned agent's adapter replaces the previous one: expected here
        warnings.filterwarnings("ignore", message=r"Adapter .* was active which is now deleted")
    handlers = {
        "debate": cmd_debate,
        "validate": cmd_validate,
        "toy": cmd_toy,
        "run": cmd_run,
        "serve": cmd_serve,
        "report": cmd_report,
        "reproduce": cmd_reproduce,
        "compare": cmd_compare,
    }
    handlers.update(dict.fromkeys(("debate-train", "build-data", "finetune", "eval"), cmd_stage))
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
    except OSError as exc:
        if args.debug or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" while writing {exc.filename}" if exc.filename else ""
        print(
            f"mft: error: no space left on the device{where}; everything finished before it is kept "
            "(hint: free some space, then re-run the same command to resume)",
            file=sys.stderr,
        )
        return 28


def entrypoint() -> None:
    sys.exit(main())
