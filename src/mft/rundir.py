"""The run directory: the only module that knows its paths, its manifest and its `society.json` files.

    runs/<name>/manifest.json             config, seed, versions, problem digests, data source
    runs/<name>/timings.json              seconds per stage
    runs/<name>/metrics.json              the scalars the experiment trackers were sent (`report_to`)
    runs/<name>/tracking.json             the W&B / MLflow run ids a resumed run continues
    runs/<name>/tensorboard/, wandb/, mlflow/   the trackers' own files (see `mft.tracking`)
    runs/<name>/iter_0/eval/              the base model's debate on the test split (reference)
    runs/<name>/iter_<k>/debate.jsonl     the society of iteration k-1 debating the train split
    runs/<name>/iter_<k>/rationalize.jsonl  STaR only: its wrong samples regenerated with the answer as a hint
    runs/<name>/iter_<k>/data/            gen_<n>.jsonl, critic_<n>.jsonl (or model.jsonl), sizes.json
    runs/<name>/iter_<k>/agents/          gen_<n>/, critic_<n>/ (adapters), society.json
    runs/<name>/iter_<k>/eval/            debate.jsonl + results.json of the new society on the test split
    runs/<name>/iter_<k>/diversity.json   diversity of the new society on the test split (final round)

A reproduce directory (`mft reproduce`) holds `reproduce.json` and one run directory per method. A run's
`transfer/<task>/` is itself a run directory: its societies evaluated on another task (`pipeline/transfer`).
The pipeline writes these files, and the server and the report read them, through `RunDir`.

Every directory mft writes a run, a debate or a reproduction into is locked while a process writes it
(`lock_dir`: `<dir>/.lock`, an advisory `flock` held until the process exits, and freed by the kernel when
it is killed, so a killed run resumes at once), so two processes never write one directory at once.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mft.backends.base import Agent
from mft.debate.engine import Society
from mft.errors import MftError
from mft.methods import RATIONALIZING
from mft.records import Problem, problem_hashes, problems_digest, remove_stale_temps_under, write_json_atomic

if TYPE_CHECKING:
    from mft.config import RunConfig
    from mft.tasks.base import Task

MANIFEST = "manifest.json"
LOCK = ".lock"
REPRODUCE = "reproduce.json"
TRANSFER = "transfer"  # RUN/transfer/<task>/: a run's societies evaluated on another task (`mft eval`)
# Settings added after runs were made, with the value that does what those runs did: a run directory whose
# manifest lacks one continues only with that value (and is refused with any other, as for any setting).
SETTINGS_BEFORE_THEY_EXISTED: dict[str, Any] = {
    "ft_group_by_length": False,
    "ft_precision": "fp32",
    "chat_template_kwargs": {},
    "ft_gradient_checkpointing": False,
    "ft_warmup_ratio": 0.0,
    "ft_lr_schedule": "linear",
    "summarizer_model": None,
    # used only by the preference method, which came with them: any older run continues with the defaults
    "ft_objective_generator": "dpo",
    "ft_objective_critic": "dpo",
    "dpo_beta": 0.1,
}
# Settings a run may change between invocations: moving the directory, asking for more iterations, or
# logging to other experiment trackers (they change no result).
RESUMABLE_CHANGES = frozenset({"runs_dir", "iterations", "report_to"})


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mft", "torch", "transformers", "peft"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def renamed_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A manifest's config with settings renamed since then under their new names: `critic_positive_fraction`
    (the share of D_C+) is `critic_corrected_share` = 1 - it (the share of D_C-, the same mix wherever the
    agent had any D_C-)."""
    if "critic_positive_fraction" not in config:
        return config
    out = {k: v for k, v in config.items() if k != "critic_positive_fraction"}
    old = config["critic_positive_fraction"]
    out.setdefault("critic_corrected_share", 1 - old if isinstance(old, int | float) else old)
    return out


def settings_diff(old_config: dict[str, Any], cfg: RunConfig) -> list[str]:
    """The settings of `cfg` that differ from a manifest's `old_config` (those that change results)."""
    config = json.loads(cfg.model_dump_json())
    old_config = renamed_settings(old_config)
    # STaR's rationalization came with its setting: an older STaR run made none; for other methods the
    # setting does nothing, so an older run of theirs continues with the default
    rationalized = {"star_rationalize": old_config.get("method") not in RATIONALIZING}
    before = {**SETTINGS_BEFORE_THEY_EXISTED, **rationalized, **old_config}
    return sorted(k for k in config if k not in RESUMABLE_CHANGES and before.get(k) != config[k])


def timing_key(k: int, stage: str) -> str:
    """The key of a stage's seconds in `timings.json`, e.g. 'iter_1/finetune'."""
    return f"iter_{k}/{stage}"


def parse_timing_key(key: str) -> tuple[int, str] | None:
    """(iteration, stage) of a `timings.json` key; None for a key of another shape."""
    m = re.fullmatch(r"iter_(\d+)/(.+)", key)
    return (int(m.group(1)), m.group(2)) if m else None


def make_dir(path: Path, what: str, flag: str) -> None:
    """Create directory `path` (and its parents) for writing, or one MftError naming it and `flag` (the
    setting that chose it) when it is a file, sits under a file or cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        file = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        where = "is a file" if file == path else f"is under {file}, which is a file"
        raise MftError(
            f"{what} {path} {where}, not a directory",
            hint=f"choose another directory ({flag}), or move that file away",
        ) from None
    except OSError as exc:
        raise MftError(
            f"cannot create {what} {path} ({exc.strerror})",
            hint=f"choose a directory you can write to ({flag})",
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise MftError(f"{what} {path} is not writable", hint=f"choose a directory you can write to ({flag})")


_LOCKS: dict[Path, int] = {}  # directory (resolved) -> the open lock file this process holds


def lock_dir(path: Path, what: str, flag: str) -> None:
    """Make `path` (see `make_dir`) and hold its lock for the rest of this process's life, or refuse at once
    with one line naming the directory and the holder's pid when another process holds it.

    The lock is an advisory `flock` on `<path>/.lock`, which holds the holder's pid. The kernel frees it when
    the process exits or is killed, so a killed run is resumed by just re-running it. Locking a directory
    this process already holds does nothing. Holding it, temp files left there by killed writers are removed.
    """
    make_dir(path, what, flag)
    key = path.resolve()
    if key in _LOCKS:
        return
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise MftError(
            f"cannot write in {what} {path} ({exc.strerror})",
            hint=f"choose a directory you can write to ({flag})",
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise MftError(
            f"{what} {path} is in use by another mft process (pid {holder})",
            hint=f"wait for it to finish or stop it, or write elsewhere ({flag})",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _LOCKS[key] = fd
    remove_stale_temps_under(path)


class RunDir:
    """Paths and files of one run directory (`runs/<name>`)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths -------------------------------------------------------------------------------------------
    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def timings(self) -> Path:
        return self.path / "timings.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def tracking(self) -> Path:
        return self.path / "tracking.json"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def wandb(self) -> Path:
        return self.path / "wandb"  # W&B makes this directory inside the `dir` it is given (the run's)

    @property
    def mlflow(self) -> Path:
        return self.path / "mlflow"

    @property
    def plots(self) -> Path:
        return self.path / "plots"  # the report's PNGs (`mft report` writes them)

    def iteration(self, k: int) -> Path:
        return self.path / f"iter_{k}"

    def train_debate(self, k: int) -> Path:
        return self.iteration(k) / "debate.jsonl"

    def data_dir(self, k: int) -> Path:
        return self.iteration(k) / "data"

    def examples(self, k: int, slot: str) -> Path:
        return self.data_dir(k) / f"{slot}.jsonl"

    def sizes(self, k: int) -> Path:
        return self.data_dir(k) / "sizes.json"

    def agent_dir(self, k: int, slot: str) -> Path:
        return self.iteration(k) / "agents" / slot

    def society_file(self, k: int) -> Path:
        return self.iteration(k) / "agents" / "society.json"

    def eval_dir(self, k: int) -> Path:
        return self.iteration(k) / "eval"

    def eval_debate(self, k: int) -> Path:
        return self.eval_dir(k) / "debate.jsonl"

    def results(self, k: int) -> Path:
        return self.eval_dir(k) / "results.json"

    def rationales(self, k: int) -> Path:
        return self.iteration(k) / "rationalize.jsonl"

    def diversity(self, k: int) -> Path:
        return self.iteration(k) / "diversity.json"

    # -- what is there -----------------------------------------------------------------------------------
    def is_run(self) -> bool:
        return self.manifest.exists()

    def require_run(self, hint: str) -> None:
        if not self.is_run():
            raise MftError(f"{self.path} is not a run directory (no {MANIFEST})", hint=hint)

    def iterations_on_disk(self) -> set[int]:
        """The k of every `iter_<k>` directory present (a run in progress has fewer than planned)."""
        return {
            int(m.group(1)) for p in self.path.glob("iter_*") if (m := re.fullmatch(r"iter_(\d+)", p.name))
        }

    def latest_society(self) -> int:
        """The highest iteration whose society is saved (0 when none is: the base society)."""
        return max([0, *(k for k in self.iterations_on_disk() if self.society_file(k).exists())])

    # -- the manifest ------------------------------------------------------------------------------------
    def write_or_check_manifest(
        self, cfg: RunConfig, train: list[Problem], test: list[Problem], task: Task
    ) -> None:
        """First run: write the manifest. Later runs (`mft run` and every stage command alike): refuse to mix
        a run directory with another config, another version of the task (its prompts or scoring), or
        problems other than those it was made from (its data changed)."""
        hashes = {"train": problem_hashes(train), "test": problem_hashes(test)}
        if self.manifest.exists():
            old = json.loads(self.manifest.read_text(encoding="utf-8"))
            diff = settings_diff(old["config"], cfg)
            if diff:
                raise MftError(
                    f"{self.path} was made with other settings ({', '.join(diff)} differ)",
                    hint="use another --name, or delete that directory to start fresh",
                )
            made = old.get("task")
            if isinstance(made, dict) and made.get("version") not in (None, task.version):
                # the same settings, but the task's prompts or scoring changed since (another mft version):
                # its records would mix with this version's
                raise MftError(
                    f"{self.path} was made with task {made.get('name')!r} version {made['version']}, not "
                    f"{task.version} (its prompts or scoring changed since)",
                    hint="use another --name, or delete that directory to start fresh",
                )
            if isinstance(old.get("problem_hashes"), dict):  # runs made before they were recorded: no check
                self._check_problems(old["problem_hashes"], hashes)
            return
        write_json_atomic(
            self.manifest,
            {
                "config": json.loads(cfg.model_dump_json()),
                "seed": cfg.seed,
                "task": {"name": task.name, "version": task.version},
                "versions": versions(),
                "problems": {"train": problems_digest(train), "test": problems_digest(test)},
                "problem_hashes": hashes,
                "data": getattr(task, "loads", {}),  # source, pool sizes, skipped bad-gold rows
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )

    def _check_problems(self, old: dict[str, Any], new: dict[str, dict[str, str]]) -> None:
        """Refuse to resume on problems that differ from those the run was made from (an edited data file):
        its records would mix old and new problems."""
        changes: list[str] = []
        for split, hashes in new.items():
            recorded = old.get(split)
            before: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
            for pid, h in hashes.items():
                if pid not in before:
                    changes.append(f"{split} problem {pid!r} is not one it was made from")
                elif before[pid] != h:
                    changes.append(f"{split} problem {pid!r} changed (its question or answer differs)")
            changes += [
                f"{split} problem {pid!r} is gone from the data" for pid in before if pid not in hashes
            ]
        if changes:
            more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
            raise MftError(
                f"{self.path}: the data changed since this run started: {changes[0]}{more}",
                hint=f"restore the data it was made from, or start afresh with another --name "
                f"(or delete {self.path})",
            )

    def lock(self) -> None:
        """Create the run directory and hold its lock while this process lives (see `lock_dir`)."""
        lock_dir(self.path, "run directory", "--runs-dir / --name")

    def manifest_config(self) -> dict[str, Any] | None:
        """The config a manifest records, or None where there is no readable manifest."""
        try:
            config = json.loads(self.manifest.read_text(encoding="utf-8"))["config"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return config if isinstance(config, dict) else None

    def run_config(self, hint: str) -> RunConfig:
        """The run's config from its manifest, placed at this directory (wherever it has been moved)."""
        from mft.config import RunConfig, format_validation_error

        self.require_run(hint)
        try:
            config = renamed_settings(json.loads(self.manifest.read_text(encoding="utf-8"))["config"])
            return RunConfig.model_validate(
                {**config, "runs_dir": str(self.path.parent), "name": self.path.name}
            )
        except ValidationError as exc:
            raise MftError(format_validation_error(exc, str(self.manifest))) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise MftError(f"{self.manifest}: not a valid run manifest ({exc})") from None

    # -- societies ---------------------------------------------------------------------------------------
    def society_for(self, k: int, cfg: RunConfig) -> Society:
        """The society iteration k of a run with config `cfg` produced (see `society`), every agent on the
        base model its slot names in a mixed society, the summarizer on `cfg.summarizer_base()`."""
        if not cfg.mixed:
            return self.society(k, cfg.n_agents)
        return self.society(k, cfg.n_agents, cfg.agent_models(), cfg.summarizer_base())

    def society(
        self, k: int, agents: int, bases: list[str] | None = None, summarizer: str | None = None
    ) -> Society:
        """The society iteration k produced (k = 0: `agents` copies of the base, as generators and critics;
        a mixed society: agent i on `bases[i]`, the summarizer on `summarizer`).

        Adapters are stored relative to the run directory; the agents hold paths under this directory. In a
        mixed society each entry names its agent's base; an entry without one (impossible unless edited) is
        on its slot's base.
        """
        base_society = Society.of_base(agents, bases, summarizer)
        if k == 0:
            return base_society
        path = self.society_file(k)
        if not path.exists():
            raise MftError(
                f"{path} is missing: iteration {k} has not finished finetuning",
                hint="run `mft run` (or `mft finetune`) for that iteration first",
            )
        data = json.loads(path.read_text(encoding="utf-8"))

        def agent(entry: dict[str, Any], slot: int) -> Agent:
            base = entry.get("base") or (bases[slot] if bases is not None else None)
            if entry.get("model_id"):  # a model id a server knows (openai backend), stored verbatim
                return Agent(entry["name"], entry["model_id"], base)
            adapter = entry["adapter"]
            return Agent(entry["name"], None if adapter is None else str(self.path / adapter), base)

        critics = data.get("critics") or None  # none: the generators answer every round
        return Society(
            generators=[agent(a, n) for n, a in enumerate(data["generators"])],
            critics=None if critics is None else [agent(a, n) for n, a in enumerate(critics)],
            summarizer=base_society.summarizer,
        )

    def _stored(self, agent: Agent) -> dict[str, Any]:
        """society.json's entry: an adapter directory inside the run relative to it, anything else as is;
        in a mixed society, the agent's base model too."""
        on = {} if agent.base is None else {"base": agent.base}
        if agent.adapter is None:
            return {"name": agent.name, "adapter": None, **on}
        path = Path(agent.adapter)
        root = self.path.resolve()
        if path.is_dir() and path.resolve().is_relative_to(root):
            return {"name": agent.name, "adapter": str(path.resolve().relative_to(root)), **on}
        return {"name": agent.name, "adapter": None, "model_id": agent.adapter, **on}

    def write_society(
        self, k: int, generators: list[Agent], critics: list[Agent] | None, skipped: dict[str, str]
    ) -> None:
        """Iteration k's society (written last: its presence means the iteration's finetuning finished)."""
        write_json_atomic(
            self.society_file(k),
            {
                "generators": [self._stored(a) for a in generators],
                "critics": None if not critics else [self._stored(a) for a in critics],
                "skipped": skipped,
            },
        )
