"""`mft serve` end to end on loopback: a real server process on the bundled model, driven by the openai
backend (a whole debate) and by the plain `openai` client (the society model, agents, errors).

Only 127.0.0.1 is ever used; the server process is stopped at the end of the module.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mft.backends.base import Agent, Sampling
from mft.backends.openai import OpenAIBackend
from mft.cli import main
from mft.debate.consensus import majority_vote
from mft.debate.engine import DebateSettings, Society, run_debate
from mft.errors import MftError
from mft.records import DebateRecord, read_jsonl
from mft.serve import build_served, load_run_society
from mft.tasks import get_task

task = get_task("arithmetic")
START_TIMEOUT_S = 300  # a vLLM engine's start-up on a busy CPU included


@contextlib.contextmanager
def running_server(args: list[str], log_path: Path, auth: str | None = None) -> Iterator[str]:
    """`mft serve ARGS` on a free loopback port until the block ends; yields its /v1 URL. `auth`: the
    server's API key."""
    cmd = [
        sys.executable,
        "-m",
        "mft",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--log-level",
        "warning",
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*cmd, *args], stdout=log, stderr=subprocess.STDOUT)
    try:
        url = None
        deadline = time.time() + START_TIMEOUT_S
        while url is None and time.time() < deadline and proc.poll() is None:
            hit = re.search(r"listening on (http://127\.0\.0\.1:\d+/v1)", log_path.read_text())
            url = hit.group(1) if hit else None
            time.sleep(0.2)
        assert url is not None, f"server did not start:\n{log_path.read_text()}"
        while time.time() < deadline:  # bound socket first, then the app: wait until it answers
            try:
                health = urllib.request.Request(url.removesuffix("/v1") + "/health")
                if auth:
                    health.add_header("Authorization", f"Bearer {auth}")
                with urllib.request.urlopen(health, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(f"server never became healthy:\n{log_path.read_text()}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """`mft serve` with 2 base agents x 2 rounds on the bundled model."""
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with running_server(["--agents", "2", "--rounds", "2"], log_path) as url:
        yield url


def _client(url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=120)


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url + "/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_debate_through_the_server_with_the_openai_backend(server: str, tmp_path: Path) -> None:
    backend = OpenAIBackend("bundled", base_url=server, max_concurrency=4, timeout_s=120, jitter_seed=0)
    society = Society(generators=[Agent("agent_0", "agent_0"), Agent("agent_1", "agent_1")])
    problems = task.load("test", 3)
    settings = DebateSettings(rounds=2, sampling=Sampling(max_new_tokens=64), seed=0, chunk_size=3)
    out = tmp_path / "debate.jsonl"
    records = run_debate(backend, task, problems, society, settings, out, progress=False)

    assert [r.problem.id for r in records] == [p.id for p in problems]
    assert [r.problem.id for r in read_jsonl(out, DebateRecord)] == [p.id for p in problems]
    for rec, problem in zip(records, problems, strict=True):
        assert rec.agents == [["agent_0", "agent_1"]] * 2
        assert len(rec.responses) == 2 and all(len(rnd) == 2 and all(rnd) for rnd in rec.responses)
        assert len(rec.answers) == 2 and all(len(rnd) == 2 for rnd in rec.answers)
        for slot, conv in enumerate(rec.conversations):
            assert [m.role for m in conv] == ["user", "assistant", "user", "assistant"]
            assert conv[0].content == task.question_prompt(problem)
            assert conv[1].content == rec.responses[0][slot]
            assert conv[2].content == task.debate_prompt(problem, [rec.responses[0][1 - slot]])
            assert conv[3].content == rec.responses[1][slot]
        expected = majority_vote(rec.answers[-1], task.is_equivalent, tie_key=f"0:{problem.id}:1")
        assert rec.consensus == expected and len(rec.round_consensus) == 2
        assert rec.correct == task.is_equivalent(rec.consensus, problem.answer)
    stats = backend.stats
    assert stats.requests == 12 and backend.retries == 0
    assert stats.prompt_tokens > 0 and stats.completion_tokens > 0
    assert set(stats.per_agent_completion_tokens) == {"agent_0", "agent_1"}
    assert sum(stats.per_agent_completion_tokens.values()) == stats.completion_tokens


@pytest.mark.slow
def test_society_model_answers_with_the_consensus_and_the_transcript(server: str) -> None:
    problem = task.load("test", 1)[0]
    question = task.question_prompt(problem)
    completion = _client(server).chat.completions.create(
        model="society", messages=[{"role": "user", "content": question}], max_tokens=64, seed=3
    )
    assert completion.model == "society"
    content = completion.choices[0].message.content
    debate = (completion.model_extra or {})["mft_debate"]
    assert debate["question"] == question and debate["rounds"] == 2 and debate["interaction"] == "debate"
    assert debate["agents"] == [["agent_0", "agent_1"]] * 2
    responses, answers = debate["responses"], debate["answers"]
    assert len(responses) == 2 and all(len(rnd) == 2 and all(rnd) for rnd in responses)
    assert answers == [[task.extract_answer(x) for x in rnd] for rnd in responses]
    # the conversation is the engine's: the question as round 1, the others' answers in the debate prompt
    for slot, conv in enumerate(debate["conversations"]):
        assert conv[0] == {"role": "user", "content": question}
        assert conv[2] == {"role": "user", "content": task.debate_prompt(problem, [responses[0][1 - slot]])}
    consensus, slot = debate["consensus"], debate["consensus_slot"]
    if any(a is not None for a in answers[-1]):
        assert consensus in answers[-1]
        assert task.is_equivalent(answers[-1][slot], consensus)
    assert content == responses[-1][slot] and debate["consensus_agent"] == f"agent_{slot}"
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.slow
def test_agents_models_list_and_errors(server: str) -> None:
    import openai

    client = _client(server)
    assert [m.id for m in client.models.list()] == ["agent_0", "agent_1", "bundled", "society"]
    messages = [{"role": "user", "content": task.question_prompt(task.load("test", 2)[1])}]
    first = client.chat.completions.create(model="agent_1", messages=messages, max_tokens=48, seed=7)
    again = client.chat.completions.create(model="agent_1", messages=messages, max_tokens=48, seed=7)
    assert first.choices[0].message.content and first.choices[0].message.role == "assistant"
    assert first.choices[0].message.content == again.choices[0].message.content  # same request, same reply
    assert first.usage.prompt_tokens > 0 and 0 < first.usage.completion_tokens <= 48
    base = client.chat.completions.create(model="bundled", messages=messages, max_tokens=8)
    assert base.usage.completion_tokens <= 8 and base.choices[0].finish_reason in ("stop", "length")

    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-nope", messages=messages)
    error = info.value.response.json()["error"]
    assert info.value.status_code == 404
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    assert "gpt-nope" in error["message"] and "society" in error["message"]
    status, body = _post(server, {"model": "agent_0"})  # no messages
    assert status == 400 and "messages" in body["error"]["message"]
    status, body = _post(server, {"model": "society", "messages": messages, "stream": True})
    assert status == 400 and body["error"]["param"] == "stream"
    status, body = _post(server, {"model": "society", "messages": [{"role": "system", "content": "x"}]})
    assert status == 400 and "user message" in body["error"]["message"]


def _fake_run(tmp_path: Path) -> Path:
    from mft.config import RunConfig

    run_dir = tmp_path / "runs" / "demo"
    cfg = RunConfig(name="demo", runs_dir=Path("/elsewhere"), agents=2, rounds=3, summarize=True)
    (run_dir / "iter_1" / "agents").mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"config": json.loads(cfg.model_dump_json())}))
    society = {
        "generators": [
            {"name": "gen_0", "adapter": "iter_1/agents/gen_0"},
            {"name": "gen_1", "adapter": None},
        ],
        "critics": [
            {"name": "critic_0", "adapter": "iter_1/agents/critic_0"},
            {"name": "critic_1", "adapter": None},
        ],
    }
    (run_dir / "iter_1" / "agents" / "society.json").write_text(json.dumps(society))
    return run_dir


def test_run_society_loading_and_option_checks(tmp_path: Path) -> None:
    run_dir = _fake_run(tmp_path)
    society, _cfg, k = load_run_society(run_dir)  # latest finished iteration
    assert k == 1
    assert [(a.name, a.adapter) for a in society.generators] == [
        ("gen_0", str(run_dir / "iter_1/agents/gen_0")),
        ("gen_1", None),
    ]
    assert [a.name for a in society.critics or []] == ["critic_0", "critic_1"]
    served = build_served(run_dir=run_dir)  # defaults come from the run
    assert (served.rounds, served.base_model, served.task.name) == (3, "bundled", "arithmetic")
    assert served.summarize and not build_served(agents=2).summarize
    assert served.model_ids() == ["gen_0", "gen_1", "critic_0", "critic_1", "bundled", "society"]
    assert [a.name for a in build_served(run_dir=run_dir, iteration=0).society.generators] == [
        "agent_0",
        "agent_1",
    ]
    with pytest.raises(MftError, match="iteration 2 has not finished"):
        build_served(run_dir=run_dir, iteration=2)
    with pytest.raises(MftError, match="does not match"):
        build_served(run_dir=run_dir, agents=3)
    with pytest.raises(MftError, match="no manifest.json"):
        build_served(run_dir=tmp_path)
    with pytest.raises(MftError, match="needs --run-dir"):
        build_served(iteration=1)
    with pytest.raises(MftError, match="used twice"):
        build_served(agents=2, society_name="agent_1")


def test_serve_command_reports_a_busy_port(capsys) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--host", "127.0.0.1", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def _random_adapter(path: Path, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mft.toy import CHECKPOINT_DIR

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(CHECKPOINT_DIR)
    cfg = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(path)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calling deprecated transformers APIs
def test_serving_a_run_iteration_with_adapters_critics_and_summaries(tmp_path: Path) -> None:
    run_dir = _fake_run(tmp_path)  # gen_0 and critic_0 have adapters; summarize=True; 3 rounds
    for name, seed in (("gen_0", 1), ("critic_0", 2)):
        _random_adapter(run_dir / "iter_1" / "agents" / name, seed)
    moved = tmp_path / "moved" / "demo"  # adapters are found relative to the run directory
    moved.parent.mkdir()
    run_dir.rename(moved)
    with running_server(["--run-dir", str(moved), "--rounds", "2"], tmp_path / "serve.log") as url:
        client = _client(url)
        assert [m.id for m in client.models.list()] == [
            "gen_0",
            "gen_1",
            "critic_0",
            "critic_1",
            "bundled",
            "society",
        ]
        problem = task.load("test", 1)[0]
        messages = [{"role": "user", "content": task.question_prompt(problem)}]
        greedy = {"messages": messages, "max_tokens": 24, "temperature": 0.0}
        replies = {
            m: client.chat.completions.create(model=m, **greedy).choices[0].message.content
            for m in ("gen_0", "gen_1", "bundled")
        }
        assert replies["gen_1"] == replies["bundled"]  # no adapter: the base model
        assert replies["gen_0"] != replies["bundled"]  # its LoRA adapter is applied
        completion = client.chat.completions.create(model="society", messages=messages, max_tokens=48)
    debate = (completion.model_extra or {})["mft_debate"]
    assert debate["agents"] == [["gen_0", "gen_1"], ["critic_0", "critic_1"]]  # critics answer round 2
    assert len(debate["summaries"]) == 1 and all(debate["summaries"][0])
    for slot, conv in enumerate(debate["conversations"]):
        assert conv[2]["content"] == task.summary_debate_prompt(problem, debate["summaries"][0][slot])
    assert completion.choices[0].message.content == debate["responses"][-1][debate["consensus_slot"]]
