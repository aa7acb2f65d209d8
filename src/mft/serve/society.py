"""What `mft serve` serves: a society of agents, the task that answers it, and where its agents come from.

A run directory's society is read through `RunDir` (the one module that knows a run's files), so a served
run is the society `mft run` saved, wherever the directory has been moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mft.backends.base import Agent
from mft.debate.engine import Society
from mft.errors import MftError
from mft.records import Interaction, Problem
from mft.rundir import RunDir
from mft.tasks.base import Task

if TYPE_CHECKING:
    from mft.config import RunConfig

DEFAULT_SOCIETY_NAME = "society"


@dataclass
class ServedSociety:
    society: Society
    task: Task
    rounds: int
    base_model: str
    name: str = DEFAULT_SOCIETY_NAME
    source: str = "base model"  # for people: where the agents came from
    summarize: bool = False  # show agents a summary of the others' answers (a run's own setting)
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # a run's own template options
    agent_ids: bool = False  # requests name the agent answering them (a Unique ID run's finetuned model)
    # a mixed society's base models (agents' first, then the summarizer's), each served under its own id;
    # empty: one base model, `base_model`
    bases: list[str] = field(default_factory=list)
    interaction: Interaction = "debate"  # how its later rounds are asked (a run's own setting)

    def agents(self) -> list[Agent]:
        """Generators then critics, each name once."""
        seen: dict[str, Agent] = {}
        for a in [*self.society.generators, *(self.society.critics or [])]:
            seen.setdefault(a.name, a)
        return list(seen.values())

    def base_models(self) -> list[str]:
        """Every base model the society runs on (each is a model id of its own)."""
        return self.bases or [self.base_model]

    def base_agents(self) -> list[Agent]:
        """Each bare base model as an agent named by its own id (on its base in a mixed society)."""
        return [Agent(b, base=b if self.bases else None) for b in self.base_models()]

    def model_ids(self) -> list[str]:
        return [*(a.name for a in self.agents()), *self.base_models(), self.name]


class AsAsked(Task):
    """The served task with the round-1 prompt taken verbatim from the user's message.

    Everything else (debate prompts, answer extraction, equivalence) is the task's own, so a question sent
    as `task.question_prompt(problem)` is debated exactly as the engine debates `problem`.
    """

    def __init__(self, task: Task) -> None:
        self.inner = task
        self.name = task.name
        self.version = task.version
        self.max_new_tokens = task.max_new_tokens

    def load(self, split: str, n: int | None = None, seed: int = 0) -> list[Problem]:
        return self.inner.load(split, n, seed)

    def question_prompt(self, problem: Problem) -> str:
        return problem.question

    def extract_answer(self, response: str) -> str | None:
        return self.inner.extract_answer(response)

    def is_equivalent(self, a: str | None, b: str | None) -> bool:
        return self.inner.is_equivalent(a, b)

    # A later round restates the question (GSM8K, MATH): a message written as the task's round-1 prompt gives
    # back the question inside it, so it is restated as the engine restates it; any other message is the
    # question itself.
    def asked(self, problem: Problem) -> Problem:
        """`problem` with the question inside the task's round-1 prompt, when its message is one."""
        marker = "\x00question\x00"
        prefix, _, suffix = self.inner.question_prompt(
            Problem(id=problem.id, question=marker, answer="")
        ).partition(marker)
        text = problem.question
        if len(text) > len(prefix) + len(suffix) and text.startswith(prefix) and text.endswith(suffix):
            return problem.model_copy(update={"question": text[len(prefix) : len(text) - len(suffix)]})
        return problem

    def debate_prompt(self, problem: Problem, other_responses: list[str]) -> str:
        return self.inner.debate_prompt(self.asked(problem), other_responses)

    def summarize_prompt(self, problem: Problem, other_responses: list[str]) -> str:
        return self.inner.summarize_prompt(self.asked(problem), other_responses)

    def summary_debate_prompt(self, problem: Problem, summary: str) -> str:
        return self.inner.summary_debate_prompt(self.asked(problem), summary)

    def cooperative_prompt(self, later_prompt: str) -> str:
        return self.inner.cooperative_prompt(later_prompt)


def load_run_society(run_dir: Path, iteration: int | None = None) -> tuple[Society, RunConfig, int]:
    """The society of `iteration` of the run in `run_dir` (None: its latest), with the run's config.

    Adapters in `iter_<k>/agents/society.json` are stored relative to the run directory; the returned
    agents hold absolute paths under `run_dir`, wherever it has been moved.
    """
    rd = RunDir(run_dir)
    cfg = rd.run_config(hint="pass the directory `mft run` wrote, e.g. runs/<name>")
    k = rd.latest_society() if iteration is None else iteration
    if k < 0:
        raise MftError(f"--iteration {k} is out of range", hint="use 0 (the base) or a finished iteration")
    return rd.society_for(k, cfg), cfg, k


def build_served(
    *,
    model: str | None = None,
    run_dir: Path | None = None,
    iteration: int | None = None,
    agents: int | None = None,
    rounds: int | None = None,
    task: str | None = None,
    society_name: str = DEFAULT_SOCIETY_NAME,
) -> ServedSociety:
    """What `mft serve` serves. With a run directory, unset options default to that run's settings."""
    from mft.methods import of_run
    from mft.pipeline.assemble import build_task
    from mft.tasks import get_task

    if iteration is not None and run_dir is None:
        raise MftError("--iteration needs --run-dir", hint="pass the run directory, e.g. runs/<name>")
    if run_dir is not None:
        society, cfg, k = load_run_society(run_dir, iteration)
        if agents is not None and agents != society.size:
            raise MftError(
                f"--agents {agents} does not match iteration {k} of {run_dir} ({society.size} agents)",
                hint="leave --agents out when serving a run",
            )
        the_task = build_task(cfg) if task in (None, cfg.task) else get_task(task)
        if cfg.mixed and model is not None:
            raise MftError(
                f"--model cannot replace the base models of {run_dir}, a mixed society on "
                f"{', '.join(cfg.base_models())}",
                hint="leave --model out when serving a mixed society",
            )
        base = model or cfg.primary_model
        bases = cfg.base_models() if cfg.mixed else []
        n_rounds = rounds or cfg.rounds
        source = f"{run_dir} iteration {k}"
        summarize = cfg.summarize
        template_kwargs = dict(cfg.chat_template_kwargs)
        agent_ids = of_run(cfg.method, cfg.summarize, cfg.interaction).tells_ids(k)
        interaction = cfg.interaction
    else:
        society = Society.of_base(agents or 3)
        the_task = get_task(task or "arithmetic")
        base = model or "bundled"
        n_rounds = rounds or 2
        source = "base model"
        summarize = False
        template_kwargs = {}
        agent_ids = False
        bases = []
        interaction = "debate"
    if n_rounds < 1 or society.size < 1:
        raise MftError("a served society needs at least 1 agent and 1 round")
    served = ServedSociety(
        society,
        the_task,
        n_rounds,
        base,
        society_name,
        source,
        summarize,
        template_kwargs,
        agent_ids,
        bases,
        interaction,
    )
    ids = served.model_ids()
    clash = sorted({i for i in ids if ids.count(i) > 1})
    if clash:
        raise MftError(
            f"model name {', '.join(map(repr, clash))} is used twice (agents, base models, society)",
            hint="pick another --society-name",
        )
    return served
