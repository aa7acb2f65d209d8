"""A mixed society: agents on several base models, behind the one backend interface.

`MixedBackend` holds one backend per distinct base model (each base loaded once, its agents LoRA adapters on
it, as everywhere) and routes every call by the agent's base (`Agent.base`): `generate` splits a round's
requests by base, sends each part to its backend (which renders them with its own tokenizer and chat
template) and puts the replies back in request order; `finetune`, `score_responses` and token counts go to
the agent's base. The debate engine and the stages never know it is there. Only a backend that declares
`mixes_bases` (hf) runs mixed societies (the config refuses the others).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mft.backends.base import (
    Agent,
    Backend,
    FinetuneSettings,
    GenerationRequest,
    GenerationStats,
    Sampling,
    StepCallback,
    TrainingData,
    resolve_model_path,
)
from mft.errors import MftError
from mft.records import Message


def society_backend(name: str, bases: list[str], options: dict[str, Any]) -> Backend:
    """Backend `name` on the society's base models: the plain backend for one base, a `MixedBackend` with
    one backend per base (each built with the same `options`) for several."""
    from mft.backends import backend_class, backends_where, get_backend

    if len(bases) == 1:
        return get_backend(name, bases[0], **options)
    if not backend_class(name).mixes_bases:
        mixing = " or ".join(backends_where(lambda b: b.mixes_bases))
        raise MftError(
            f"a mixed society (agents on {len(bases)} base models) runs on the {mixing} backend only, not "
            f"{name}",
            hint=f"use backend: {mixing}, or one base model for every agent",
        )
    for base in bases:  # a missing local model is named before any base is loaded
        resolve_model_path(base)
    return MixedBackend({base: get_backend(name, base, **options) for base in bases})


class MixedBackend(Backend):
    """One backend per base model; each call goes to the backend of its agent's base."""

    def __init__(self, backends: dict[str, Backend]) -> None:
        super().__init__()
        if not backends:
            raise MftError("a mixed society needs at least one base model")
        self.backends = backends
        self.default = next(iter(backends))  # the base of an agent that names none (agent 0's)
        self.name = next(iter(backends.values())).name
        self.routes: dict[str, str] = {}  # agent name -> its base
        self.load_warnings = [w for b in backends.values() for w in b.load_warnings]

    # -- routing -------------------------------------------------------------------------------------------
    def base_of(self, agent: Agent) -> str:
        base = agent.base or self.routes.get(agent.name) or self.default
        if base not in self.backends:
            raise MftError(
                f"agent {agent.name!r} is on base model {base!r}, which this society does not load "
                f"({', '.join(self.backends)})",
                hint="the run's `agents` list names the base models of its society",
            )
        return base

    def backend_of(self, name: str) -> Backend:
        if name not in self.routes:
            raise MftError(f"unknown agent {name!r}", hint="add it to the society first")
        return self.backends[self.routes[name]]

    def add_agent(self, agent: Agent) -> None:
        base = self.base_of(agent)
        self.routes[agent.name] = base
        # the inner backend has one base: it sees the agent without it (an equal agent is not reloaded)
        self.backends[base].add_agent(dataclasses.replace(agent, base=None))

    # -- generation ----------------------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[str]:
        parts: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            if r.agent not in self.routes:
                raise MftError(f"unknown agent {r.agent!r}", hint="add it to the society first")
            parts.setdefault(self.routes[r.agent], []).append(i)
        outputs: list[str] = [""] * len(requests)
        usage: list[tuple[int, int]] = [(0, 0)] * len(requests)
        for base, idx in parts.items():
            backend = self.backends[base]
            backend.interrupt = self.interrupt
            try:
                texts = backend.generate([requests[i] for i in idx], sampling)
            finally:
                backend.interrupt = None
            used = backend.last_usage or [(0, 0)] * len(texts)
            for i, text, u in zip(idx, texts, used, strict=True):
                outputs[i], usage[i] = text, u
        self.last_usage = usage
        self.stats = self._stats()
        return outputs

    def _stats(self) -> GenerationStats:
        """Every base's counts added up (tokens by each base's own tokenizer)."""
        total = GenerationStats()
        for backend in self.backends.values():
            s = backend.stats
            total.requests += s.requests
            total.prompt_tokens += s.prompt_tokens
            total.completion_tokens += s.completion_tokens
            total.seconds += s.seconds
            for agent, n in s.per_agent_completion_tokens.items():
                total.per_agent_completion_tokens[agent] = total.per_agent_completion_tokens.get(agent, 0) + n
        return total

    # -- finetuning and scoring ----------------------------------------------------------------------------
    def finetune(
        self,
        agent: Agent,
        examples: TrainingData,
        out_dir: Path,
        settings: FinetuneSettings | None = None,
        *,
        on_step: StepCallback | None = None,
    ) -> Agent:
        """Train `agent` on its own base's backend; the trained agent keeps its base."""
        base = self.base_of(agent)
        trained = self.backends[base].finetune(
            dataclasses.replace(agent, base=None), examples, out_dir, settings, on_step=on_step
        )
        self.routes[agent.name] = base
        return dataclasses.replace(trained, base=base)

    def finished_agent(self, name: str, out_dir: Path) -> Agent | None:
        """The agent a finetune saved in `out_dir` (on its base where the agent is known: the caller, who
        knows which slot it is, sets the base of one that is not)."""
        base = self.routes.get(name)
        done = self.backends[base or self.default].finished_agent(name, out_dir)
        return None if done is None else dataclasses.replace(done, base=base)

    def can_score(self) -> bool:
        """Whether every base's backend scores responses (the likelihood diversity metrics)."""
        return all(b.can_score() for b in self.backends.values())

    def score_responses(
        self,
        agent: str,
        prompts: list[list[Message]],
        responses: list[str],
        batch_size: int | None = None,
    ) -> list[tuple[Any, Any]]:
        """Agent `agent`'s next-token distributions on given replies, by its own base's tokenizer."""
        return self.backend_of(agent).score_responses(agent, prompts, responses, batch_size)

    # -- sizes and tokens ----------------------------------------------------------------------------------
    def count_tokens(self, texts: list[str]) -> int | None:
        """Tokens of `texts` by the first base's tokenizer (texts of known agents: `count_agent_tokens`)."""
        return self.backends[self.default].count_tokens(texts)

    def count_agent_tokens(self, agent: str, texts: list[str]) -> int | None:
        """Tokens of `texts` (written by `agent`) by its own base's tokenizer."""
        return self.backend_of(agent).count_tokens(texts)

    def context_length(self) -> int | None:
        """The smallest context of the bases: what every agent's prompt fits in."""
        known = [n for b in self.backends.values() if (n := b.context_length()) is not None]
        return min(known) if known else None

    def prompt_tokens(self, messages: list[Message]) -> int | None:
        """The longest rendering of `messages` among the bases (each base renders with its own template)."""
        known = [n for b in self.backends.values() if (n := b.prompt_tokens(messages)) is not None]
        return max(known) if known else None

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": " + ".join(self.backends),
            "bases": {base: backend.describe() for base, backend in self.backends.items()},
        }
