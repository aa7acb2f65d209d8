"""The retry policy of the openai backend's requests: classify a failure, then wait and retry or give up.

A request that gets HTTP 429, 408 or 5xx, a dropped connection or a timeout is retried after an exponential
backoff with jitter (`backoff_base_s * 2**attempt`, capped at `backoff_max_s`, times a factor in [0.5, 1)
drawn from a hash of the jitter seed, the request's index and the attempt, so a fixed seed gives the same
delays whatever the interleaving). A `Retry-After` header raises the delay (up to `backoff_max_s`). Any
other error (400, 401, 404, ...) fails at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
from collections.abc import Coroutine
from typing import Any, TypeVar

RETRY_STATUSES = frozenset({408, 429})  # plus every 5xx

T = TypeVar("T")


def unit(*parts: object) -> float:
    """A number in [0, 1) that depends only on `parts`."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def backoff_delay(
    base_s: float, max_s: float, jitter_seed: int, index: int, attempt: int, retry_after: float | None = None
) -> float:
    """Seconds to wait before retry `attempt` (0-based) of request `index`."""
    # annotated: typeshed types int ** int as Any (a negative power is a float)
    full: float = min(max_s, base_s * 2**attempt)
    delay = full * (0.5 + 0.5 * unit(jitter_seed, index, attempt))
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_s))
    return delay


class Failure(Exception):
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


def classify(exc: Exception, timeout_s: float) -> Failure | None:
    """What failed, for people and for the retry policy; None: not an API error (re-raised as it is)."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return Failure(f"timed out after {timeout_s:g}s", "timeout", None, True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return Failure(f"connection error ({type(cause).__name__}: {cause})", "connection", None, True)
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
        return Failure(f"HTTP {status}: {message}", str(status), status, retryable, retry_after)
    return None


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from sync code, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # async caller: our own loop in a worker thread
        return pool.submit(asyncio.run, coro).result()
