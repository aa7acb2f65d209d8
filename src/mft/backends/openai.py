"""OpenAI-compatible chat completions backend: the OpenAI API, vLLM, llama.cpp, `mft serve`, ...

An agent is a name plus a model id: `Agent.adapter` holds the model id the server knows the agent by (None:
the base model given to the constructor). `generate` sends every request of a round concurrently, at most
`max_concurrency` in flight, and returns the texts in request order.

Retries are ours, not the SDK's (the client is built with `max_retries=0`): a request that gets HTTP 429,
408 or 5xx, a dropped connection or a timeout is retried up to `max_retries` times after an exponential
backoff with jitter (`backoff_base_s * 2**attempt`, capped at `backoff_max_s`, times a factor in [0.5, 1)
drawn from a hash of `jitter_seed`, the request's index and the attempt, so a fixed seed gives the same
delays whatever the interleaving). A `Retry-After` header raises the delay (up to `backoff_max_s`). Any
other error (400, 401, 404, ...) fails at once. A request that still fails raises an MftError naming the
server, the agent, its model and the status.

Seeds: each request is sent `seed` derived from the round's sampling seed and the request's index, so
agents given the same prompt sample different answers while a rerun sends exactly the same requests.

Fine-tuning goes through the OpenAI fine-tuning API: `finetune` writes the examples to `out_dir/train.jsonl`,
uploads it, creates a job from the agent's current model id, polls it (exponential backoff) and returns the
agent with the fine-tuned model id. `out_dir/job.json` records the file and job ids as soon as they exist,
so a restart resumes polling the same job; `out_dir/model.json` marks a finished agent. Uploads, job
creation and polls are retried with the same policy as chat requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from mft.backends.base import Agent, Backend, GenerationRequest, Sampling
from mft.errors import MftError
from mft.records import Message, write_json_atomic

OPENAI_URL = "https://api.openai.com/v1"
DUMMY_KEY = "EMPTY"  # local OpenAI-compatible servers accept any key, but the SDK insists on one
RETRY_STATUSES = frozenset({408, 429})  # plus every 5xx

JOB_FILE = "job.json"  # {"file": id, "job": id, ...}: written as soon as each id exists (resume)
MODEL_FILE = "model.json"  # {"model": id, "job": id, "trained_tokens": n}: the agent is finished
TRAIN_FILE = "train.jsonl"
JOB_DONE = frozenset({"succeeded", "failed", "cancelled"})
# The pipeline passes the hf backend's LoRA settings; the fine-tuning API has no use for these.
LORA_ONLY_SETTINGS = frozenset(
    {"rank", "alpha", "dropout", "target_modules", "lr", "batch_size", "method"}
    | {"group_by_length", "precision"}
)
FINETUNE_SETTINGS = frozenset({"epochs", "seed", "poll_interval_s", "poll_max_interval_s", "poll_timeout_s"})
# Jitter indices of the fine-tuning calls (chat requests use their index in the round, 0 and up).
_UPLOAD, _CREATE, _POLL = -1, -2, -3

T = TypeVar("T")


def _unit(*parts: object) -> float:
    """A number in [0, 1) that depends only on `parts`."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def finetune_suffix(name: str) -> str:
    """The fine-tuned model's `suffix` for agent `name`: lowercase letters, digits and '-', at most 40."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "agent"


def request_seed(round_seed: int, index: int) -> int:
    """The `seed` sent with request `index` of a round sampled with `round_seed` (fits in 31 bits)."""
    digest = hashlib.blake2b(f"{round_seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") >> 1


class _Failure(Exception):
    """One failed attempt, classified: `what` is for people, `status` is the HTTP status (None: no reply)."""

    def __init__(
        self, what: str, cause: str, status: int | None, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(what)
        self.what = what
        self.cause = cause  # "timeout", "connection" or the status as text: the key of retries_by_cause
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class OpenAIBackend(Backend):
    name = "openai"

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
    ) -> None:
        """`model`: the base model id (agents without a model id of their own use it).

        `base_url` / `api_key` default to $OPENAI_BASE_URL / $OPENAI_API_KEY; without a base URL the OpenAI
        API is used (which needs a key); other servers get a dummy key when none is set.
        `max_tokens_field`: "max_tokens" (most servers) or "max_completion_tokens" (newer OpenAI models).
        `extra_body`: extra JSON fields for every request (e.g. vLLM's {"top_k": 20}).
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
        full = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        delay = full * (0.5 + 0.5 * _unit(self.jitter_seed, index, attempt))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max_s))
        return delay

    # -- generation ----------------------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[str]:
        if not requests:
            return []
        models = [self.model_of(r.agent) for r in requests]  # unknown agents fail before any request
        start = time.time()
        texts = _run_sync(self._generate_all(requests, models, sampling))
        self.stats.requests += len(requests)
        self.stats.seconds += time.time() - start
        return texts

    def _client(self) -> Any:
        from openai import AsyncOpenAI

        return AsyncOpenAI(
            api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s
        )

    async def _generate_all(
        self, requests: list[GenerationRequest], models: list[str], sampling: Sampling
    ) -> list[str]:
        client = self._client()
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
            attempt = 0
            while True:
                try:
                    reply = await client.chat.completions.create(**body)
                    break
                except Exception as exc:  # noqa: BLE001 - classified below; unknown errors re-raised
                    failure = self._classify(exc)
                    if failure is None:
                        raise
                    if not failure.retryable or attempt >= self.max_retries:
                        raise self._give_up(req.agent, model, failure, attempt + 1) from exc
                    self._count_retry(failure)
                    await asyncio.sleep(self.backoff_delay(index, attempt, failure.retry_after))
                    attempt += 1
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

    def _classify(self, exc: Exception) -> _Failure | None:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return _Failure(f"timed out after {self.timeout_s:g}s", "timeout", None, True)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return _Failure(f"connection error ({type(cause).__name__}: {cause})", "connection", None, True)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = " ".join(str(exc.message).split())[:300]
            retry_after = None
            header = exc.response.headers.get("retry-after") if exc.response is not None else None
            if header:
                try:
                    retry_after = max(0.0, float(header))
                except ValueError:
                    retry_after = None
            retryable = status in RETRY_STATUSES or status >= 500
            return _Failure(f"HTTP {status}: {message}", str(status), status, retryable, retry_after)
        return None

    def _count_retry(self, failure: _Failure) -> None:
        self.retries += 1
        self.retries_by_cause[failure.cause] = self.retries_by_cause.get(failure.cause, 0) + 1

    def _give_up(self, agent: str, model: str, failure: _Failure, attempts: int) -> MftError:
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

    # -- fine-tuning ---------------------------------------------------------------------------------------
    def finished_agent(self, name: str, out_dir: Path) -> Agent | None:
        """Agent `name` with the model id `out_dir/model.json` records, or None (no finished job there)."""
        record = _read_record(Path(out_dir) / MODEL_FILE)
        if record is None:
            return None
        model = record.get("model")
        if not isinstance(model, str) or not model:
            raise MftError(
                f"{Path(out_dir) / MODEL_FILE} has no model id",
                hint=f"delete it to poll the job in {JOB_FILE} again",
            )
        return Agent(name, model)

    def finetune(self, agent: Agent, examples: list[list[Message]], out_dir: Path, **settings: Any) -> Agent:
        """Fine-tune `agent` through the fine-tuning API, from its current model id; resumable.

        Settings: `epochs` (the job's n_epochs), `seed`, and `poll_interval_s` / `poll_max_interval_s` /
        `poll_timeout_s` (default: the backend's). The hf backend's LoRA settings (rank, alpha, dropout,
        target_modules, lr, batch_size, method, group_by_length, precision) are accepted and ignored, so
        the pipeline's call works unchanged.
        """
        unknown = sorted(set(settings) - FINETUNE_SETTINGS - LORA_ONLY_SETTINGS)
        if unknown:
            raise MftError(
                f"openai backend: finetune has no setting {', '.join(repr(u) for u in unknown)}",
                hint=f"its settings are: {', '.join(sorted(FINETUNE_SETTINGS | LORA_ONLY_SETTINGS))}",
            )
        out_dir = Path(out_dir)
        done = self.finished_agent(agent.name, out_dir)
        if done is None:
            poll = _poll_settings(
                settings.get("poll_interval_s", self.poll[0]),
                settings.get("poll_max_interval_s", self.poll[1]),
                settings.get("poll_timeout_s", self.poll[2]),
            )
            epochs, seed = settings.get("epochs"), settings.get("seed")
            if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
                raise MftError(f"openai backend: finetune epochs must be an integer >= 1, not {epochs!r}")
            model = agent.adapter or self.model
            done = _run_sync(self._finetune(agent.name, model, examples, out_dir, epochs, seed, poll))
        self.agents[agent.name] = done
        return done

    async def _finetune(
        self,
        name: str,
        model: str,
        examples: list[list[Message]],
        out_dir: Path,
        epochs: int | None,
        seed: int | None,
        poll: tuple[float, float, float],
    ) -> Agent:
        job_path = out_dir / JOB_FILE
        state = _read_record(job_path) or {}
        client = self._client()
        try:
            if not state.get("job"):
                if not state.get("file"):  # nothing uploaded yet (a restart after that reuses the file)
                    if not examples:
                        raise MftError(
                            f"openai backend: no examples to fine-tune agent {name!r} on",
                            hint="raise n_train, or min_examples so such agents keep their weights",
                        )
                    train = out_dir / TRAIN_FILE
                    _write_chat_jsonl(train, examples)
                    uploaded = await self._api(
                        f"upload of {train} for agent {name!r}",
                        _UPLOAD,
                        client.files.create,
                        file=(TRAIN_FILE, train.read_bytes()),
                        purpose="fine-tune",
                    )
                    state = {"file": uploaded.id, "model": model, "examples": len(examples)}
                    write_json_atomic(job_path, state)
                body: dict[str, Any] = {
                    "model": model,
                    "training_file": state["file"],
                    "suffix": finetune_suffix(name),
                }
                if seed is not None:
                    body["seed"] = int(seed)
                if epochs is not None:
                    body["hyperparameters"] = {"n_epochs": epochs}
                job = await self._api(
                    f"creating a fine-tuning job for agent {name!r} (model {model!r})",
                    _CREATE,
                    client.fine_tuning.jobs.create,
                    **body,
                )
                state = {**state, "job": job.id, "model": model}
                write_json_atomic(job_path, state)
            job_id = str(state["job"])
            self.finetune_jobs[name] = job_id
            job = await self._wait(client, name, job_id, out_dir, poll)
        finally:
            await client.close()
        tuned = job.fine_tuned_model
        if not tuned:
            raise MftError(
                f"openai backend: fine-tuning job {job_id} for agent {name!r} succeeded without a "
                "fine_tuned_model id",
                hint=f"check the job on the server; delete {job_path} to start a new one",
            )
        write_json_atomic(
            out_dir / MODEL_FILE, {"model": tuned, "job": job_id, "trained_tokens": job.trained_tokens}
        )
        return Agent(name, tuned)

    async def _wait(
        self, client: Any, name: str, job_id: str, out_dir: Path, poll: tuple[float, float, float]
    ) -> Any:
        """Poll job `job_id` until it ends: waits of interval * 2**k, capped, for at most the timeout."""
        interval, max_interval, timeout = poll
        start = time.monotonic()
        k = 0
        while True:
            job = await self._api(
                f"polling fine-tuning job {job_id} of agent {name!r}",
                _POLL,
                client.fine_tuning.jobs.retrieve,
                job_id,
            )
            status = str(job.status)
            if status == "succeeded":
                return job
            if status in JOB_DONE:
                error = getattr(job, "error", None)
                message = (getattr(error, "message", None) or "").strip() if error is not None else ""
                code = getattr(error, "code", None) if error is not None else None
                why = " ".join(message.split())[:300] or "the server gave no error message"
                raise MftError(
                    f"openai backend: fine-tuning job {job_id} for agent {name!r} (model {job.model!r}) "
                    f"ended {status}: {why}" + (f" [{code}]" if code else ""),
                    hint=f"fix the cause (e.g. the data in {out_dir / TRAIN_FILE}), then delete "
                    f"{out_dir / JOB_FILE} and re-run to upload the data and start a new job",
                )
            elapsed = time.monotonic() - start
            if elapsed >= timeout:
                raise MftError(
                    f"openai backend: fine-tuning job {job_id} for agent {name!r} is still {status} "
                    f"after {elapsed:.0f}s (poll_timeout_s={timeout:g})",
                    hint=f"re-run to resume polling the same job ({out_dir / JOB_FILE} keeps its id), "
                    "or raise poll_timeout_s",
                )
            await asyncio.sleep(min(max_interval, interval * 2**k, timeout - elapsed))
            k += 1

    async def _api(
        self, what: str, index: int, call: Callable[..., Awaitable[T]], *args: Any, **kw: Any
    ) -> T:
        """`call(*args, **kw)` under the retry policy of chat requests; a final failure names `what`."""
        attempt = 0
        while True:
            try:
                return await call(*args, **kw)
            except Exception as exc:  # noqa: BLE001 - classified below; unknown errors re-raised
                failure = self._classify(exc)
                if failure is None:
                    raise
                if not failure.retryable or attempt >= self.max_retries:
                    tries = f"after {attempt + 1} attempts" if attempt else "(not retried)"
                    raise MftError(
                        f"openai backend: {what} at {self.base_url} failed {tries}: {failure.what}",
                        hint=self._finetune_hint(failure),
                    ) from exc
                self._count_retry(failure)
                await asyncio.sleep(self.backoff_delay(index, attempt, failure.retry_after))
                attempt += 1

    def _finetune_hint(self, failure: _Failure) -> str:
        status = failure.status
        if status in (401, 403):
            return "check the API key (OPENAI_API_KEY or the api_key setting); it must allow fine-tuning"
        if status == 404:
            return f"{self.base_url} has no fine-tuning API (vLLM, llama.cpp have none), or the job is gone"
        if status == 429:
            return "the server is rate-limiting: raise max_retries / backoff_base_s, or retry later"
        if status is not None and status >= 500:
            return "the server is failing: retry later (a restart resumes from job.json); raise max_retries"
        if status is not None:
            return "the server rejected it: check that the model can be fine-tuned and the data's format"
        if failure.cause == "timeout":
            return "raise timeout_s (uploads of large files take longer)"
        return f"is the server running at {self.base_url}? check base_url / OPENAI_BASE_URL"

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


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from sync code, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # async caller: our own loop in a worker thread
        return pool.submit(asyncio.run, coro).result()


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


_DAMAGED_HINT = f"delete it (with {MODEL_FILE}, {JOB_FILE} makes the next run poll that job again)"


def _read_record(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, None if there is no such file; a damaged one is an MftError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MftError(f"{path} is unreadable ({exc})", hint=_DAMAGED_HINT) from exc
    if not isinstance(data, dict):
        raise MftError(f"{path} is not a JSON object", hint=_DAMAGED_HINT)
    return data


def _write_chat_jsonl(path: Path, examples: list[list[Message]]) -> None:
    """Examples in the fine-tuning API's chat format, one {"messages": [...]} per line (temp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps({"messages": [m.model_dump() for m in ex]}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
