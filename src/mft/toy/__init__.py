"""The bundled tiny base model: a real transformers Llama causal LM with a character-level tokenizer.

`checkpoint/` holds the shipped weights; `mft toy pretrain` (recipe in `pretrain.py`) rebuilds them. The
backends load it by the names in `BUNDLED_NAMES` (`mft.backends.base.resolve_model_path`).
"""

from __future__ import annotations

from mft.backends.base import BUNDLED_CHECKPOINT as CHECKPOINT_DIR
from mft.backends.base import BUNDLED_NAMES

__all__ = ["BUNDLED_NAMES", "CHECKPOINT_DIR"]
