"""`mft serve` under a storm of concurrent society requests, a share of whose clients hang up mid-request.

One `mft serve` process on 127.0.0.1 (bundled model, 3 agents x 2 rounds, arithmetic, default batching).
After a warm-up wave (so that the allocator's pools are what a served process holds), C clients each send
one society request (the task's question prompt, `max_tokens` 160) at once; a share of them (`--drop`)
hang up 0.2-3 s after sending, without reading the reply. Then one more request, alone. Printed: the
requests answered and whether each is complete (status 200, a reply, the debate's rounds and every agent's
response, token usage), any other outcome, the wall time, the lone request's latency after the storm (a
wedged server never answers it), and the server's resident memory before the storm, at its peak and after
it (2 s after the lone request), with the ratio after / before.

    python benchmarks/serve_load.py [--clients 200] [--drop 0.2]

`storm` is also what `tests/integration/test_serve_load.py` runs, smaller.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_batching import start  # noqa: E402

from mft.tasks import get_task  # noqa: E402


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def body(question: str, seed: int, max_tokens: int) -> bytes:
    messages = [{"role": "user", "content": question}]
    return json.dumps(
        {"model": "society", "messages": messages, "max_tokens": max_tokens, "seed": seed}
    ).encode()


def complete(reply: dict[str, Any], agents: int, rounds: int) -> bool:
    """A whole society reply: content, the debate's rounds with every agent's response, token usage."""
    choice = (reply.get("choices") or [{}])[0]
    debate = reply.get("mft_debate") or {}
    responses = debate.get("responses") or []
    return bool(
        isinstance(choice.get("message", {}).get("content"), str)
        and choice.get("finish_reason")
        and debate.get("rounds") == rounds
        and len(responses) == rounds
        and all(len(r) == agents for r in responses)
        and reply.get("usage", {}).get("completion_tokens", 0) > 0
    )


@dataclass
class Storm:
    answered: int = 0  # status 200 and complete
    incomplete: int = 0  # status 200, not complete
    failed: list[str] = field(default_factory=list)  # any other outcome of a client that waited
    dropped: int = 0  # clients that hung up
    seconds: float = 0.0


def storm(
    url: str, questions: list[str], drop: float, agents: int, rounds: int, max_tokens: int, seed: int = 0
) -> Storm:
    """One request per question from its own client thread, all at once; a share `drop` of the clients
    (chosen by `seed`) hang up 0.2-3 s after sending."""
    rng = random.Random(seed)
    leaving = set(rng.sample(range(len(questions)), round(drop * len(questions))))
    waits = {i: rng.uniform(0.2, 3.0) for i in leaving}
    out, lock = Storm(dropped=len(leaving)), threading.Lock()
    host = urlparse(url)

    def client(i: int, question: str) -> None:
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=1800)
        try:
            conn.request(
                "POST",
                "/v1/chat/completions",
                body(question, i, max_tokens),
                {"Content-Type": "application/json"},
            )
            if i in leaving:
                time.sleep(waits[i])
                return
            resp = conn.getresponse()
            reply = json.loads(resp.read())
            with lock:
                if resp.status != 200:
                    out.failed.append(f"{resp.status}: {reply.get('error', {}).get('message', '')[:80]}")
                elif complete(reply, agents, rounds):
                    out.answered += 1
                else:
                    out.incomplete += 1
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none ends the storm
            with lock:
                out.failed.append(f"{type(exc).__name__}: {exc}"[:120])
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i, q)) for i, q in enumerate(questions)]
    t = time.time()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    out.seconds = time.time() - t
    return out


def lone(url: str, question: str, max_tokens: int) -> tuple[int, float]:
    """(status, seconds) of one request sent alone."""
    host = urlparse(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=600)
    t = time.time()
    conn.request(
        "POST",
        "/v1/chat/completions",
        body(question, 10**6, max_tokens),
        {"Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, time.time() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--drop", type=float, default=0.2, help="share of the clients that hang up")
    parser.add_argument("--warmup", type=int, default=64, help="concurrent requests before the storm")
    parser.add_argument("--max-tokens", type=int, default=160)
    args = parser.parse_args()
    task = get_task("arithmetic")
    questions = [task.question_prompt(p) for p in task.load("test", args.clients + args.warmup + 1)]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proc, root = start(64, Path(tmp) / "serve.log")
        url = root + "/v1"
        try:
            warm = storm(url, questions[: args.warmup], 0.0, 3, 2, args.max_tokens, seed=1)
            assert warm.answered == args.warmup, warm
            before = rss_mib(proc.pid)
            peak = [before]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.5):
                    peak.append(rss_mib(proc.pid))

            sampler = threading.Thread(target=sample)
            sampler.start()
            qs = questions[args.warmup : args.warmup + args.clients]
            result = storm(url, qs, args.drop, 3, 2, args.max_tokens)
            status, seconds = lone(url, questions[-1], args.max_tokens)
            time.sleep(2)
            stop.set()
            sampler.join()
            after = rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    waited = args.clients - result.dropped
    print(f"{args.clients} clients at once, {result.dropped} hung up mid-request, {waited} waited")
    other = len(result.failed)
    print(f"answered complete: {result.answered} / {waited}; incomplete: {result.incomplete}; other: {other}")
    for line in sorted(set(result.failed))[:5]:
        print(f"  {line}")
    print(f"storm wall time: {result.seconds:.1f} s ({result.answered / result.seconds:.2f} answered req/s)")
    print(f"a lone request after the storm: status {status} in {seconds:.1f} s")
    ratio = after / before
    print(
        f"server RSS: {before:.0f} MiB before, {max(peak):.0f} MiB peak, {after:.0f} MiB after: {ratio:.3f}x"
    )


if __name__ == "__main__":
    main()
