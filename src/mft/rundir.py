"""The run directory: the only module that knows its paths and its `society.json` files.

    runs/<name>/manifest.json             config, seed, versions, problem hashes, data source (`manifest`)
    runs/<name>/timings.json              seconds per stage
    runs/<name>/metrics.json              the scalars the experiment trackers were sent (`report_to`)
    runs/<name>/tracking.json             the W&B / MLflow run ids a resumed run continues
    runs/<name>/tensorboard/, wandb/, mlflow/   the trackers' own files (see `mft.tracking`)
    runs/<name>/iter_0/eval/              the base model's debate on the test split (reference), as below
    runs/<name>/iter_<k>/debate.jsonl     the society of iteration k-1 debating the train split
    runs/<name>/iter_<k>/rationalize.jsonl  STaR only: its wrong samples regenerated with the answer as a hint
    runs/<name>/iter_<k>/data/            gen_<n>.jsonl, critic_<n>.jsonl (or model.jsonl), sizes.json
    runs/<name>/iter_<k>/agents/          gen_<n>/, critic_<n>/ (adapters), society.json
    runs/<name>/iter_<k>/eval/            debate.jsonl, outcomes.jsonl.gz (per problem) and results.json of
                                          the new society on the test split
    runs/<name>/iter_<k>/diversity.json   diversity of the new society on the test split (final round)

A reproduce directory (`mft reproduce`) holds `reproduce.json` and one run directory per method. A run's
`transfer/<task>/` is itself a run directory: its societies evaluated on another task (`pipeline/transfer`).
The pipeline writes these files, and the server and the report read them, through `RunDir`. Whether a
run directory may be continued with a config is `manifest.py`'s; its writer lock (`<dir>/.lock`) is
`locks.py`'s.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mft.backends.base import Agent
from mft.debate.engine import Society
from mft.errors import MftError
from mft.locks import lock_dir
from mft.manifest import MANIFEST, renamed_settings
from mft.records import write_json_atomic

if TYPE_CHECKING:
    from mft.config import RunConfig

REPRODUCE = "reproduce.json"
SEEDS = "seeds.json"  # a reproduce over several seeds: seed -> its reproduce directory (`reproduce_seeds`)
TRANSFER = "transfer"  # RUN/transfer/<task>/: a run's societies evaluated on another task (`mft eval`)
OUTCOMES = "outcomes.jsonl.gz"  # per-problem outcomes beside an evaluation's results (`mft.eval.outcomes`)


def timing_key(k: int, stage: str) -> str:
    """The key of a stage's seconds in `timings.json`, e.g. 'iter_1/finetune'."""
    return f"iter_{k}/{stage}"


def parse_timing_key(key: str) -> tuple[int, str] | None:
    """(iteration, stage) of a `timings.json` key; None for a key of another shape."""
    m = re.fullmatch(r"iter_(\d+)/(.+)", key)
    return (int(m.group(1)), m.group(2)) if m else None


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

    def outcomes(self, k: int) -> Path:
        return self.eval_dir(k) / OUTCOMES

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

    # -- the manifest and the lock -----------------------------------------------------------------------
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
