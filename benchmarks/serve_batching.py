"""Society requests per second of `mft serve` at 1, 10 and 50 concurrent clients, batched and one at a time.

One `mft serve` process on 127.0.0.1 (bundled model, 3 agents x 2 rounds, arithmetic) answers society
requests (`model: society`, the task's own question prompt, `max_tokens` 160) from C client threads, each
sending its share of R requests back to back. It runs twice: with the default batching (`--max-batch 64`:
requests that wait together share the engine's batches) at each concurrency, and with `--max-batch 1`
(one request at a time, as before batching) at the highest. Printed: requests/s, the ratio of each
concurrency to one client, and batched / one at a time at the highest concurrency.

    python benchmarks/serve_batching.py [--clients 1 10 50] [--requests 100]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from mft.tasks import get_task


def start(max_batch: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    cmd = [sys.executable, "-m", "mft", "serve", "--host", "127.0.0.1", "--port", "0", "--agents", "3"]
    cmd += ["--rounds", "2", "--log-level", "warning", "--max-batch", str(max_batch)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        hit = re.search(r"listening on (http://127\.0\.0\.1:\d+)/v1", log.read_text())
        if hit:
            try:
                urllib.request.urlopen(hit.group(1) + "/health", timeout=5).close()
                return proc, hit.group(1)
            except OSError:
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start:\n{log.read_text()}")


def society(url: str, question: str, seed: int) -> None:
    body = {"model": "society", "messages": [{"role": "user", "content": question}], "max_tokens": 160}
    body["seed"] = seed
    req = urllib.request.Request(
        url + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=600) as resp:
        assert resp.status == 200


def load(url: str, questions: list[str], clients: int) -> float:
    """Requests per second of `clients` threads sending `questions` between them (each its share)."""
    shares = [questions[i::clients] for i in range(clients)]

    def client(share: list[str]) -> None:
        for q in share:
            society(url, q, seed=0)

    threads = [threading.Thread(target=client, args=(s,)) for s in shares]
    start_t = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(questions) / (time.time() - start_t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--requests", type=int, default=100, help="requests per concurrency level")
    parser.add_argument("--serial-requests", type=int, default=20, help="requests with one client")
    args = parser.parse_args()
    task = get_task("arithmetic")
    questions = [task.question_prompt(p) for p in task.load("test", args.requests)]
    results: dict[int, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for max_batch in (64, 1):
            proc, url = start(max_batch, Path(tmp) / f"serve-{max_batch}.log")
            try:
                society(url, questions[0], 0)  # warm-up
                results[max_batch] = {}
                # one at a time, only the highest concurrency is run: its rate is the serial rate anyway
                for c in args.clients if max_batch > 1 else args.clients[-1:]:
                    n = args.serial_requests if c == 1 else args.requests
                    results[max_batch][c] = load(url, questions[:n], c)
                    print(
                        f"--max-batch {max_batch:>2}: {c:>3} clients  {results[max_batch][c]:6.2f} req/s",
                        flush=True,
                    )
            finally:
                proc.terminate()
                proc.wait(30)
    print()
    per = results[64]
    one = per[args.clients[0]]
    ratios = "  ".join(f"{c} clients {per[c] / one:5.2f}x" for c in args.clients)
    print(f"batched (--max-batch 64), ratio to {args.clients[0]} client: {ratios}")
    top = args.clients[-1]
    print(f"batched / one at a time at {top} clients: {results[64][top] / results[1][top]:.2f}x")


if __name__ == "__main__":
    main()
