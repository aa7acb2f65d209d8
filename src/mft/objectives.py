"""The training objectives, in one table (as `methods.py` is for the compared methods).

An objective is how a model learns from its data. Its row names the data it trains on (chat examples,
preference pairs, or prompts with the society's consensus), its loss module in the hf trainer, how many
sequences one of its training items puts through the model at once (what the memory estimate counts: DPO's
chosen and rejected replies are two, GRPO's group of G sampled replies G), and whether it samples from the
model it trains (online: GRPO). A loss module (imported when the objective first trains) has three functions:

- `encode(chat, item)`: one training item (an example, a pair, a prompt) as the loop takes it (token ids and
  labels, by the model's chat template, `backends.chat.ChatFormat`);
- `loop(model, params, encoded, pad_id, settings, rng, on_step)`: the optimisation over the encoded items,
  returning the losses (`hf.train.TrainResult`); an online objective's loop also takes `rollout=`, how to
  sample replies as the model being trained and score them (`hf.grpo.Rollout`);
- `train_stats(settings)`: what the objective adds to an agent's `train_stats.json`.

Which backends train an objective is each backend's own capability (`Backend.objectives`), so that a new
backend is one file; `mft.backends.training(key)` lists them. A new objective is one row here plus its loss
module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mft.errors import MftError

# The objectives' keys, the one place they are spelled as a type (config fields, FinetuneSettings, jobs).
Objective = Literal["sft", "dpo", "grpo"]
DataKind = Literal["examples", "pairs", "prompts"]


@dataclass(frozen=True)
class TrainingObjective:
    key: Objective
    data: DataKind  # what its data file holds and its loop trains on
    loss: str  # the module with its `encode`, `loop` and `train_stats`
    # sequences per training item in one forward pass (the memory estimate's rows); None: one per sampled
    # reply, the group size G (`grpo_group`)
    sequences: int | None
    about: str  # for docs and errors
    online: bool = False  # samples replies from the model it trains (its loop takes `rollout=`)

    def rows(self, group: int) -> int:
        """Sequences one training item puts through the model at once, with groups of `group` replies."""
        return group if self.sequences is None else self.sequences


OBJECTIVES: tuple[TrainingObjective, ...] = (
    TrainingObjective(
        "sft", "examples", "mft.backends.hf.train", sequences=1,
        about="supervised finetuning on chat examples, the loss on the assistant turns",
    ),
    TrainingObjective(
        "dpo", "pairs", "mft.backends.hf.dpo", sequences=2,
        about="TRL's sigmoid DPO loss on preference pairs, against the model's weights before the finetune",
    ),
    TrainingObjective(
        "grpo", "prompts", "mft.backends.hf.grpo", sequences=None, online=True,
        about="TRL's GRPO loss on G replies sampled per prompt, rewarded for agreeing with the society's "
        "consensus (no ground truth), against the base or the agent's previous weights",
    ),
)  # fmt: skip
BY_KEY: dict[str, TrainingObjective] = {o.key: o for o in OBJECTIVES}
KEYS: tuple[str, ...] = tuple(BY_KEY)


def objective(key: str) -> TrainingObjective:
    """The row of objective `key`; an MftError naming the known ones otherwise."""
    if key not in BY_KEY:
        raise MftError(f"unknown finetuning objective {key!r}", hint=f"use one of {', '.join(KEYS)}")
    return BY_KEY[key]
