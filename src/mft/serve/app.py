"""The HTTP side of `mft serve`: OpenAI-shaped request / response schemas, errors, and the FastAPI app.

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
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from mft.backends.base import Agent, Backend, GenerationRequest, Sampling
from mft.debate.engine import DebateSettings, debate_chunk
from mft.errors import MftError
from mft.records import DebateRecord, Message, Problem
from mft.serve.society import AsAsked, ServedSociety

if TYPE_CHECKING:
    from fastapi import FastAPI


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
