"""The `mft` command line: one builder per command adds its subparser, its help and its arguments.

Every run setting comes from the config classes (`add_config_arguments`, shown in `--help` in sections);
the builders add only what is not a setting (`--config`, `--no-progress`, a stage's `--iteration`, the
server's options...).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from mft import __version__
from mft.backends import backends_where
from mft.config import DebateConfig, RunConfig
from mft.config_flags import add_config_arguments
from mft.methods import LABELS, METHODS
from mft.tasks import TASKS

if TYPE_CHECKING:
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]  # add_subparsers' result

_DEFAULT = [m for m in METHODS if m.in_default]  # what a plain `mft reproduce` runs
# the stage commands: stage -> its help
STAGES = {
    "debate-train": "Stage 1 of iteration K: the society of iteration K-1 debates the train split.",
    "build-data": "Stage 2 of iteration K: per-agent generator and critic datasets from its debate.",
    "finetune": "Stage 3 of iteration K: finetune each agent on its own dataset.",
    "eval": "Stage 4 of iteration K: the society of iteration K debates the test split (K=0: the base).",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mft",
        description="Multiagent finetuning: debate, build per-agent data, finetune a society of agents.",
    )
    p.add_argument("--version", action="version", version=f"mft {__version__}")
    p.add_argument(
        "--debug",
        action="store_true",
        help="Show full tracebacks on errors, and the libraries' messages while models load.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_debate, _run, _stages, _validate, _serve, _report, _compare, _reproduce, _toy):
        add(sub)
    return p


def _debate(sub: Commands) -> None:
    d = sub.add_parser(
        "debate",
        help="Run a multiagent debate on a task and print single / majority / debate accuracy.",
        description="Run N agents x M rounds of debate on a task split; records go to OUT/debate.jsonl "
        "(resumable: re-running the same command continues where it stopped).",
    )
    d.add_argument("--config", type=Path, default=None, help="YAML file of settings; flags override it.")
    d.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    add_config_arguments(d, DebateConfig)


def _run(sub: Commands) -> None:
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


def _stages(sub: Commands) -> None:
    for stage, text in STAGES.items():
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


def _validate(sub: Commands) -> None:
    v = sub.add_parser("validate", help="Check config files without running anything.")
    v.add_argument("files", nargs="+", type=Path)


def _serve(sub: Commands) -> None:
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


def _report(sub: Commands) -> None:
    rp = sub.add_parser(
        "report",
        help="Tables and plots from a run or reproduce directory (reads saved files; runs no model).",
        description="Write PATH/report.md, PATH/report.html (self-contained), PATH/plots/*.png and, where "
        "per-problem outcomes were kept, PATH/paired.json (each method against Ours on the same problems) "
        "and PATH/holds.json (each ordering the paper claims: its figure, interval and verdict) "
        "from a run directory (runs/<name>) or a reproduce directory (reproduce.json). See docs/report.md.",
    )
    rp.add_argument("path", type=Path, metavar="PATH", help="A run directory or a reproduce directory.")
    rp.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="Write into this directory instead of PATH."
    )
    rp.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="Copy the small files the report is written from (results, per-problem outcomes, diversity, "
        "sizes, timings, manifests; no debates or adapters) into the new directory DIR, paths under PATH's "
        "runs directory made relative, and write the report there: a results directory to commit.",
    )


def _compare(sub: Commands) -> None:
    cp = sub.add_parser(
        "compare",
        help="Several runs / reproduce directories side by side (methods x tasks table, Ours curves).",
        description="Write DIR/compare.md, DIR/compare.html, DIR/plots/ and DIR/paired.json: one table with "
        "a column per input (the task when each input has its own, else the directory name), and each method "
        "against Ours of the same input on the same problems; a reproduce over several seeds (--seeds) is "
        "read as its seeds' mean. See docs/report.md.",
    )
    cp.add_argument(
        "paths", type=Path, nargs="+", metavar="RUN", help="Run or reproduce directories (or over seeds)."
    )
    cp.add_argument("--out", type=Path, required=True, metavar="DIR", help="Directory to write into.")


def _reproduce(sub: Commands) -> None:
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
    rr.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="Run the whole comparison once per seed, each into RUNS_DIR/NAME/seed_<s>/, and report every "
        "seed with the mean over seeds and its seed-to-seed standard error (default: once, at --seed).",
    )
    _run_args(rr)


def _toy(sub: Commands) -> None:
    t = sub.add_parser("toy", help="The bundled tiny base model: rebuild it from its recipe.")
    tsub = t.add_subparsers(dest="toy_command", required=True, metavar="TOY_COMMAND")
    tp = tsub.add_parser(
        "pretrain", help="Rebuild the bundled model from its seeded recipe (~17 min on 2 cores)."
    )
    tp.add_argument("--out", type=Path, required=True, help="Directory to save the new checkpoint in.")
    tp.add_argument("--seed", type=int, default=0, help="Seed of the corpus and the initialisation.")
    tp.add_argument("--steps", type=int, default=None, help="Training steps (default: the recipe's).")


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
