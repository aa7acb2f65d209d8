"""The bundled tiny base model: a real transformers Llama causal LM with a character-level tokenizer.

`checkpoint/` holds the shipped weights; `mft toy pretrain` (recipe in `pretrain.py`) rebuilds them.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_DIR = Path(__file__).parent / "checkpoint"
BUNDLED_NAMES = ("bundled", "toy")


def resolve_model_path(model: str) -> str:
    """Map the names of the bundled model to its directory; anything else is a path or hub id as given."""
    return str(CHECKPOINT_DIR) if model in BUNDLED_NAMES else model
