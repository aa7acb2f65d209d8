"""A mixed society: agents on the bundled toy (Llama) and on a tiny Qwen2.5 (another architecture, tokenizer
and chat template), each base loaded once, debating, finetuning, resuming after a kill and being served.

The Qwen model is `force_token`'s: its greedy reply is always the token "7", repeated (it never ends its
turn), so every response shows which base wrote it: a request routed to the wrong base shows at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mft.cli import main
from mft.config import DebateConfig, load_config
from mft.debate.engine import run_debate
from mft.pipeline.assemble import base_society, build_backend, debate_settings
from mft.records import DebateRecord, read_jsonl
from mft.tasks import get_task
from tests.architectures.conftest import one_torch_thread  # noqa: F401 - tiny models run on one thread
from tests.architectures.tiny import TinyModels
from tests.integration.test_run_resume import _artifacts

pytestmark = pytest.mark.slow

NEW_TOKENS = 6
FORCED = "7" * NEW_TOKENS  # the Qwen agent's every reply (greedy)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen2.5 whose greedy output is always the token '7'."""
    with _one_thread():
        return TinyModels(tmp_path_factory.mktemp("tiny")).forced("qwen2_5", "7")


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread in module fixtures too (they start before the function-scoped `one_torch_thread`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def load_counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """How many times each base model is loaded (the hf backend's `load_base`)."""
    import mft.backends.hf.backend as hf

    counts: Counter[str] = Counter()
    real = hf.load_base

    def counting(model: str, **kwargs: object) -> object:
        counts[model] += 1
        return real(model, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hf, "load_base", counting)
    yield counts


def test_debate_routes_each_agent_to_its_own_base(
    tmp_path: Path, qwen: Path, load_counts: Counter[str]
) -> None:
    config = tmp_path / "mixed.yaml"
    config.write_text(
        f"agents: [bundled, {{model: {qwen}}}, bundled]\n"
        f"summarizer_model: {qwen}\nsummarize: true\ntemperature: 0\nmax_new_tokens: {NEW_TOKENS}\n"
    )
    cfg = load_config(DebateConfig, config)
    task = get_task("arithmetic")
    backend = build_backend(cfg, task)
    problems = task.load("test", 2)
    records = run_debate(
        backend, task, problems, base_society(cfg), debate_settings(cfg, task, 0), tmp_path / "d.jsonl", False
    )
    assert load_counts == {"bundled": 1, str(qwen): 1}  # each base once, whatever its number of agents
    for rec in read_jsonl(tmp_path / "d.jsonl", DebateRecord):
        assert rec.bases == ["bundled", str(qwen), "bundled"]
        for rnd in rec.responses:  # slot 1 is the Qwen agent, in every round; the toy never says 777777
            assert rnd[1] == FORCED and rnd[0] != FORCED and rnd[2] != FORCED
        assert all(s == FORCED for rnd in rec.summaries for s in rnd)  # the summarizer is on Qwen
    assert [r.problem.id for r in records] == [p.id for p in problems]
    # tokens counted per base, by each base's own tokenizer
    per_agent = backend.stats.per_agent_completion_tokens
    assert per_agent["agent_1"] == NEW_TOKENS * len(problems) * 2
    assert backend.stats.completion_tokens == sum(per_agent.values())


RUN = """
name: mixed
task: arithmetic
agents: [bundled, {qwen}]
method: ours_pooled  # each agent trains on the pooled data: every agent finetunes on its own base
summarize: false
temperature: 0
max_new_tokens: {tokens}
iterations: 1
n_train: 2
n_test: 2
chunk_size: 2
min_examples: 1
critic_corrected_share: 0
ft_epochs: 1
ft_batch_size: 4
diversity_problems: 1
embedding_model: null
"""


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory, qwen: Path) -> tuple[Path, Path, list[str]]:
    """An uninterrupted 1-iteration run of the mixed society: its config, its run directory and the label
    of every durable write it made, in order (`MFT_FAULT_LOG`)."""
    root = tmp_path_factory.mktemp("mixed_run")
    config = root / "mixed.yaml"
    config.write_text(RUN.format(qwen=qwen, tokens=NEW_TOKENS))
    log = root / "points.log"
    with pytest.MonkeyPatch.context() as mp, _one_thread():
        mp.delenv("MFT_FAULT", raising=False)
        mp.setenv("MFT_FAULT_LOG", str(log))
        assert main(["run", "--config", str(config), "--runs-dir", str(root / "runs"), "--no-progress"]) == 0
    points = [line.split("\t")[1] for line in log.read_text().splitlines()]
    return config, root / "runs" / "mixed", points


def test_run_finetunes_each_agent_on_its_own_base(
    mixed_run: tuple[Path, Path, list[str]], qwen: Path
) -> None:
    from safetensors import safe_open

    _, run, _ = mixed_run
    society = json.loads((run / "iter_1" / "agents" / "society.json").read_text())
    bases = {a["name"]: a["base"] for a in [*society["generators"], *society["critics"]]}
    assert bases == {"gen_0": "bundled", "gen_1": str(qwen), "critic_0": "bundled", "critic_1": str(qwen)}
    hidden = {"bundled": 128, str(qwen): 64}  # the toy's width, the tiny Qwen's
    for name, base in bases.items():
        # each adapter was trained on its own base: its LoRA matrices have that model's width
        with safe_open(str(run / "iter_1" / "agents" / name / "adapter_model.safetensors"), "pt") as f:
            key = next(k for k in f.keys() if k.endswith("q_proj.lora_A.weight"))
            assert f.get_tensor(key).shape[1] == hidden[base], name
    for path in ("iter_0/eval/debate.jsonl", "iter_1/debate.jsonl", "iter_1/eval/debate.jsonl"):
        for rec in read_jsonl(run / path, DebateRecord):
            assert rec.bases == ["bundled", str(qwen)], path
    diversity = json.loads((run / "iter_1" / "diversity.json").read_text())
    # each agent's KL from its own base (another base's tokenizer could not even be compared); no KL
    # between critics of different tokenizers
    assert set(diversity["kl_from_base"]["per_agent"]) == {"gen_0", "gen_1", "critic_0", "critic_1"}
    assert "held_out_nll" in diversity and "kl" not in diversity
    report = (run / "report.md").read_text()
    assert f"agent 1 `{qwen}`" in report


def test_killed_mixed_run_resumes_to_the_same_society(
    mixed_run: tuple[Path, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, clean, points = mixed_run
    runs = tmp_path / "runs"
    args = ["run", "--config", str(config), "--runs-dir", str(runs), "--no-progress"]
    trace = tmp_path / "trace.log"
    at = points.index("save adapter gen_1") + 1  # killed while saving the Qwen agent's first adapter
    env = {**os.environ, "MFT_FAULT": f"kill@{at}", "MFT_FAULT_LOG": str(trace), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mft", *args], env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert trace.read_text().splitlines()[-1].split("\t")[1] == "save adapter gen_1"
    assert not (runs / "mixed" / "iter_1" / "agents" / "society.json").exists()
    monkeypatch.delenv("MFT_FAULT", raising=False)
    monkeypatch.delenv("MFT_FAULT_LOG", raising=False)
    assert main(args) == 0
    resumed = _artifacts(runs / "mixed")
    assert resumed == _artifacts(clean)
    assert "iter_1/agents/society.json" in resumed


def test_serving_a_mixed_society_answers_through_each_base(
    mixed_run: tuple[Path, Path, list[str]], qwen: Path
) -> None:
    from fastapi.testclient import TestClient

    from mft.backends.mixed import society_backend
    from mft.serve import build_served, create_app

    _, run, _ = mixed_run
    served = build_served(run_dir=run)
    assert served.base_models() == ["bundled", str(qwen)]
    assert {a.name: a.base for a in served.agents()} == {
        "gen_0": "bundled",
        "gen_1": str(qwen),
        "critic_0": "bundled",
        "critic_1": str(qwen),
    }
    backend = society_backend("hf", served.base_models(), {"batch_size": 8})
    app = create_app(backend, served)
    with TestClient(app) as client:
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert ids == ["gen_0", "gen_1", "critic_0", "critic_1", "bundled", str(qwen), "society"]

        def ask(model: str) -> dict[str, object]:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "What is 2+3?"}],
                "temperature": 0,
                "max_tokens": NEW_TOKENS,
            }
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            out: dict[str, object] = response.json()
            return out

        def text(model: str) -> object:
            return ask(model)["choices"][0]["message"]["content"]  # type: ignore[index]

        assert text(str(qwen)) == FORCED and text("bundled") != FORCED
        assert text("gen_0") != FORCED
        debate = ask("society")["mft_debate"]
        assert [r[1] for r in debate["responses"]] == [FORCED, FORCED]  # type: ignore[index]
        assert debate["bases"] == ["bundled", str(qwen)]  # type: ignore[index]
