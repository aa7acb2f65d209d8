"""`mft run --backend vllm` end to end on the bundled model (2 agents, 1 iteration, small splits): vLLM
debates and evaluates, the hf trainer finetunes the four adapters, the evaluation serves the new ones; a run
killed half-way (at its 3rd durable write) and re-run ends with the same records as an uninterrupted one.
And `mft serve --backend vllm` answering the `openai` client.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mft.records import DebateRecord, read_jsonl
from tests.integration.test_serve import running_server

CONFIG = """
task: arithmetic
backend: vllm
backend_options:
  kv_cache_gib: 0.25
  max_model_len: 1024
  max_loras: 4
  max_lora_rank: 8
agents: 2
rounds: 2
summarize: false  # no summaries: fewer generations (a run's default has them)
iterations: 1
n_train: 4
n_test: 4
max_new_tokens: 48
temperature: 0
# greedy copies of one model never change their answer (no D_C-): the critics train on D_C+ alone
critic_corrected_share: 0
min_examples: 1
ft_epochs: 1
ft_batch_size: 4
diversity_problems: 0
embedding_model: null
"""
DEBATES = ("iter_0/eval/debate.jsonl", "iter_1/debate.jsonl", "iter_1/eval/debate.jsonl")


def _run(config: Path, runs: Path, name: str, fault: str | None = None) -> tuple[int, str]:
    """(exit code, stderr) of `mft run` in its own process group.

    A process killed by a fault (kill -9 of itself) leaves vLLM's engine processes behind, holding the
    output pipes and memory (a GPU's, on a GPU); the whole group is killed once the run ends, as a user
    kills `kill -9 -- -PGID` (docs/backends.md)."""
    env = {k: v for k, v in os.environ.items() if k != "MFT_FAULT"}
    if fault:
        env["MFT_FAULT"] = fault
    cmd = [sys.executable, "-m", "mft", "run", "--config", str(config), "--runs-dir", str(runs)]
    log = runs / f"{name}.{fault or 'run'}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*cmd, "--name", name, "--no-progress"], stdout=out, stderr=out, env=env, start_new_session=True
        )
        rc = proc.wait(timeout=900)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return rc, log.read_text()


def _responses(run_dir: Path) -> dict[str, list[list[list[str]]]]:
    return {d: [r.responses for r in read_jsonl(run_dir / d, DebateRecord)] for d in DEBATES}


def test_a_run_finishes_and_a_killed_one_resumes_to_the_same_records(tmp_path: Path) -> None:
    config = tmp_path / "vllm.yaml"
    config.write_text(CONFIG)
    rc, log = _run(config, tmp_path, "clean")
    assert rc == 0, log[-3000:]
    run_dir = tmp_path / "clean"
    for agent in ("gen_0", "gen_1", "critic_0", "critic_1"):
        assert (run_dir / "iter_1" / "agents" / agent / "adapter_model.safetensors").exists(), agent
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["backend"] == "vllm"
    results = json.loads((run_dir / "iter_1" / "eval" / "results.json").read_text())
    assert results["iteration"] == 1
    # the evaluation after finetuning is answered by the finetuned agents, not the base
    final = read_jsonl(run_dir / "iter_1" / "eval" / "debate.jsonl", DebateRecord)
    assert final[0].agents == [["gen_0", "gen_1"], ["critic_0", "critic_1"]]

    rc, log = _run(config, tmp_path, "killed", fault="kill@3")
    assert rc != 0, log[-3000:]
    rc, log = _run(config, tmp_path, "killed")
    assert rc == 0, log[-3000:]
    assert _responses(tmp_path / "killed") == _responses(run_dir)  # greedy: nothing lost, nothing twice


def _engine_processes() -> set[int]:
    """Pids of the vLLM engine processes on this machine."""
    pids = set()
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().startswith("VLLM::"):
                pids.add(int(comm.parent.name))
    return pids


def test_serve_answers_the_openai_client_and_takes_its_engine_along_when_stopped(tmp_path: Path) -> None:
    import openai

    args = ["--agents", "2", "--backend", "vllm"]
    before = _engine_processes()
    with running_server(args, tmp_path / "serve.log") as url:
        ours = _engine_processes() - before
        assert ours, "the server's engine processes"
        client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=300)
        assert [m.id for m in client.models.list()] == ["agent_0", "agent_1", "bundled", "society"]
        question = "What is the result of 3+4*5? Make sure to state your answer at the end of the response."
        reply = client.chat.completions.create(
            model="society", messages=[{"role": "user", "content": question}], max_tokens=48, temperature=0
        )
        assert reply.choices[0].message.content
        debate = (reply.model_extra or {})["mft_debate"]
        assert debate["rounds"] == 2 and len(debate["responses"][0]) == 2
        assert reply.usage.completion_tokens > 0
        one = client.chat.completions.create(
            model="agent_1", messages=[{"role": "user", "content": question}], max_tokens=16, temperature=0
        )
        assert 0 < one.usage.completion_tokens <= 16
    # stopped (SIGTERM), the server shuts its engine down: no engine process outlives it
    deadline = time.time() + 60
    while _engine_processes() & ours and time.time() < deadline:
        time.sleep(0.5)
    assert not _engine_processes() & ours
