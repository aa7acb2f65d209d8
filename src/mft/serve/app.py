"""The HTTP side of `mft serve`: the FastAPI app, its routes and its error replies.

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

Requests are generated on one engine thread (`engine.py`), which batches the requests that arrive
together: agent turns with equal sampling settings in one backend call, society debates in one debate over
all their questions. Sampling defaults: temperature 1.0, top_p 0.9 (the paper's), max_tokens the task's
(cut to what fits the model's context after the prompt), seed 0.

What is checked before a request reaches the engine (each refusal in OpenAI's error shape, never a
plain-text 500): the API key when one is set (401, every route, constant-time compare) and the body size
(413), both by `guard.py`; the schema (400, with the field as `param`; `schemas.py`); the prompt and
`max_tokens` against the model's context (400, `param` messages or max_tokens). A request that is still
running when its client disconnects, or past the server's request timeout (504), is abandoned: dropped
before it starts, and stopped between decoding steps once nobody in its batch is waiting any more.

The routes are module functions over the app's state (`AppState`, at `app.state.mft`); `create_app` builds
the state and registers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mft.backends.base import Agent, Backend, Sampling
from mft.errors import MftError
from mft.records import Message
from mft.serve.engine import Abandoned, Engine, Job, Reply
from mft.serve.guard import Guard, Limits
from mft.serve.schemas import STATUS_CODES, ApiError, ChatMessageIn, ChatRequest, transcript
from mft.serve.society import ServedSociety

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

try:  # at module level, where FastAPI resolves the handlers' annotations
    from starlette.requests import Request
except ImportError:  # pragma: no cover - create_app says what to install
    Request = Any  # type: ignore[misc,assignment]

__all__ = ["AppState", "ApiError", "ChatMessageIn", "ChatRequest", "Limits", "create_app"]

LOG = logging.getLogger("mft.serve")


@dataclass(frozen=True)
class AppState:
    """What the routes serve with: the backend (every agent added), the society, the engine thread, the
    limits, the model's context (None: unknown), and the agents a request may name."""

    backend: Backend
    served: ServedSociety
    engine: Engine
    limits: Limits
    context: int | None
    created: int  # the models' `created` time
    base_agents: list[Agent]  # each bare base model, addressable by its own id
    agent_names: set[str]


def create_app(backend: Backend, served: ServedSociety, limits: Limits | None = None) -> FastAPI:
    """The FastAPI app serving `served` with `backend` (which must be able to run every agent)."""
    try:
        from fastapi import FastAPI
        from fastapi.exceptions import RequestValidationError
        from starlette.exceptions import HTTPException
    except ImportError as exc:
        raise MftError("`mft serve` needs fastapi and uvicorn", hint="pip install 'mft[serve]'") from exc
    from mft import __version__

    limits = limits or Limits()
    base_agents = served.base_agents()
    for agent in [*served.agents(), *base_agents, served.society.summarizer]:
        backend.add_agent(agent)
    engine = Engine(backend, served, limits.max_batch)
    state = AppState(
        backend=backend,
        served=served,
        engine=engine,
        limits=limits,
        context=backend.context_length(),
        created=int(time.time()),
        base_agents=base_agents,
        agent_names={a.name for a in served.agents()} | {a.name for a in base_agents},
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        # at shutdown, before uvicorn re-raises the signal that stopped it (atexit never runs then)
        engine.close()
        backend.close()

    app = FastAPI(title="mft serve", version=__version__, lifespan=lifespan)
    app.state.mft = state
    app.state.engine = engine
    app.add_middleware(Guard, limits=limits)
    app.exception_handler(ApiError)(_api_error)
    app.exception_handler(RequestValidationError)(_invalid)
    app.exception_handler(HTTPException)(_http)
    app.exception_handler(MftError)(_mft)
    app.exception_handler(Exception)(_anything)
    app.get("/health")(health)
    app.get("/v1/models")(list_models)
    app.get("/v1/models/{model_id:path}")(get_model)
    app.post("/v1/chat/completions")(chat_completions)
    return app


# -- error replies: every one in OpenAI's shape ------------------------------------------------------------
def _reply(err: ApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    from fastapi.responses import JSONResponse

    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def _api_error(_request: Any, exc: ApiError) -> JSONResponse:
    return _reply(exc)


async def _invalid(_request: Any, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":  # loc is ('body', byte offset): not a field
        where = [x for x in first.get("loc", ()) if isinstance(x, int)]
        at = f" at byte {where[0]}" if where else ""
        message = f"the request body is not valid JSON{at}: {first.get('msg', '')}"
        return _reply(ApiError(400, message, "invalid_request_error", "invalid_json", None))
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}"
    return _reply(ApiError(400, message, "invalid_request_error", "invalid_request", ".".join(loc) or None))


async def _http(_request: Any, exc: HTTPException) -> JSONResponse:
    code = STATUS_CODES.get(exc.status_code, "invalid_request")
    return _reply(ApiError(exc.status_code, str(exc.detail), "invalid_request_error", code), exc.headers)


async def _mft(_request: Any, exc: MftError) -> JSONResponse:
    return _reply(ApiError(500, str(exc), "server_error", "mft_error"))


async def _anything(_request: Any, exc: Exception) -> JSONResponse:  # never a plain-text 500
    LOG.exception("unexpected error while serving a request")
    message = f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return _reply(ApiError(500, message, "server_error", "internal_error"))


# -- the routes ----------------------------------------------------------------------------------------------
def _state(request: Request) -> AppState:
    state: AppState = request.app.state.mft
    return state


def _model_card(state: AppState, model_id: str) -> dict[str, Any]:
    bases = {a.name for a in state.base_agents}
    kind = "society" if model_id == state.served.name else "base" if model_id in bases else "agent"
    return {"id": model_id, "object": "model", "created": state.created, "owned_by": "mft", "mft_kind": kind}


def health() -> dict[str, str]:
    return {"status": "ok"}


def list_models(request: Request) -> dict[str, Any]:
    state = _state(request)
    return {"object": "list", "data": [_model_card(state, m) for m in state.served.model_ids()]}


def get_model(model_id: str, request: Request) -> dict[str, Any]:
    state = _state(request)
    if model_id not in state.served.model_ids():
        raise _unknown_model(model_id, state.served)
    return _model_card(state, model_id)


async def chat_completions(body: ChatRequest, request: Request) -> dict[str, Any]:
    state = _state(request)
    served = state.served
    if body.model != served.name and body.model not in state.agent_names:
        raise _unknown_model(body.model, served)
    if body.stream:
        raise ApiError(400, "streaming is not supported", "invalid_request_error", "unsupported", "stream")
    if body.n != 1:
        raise ApiError(400, "only n=1 is supported", "invalid_request_error", "unsupported", "n")
    society = body.model == served.name
    if society:
        question = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
        if not question.strip():
            raise ApiError(
                400,
                "a society request needs a non-empty user message",
                "invalid_request_error",
                None,
                "messages",
            )
        messages = [Message(role="user", content=question)]  # its round-1 prompt
    else:
        messages = [Message(role=m.role, content=m.text()) for m in body.messages]
    asked = body.max_completion_tokens or body.max_tokens
    max_new = _fit_to_context(state.backend, state.context, messages, asked, served.task.max_new_tokens)
    sampling = Sampling(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=0.9 if body.top_p is None else body.top_p,
        max_new_tokens=max_new,
        seed=body.seed or 0,
    )
    if society:
        job = Job("society", sampling, question=question)
    else:
        job = Job("agent", sampling, agent=body.model, messages=messages)
    reply = await _wait(state.engine.submit(job), job, request, state.limits.request_timeout_s)
    extra: dict[str, Any] = {}
    if reply.record is not None:
        extra["mft_debate"] = transcript(reply.record, reply.slot)
    length_cut = not society and reply.completion_tokens >= max_new
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": "length" if length_cut else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
        **extra,
    }


def _fit_to_context(
    backend: Backend, context: int | None, messages: list[Message], asked: int | None, default: int
) -> int:
    """The new tokens a request may generate: `asked` (400 if it cannot fit the context after the prompt),
    else the task's default cut to what fits."""
    if context is None:
        return asked or default
    prompt = backend.prompt_tokens(messages)
    if prompt is None:
        return asked or default
    room = context - prompt
    if room < 1:
        raise ApiError(
            400,
            f"the prompt is {prompt} tokens, which leaves no room in the model's context of {context} "
            "tokens; shorten the messages",
            "invalid_request_error",
            "context_length_exceeded",
            "messages",
        )
    if asked is not None and asked > room:
        raise ApiError(
            400,
            f"max_tokens {asked} + the prompt's {prompt} tokens exceed the model's context of {context} "
            f"tokens; ask for at most {room}",
            "invalid_request_error",
            "context_length_exceeded",
            "max_tokens",
        )
    return min(asked or default, room)


async def _wait(future: Any, job: Job, request: Any, timeout_s: float) -> Reply:
    """The job's reply; on a client disconnect or past `timeout_s` the job is abandoned instead."""
    waiting = asyncio.wrap_future(future)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=min(0.25, max(0.0, deadline - loop.time())))
            if done:
                try:
                    return waiting.result()  # type: ignore[no-any-return]
                except Abandoned:
                    raise ApiError(
                        499, "the request was abandoned", "invalid_request_error", "abandoned"
                    ) from None
            if await request.is_disconnected():
                raise ApiError(499, "the client disconnected", "invalid_request_error", "client_closed")
            if loop.time() >= deadline:
                raise ApiError(
                    504,
                    f"the request took longer than the server's timeout of {timeout_s:g} s "
                    "(mft serve --request-timeout)",
                    "server_error",
                    "timeout",
                )
    finally:
        if not waiting.done():
            job.gone.set()


def _unknown_model(model: str, served: ServedSociety) -> ApiError:
    return ApiError(
        404,
        f"The model {model!r} does not exist; this server serves: {', '.join(served.model_ids())}",
        "invalid_request_error",
        "model_not_found",
        "model",
    )
