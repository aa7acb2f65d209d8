"""`mft serve`: a society of agents behind an OpenAI-compatible HTTP API (FastAPI + uvicorn, hf backend).

    POST /v1/chat/completions   model = an agent name      -> that agent answers the messages
                                model = the base model id  -> the bare base model answers
                                model = the society name   -> a full debate on the last user message
    GET  /v1/models             the agents, the base model and the society
    GET  /health                {"status": "ok"}

A society request is debated exactly as `mft debate` does (the engine's `debate_chunk`), with the user's
message as the round-1 prompt: generators answer round 1, critics the later rounds, the task's answer
extraction and majority vote decide the consensus (a served run keeps its `summarize` setting). The reply
is the response of the first agent whose last-round answer equals the consensus (the first agent's, when
nobody gave an answer), and the whole transcript is in the extra top-level field `mft_debate`.

Requests are generated one at a time (the hf backend is not thread-safe), so a reply depends only on the
request and its seed; for throughput, serve the model with vLLM and debate with the openai backend.
Sampling defaults: temperature 1.0, top_p 0.9 (the paper's), max_tokens the task's, seed 0.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mft.backends.base import Agent, Backend, GenerationRequest, Sampling
from mft.debate.engine import DebateSettings, Society, debate_chunk
from mft.errors import MftError
from mft.records import DebateRecord, Message, Problem
from mft.tasks.base import Task

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_SOCIETY_NAME = "society"


# -- what is served --------------------------------------------------------------------------------------
@dataclass
class ServedSociety:
    society: Society
    task: Task
    rounds: int
    base_model: str
    name: str = DEFAULT_SOCIETY_NAME
    source: str = "base model"  # for people: where the agents came from
    summarize: bool = False  # show agents a summary of the others' answers (a run's own setting)

    def agents(self) -> list[Agent]:
        """Generators then critics, each name once."""
        seen: dict[str, Agent] = {}
        for a in [*self.society.generators, *(self.society.critics or [])]:
            seen.setdefault(a.name, a)
        return list(seen.values())

    def model_ids(self) -> list[str]:
        return [*(a.name for a in self.agents()), self.base_model, self.name]


class AsAsked(Task):
    """The served task with the round-1 prompt taken verbatim from the user's message.

    Everything else (debate prompts, answer extraction, equivalence) is the task's own, so a question sent
    as `task.question_prompt(problem)` is debated exactly as the engine debates `problem`.
    """

    def __init__(self, task: Task) -> None:
        self.inner = task
        self.name = task.name
        self.version = task.version
        self.max_new_tokens = task.max_new_tokens

    def load(self, split: str, n: int | None = None, seed: int = 0) -> list[Problem]:
        return self.inner.load(split, n, seed)

    def question_prompt(self, problem: Problem) -> str:
        return problem.question

    def extract_answer(self, response: str) -> str | None:
        return self.inner.extract_answer(response)

    def is_equivalent(self, a: str | None, b: str | None) -> bool:
        return self.inner.is_equivalent(a, b)

    def debate_prompt(self, other_responses: list[str]) -> str:
        return self.inner.debate_prompt(other_responses)

    def summarize_prompt(self, other_responses: list[str]) -> str:
        return self.inner.summarize_prompt(other_responses)

    def summary_debate_prompt(self, summary: str) -> str:
        return self.inner.summary_debate_prompt(summary)


def latest_iteration(run_dir: Path) -> int:
    """The highest iteration whose society is saved (0 when none is: the base society)."""
    done = [0]
    for path in run_dir.glob("iter_*/agents/society.json"):
        suffix = path.parent.parent.name.removeprefix("iter_")
        if suffix.isdigit():
            done.append(int(suffix))
    return max(done)


def load_run_society(run_dir: Path, iteration: int | None = None) -> tuple[Society, Any, int]:
    """The society of `iteration` of the run in `run_dir` (None: its latest), with the run's config.

    Adapters in `iter_<k>/agents/society.json` are stored relative to the run directory; the returned
    agents hold absolute paths under `run_dir`, wherever it has been moved.
    """
    from mft.config import RunConfig, format_validation_error
    from mft.pipeline.run import society_after

    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        raise MftError(
            f"{run_dir} is not a run directory (no manifest.json)",
            hint="pass the directory `mft run` wrote, e.g. runs/<name>",
        )
    try:
        config = json.loads(manifest.read_text(encoding="utf-8"))["config"]
        cfg = RunConfig.model_validate({**config, "runs_dir": str(run_dir.parent), "name": run_dir.name})
    except ValidationError as exc:
        raise MftError(format_validation_error(exc, str(manifest))) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise MftError(f"{manifest}: not a valid run manifest ({exc})") from None
    k = latest_iteration(run_dir) if iteration is None else iteration
    if k < 0:
        raise MftError(f"--iteration {k} is out of range", hint="use 0 (the base) or a finished iteration")
    return society_after(cfg, k), cfg, k


def build_served(
    *,
    model: str | None = None,
    run_dir: Path | None = None,
    iteration: int | None = None,
    agents: int | None = None,
    rounds: int | None = None,
    task: str | None = None,
    society_name: str = DEFAULT_SOCIETY_NAME,
) -> ServedSociety:
    """What `mft serve` serves. With a run directory, unset options default to that run's settings."""
    from mft.config import build_task
    from mft.tasks import get_task

    if iteration is not None and run_dir is None:
        raise MftError("--iteration needs --run-dir", hint="pass the run directory, e.g. runs/<name>")
    if run_dir is not None:
        society, cfg, k = load_run_society(run_dir, iteration)
        if agents is not None and agents != society.size:
            raise MftError(
                f"--agents {agents} does not match iteration {k} of {run_dir} ({society.size} agents)",
                hint="leave --agents out when serving a run",
            )
        the_task = build_task(cfg) if task in (None, cfg.task) else get_task(task)
        base = model or cfg.model
        n_rounds = rounds or cfg.rounds
        source = f"{run_dir} iteration {k}"
        summarize = cfg.summarize
    else:
        society = Society.of_base(agents or 3)
        the_task = get_task(task or "arithmetic")
        base = model or "bundled"
        n_rounds = rounds or 2
        source = "base model"
        summarize = False
    if n_rounds < 1 or society.size < 1:
        raise MftError("a served society needs at least 1 agent and 1 round")
    served = ServedSociety(society, the_task, n_rounds, base, society_name, source, summarize)
    ids = served.model_ids()
    clash = sorted({i for i in ids if ids.count(i) > 1})
    if clash:
        raise MftError(
            f"model name {', '.join(map(repr, clash))} is used twice (agents, base model, society)",
            hint="pick another --society-name",
        )
    return served


# -- request / response shapes ---------------------------------------------------------------------------
class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat completion request that is served; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=5.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    n: int = 1
    stream: bool = False


class ApiError(Exception):
    """An error reply in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self, status: int, message: str, type_: str, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# -- the app ---------------------------------------------------------------------------------------------
def create_app(backend: Backend, served: ServedSociety) -> FastAPI:
    """The FastAPI app serving `served` with `backend` (which must be able to run every agent)."""
    try:
        from fastapi import FastAPI
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
        from starlette.exceptions import HTTPException
    except ImportError as exc:
        raise MftError("`mft serve` needs fastapi and uvicorn", hint="pip install 'mft[serve]'") from exc
    from mft import __version__

    base_agent = Agent(served.base_model)  # the bare base model, addressable by its own id
    for agent in [*served.agents(), base_agent, served.society.summarizer]:
        backend.add_agent(agent)
    agent_names = {a.name for a in served.agents()} | {base_agent.name}
    task = AsAsked(served.task)
    lock = threading.Lock()  # one generation at a time: the hf backend is not thread-safe
    created = int(time.time())
    app = FastAPI(title="mft serve", version=__version__)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Any, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Any, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}"
        err = ApiError(400, message, "invalid_request_error", "invalid_request", ".".join(loc) or None)
        return JSONResponse(err.body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(_request: Any, exc: HTTPException) -> JSONResponse:
        err = ApiError(exc.status_code, str(exc.detail), "invalid_request_error", "not_found")
        return JSONResponse(err.body(), status_code=exc.status_code)

    @app.exception_handler(MftError)
    async def _mft(_request: Any, exc: MftError) -> JSONResponse:
        return JSONResponse(ApiError(500, str(exc), "server_error", "mft_error").body(), status_code=500)

    def model_card(model_id: str) -> dict[str, Any]:
        kind = "society" if model_id == served.name else "base" if model_id == base_agent.name else "agent"
        return {"id": model_id, "object": "model", "created": created, "owned_by": "mft", "mft_kind": kind}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(m) for m in served.model_ids()]}

    @app.get("/v1/models/{model_id:path}")
    def get_model(model_id: str) -> dict[str, Any]:
        if model_id not in served.model_ids():
            raise _unknown_model(model_id, served)
        return model_card(model_id)

    @app.post("/v1/chat/completions")
    def chat_completions(body: ChatRequest) -> dict[str, Any]:
        if body.model != served.name and body.model not in agent_names:
            raise _unknown_model(body.model, served)
        if body.stream:
            raise ApiError(
                400, "streaming is not supported", "invalid_request_error", "unsupported", "stream"
            )
        if body.n != 1:
            raise ApiError(400, "only n=1 is supported", "invalid_request_error", "unsupported", "n")
        max_new = body.max_completion_tokens or body.max_tokens or served.task.max_new_tokens
        sampling = Sampling(
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=0.9 if body.top_p is None else body.top_p,
            max_new_tokens=max_new,
            seed=body.seed or 0,
        )
        extra: dict[str, Any] = {}
        with lock:
            prompt0, completion0 = backend.stats.prompt_tokens, backend.stats.completion_tokens
            if body.model == served.name:
                text, extra["mft_debate"] = _debate(backend, task, served, body, sampling)
            else:
                messages = [Message(role=m.role, content=m.text()) for m in body.messages]
                text = backend.generate([GenerationRequest(body.model, messages)], sampling)[0]
            prompt = backend.stats.prompt_tokens - prompt0
            completion = backend.stats.completion_tokens - completion0
        length_cut = body.model != served.name and completion >= max_new
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "length" if length_cut else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
            **extra,
        }

    return app


def _unknown_model(model: str, served: ServedSociety) -> ApiError:
    return ApiError(
        404,
        f"The model {model!r} does not exist; this server serves: {', '.join(served.model_ids())}",
        "invalid_request_error",
        "model_not_found",
        "model",
    )


def _debate(
    backend: Backend, task: AsAsked, served: ServedSociety, body: ChatRequest, sampling: Sampling
) -> tuple[str, dict[str, Any]]:
    """One debate of the society on the last user message; the consensus response and the transcript."""
    question = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
    if not question.strip():
        raise ApiError(
            400, "a society request needs a non-empty user message", "invalid_request_error", None, "messages"
        )
    digest = hashlib.blake2b(question.encode(), digest_size=6).hexdigest()
    problem = Problem(id=f"served-{digest}", question=question, answer="")
    settings = DebateSettings(
        rounds=served.rounds, summarize=served.summarize, sampling=sampling, seed=sampling.seed, chunk_size=1
    )
    record: DebateRecord = debate_chunk(backend, task, [problem], served.society, settings, 0)[0]
    last = record.answers[-1]
    slot = next((s for s, a in enumerate(last) if task.is_equivalent(a, record.consensus)), 0)
    transcript = {
        "question": question,
        "task": record.task,
        "task_version": record.task_version,
        "rounds": record.n_rounds,
        "agents": record.agents,
        "responses": record.responses,
        "answers": record.answers,
        "round_consensus": record.round_consensus,
        "consensus": record.consensus,
        "consensus_slot": slot,
        "consensus_agent": record.agents[-1][slot],
        "conversations": [[m.model_dump() for m in conv] for conv in record.conversations],
        "summaries": record.summaries,
        "seed": record.seed,
    }
    return record.responses[-1][slot], transcript


# -- running ---------------------------------------------------------------------------------------------
def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port (port 0: any free port), or an MftError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise MftError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc})",
            hint="pick another --port (0: any free port), or stop what is using it",
        ) from None
    return sock


def serve(
    *,
    model: str | None = None,
    run_dir: Path | None = None,
    iteration: int | None = None,
    agents: int | None = None,
    rounds: int | None = None,
    task: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    society_name: str = DEFAULT_SOCIETY_NAME,
    batch_size: int = 256,
    log_level: str = "info",
) -> None:
    """Load the society on the hf backend and serve it until interrupted."""
    served = build_served(
        model=model,
        run_dir=run_dir,
        iteration=iteration,
        agents=agents,
        rounds=rounds,
        task=task,
        society_name=society_name,
    )
    try:
        import uvicorn
    except ImportError as exc:
        raise MftError("`mft serve` needs fastapi and uvicorn", hint="pip install 'mft[serve]'") from exc
    from mft.backends import get_backend

    sock = bind(host, port)  # before loading the model: a busy port fails fast
    try:
        backend = get_backend("hf", served.base_model, batch_size=batch_size)
        app = create_app(backend, served)
        actual = sock.getsockname()[1]
        where = f"[{host}]" if ":" in host else host
        print(
            f"mft serve: {served.society.size} agents x {served.rounds} rounds ({served.source}, task "
            f"{served.task.name}); models: {', '.join(served.model_ids())}",
            flush=True,
        )
        print(f"mft serve: listening on http://{where}:{actual}/v1", flush=True)
        config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
