"""Fine-tuning an `OpenAIBackend` agent through the OpenAI fine-tuning API (upload, job, polls, resume).

`run_job` writes the examples to `out_dir/train.jsonl`, uploads it, creates a job from the agent's current
model id, polls it (exponential backoff) and returns the agent with the fine-tuned model id.
`out_dir/job.json` records the file and job ids as soon as they exist, so a restart resumes polling the
same job; `out_dir/model.json` marks a finished agent. Uploads, job creation and polls are retried with
the same policy as chat requests (`OpenAIBackend.with_retries`).

`OpenAIBackend.finetune` and `finished_agent` call this module. What a job needs of the server is a
`JobClient` the backend builds (its SDK client, retry policy, poll settings); this module never imports
the backend, so the import arrow points one way.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mft.backends.base import Agent, FinetuneSettings
from mft.backends.openai_retry import Failure
from mft.data.examples import write_examples
from mft.errors import MftError
from mft.records import Message, write_json_atomic

JOB_FILE = "job.json"  # {"file": id, "job": id, ...}: written as soon as each id exists (resume)
MODEL_FILE = "model.json"  # {"model": id, "job": id, "trained_tokens": n}: the agent is finished
TRAIN_FILE = "train.jsonl"
JOB_DONE = frozenset({"succeeded", "failed", "cancelled"})
# Jitter indices of the fine-tuning calls (chat requests use their index in the round, 0 and up).
_UPLOAD, _CREATE, _POLL = -1, -2, -3

_DAMAGED_HINT = f"delete it (with {MODEL_FILE}, {JOB_FILE} makes the next run poll that job again)"

# `call()` under a retry policy, `index` keying its backoff's jitter; a final failure raises
# `give_up(failure, attempts made)` (`OpenAIBackend.with_retries`)
Retrying = Callable[[int, Callable[[], Awaitable[Any]], Callable[[Failure, int], MftError]], Awaitable[Any]]


@dataclass(frozen=True)
class JobClient:
    """What a fine-tuning job needs of the server it runs on (`OpenAIBackend.job_client` builds one)."""

    base_url: str  # the server, as error messages name it
    connect: Callable[[], Any]  # a fresh SDK client (an `AsyncOpenAI`); the caller closes it
    with_retries: Retrying  # the chat requests' retry policy
    poll: tuple[float, float, float]  # the first wait between polls, the longest, the most in all (s)
    jobs: dict[str, str]  # agent name -> id of its latest job, filled in as each job is known


def finetune_suffix(name: str) -> str:
    """The fine-tuned model's `suffix` for agent `name`: lowercase letters, digits and '-', at most 40."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "agent"


def finished_agent(name: str, out_dir: Path) -> Agent | None:
    """Agent `name` with the model id `out_dir/model.json` records, or None (no finished job there)."""
    record = _read_record(out_dir / MODEL_FILE)
    if record is None:
        return None
    model = record.get("model")
    if not isinstance(model, str) or not model:
        raise MftError(
            f"{out_dir / MODEL_FILE} has no model id",
            hint=f"delete it to poll the job in {JOB_FILE} again",
        )
    return Agent(name, model)


def job_settings(settings: FinetuneSettings | None) -> tuple[int | None, int | None]:
    """(n_epochs, seed) to send with a job; None: not sent (the API's default)."""
    if settings is None:  # the API's defaults: no n_epochs and no seed sent
        return None, None
    epochs = settings.epochs
    # FinetuneSettings is a plain dataclass: nothing has checked its values yet
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise MftError(f"openai backend: finetune epochs must be an integer >= 1, not {epochs!r}")
    return epochs, settings.seed


async def run_job(
    server: JobClient,
    name: str,
    model: str,
    examples: list[list[Message]],
    out_dir: Path,
    epochs: int | None,
    seed: int | None,
) -> Agent:
    """Upload (unless job.json has a file), create the job (unless it has one), poll it to the end."""
    job_path = out_dir / JOB_FILE
    state = _read_record(job_path) or {}
    client = server.connect()
    try:
        if not state.get("job"):
            if not state.get("file"):  # nothing uploaded yet (a restart after that reuses the file)
                if not examples:
                    raise MftError(
                        f"openai backend: no examples to fine-tune agent {name!r} on",
                        hint="raise n_train, or min_examples so such agents keep their weights",
                    )
                train = out_dir / TRAIN_FILE
                write_examples(train, examples)  # the API's chat format is the trainer's: one writer
                data = train.read_bytes()  # once: every attempt uploads the same bytes
                uploaded = await _api(
                    server,
                    f"upload of {train} for agent {name!r}",
                    _UPLOAD,
                    lambda: client.files.create(file=(TRAIN_FILE, data), purpose="fine-tune"),
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
            job = await _api(
                server,
                f"creating a fine-tuning job for agent {name!r} (model {model!r})",
                _CREATE,
                lambda: client.fine_tuning.jobs.create(**body),
            )
            state = {**state, "job": job.id, "model": model}
            write_json_atomic(job_path, state)
        job_id = str(state["job"])
        server.jobs[name] = job_id
        job = await _wait(server, client, name, job_id, out_dir)
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


async def _wait(server: JobClient, client: Any, name: str, job_id: str, out_dir: Path) -> Any:
    """Poll job `job_id` until it ends: waits of interval * 2**k, capped, for at most the timeout."""
    interval, max_interval, timeout = server.poll
    start = time.monotonic()
    k = 0
    while True:
        job = await _api(
            server,
            f"polling fine-tuning job {job_id} of agent {name!r}",
            _POLL,
            lambda: client.fine_tuning.jobs.retrieve(job_id),
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


async def _api(server: JobClient, what: str, index: int, call: Callable[[], Awaitable[Any]]) -> Any:
    """`call()` under the retry policy of chat requests; a final failure is an MftError naming `what`."""

    def give_up(failure: Failure, attempts: int) -> MftError:
        tries = f"after {attempts} attempts" if attempts > 1 else "(not retried)"
        return MftError(
            f"openai backend: {what} at {server.base_url} failed {tries}: {failure.what}",
            hint=_hint(server.base_url, failure),
        )

    return await server.with_retries(index, call, give_up)


def _hint(base_url: str, failure: Failure) -> str:
    status = failure.status
    if status in (401, 403):
        return "check the API key (OPENAI_API_KEY or the api_key setting); it must allow fine-tuning"
    if status == 404:
        return f"{base_url} has no fine-tuning API (vLLM, llama.cpp have none), or the job is gone"
    if status == 429:
        return "the server is rate-limiting: raise max_retries / backoff_base_s, or retry later"
    if status is not None and status >= 500:
        return "the server is failing: retry later (a restart resumes from job.json); raise max_retries"
    if status is not None:
        return "the server rejected it: check that the model can be fine-tuned and the data's format"
    if failure.cause == "timeout":
        return "raise timeout_s (uploads of large files take longer)"
    return f"is the server running at {base_url}? check base_url / OPENAI_BASE_URL"


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
