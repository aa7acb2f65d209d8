"""The OpenAI-shaped side of `mft serve`: the chat request it accepts, its error replies, and the transcript
a society reply carries in its extra field `mft_debate`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mft.records import DebateRecord

# the `code` of an error reply for the HTTP errors the framework raises itself (others: invalid_request)
STATUS_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


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


def transcript(record: DebateRecord, slot: int) -> dict[str, Any]:
    """The extra field `mft_debate` of a society reply: the whole debate; `slot` answered."""
    return {
        "question": record.problem.question,
        "task": record.task,
        "task_version": record.task_version,
        "rounds": record.n_rounds,
        "interaction": record.interaction,
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
