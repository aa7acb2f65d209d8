"""The openai backend against a scripted OpenAI-compatible server on loopback (127.0.0.1 only).

The fake server answers each request according to a script keyed by the request's last message: "ok",
an HTTP status ("429", "500", "503", "400", "404"), "drop" (close the connection without a reply),
"stall" (say nothing until the test ends, past the client's timeout) or "nousage" (ok without `usage`).
Every attempt is counted, so the tests see exactly how often the backend retried.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mft.backends import BACKENDS, get_backend
from mft.backends.base import Agent, GenerationRequest, Sampling
from mft.backends.openai import OpenAIBackend
from mft.backends.seeds import request_seed
from mft.errors import MftError
from mft.records import Message

LOOPBACK = "127.0.0.1"
STALL_LIMIT_S = 10.0  # a stalled handler never outlives this, even if the test forgets to release it


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: dict[str, list[str]], delay_s: float = 0.0) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.script = script
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()  # attempts per key
        self.delivered: Counter[str] = Counter()  # successful replies written per key
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = body["messages"][-1]["content"]
        with srv.lock:
            attempt = srv.hits[key]
            srv.hits[key] += 1
            steps = srv.script.get(key, [])
            action = steps[attempt] if attempt < len(steps) else "ok"
            srv.bodies.append(body)
            srv.auth.append(self.headers.get("Authorization", ""))
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            if self.path != "/v1/chat/completions":
                self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            elif action in ("ok", "nousage"):
                time.sleep(srv.delay_s)
                usage = {"prompt_tokens": len(key), "completion_tokens": 3, "total_tokens": len(key) + 3}
                reply = {
                    "id": f"chatcmpl-{key}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f" answer to {key} "},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage if action == "ok" else None,
                }
                self._json(200, reply)
                with srv.lock:
                    srv.delivered[key] += 1
            elif action == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif action == "stall":
                srv.release.wait(STALL_LIMIT_S)  # the client times out long before
                self.close_connection = True
            else:
                headers = {"Retry-After": "0"} if action == "429" else {}
                error = {"error": {"message": f"scripted {action}", "type": "server_error", "code": action}}
                self._json(int(action), error, headers)
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake() -> Iterator[Any]:
    servers: list[FakeServer] = []

    def start(script: dict[str, list[str]] | None = None, delay_s: float = 0.0) -> FakeServer:
        srv = FakeServer(script or {}, delay_s)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


def _backend(url: str, **settings: Any) -> OpenAIBackend:
    defaults: dict[str, Any] = {
        "base_url": url,
        "timeout_s": 0.5,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "jitter_seed": 0,
    }
    backend = OpenAIBackend("base-model", **{**defaults, **settings})
    backend.add_agent(Agent("a"))  # the base model
    backend.add_agent(Agent("b", "model-b"))  # its own model id
    return backend


def _requests(keys: list[str]) -> list[GenerationRequest]:
    return [
        GenerationRequest("a" if i % 2 == 0 else "b", [Message(role="user", content=k)])
        for i, k in enumerate(keys)
    ]


SAMPLING = Sampling(temperature=0.7, top_p=0.8, max_new_tokens=33, seed=5)


def test_faults_are_retried_and_every_answer_comes_back_once_in_order(fake) -> None:
    script = {
        "q1": ["429", "500", "ok"],
        "q2": ["drop", "ok"],
        "q3": ["stall", "ok"],
        "q4": ["503", "503", "ok"],
    }
    srv = fake(script)
    backend = _backend(srv.url, max_retries=3, max_concurrency=4)
    keys = [f"q{i}" for i in range(6)]
    start = time.time()
    out = backend.generate(_requests(keys), SAMPLING)
    assert time.time() - start < 10
    assert out == [f"answer to {k}" for k in keys]
    assert srv.delivered == Counter(keys)  # one successful reply per request, no duplicates
    assert srv.hits == Counter({"q0": 1, "q1": 3, "q2": 2, "q3": 2, "q4": 3, "q5": 1})
    assert backend.retries == 6
    assert backend.retries_by_cause == {"429": 1, "500": 1, "connection": 1, "timeout": 1, "503": 2}
    # what was sent: the agent's model id, the sampling settings, a per-request seed
    sent = {b["messages"][-1]["content"]: b for b in srv.bodies}
    for i, k in enumerate(keys):
        body = sent[k]
        assert body["model"] == ("base-model" if i % 2 == 0 else "model-b")
        assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.7, 0.8, 33)
        assert body["seed"] == request_seed(5, i)
    assert len({b["seed"] for b in sent.values()}) == len(keys)
    # token accounting from `usage`
    assert backend.stats.requests == 6
    assert backend.stats.prompt_tokens == sum(len(k) for k in keys)
    assert backend.stats.completion_tokens == 18
    assert backend.stats.per_agent_completion_tokens == {"a": 9, "b": 9}


def test_concurrency_is_bounded_by_max_concurrency(fake) -> None:
    srv = fake(delay_s=0.25)
    backend = _backend(srv.url, max_concurrency=3, timeout_s=5)
    keys = [f"c{i}" for i in range(9)]
    start = time.time()
    assert backend.generate(_requests(keys), SAMPLING) == [f"answer to {k}" for k in keys]
    elapsed = time.time() - start
    assert 2 <= srv.max_in_flight <= 3
    assert elapsed < 9 * 0.25  # requests overlapped


def test_gives_up_after_max_retries_with_a_clear_error(fake) -> None:
    srv = fake({"bad": ["503"] * 10})
    backend = _backend(srv.url, max_retries=2)
    with pytest.raises(MftError) as info:
        backend.generate(_requests(["fine", "bad"]), SAMPLING)
    err = info.value
    text = str(err)
    assert srv.url in text and "'b'" in text and "'model-b'" in text
    assert "HTTP 503" in text and "after 3 attempts" in text
    assert err.hint and "max_retries" in err.hint
    assert "\n" not in err.message
    assert srv.hits["bad"] == 3 and backend.retries == 2


def test_client_errors_fail_at_once_and_the_sdk_does_not_retry(fake) -> None:
    srv = fake({"rejected": ["400"], "missing": ["404"], "flaky": ["500", "ok"]})
    backend = _backend(srv.url, max_retries=3)
    with pytest.raises(MftError, match="HTTP 400.*") as info:
        backend.generate(_requests(["rejected"]), SAMPLING)
    assert "not retried" in str(info.value) and srv.hits["rejected"] == 1
    with pytest.raises(MftError) as info:
        backend.generate(_requests(["missing"]), SAMPLING)
    assert "HTTP 404" in str(info.value) and "models" in (info.value.hint or "")
    assert srv.hits["missing"] == 1
    # Our policy is the only one: with max_retries=0 a 500 is final (the SDK would have retried it).
    with pytest.raises(MftError, match="HTTP 500"):
        _backend(srv.url, max_retries=0).generate(_requests(["flaky"]), SAMPLING)
    assert srv.hits["flaky"] == 1
    assert backend.retries == 0


def test_unreachable_server_is_one_clear_error() -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    url = f"http://{LOOPBACK}:{port}/v1"
    backend = _backend(url, max_retries=1)
    with pytest.raises(MftError) as info:
        backend.generate(_requests(["x"]), SAMPLING)
    assert "connection error" in str(info.value) and url in str(info.value)
    assert "is the server running" in (info.value.hint or "")
    assert backend.retries == 1


def test_usage_cost_and_missing_usage(fake) -> None:
    srv = fake({"n": ["nousage"]})
    backend = _backend(srv.url, price_per_1k_prompt=2.0, price_per_1k_completion=10.0)
    backend.generate(_requests(["abcd", "efghij", "n"]), SAMPLING)  # 4 + 6 prompt, 3 + 3 completion
    assert (backend.stats.prompt_tokens, backend.stats.completion_tokens) == (10, 6)
    assert backend.cost_usd == pytest.approx((10 * 2.0 + 6 * 10.0) / 1000)
    assert backend.missing_usage == 1
    info = backend.describe()
    assert info["estimated_cost_usd"] == pytest.approx(0.08) and "api_key" not in json.dumps(info)


def test_backoff_is_exponential_capped_jittered_and_deterministic() -> None:
    def delays(seed: int, index: int = 0) -> list[float]:
        b = OpenAIBackend(
            "m", base_url="http://127.0.0.1:9/v1", backoff_base_s=1.0, backoff_max_s=8.0, jitter_seed=seed
        )
        return [b.backoff_delay(index, attempt) for attempt in range(6)]

    d = delays(1)
    for attempt, x in enumerate(d):
        full = min(8.0, 2.0**attempt)
        assert 0.5 * full <= x < full
    assert d == delays(1)  # same seed, same delays
    assert d != delays(2) and d != delays(1, index=1)  # jitter differs across seeds and requests
    b = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", backoff_base_s=0.1, backoff_max_s=5.0)
    assert b.backoff_delay(0, 0, retry_after=3.0) == 3.0  # Retry-After raises the delay...
    assert b.backoff_delay(0, 0, retry_after=99.0) == 5.0  # ...up to the cap


def test_key_and_url_from_environment(fake, monkeypatch) -> None:
    srv = fake()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(MftError, match="no API key"):
        OpenAIBackend("gpt-4o-mini")  # the OpenAI API itself needs a key
    monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
    backend = OpenAIBackend("m", timeout_s=5)
    backend.add_agent(Agent("a"))
    assert backend.generate(_requests(["k1"]), SAMPLING) == ["answer to k1"]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    backend = OpenAIBackend("m", timeout_s=5)
    backend.add_agent(Agent("a"))
    backend.generate(_requests(["k2"]), SAMPLING)
    assert srv.auth == ["Bearer EMPTY", "Bearer sk-test-123"]
    assert backend.base_url == srv.url


def test_generate_works_inside_a_running_event_loop(fake) -> None:
    srv = fake()
    backend = _backend(srv.url, timeout_s=5)

    async def caller() -> list[str]:
        return backend.generate(_requests(["e0", "e1"]), SAMPLING)

    assert asyncio.run(caller()) == ["answer to e0", "answer to e1"]


def test_registry_settings_and_lazy_import(fake) -> None:
    srv = fake()
    assert "openai" in BACKENDS
    backend = get_backend("openai", "m", base_url=srv.url, max_concurrency=2, batch_size=256)
    assert isinstance(backend, OpenAIBackend) and backend.max_concurrency == 2
    with pytest.raises(MftError, match="no setting 'max_concurency'"):
        get_backend("openai", "m", base_url=srv.url, max_concurency=2)
    with pytest.raises(MftError, match="max_concurrency"):
        OpenAIBackend("m", base_url=srv.url, max_concurrency=0)
    with pytest.raises(MftError, match="unknown agent"):
        backend.generate([GenerationRequest("ghost", [Message(role="user", content="x")])], SAMPLING)
    code = "import sys, mft.backends, mft.cli; print('openai' in sys.modules, 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False"], proc.stderr
