"""A run's parts from its config: the task, the backend on the society's base model(s) and the society of
base agents; the settings of its debates and finetunes, and each model's training objective. `mft run`,
`debate`, `reproduce`, the stage commands and transfers all build them here.

The backend is built with what the config says (batch size, chat-template options, `backend_options`) and
what its class says it needs for the society and its debates (`Backend.engine_options`, e.g. vLLM's LoRA
slots and context); the config's own `backend_options` win over the latter. The task is built once, by the
caller, and passed in: its token budget is the default of `max_new_tokens`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Literal

from mft.backends import Backend, EngineShape, backend_class, training
from mft.backends.base import FinetuneSettings, Sampling
from mft.backends.mixed import society_backend
from mft.config import DebateConfig, RunConfig, SharedConfig
from mft.debate.engine import DebateSettings, Society
from mft.errors import MftError
from mft.methods import of_run
from mft.objectives import Objective
from mft.tasks import Task, get_task


def stage_seed(seed: int, stage: str, k: int) -> int:
    """The sampling or training seed of `stage` ("debate", "eval" or "finetune") at iteration k of a run
    seeded `seed`: a hash of the three, so that no two runs' seeds coincide (with `seed + k`, seed 0's
    iteration 1 drew the same random numbers as seed 1's iteration 0). Every method of a run at the same
    iteration gets the same seed, so their evaluations sample alike."""
    digest = hashlib.blake2b(f"{seed}:{stage}:{k}".encode(), digest_size=4).digest()
    return int.from_bytes(digest)


def build_task(cfg: SharedConfig) -> Task:
    """The configured task with its settings; a bad setting is an MftError before any model work."""
    return get_task(cfg.task, cfg.task_options, data=str(cfg.data) if cfg.data else None)


def build_backend(cfg: DebateConfig | RunConfig, task: Task) -> Backend:
    """The configured backend on the configured model(s) (a mixed society: one backend per distinct base,
    see `backends/mixed.py`), sized for the config's society and debates on `task`; a bad backend option is
    an MftError naming it."""
    backend = society_backend(cfg.backend, cfg.base_models(), backend_options(cfg, task))
    announce(backend.load_warnings)
    return backend


_ANNOUNCED: set[str] = set()


def announce(warnings: list[str]) -> None:
    """Each load warning on stderr, once per process (a reproduce builds one backend for every method)."""
    import sys

    for w in warnings:
        if w not in _ANNOUNCED:
            _ANNOUNCED.add(w)
            print(f"mft: warning: {w}", file=sys.stderr, flush=True)


def base_society(cfg: SharedConfig) -> Society:
    """The society of N copies of the base model(s): every agent on its own base in a mixed society."""
    if cfg.mixed:
        return Society.of_base(cfg.n_agents, cfg.agent_models(), cfg.summarizer_base())
    return Society.of_base(cfg.n_agents)


def engine_shape(cfg: DebateConfig | RunConfig, task: Task) -> EngineShape:
    """The society and debates of a config, as a backend sizes its engine by them: N agents x M rounds,
    summaries or not, the token budget (the config's, else the task's), the chunk; a run also finetunes an
    adapter per generator and per critic (2N), of rank `lora_rank`."""
    shape = EngineShape(
        agents=cfg.n_agents,
        rounds=cfg.rounds,
        summarize=cfg.summarize,
        max_new_tokens=cfg.max_new_tokens or task.max_new_tokens,
        chunk_size=cfg.chunk_size,
    )
    if isinstance(cfg, RunConfig):
        shape = dataclasses.replace(shape, adapters=2 * cfg.n_agents, lora_rank=cfg.lora_rank)
    return shape


def backend_options(cfg: DebateConfig | RunConfig, task: Task) -> dict[str, Any]:
    """What the configured backend is built with besides the model: the batch size, the chat template's
    options, what its class sizes its engine by for the config's society (`engine_options`) and the
    config's own `backend_options`, which win."""
    engine = backend_class(cfg.backend).engine_options(engine_shape(cfg, task))
    return {**_configured(cfg), **engine, **cfg.backend_options}


def trainer_options(cfg: RunConfig) -> dict[str, Any]:
    """What the backend that finetunes a run's agents in a Ray worker (the backend's `ray_trainer`) is
    built with: the config's settings, without the engine sizing (a trainer generates no debate)."""
    return {**_configured(cfg), **cfg.backend_options}


def _configured(cfg: DebateConfig | RunConfig) -> dict[str, Any]:
    options: dict[str, Any] = {"batch_size": cfg.batch_size}
    if cfg.chat_template_kwargs:
        options["chat_template_kwargs"] = cfg.chat_template_kwargs
    return options


def debate_settings(
    cfg: DebateConfig | RunConfig, task: Task, seed: int, rounds: int | None = None
) -> DebateSettings:
    """The debate a config asks for (sampling, rounds, summaries, chunking), seeded with `seed`."""
    max_new = cfg.max_new_tokens or task.max_new_tokens
    return DebateSettings(
        rounds=rounds or cfg.rounds,
        summarize=cfg.summarize,
        sampling=Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=max_new),
        seed=seed,
        chunk_size=cfg.chunk_size,
        interaction=cfg.interaction,
    )


def finetune_settings(cfg: RunConfig, k: int, task: Task | None = None) -> FinetuneSettings:
    """How iteration k's agents are finetuned (seeded per iteration); with the run's `task`, GRPO's
    sampling (the debate's temperature, top_p and reply length) and reward (agreement with the consensus,
    by the task's scoring)."""
    targets = cfg.lora_targets
    modules: tuple[str, ...] | Literal["all-linear"] = (
        "all-linear" if targets == "all-linear" else tuple(t.strip() for t in targets.split(","))
    )
    return FinetuneSettings(
        method=cfg.ft_method,
        rank=cfg.lora_rank,
        alpha=cfg.lora_alpha,
        dropout=cfg.lora_dropout,
        target_modules=modules,
        epochs=cfg.ft_epochs,
        lr=cfg.ft_lr,
        batch_size=cfg.ft_batch_size,
        seed=stage_seed(cfg.seed, "finetune", k),
        group_by_length=cfg.ft_group_by_length,
        precision=cfg.ft_precision,
        micro_batch_size=cfg.ft_micro_batch_size,
        gradient_checkpointing=cfg.ft_gradient_checkpointing,
        max_length=cfg.ft_max_length,
        warmup_ratio=cfg.ft_warmup_ratio,
        lr_schedule=cfg.ft_lr_schedule,
        dpo_beta=cfg.dpo_beta,
        grpo_group=cfg.grpo_group,
        grpo_loss=cfg.grpo_loss,
        grpo_beta=cfg.grpo_beta,
        grpo_epsilon=cfg.grpo_epsilon,
        grpo_updates=cfg.grpo_updates,
        grpo_reference=cfg.grpo_reference,
        **({} if task is None else _grpo_rollout(cfg, task)),
    )


def _grpo_rollout(cfg: RunConfig, task: Task) -> dict[str, Any]:
    """GRPO's sampling and reward in a run on `task` (FinetuneSettings' fields)."""
    from mft.data.rewards import ConsensusReward

    # the seed of each sampled batch is drawn from the agent's finetune generator (seeded per iteration)
    sampling = debate_settings(cfg, task, cfg.seed).sampling
    return {"sampling": sampling, "reward": ConsensusReward(task, cfg.grpo_format_reward)}


def objective_of(cfg: RunConfig, slot: str) -> Objective:
    """How model `slot` (gen_<n>, critic_<n> or model) of the run is finetuned: by its role's
    `ft_objective_*` in a preference method, by the method's own objective (SFT, GRPO) in every other."""
    method = of_run(cfg.method, cfg.summarize, cfg.interaction)
    if not method.preference:
        return method.objective
    return cfg.ft_objective_generator if slot.startswith("gen_") else cfg.ft_objective_critic


def check_objectives(cfg: RunConfig) -> None:
    """Refuse an objective (DPO) the backend does not train by (its class's `objectives`), before any
    model work."""
    trains = backend_class(cfg.backend).objectives
    slots = of_run(cfg.method, cfg.summarize, cfg.interaction).slot_names(cfg.n_agents)
    missing = [o for o in dict.fromkeys(objective_of(cfg, s) for s in slots) if o not in trains]
    if missing:
        objective = missing[0]
        able = training(objective)
        instead = ", or ft_objective_generator / ft_objective_critic: sft" if objective != "sft" else ""
        raise MftError(
            f"method {cfg.method} trains by {objective.upper()}, which the {cfg.backend} backend does not do",
            hint=f"use backend {' or '.join(able)}{instead}",
        )
