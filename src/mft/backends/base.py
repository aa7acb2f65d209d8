"""The one backend interface the debate engine drives without knowing what is behind it.

An agent is a name plus where its weights live (a LoRA adapter directory, or None for the base model).
`generate` takes a whole round -- every agent x every problem -- at once, and the backend decides how to
batch it (padded batches per adapter on one shared base for hf; multi-LoRA for vLLM; concurrent HTTP
requests for OpenAI-compatible servers).

What a backend can do is declared on its class, readable without building it (no torch, vllm or openai is
imported): the objectives it trains by, whether it mixes base models, which backend trains its agents in a
Ray worker, whether it scores responses, whether its agents are LoRA adapter directories, whether the
memory estimate models it. Its engine is sized for a society by one hook, `engine_options`. Callers ask
these, never a backend's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from mft.data.examples import Example, Pair, Prompt
from mft.errors import MftError
from mft.objectives import Objective
from mft.records import Message

# What an agent is finetuned on: chat examples (SFT), preference pairs (DPO) or prompts with their
# consensus (GRPO)
TrainingData = list[Example] | list[Pair] | list[Prompt]
# How GRPO scores sampled replies: (replies, the consensus of each one's problem) -> a reward per reply
Reward = Callable[[list[str], list[str]], list[float]]

# The bundled tiny base model ships inside the package (its recipe is `mft.toy`, which builds on the
# backends, not the other way round); these names select it.
BUNDLED_CHECKPOINT = Path(__file__).resolve().parents[1] / "toy" / "checkpoint"
BUNDLED_NAMES = ("bundled", "toy")


def resolve_model_path(model: str) -> str:
    """The bundled model's directory for its names; anything else is a path or hub id as given. A local
    path must hold a saved model (config.json): an MftError says so before any library tries to load it."""
    if model in BUNDLED_NAMES:
        return str(BUNDLED_CHECKPOINT)
    local = Path(model)
    if (local.exists() or model.startswith(("/", "./", "../"))) and not (local / "config.json").exists():
        raise MftError(
            f"model path {model!r} has no config.json",
            hint="point `model` at a directory written by save_pretrained, a hub id, or 'bundled'",
        )
    return model


@dataclass(frozen=True)
class Agent:
    """A named agent: `adapter` is a LoRA adapter directory, or None for the base model itself. `base` names
    the base model it sits on in a mixed society (`backends/mixed.py` routes it there); None: the backend's
    one model."""

    name: str
    adapter: str | None = None
    base: str | None = None


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 0.9
    max_new_tokens: int = 256
    seed: int = 0


@dataclass(frozen=True)
class FinetuneSettings:
    """How an agent is finetuned: one typed object from the run config into every backend's `finetune`.

    The hf backend uses every field; the openai backend uses `epochs` and `seed` (the fine-tuning API
    chooses the rest).
    """

    method: Literal["lora", "full"] = "lora"  # lora: an adapter on the shared base; full: every weight
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] | Literal["all-linear"] = "all-linear"
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 16
    seed: int = 0
    # batches of examples of similar length (less padding); False: plain shuffled batches
    group_by_length: bool = True
    # "auto": bf16 autocast where the device computes bf16 natively (a CUDA GPU with bf16, a CPU with
    # AVX512-BF16 or AMX), else fp32; "bf16" / "fp32" force it. The weights and optimizer stay in the
    # model's dtype either way, as with transformers' `bf16=True` training argument.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # memory for big models (hf backend): rows per forward/backward, the rest accumulated (None: the whole
    # batch at once); activation checkpointing; examples cut to this many tokens (None: no limit)
    micro_batch_size: int | None = None
    gradient_checkpointing: bool = False
    max_length: int | None = None
    # learning rate: a linear warmup over this share of the steps, then linear / cosine decay, or constant
    warmup_ratio: float = 0.0
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"
    # sft: the chat examples' assistant turns are the targets; dpo: preference pairs, TRL's sigmoid DPO loss
    # against the agent's weights before this finetune, with this beta (hf backend, docs/dpo.md)
    objective: Objective = "sft"
    dpo_beta: float = 0.1
    # grpo (hf backend, docs/grpo.md): G replies sampled per prompt (`sampling`), each scored by `reward`
    # (agreement with the consensus); `batch_size` / `micro_batch_size` count prompts. Advantages
    # normalised within the group ("grpo", "dapo") or only centred ("dr_grpo"), with TRL's loss of that
    # name; the clipped ratio loss (epsilon) over `grpo_updates` optimizer steps per sampled batch, plus
    # beta * KL to the base ("base": adapters off) or to the agent's weights before this finetune
    grpo_group: int = 4
    grpo_loss: Literal["grpo", "dr_grpo", "dapo"] = "grpo"
    grpo_beta: float = 0.04
    grpo_epsilon: float = 0.2
    grpo_updates: int = 2
    grpo_reference: Literal["base", "previous"] = "base"
    sampling: Sampling = field(default_factory=Sampling)
    reward: Reward | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class TrainStep:
    """One optimizer step of a finetune, as a backend reports it to `finetune(..., on_step=...)` (the
    training curve experiment trackers draw; the backend knows nothing of them)."""

    step: int  # 1-based optimizer step of this finetune
    loss: float  # the step's (effective) batch loss: SFT the mean per label token, DPO the mean per pair
    lr: float  # the learning rate the step used
    tokens: int  # tokens trained on so far in this finetune (every non-padding token of the batches)
    # what else the objective measures at the step (GRPO: reward, kl, skipped_groups), by name
    extra: dict[str, float] = field(default_factory=dict)


# Called after each optimizer step; a backend that trains elsewhere (a fine-tuning API) calls it never.
StepCallback = Callable[[TrainStep], None]


@dataclass
class GenerationRequest:
    agent: str
    messages: list[Message]


@dataclass
class GenerationStats:
    """What a backend has generated so far (for throughput and cost reports)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    per_agent_completion_tokens: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineShape:
    """What a backend may size its engine by: the society it runs and the debates it runs it in. A field
    left None is not known to the caller (`mft serve` runs no fixed debate) and sizes nothing."""

    agents: int  # N, agents per round
    rounds: int  # M, debate rounds
    summarize: bool  # later rounds show a summary of the others' answers instead of the answers
    max_new_tokens: int | None = None  # most new tokens per response
    chunk_size: int | None = None  # problems debated together (one round's requests: agents x these)
    adapters: int | None = None  # LoRA adapters one batch may use (the bare base model aside)
    lora_rank: int | None = None  # the largest rank among them


class Backend(ABC):
    """Generation (and, from the finetuning stage on, training) for a society of agents."""

    name: str = "backend"
    # -- capabilities: class attributes, read by name through the table (`mft.backends.backend_class`) --
    # the training objectives `finetune` trains by ("sft": chat examples, "dpo": preference pairs)
    objectives: ClassVar[tuple[str, ...]] = ()
    # one society may put agents on several base models (`backends/mixed.py`: one backend per base)
    mixes_bases: ClassVar[bool] = False
    # the backend (its table name) that finetunes this backend's agents inside a Ray worker (`executor:
    # ray`); None: its agents are not trained there
    ray_trainer: ClassVar[str | None] = None
    # `score_responses` gives an agent's next-token distributions on given replies (the likelihood
    # diversity metrics); an instance answers by `can_score()` (a mixed society: every base's backend)
    scores_responses: ClassVar[bool] = False
    # its agents are LoRA adapter directories on a base model it loads itself (what `mft serve` serves)
    loads_adapters: ClassVar[bool] = False
    # `mft run --dry-run`'s memory estimate (`hf.memory`) models this backend
    estimates_memory: ClassVar[bool] = False

    def __init__(self) -> None:
        self.stats = GenerationStats()
        # (prompt tokens, completion tokens) of each request of the latest `generate` call, in request
        # order, where the backend counts them (empty otherwise): what `mft serve` bills each request
        self.last_usage: list[tuple[int, int]] = []
        # what loading the model found that changes what it computes (missing weights, a pad token set to
        # end-of-sequence, ...), one line each: shown once and kept in the run's manifest
        self.load_warnings: list[str] = []
        # polled while generating where the backend can stop early (hf: between decoding steps); when it
        # returns True the call ends at once with partial responses (`mft serve`: every client gone)
        self.interrupt: Callable[[], bool] | None = None

    @classmethod
    def engine_options(cls, shape: EngineShape) -> dict[str, Any]:
        """Constructor options that size this backend's engine for `shape` (e.g. vLLM's LoRA slots and
        context); `mft run`, `debate`, `reproduce` and `serve` build the backend with them, under the
        user's own settings, which win. Default: none."""
        return {}

    def can_score(self) -> bool:
        """Whether `score_responses` works on this backend (its class's `scores_responses`)."""
        return self.scores_responses

    @abstractmethod
    def add_agent(self, agent: Agent) -> None:
        """Make `agent` available to `generate` (loads its adapter; the base model is always available)."""

    @abstractmethod
    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[str]:
        """One completion per request, in request order. Deterministic for a given seed and request list."""

    def finetune(
        self,
        agent: Agent,
        examples: TrainingData,
        out_dir: Path,
        settings: FinetuneSettings | None = None,
        *,
        on_step: StepCallback | None = None,
    ) -> Agent:
        """Train `agent` on chat examples (loss on assistant turns), or on preference pairs where
        `settings.objective` is dpo, save it to `out_dir`, return it. `settings` None: the backend's
        defaults. `on_step`, where given, is called after each optimizer step the backend runs itself (its
        training curve)."""
        raise NotImplementedError(f"the {self.name} backend does not finetune yet")

    def finished_agent(self, name: str, out_dir: Path) -> Agent | None:
        """The agent an earlier `finetune(..., out_dir)` finished (before a restart), or None if it did not.

        Default: a LoRA adapter saved in `out_dir` (adapter_model.safetensors) is the finished agent.
        """
        out_dir = Path(out_dir)
        return Agent(name, str(out_dir)) if (out_dir / "adapter_model.safetensors").exists() else None

    def score_responses(
        self,
        agent: str,
        prompts: list[list[Message]],
        responses: list[str],
        batch_size: int | None = None,
    ) -> list[tuple[Any, Any]]:
        """Agent `agent`'s next-token distributions on given replies (teacher forcing): for each, the
        reply's token ids and the log-softmax over the vocabulary at each of them. Only a backend that
        declares `scores_responses` has it."""
        raise MftError(f"the {self.name} backend cannot score responses")

    def count_tokens(self, texts: list[str]) -> int | None:
        """Tokens in `texts` by this backend's tokenizer (for cost reports); None if it has none."""
        return None

    def count_agent_tokens(self, agent: str, texts: list[str]) -> int | None:
        """Tokens in `texts`, written by agent `agent`, by the tokenizer that agent uses (one backend: its
        own; a mixed society: the agent's base's)."""
        return self.count_tokens(texts)

    def context_length(self) -> int | None:
        """The most positions (prompt + new tokens) the model attends to; None if unknown."""
        return None

    def prompt_tokens(self, messages: list[Message]) -> int | None:
        """Tokens of the prompt `generate` would send for `messages`; None if the backend cannot tell."""
        return None

    def close(self) -> None:
        """Free what the backend holds outside this process's memory (vllm: its engine processes).
        Idempotent; the default has nothing to free."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}
