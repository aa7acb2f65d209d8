"""The bundled tiny base model: a real transformers Llama causal LM with a character-level tokenizer.

`checkpoint/` holds the shipped weights; `mft toy pretrain` (recipe in `pretrain.py`) rebuilds them. The
backends load it by the names in `BUNDLED_NAMES` (`mft.backends.base.resolve_model_path`).
"""

from __future__ import annotations

import json
from pathlib import Path

from mft.backends.base import BUNDLED_CHECKPOINT as CHECKPOINT_DIR
from mft.backends.base import BUNDLED_NAMES, resolve_model_path
from mft.errors import MftError

__all__ = ["BUNDLED_NAMES", "CHECKPOINT_DIR", "check_split_seed", "pretraining_split_seed"]


def pretraining_split_seed(model: str) -> int | None:
    """The split seed whose arithmetic train pool a toy model was pretrained on (its `recipe.json`, written
    by `mft toy pretrain`); None for any other model."""
    try:
        recipe = json.loads((Path(resolve_model_path(model)) / "recipe.json").read_text(encoding="utf-8"))
        seed = recipe["corpus"]["split_seed"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return seed if isinstance(seed, int) else None


def check_split_seed(model: str, task: str, split_seed: int) -> None:
    """Refuse an arithmetic split that would put a toy model's pretraining problems into the test split.

    The toy's corpus draws its problems from the train pool of one split seed only, so its test pool is
    unseen; under another seed about half of those problems fall into the test pool, and a test score would
    count problems the model was trained on.
    """
    seen = pretraining_split_seed(model) if task == "arithmetic" else None
    if seen is not None and split_seed != seen:
        raise MftError(
            f"split_seed {split_seed}: model {model!r} was pretrained on arithmetic problems of the train "
            f"pool of split_seed {seen}, so this split's test problems would include problems it was "
            "trained on",
            hint=f"use split_seed {seen} with this model (`seed` varies the sampling, data and finetuning)",
        )
