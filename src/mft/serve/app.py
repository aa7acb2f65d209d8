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

Requests are generated on one engine thread (`engine.py`), which batches the requests that arrive
together: agent turns with equal sampling settings in one backend call, society debates in one debate over
all their questions. Sampling defaults: temperature 1.0, top_p 0.9 (the paper's), max_tokens the task's
(cut to what fits the model's context after the prompt), seed 0.

What is checked before a request reaches the engine (each refusal in OpenAI's error shape, never a
plain-text 500): the API key when one is set (401, every route, constant-time compare); the body size
(413); the schema (400, with the field as `param`); the prompt and `max_tokens` against the model's
context (400, `param` messages or max_tokens). A request that is still running when its client disconnects,
or past the server's request timeout (504), is abandoned: dropped before it starts, and stopped between
decoding steps once nobody in its batch is waiting any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from mft.backends.base import Backend, Sampling
from mft.errors import MftError
from mft.records import DebateRecord, Message
from mft.serve.engine import Abandoned, Engine, Job, Reply
from mft.serve.society import ServedSociety

if TYPE_CHECKING:
    from fastapi import FastAPI

try:  # at module level, where FastAPI resolves the handlers' annotations
    from starlette.requests import Request
except ImportError:  # pragma: no cover - create_app says what to install
    Request = Any  # type: ignore[misc,assignment]


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
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)  # OpenAI's int64 (and uint64) seeds
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
LOG = logging.getLogger("mft.serve")
STATUS_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


@dataclass(frozen=True)
class Limits:
    """What `mft serve` accepts: see `serve()` for the command-line names."""

    api_key: str | None = None  # None: no authentication (loopback only is the default bind)
    max_body_bytes: int = 4 * 2**20
    request_timeout_s: float = 600.0
    max_batch: int = 64  # requests batched together (1: one at a time)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_error(send: Send, err: ApiError, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(err.body()).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": err.status, "headers": [*head, *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """ASGI middleware in front of every route: the API key (401) and the body size (413)."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = self.limits.api_key
        if key is not None:
            given = headers.get("authorization", "")
            token = given[7:].strip() if given[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(token.encode(), key.encode()):
                err = ApiError(
                    401,
                    "missing or incorrect API key: send it as the header 'Authorization: Bearer <key>'",
                    "invalid_request_error",
                    "invalid_api_key",
                )
                await _send_error(send, err, [(b"www-authenticate", b"Bearer")])
                return
        limit = self.limits.max_body_bytes
        too_large = ApiError(
            413,
            f"the request body is over the server's limit of {limit} bytes (mft serve --max-body-mb)",
            "invalid_request_error",
            "request_too_large",
        )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _send_error(send, too_large)
            return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        # read the body here, counting (a chunked body has no content-length), then hand it on
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await _send_error(send, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: list[MutableMapping[str, Any]] = [{"type": "http.request", "body": b"".join(chunks)}]

        async def replay() -> MutableMapping[str, Any]:
            return body.pop() if body else await receive()

        await self.app(scope, replay, send)


def create_app(backend: Backend, served: ServedSociety, limits: Limits | None = None) -> FastAPI:
    """The FastAPI app serving `served` with `backend` (which must be able to run every agent)."""
    try:
        from fastapi import FastAPI
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
        from starlette.exceptions import HTTPException
    except ImportError as exc:
        raise MftError("`mft serve` needs fastapi and uvicorn", hint="pip install 'mft[serve]'") from exc
    from mft import __version__

    limits = limits or Limits()
    base_agents = served.base_agents()  # each bare base model, addressable by its own id
    for agent in [*served.agents(), *base_agents, served.society.summarizer]:
        backend.add_agent(agent)
    agent_names = {a.name for a in served.agents()} | {a.name for a in base_agents}
    engine = Engine(backend, served, limits.max_batch)
    context = backend.context_length()
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        # at shutdown, before uvicorn re-raises the signal that stopped it (atexit never runs then)
        engine.close()
        backend.close()

    app = FastAPI(title="mft serve", version=__version__, lifespan=lifespan)
    app.state.engine = engine
    app.add_middleware(Guard, limits=limits)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Any, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Any, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # loc is ('body', byte offset): not a field
            where = [x for x in first.get("loc", ()) if isinstance(x, int)]
            at = f" at byte {where[0]}" if where else ""
            message = f"the request body is not valid JSON{at}: {first.get('msg', '')}"
            err = ApiError(400, message, "invalid_request_error", "invalid_json", None)
            return JSONResponse(err.body(), status_code=400)
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}"
        err = ApiError(400, message, "invalid_request_error", "invalid_request", ".".join(loc) or None)
        return JSONResponse(err.body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(_request: Any, exc: HTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "invalid_request")
        err = ApiError(exc.status_code, str(exc.detail), "invalid_request_error", code)
        return JSONResponse(err.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(MftError)
    async def _mft(_request: Any, exc: MftError) -> JSONResponse:
        return JSONResponse(ApiError(500, str(exc), "server_error", "mft_error").body(), status_code=500)

    @app.exception_handler(Exception)
    async def _anything(_request: Any, exc: Exception) -> JSONResponse:  # never a plain-text 500
        LOG.exception("unexpected error while serving a request")
        message = f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        return JSONResponse(ApiError(500, message, "server_error", "internal_error").body(), status_code=500)

    def model_card(model_id: str) -> dict[str, Any]:
        bases = {a.name for a in base_agents}
        kind = "society" if model_id == served.name else "base" if model_id in bases else "agent"
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
    async def chat_completions(body: ChatRequest, request: Request) -> dict[str, Any]:
        if body.model != served.name and body.model not in agent_names:
            raise _unknown_model(body.model, served)
        if body.stream:
            raise ApiError(
                400, "streaming is not supported", "invalid_request_error", "unsupported", "stream"
            )
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
        max_new = _fit_to_context(backend, context, messages, asked, served.task.max_new_tokens)
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
        reply = await _wait(engine.submit(job), job, request, limits.request_timeout_s)
        extra: dict[str, Any] = {}
        if reply.record is not None:
            extra["mft_debate"] = _transcript(reply.record, reply.slot)
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

    return app


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


def _transcript(record: DebateRecord, slot: int) -> dict[str, Any]:
    """The extra field `mft_debate` of a society reply: the whole debate; `slot` answered."""
    return {
        "question": record.problem.question,
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
        **({"bases": record.bases} if record.bases else {}),  # a mixed society: each slot's base model
    }
