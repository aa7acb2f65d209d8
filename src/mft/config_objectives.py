"""The run config's settings of the training objectives other than SFT (`mft.objectives`): DPO's and GRPO's.

A part of `RunConfig` (it inherits them), kept here so that each objective's settings sit together; a leaf
like `config.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from mft.methods import PREFERENCE


class ObjectiveConfig(BaseModel):
    """How the methods that do not train by SFT train: Ours (DPO)'s objectives and beta, Ours (GRPO)'s
    group, loss, clipping, updates, reference and reward."""

    ft_objective_generator: Literal["sft", "dpo"] = Field(
        "dpo",
        description=f"How the generators of method {' / '.join(PREFERENCE)} are finetuned: dpo (on "
        "preference pairs from the debate: its own round-1 reply against another agent's, the one that "
        "agrees with the consensus chosen) or sft (on D_G^n, as Ours). Every other method trains by its own "
        "objective (sft; grpo for ours_grpo). See docs/dpo.md.",
    )
    ft_objective_critic: Literal["sft", "dpo"] = Field(
        "dpo",
        description=f"How the critics of method {' / '.join(PREFERENCE)} are finetuned: dpo (on preference "
        "pairs: its own final-round reply against another agent's, in its own context) or sft (on the "
        "D_C- / D_C+ mix, as Ours).",
    )
    dpo_beta: float = Field(
        0.1,
        gt=0.0,
        description="DPO's beta (TRL's default): the strength of the pull towards the reference, each "
        "agent's weights before the iteration; higher keeps it closer.",
    )
    grpo_group: int = Field(
        4,
        ge=2,
        le=64,
        description="GRPO (method ours_grpo): replies G sampled per training prompt, at the run's "
        "temperature, top_p and max_new_tokens; ft_batch_size and ft_micro_batch_size count prompts. See "
        "docs/grpo.md.",
    )
    grpo_loss: Literal["grpo", "dr_grpo", "dapo"] = Field(
        "grpo",
        description="GRPO's loss, as TRL's loss_type: grpo (advantages scaled by the group's standard "
        "deviation, each reply's token mean), dr_grpo (Dr. GRPO: advantages only centred, tokens summed "
        "over a constant, max_new_tokens per reply) or dapo (scaled advantages, tokens averaged over the "
        "batch's; TRL's current default).",
    )
    grpo_beta: float = Field(
        0.04,
        ge=0.0,
        description="GRPO's KL coefficient: beta * KL(policy || reference) per token (0: no reference).",
    )
    grpo_epsilon: float = Field(
        0.2, gt=0.0, lt=1.0, description="GRPO's clipping of the policy ratio to [1 - epsilon, 1 + epsilon]."
    )
    grpo_updates: int = Field(
        2,
        ge=1,
        le=16,
        description="GRPO's optimizer steps per sampled batch (TRL's num_iterations, the paper's mu): the "
        "first on-policy, the later ones clipped against the log-probabilities the replies were sampled at.",
    )
    grpo_reference: Literal["base", "previous"] = Field(
        "base",
        description="GRPO's KL reference: base (the base model: adapters off, no second copy) or previous "
        "(each agent's weights before this iteration's finetune, loaded as a second adapter).",
    )
    grpo_format_reward: float = Field(
        0.0,
        ge=0.0,
        description="GRPO: added to a reply's reward when an answer can be read from it at all (0: off; the "
        "reward is then 1 for the consensus answer, 0 otherwise).",
    )
