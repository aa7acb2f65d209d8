"""OpenAI-compatible chat completions backend: the OpenAI API, vLLM, llama.cpp, `mft serve`, ...

An agent is a name plus a model id: `Agent.adapter` holds the model id the server knows the agent by (None:
the base model given to the constructor). `generate` sends every request of a round concurrently, at most
`max_concurrency` in flight, and returns the texts in request order.

Retries are ours, not the SDK's (the client is built with `max_retries=0`): a request that gets HTTP 429,
408 or 5xx, a dropped connection or a timeout is retried up to `max_retries` times after a seeded,
jittered exponential backoff (`openai_retry.py`). A request that still fails raises an MftError naming the
server, the agent, its model and the status.

Seeds: each request is sent `seed` derived from the round's sampling seed and the request's index
(`mft.backends.seeds.request_seed`), so agents given the same prompt sample different answers while a
rerun sends exactly the same requests.

Fine-tuning goes through the OpenAI fine-tuning API: `finetune` drives `mft.backends.openai_finetune`
(upload, job, polls, resume from job.json / model.json) through a `JobClient` holding this backend's client,
retry policy and poll settings (`job_client`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from mft.backends import openai_finetune
from mft.backends.base import (
    Agent,
    Backend,
    FinetuneSettings,
    GenerationRequest,
    Sampling,
    StepCallback,
    TrainingData,
)
from mft.backends.openai_retry import Failure, backoff_delay, classify, run_sync
from mft.backends.seeds import request_seed
from mft.data.examples import as_examples
from mft.errors import MftError

OPENAI_URL = "https://api.openai.com/v1"
DUMMY_KEY = "EMPTY"  # local OpenAI-compatible servers accept any key, but the SDK insists on one

T = TypeVar("T")


class OpenAIBackend(Backend):
    name = "openai"
    objectives = ("sft",)  # the fine-tuning API's supervised jobs

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 16,
        max_retries: int = 5,
        timeout_s: float = 120.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        jitter_seed: int | None = None,
        price_per_1k_prompt: float = 0.0,
        price_per_1k_completion: float = 0.0,
        max_tokens_field: str = "max_tokens",
        extra_body: dict[str, Any] | None = None,
        batch_size: int | None = None,
        poll_interval_s: float = 10.0,
        poll_max_interval_s: float = 120.0,
        poll_timeout_s: float = 24 * 3600.0,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """`model`: the base model id (agents without a model id of their own use it).

        `base_url` / `api_key` default to $OPENAI_BASE_URL / $OPENAI_API_KEY; without a base URL the OpenAI
        API is used (which needs a key); other servers get a dummy key when none is set.
        `max_tokens_field`: "max_tokens" (most servers) or "max_completion_tokens" (newer OpenAI models).
        `extra_body`: extra JSON fields for every request (e.g. vLLM's {"top_k": 20}).
        `chat_template_kwargs`: options of the server's chat template (e.g. {"enable_thinking": False}), sent
        as the `chat_template_kwargs` field that vLLM and SGLang servers read (the OpenAI API has none).
        `batch_size` is the hf backend's setting, accepted so callers can pass it uniformly, and unused.
        `poll_interval_s`, `poll_max_interval_s`, `poll_timeout_s`: how `finetune` polls a job (the first
        wait, doubled after each poll up to the maximum; how long one `finetune` call waits in all).
        """
        super().__init__()
        checks = {
            "max_concurrency": max_concurrency >= 1,
            "max_retries": max_retries >= 0,
            "timeout_s": timeout_s > 0,
            "backoff_base_s": backoff_base_s >= 0,
            "backoff_max_s": backoff_max_s >= 0,
            "price_per_1k_prompt": price_per_1k_prompt >= 0,
            "price_per_1k_completion": price_per_1k_completion >= 0,
            "max_tokens_field": max_tokens_field in ("max_tokens", "max_completion_tokens"),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise MftError(
                f"openai backend: invalid setting {', '.join(bad)}",
                hint="max_concurrency >= 1, max_retries >= 0, timeout_s > 0, backoff and prices >= 0, "
                "max_tokens_field 'max_tokens' or 'max_completion_tokens'",
            )
        self.poll = _poll_settings(poll_interval_s, poll_max_interval_s, poll_timeout_s)
        try:
            import openai  # noqa: F401
        except ImportError as exc:
            raise MftError(
                "the openai backend needs the `openai` package", hint="pip install 'mft[openai]'"
            ) from exc
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
        if urlparse(self.base_url).scheme not in ("http", "https"):
            raise MftError(
                f"openai backend: base URL {self.base_url!r} is not an http(s) URL",
                hint="e.g. http://127.0.0.1:8000/v1 (set base_url or OPENAI_BASE_URL)",
            )
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if urlparse(self.base_url).hostname == urlparse(OPENAI_URL).hostname:
                raise MftError(
                    f"openai backend: no API key for {self.base_url}",
                    hint="set OPENAI_API_KEY (or api_key), or point base_url at a local server",
                )
            key = DUMMY_KEY
        self._api_key = key
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout_s = float(timeout_s)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.jitter_seed = secrets.randbits(32) if jitter_seed is None else jitter_seed
        self.price_per_1k_prompt = float(price_per_1k_prompt)
        self.price_per_1k_completion = float(price_per_1k_completion)
        self.max_tokens_field = max_tokens_field
        self.extra_body = dict(extra_body or {})
        if chat_template_kwargs:
            self.extra_body["chat_template_kwargs"] = dict(chat_template_kwargs)
        self.agents: dict[str, Agent] = {}
        self.retries = 0  # retried attempts so far, all requests together
        self.retries_by_cause: dict[str, int] = {}
        self.missing_usage = 0  # replies without a `usage` field (their tokens are not counted)
        self.finetune_jobs: dict[str, str] = {}  # agent name -> id of its latest fine-tuning job

    # -- agents --------------------------------------------------------------------------------------------
    def add_agent(self, agent: Agent) -> None:
        self.agents[agent.name] = agent

    def model_of(self, agent_name: str) -> str:
        if agent_name not in self.agents:
            raise MftError(f"unknown agent {agent_name!r}", hint="add it to the society first")
        return self.agents[agent_name].adapter or self.model

    # -- cost ----------------------------------------------------------------------------------------------
    @property
    def cost_usd(self) -> float:
        """Estimated spend so far from the token counts and the configured prices (0 without prices)."""
        return (
            self.stats.prompt_tokens * self.price_per_1k_prompt
            + self.stats.completion_tokens * self.price_per_1k_completion
        ) / 1000

    def backoff_delay(self, index: int, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry `attempt` (0-based) of request `index`."""
        return backoff_delay(
            self.backoff_base_s, self.backoff_max_s, self.jitter_seed, index, attempt, retry_after
        )

    # -- generation ----------------------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[str]:
        if not requests:
            return []
        models = [self.model_of(r.agent) for r in requests]  # unknown agents fail before any request
        start = time.time()
        texts = run_sync(self._generate_all(requests, models, sampling))
        self.stats.requests += len(requests)
        self.stats.seconds += time.time() - start
        return texts

    def client(self) -> Any:
        """A fresh SDK client for this server; the caller closes it (an async client belongs to one loop)."""
        from openai import AsyncOpenAI

        return AsyncOpenAI(
            api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s
        )

    async def _generate_all(
        self, requests: list[GenerationRequest], models: list[str], sampling: Sampling
    ) -> list[str]:
        client = self.client()
        limit = asyncio.Semaphore(self.max_concurrency)
        try:
            tasks = [
                asyncio.create_task(self._one(client, limit, i, req, model, sampling))
                for i, (req, model) in enumerate(zip(requests, models, strict=True))
            ]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for t in tasks:  # one request failed for good: stop the others
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            await client.close()

    async def _one(
        self,
        client: Any,
        limit: asyncio.Semaphore,
        index: int,
        req: GenerationRequest,
        model: str,
        sampling: Sampling,
    ) -> str:
        body: dict[str, Any] = {
            "model": model,
            "messages": [m.model_dump() for m in req.messages],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            self.max_tokens_field: sampling.max_new_tokens,
            "seed": request_seed(sampling.seed, index),
        }
        if self.extra_body:
            body["extra_body"] = self.extra_body
        async with limit:  # a slot is held through backoff too, so a throttled server sees less load
            reply = await self.with_retries(
                index,
                lambda: client.chat.completions.create(**body),
                lambda failure, attempts: self._give_up(req.agent, model, failure, attempts),
            )
        if not reply.choices:
            raise MftError(
                f"openai backend: {self.base_url} returned no choices for agent {req.agent!r} "
                f"(model {model!r})",
                hint="the server is not OpenAI-compatible for chat completions; check its logs",
            )
        usage = reply.usage
        if usage is None:
            self.missing_usage += 1
        else:
            prompt, completion = int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
            self.stats.prompt_tokens += prompt
            self.stats.completion_tokens += completion
            per = self.stats.per_agent_completion_tokens
            per[req.agent] = per.get(req.agent, 0) + completion
        return (reply.choices[0].message.content or "").strip()

    async def with_retries(
        self,
        index: int,
        call: Callable[[], Awaitable[T]],
        give_up: Callable[[Failure, int], MftError],
    ) -> T:
        """`call()` under the retry policy (module docstring); `index` keys the jitter of its backoff.

        A failure that is not retried, or the last one, raises `give_up(failure, attempts made)`; an
        exception that is no API error (a bug, a cancellation) propagates as it is.
        """
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:  # noqa: BLE001 - classified below; unknown errors re-raised
                failure = classify(exc, self.timeout_s)
                if failure is None:
                    raise
                if not failure.retryable or attempt >= self.max_retries:
                    raise give_up(failure, attempt + 1) from exc
                self._count_retry(failure)
                await asyncio.sleep(self.backoff_delay(index, attempt, failure.retry_after))
                attempt += 1

    def _count_retry(self, failure: Failure) -> None:
        self.retries += 1
        self.retries_by_cause[failure.cause] = self.retries_by_cause.get(failure.cause, 0) + 1

    def _give_up(self, agent: str, model: str, failure: Failure, attempts: int) -> MftError:
        status = failure.status
        if status in (401, 403):
            hint = "check the API key (OPENAI_API_KEY or the api_key setting) for this server"
        elif status == 404:
            hint = f"the server does not serve model {model!r}: GET {self.base_url}/models lists its models"
        elif status == 429:
            hint = "the server is rate-limiting: lower max_concurrency, or raise max_retries / backoff_base_s"
        elif status is not None and status >= 500:
            hint = "the server is failing: check its logs; raise max_retries to wait it out"
        elif status is not None:
            hint = "the server rejected the request: check max_new_tokens against the model's context length"
        elif failure.cause == "timeout":
            hint = "raise timeout_s, or lower max_new_tokens / max_concurrency"
        else:
            hint = f"is the server running at {self.base_url}? check base_url / OPENAI_BASE_URL"
        tries = f"after {attempts} attempts" if attempts > 1 else "(not retried)"
        return MftError(
            f"openai backend: request for agent {agent!r} (model {model!r}) to {self.base_url} failed "
            f"{tries}: {failure.what}",
            hint=hint,
        )

    # -- fine-tuning (the job API itself is in openai_finetune) --------------------------------------------
    def job_client(self) -> openai_finetune.JobClient:
        """What `openai_finetune` needs of this server: its client, retry policy and poll settings; the jobs
        it starts are recorded in `finetune_jobs`."""
        return openai_finetune.JobClient(
            self.base_url, self.client, self.with_retries, self.poll, self.finetune_jobs
        )

    def finished_agent(self, name: str, out_dir: Path) -> Agent | None:
        """Agent `name` with the model id `out_dir/model.json` records, or None (no finished job there)."""
        return openai_finetune.finished_agent(name, Path(out_dir))

    def finetune(
        self,
        agent: Agent,
        examples: TrainingData,
        out_dir: Path,
        settings: FinetuneSettings | None = None,
        *,
        on_step: StepCallback | None = None,
    ) -> Agent:
        """Fine-tune `agent` through the fine-tuning API, from its current model id; resumable.

        Of `settings` the API uses `epochs` (the job's n_epochs) and `seed`; the LoRA fields are the hf
        backend's. None: the API's defaults (neither is sent). Polling follows the constructor's `poll_*`.
        The job trains on the server: `on_step` is never called (no training curve is streamed).
        """
        out_dir = Path(out_dir)
        if settings is not None and settings.objective not in self.objectives:
            from mft.backends import training

            trains = " or ".join(o.upper() for o in self.objectives)
            raise MftError(
                f"the openai backend finetunes by {trains} only, not {settings.objective}",
                hint=f"use backend: {' or '.join(training(settings.objective))} for {settings.objective} "
                "finetuning",
            )
        done = openai_finetune.finished_agent(agent.name, out_dir)
        if done is None:
            epochs, seed = openai_finetune.job_settings(settings)
            model = agent.adapter or self.model
            chats = as_examples(examples, agent.name)
            job = openai_finetune.run_job(self.job_client(), agent.name, model, chats, out_dir, epochs, seed)
            done = run_sync(job)
        self.agents[agent.name] = done  # the next generate (and finetune) uses the new model
        return done

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model,
            "base_url": self.base_url,
            "max_concurrency": self.max_concurrency,
            "max_retries": self.max_retries,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
            "retries_by_cause": dict(self.retries_by_cause),
            "missing_usage": self.missing_usage,
            "estimated_cost_usd": round(self.cost_usd, 6),
            "finetune_jobs": dict(self.finetune_jobs),
        }


def _poll_settings(interval: float, max_interval: float, timeout: float) -> tuple[float, float, float]:
    values = {"poll_interval_s": interval, "poll_max_interval_s": max_interval, "poll_timeout_s": timeout}
    bad = [k for k, v in values.items() if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0]
    if bad or max_interval < interval:
        raise MftError(
            f"openai backend: invalid setting {', '.join(bad) or 'poll_max_interval_s'}",
            hint="poll_interval_s, poll_max_interval_s and poll_timeout_s > 0, "
            "poll_max_interval_s >= poll_interval_s",
        )
    return float(interval), float(max_interval), float(timeout)
