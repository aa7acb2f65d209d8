"""The hf backend (transformers + peft): one base model in memory, every agent a LoRA adapter on it.

Its modules, one concern each:

- `backend`: `HFBackend`, the `Backend` interface over the others (agents, generation, finetune, scoring);
- `generation`: how a round's requests are grouped, batched and sampled, and the generation settings;
- `adapters`: the agents' adapters in the shared model (loaded, made active, merged for a batch);
- `kv_cache`: the KV cache read only as far as it is filled, and chunked prefill;
- `scoring`: teacher-forced scoring of given replies (the likelihood diversity metrics);
- `finetune`: what an agent's training sets up and saves (a LoRA adapter in the shared model, or a full
  model); `train` (the loop, and the SFT loss) and `dpo` (the DPO loss) are the objectives' loss modules
  (`mft/objectives.py`);
- `model`: the loaded model (`LoadedModel`: name, base, tokenizer, chat format, the model the adapters live
  in) and the sizing of batches; `memory`: a run's peak memory worked out from the model's config.

`finetune`, `scoring` and `adapters` are handed the `LoadedModel`, not the backend: no module here imports
`backend` but this one. Importing the package imports no torch: the modules import it inside the functions
that use it, and `kv_cache` (which subclasses a transformers cache) is imported by the first batch.
"""

from __future__ import annotations

from mft.backends.hf.backend import HFBackend

__all__ = ["HFBackend"]
