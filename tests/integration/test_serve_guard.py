"""`mft serve` hardened: every refusal in OpenAI's error shape, the API key, the body limit, the context
checks, and concurrent requests batched on the one engine thread.

A real uvicorn server on 127.0.0.1 in this process, in front of a scripted backend (no model), so each
check takes milliseconds; the same checks against the bundled model, with real generation to cancel, are
in test_serve_reliability.py.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mft.backends.base import Backend, GenerationRequest, Sampling
from mft.cli import main
from mft.records import Message
from mft.serve import Limits, bind, build_served, create_app, exposure_warning, is_loopback
from mft.serve.engine import Engine, Job

pytestmark = pytest.mark.reliability


class WordsBackend(Backend):
    """Answers 'The answer is 7.'; counts a prompt's tokens as its words; a 64-token context."""

    name = "words"

    def __init__(self, respond: Callable[[GenerationRequest], str] | None = None) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.respond = respond or (lambda r: "The answer is 7.")
        self.gate = threading.Event()
        self.gate.set()

    def add_agent(self, agent: Any) -> None:
        pass

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[str]:
        self.calls.append(len(requests))
        self.gate.wait(30)
        out = [self.respond(r) for r in requests]
        self.last_usage = [
            (self.prompt_tokens(r.messages) or 0, len(o.split())) for r, o in zip(requests, out, strict=True)
        ]
        return out

    def context_length(self) -> int | None:
        return 64

    def prompt_tokens(self, messages: list[Message]) -> int | None:
        return sum(len(m.content.split()) for m in messages)


ENGINES: dict[str, Engine] = {}  # each test server's engine, by URL


@contextlib.contextmanager
def serving(backend: Backend, limits: Limits | None = None, agents: int = 2) -> Iterator[str]:
    """create_app(backend) under uvicorn on a free loopback port; yields the server's root URL."""
    import uvicorn

    app = create_app(backend, build_served(agents=agents), limits)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    ENGINES[url] = app.state.engine
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.engine.close()
        sock.close()


def call(
    url: str, path: str, body: bytes | dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url + path, data, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())  # every refusal is JSON: a plain-text body fails here


def ask(content: str = "What is 3 + 4?", **extra: Any) -> dict[str, Any]:
    return {"model": "agent_0", "messages": [{"role": "user", "content": content}], **extra}


def test_every_route_needs_the_key_when_one_is_set() -> None:
    with serving(WordsBackend(), Limits(api_key="s3cret")) as url:
        for path, body in (("/health", None), ("/v1/models", None), ("/v1/chat/completions", ask())):
            status, reply = call(url, path, body)
            assert status == 401 and reply["error"]["code"] == "invalid_api_key", path
            status, reply = call(url, path, body, {"Authorization": "Bearer wrong"})
            assert status == 401, path
            status, reply = call(url, path, body, {"Authorization": "Bearer s3cret"})
            assert status == 200, (path, reply)


def test_refusals_are_json_with_the_field_and_a_fitting_code() -> None:
    backend = WordsBackend()
    with serving(backend, Limits(max_body_bytes=4096)) as url:
        status, reply = call(url, "/v1/chat/completions", b'{"model": "agent_0", "messages": [')
        assert status == 400 and reply["error"]["param"] is None  # not a byte offset
        assert reply["error"]["code"] == "invalid_json" and "not valid JSON" in reply["error"]["message"]
        status, reply = call(url, "/v1/chat/completions", ask("word " * 2000))  # ~10 kB
        assert status == 413 and reply["error"]["code"] == "request_too_large"
        status, reply = call(url, "/health", {"x": 1})  # POST on a GET route
        assert status == 405 and reply["error"]["code"] == "method_not_allowed"
        status, reply = call(url, "/nowhere")
        assert status == 404 and reply["error"]["code"] == "not_found"
        # the context: 64 tokens, the prompt 5 words
        status, reply = call(url, "/v1/chat/completions", ask(max_tokens=100000))
        assert status == 400 and reply["error"]["param"] == "max_tokens"
        assert "at most 59" in reply["error"]["message"]
        status, reply = call(url, "/v1/chat/completions", ask(max_tokens=1e9))
        assert status == 400 and reply["error"]["param"] == "max_tokens"
        status, reply = call(url, "/v1/chat/completions", ask("word " * 70))
        assert status == 400 and reply["error"]["param"] == "messages"
        assert backend.calls == []  # nothing above reached the engine
        status, reply = call(url, "/v1/chat/completions", ask(seed=2**63 - 1, max_tokens=59))
        assert status == 200 and reply["usage"]["prompt_tokens"] == 5
        status, reply = call(url, "/v1/chat/completions", ask(seed=2**64))
        assert status == 400 and reply["error"]["param"] == "seed"


def test_an_unexpected_error_is_a_json_500_and_the_server_lives_on() -> None:
    def respond(r: GenerationRequest) -> str:
        if "boom" in r.messages[-1].content:
            raise RuntimeError("boom")
        return "The answer is 7."

    with serving(WordsBackend(respond)) as url:
        status, reply = call(url, "/v1/chat/completions", ask("boom"))
        assert status == 500 and reply["error"]["type"] == "server_error"
        assert "RuntimeError" in reply["error"]["message"]
        status, reply = call(url, "/v1/chat/completions", ask())
        assert status == 200 and reply["choices"][0]["message"]["content"] == "The answer is 7."


def _concurrently(url: str, bodies: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    out: list[Any] = [None] * len(bodies)

    def one(i: int) -> None:
        out[i] = call(url, "/v1/chat/completions", bodies[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_requests_that_arrive_together_share_one_backend_call() -> None:
    backend = WordsBackend()
    with serving(backend) as url:
        backend.gate.clear()  # the first request holds the engine while the others arrive
        first = threading.Thread(target=call, args=(url, "/v1/chat/completions", ask()))
        first.start()
        while not backend.calls:
            time.sleep(0.01)
        later = threading.Thread(target=_concurrently, args=(url, [ask(f"q {i}") for i in range(8)]))
        later.start()
        while ENGINES[url].queue.qsize() < 8:
            time.sleep(0.01)
        backend.gate.set()
        first.join(30)
        later.join(30)
    assert backend.calls == [1, 8]  # the 8 waiting requests went to the backend as one batch


def test_society_requests_that_arrive_together_are_one_debate() -> None:
    backend = WordsBackend()
    with serving(backend) as url:
        backend.gate.clear()
        blocker = threading.Thread(target=call, args=(url, "/v1/chat/completions", ask()))
        blocker.start()
        while not backend.calls:
            time.sleep(0.01)
        bodies = [
            {"model": "society", "messages": [{"role": "user", "content": f"What is {i} + 1?"}]}
            for i in range(5)
        ]
        results: list[Any] = []
        t = threading.Thread(target=lambda: results.extend(_concurrently(url, bodies)))
        t.start()
        while ENGINES[url].queue.qsize() < 5:
            time.sleep(0.01)
        backend.gate.set()
        t.join(30)
        blocker.join(30)
    # 2 agents x 5 questions in each of the 2 rounds: two backend calls, not ten
    assert backend.calls == [1, 10, 10]
    for (status, reply), body in zip(results, bodies, strict=True):
        assert status == 200
        debate = reply["mft_debate"]
        assert debate["question"] == body["messages"][0]["content"]
        # usage is the request's own: its 2 agents x 2 rounds of 4-word answers
        assert reply["usage"]["completion_tokens"] == 2 * 2 * 4


def test_an_abandoned_job_never_runs_and_a_running_one_is_interrupted() -> None:
    backend = WordsBackend()
    served = build_served(agents=2)
    engine = Engine(backend, served)
    try:
        backend.gate.clear()
        running = Job("agent", Sampling(), agent="agent_0", messages=[Message(role="user", content="a")])
        engine.submit(running)
        while not backend.calls:
            time.sleep(0.01)
        waiting = Job("agent", Sampling(), agent="agent_0", messages=[Message(role="user", content="b")])
        engine.submit(waiting)
        waiting.gone.set()
        assert backend.interrupt is not None and not backend.interrupt()
        running.gone.set()
        assert backend.interrupt()  # every job of the running call is gone: the backend may stop
        backend.gate.set()
        with pytest.raises(Exception, match="Abandoned|^$"):
            running.future.result(10)
        with pytest.raises(Exception, match="Abandoned|^$"):
            waiting.future.result(10)
        assert backend.calls == [1]  # the abandoned job never reached the backend
    finally:
        engine.close()


def test_port_and_exposure_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", "70000"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "70000 is not a port" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["serve", "--max-batch", "0"])
    assert "must be above 0" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("0.0.0.0", "key") is None
    assert "no API key" in (exposure_warning("0.0.0.0", None) or "")
