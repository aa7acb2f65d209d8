"""The iteration loop's logic with a scripted backend (the real-model loop is in tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mft.backends.base import Agent, GenerationRequest
from mft.config import RunConfig
from mft.errors import MftError
from mft.pipeline.run import open_run, run, society_after
from mft.tasks import get_task


def _cfg(tmp_path: Path, **kw: object) -> RunConfig:
    base = {
        "name": "t",
        "runs_dir": tmp_path,
        "agents": 2,
        "iterations": 2,
        "n_train": 6,
        "n_test": 4,
        "chunk_size": 3,
        "min_examples": 3,
    }
    return RunConfig(**{**base, **kw})  # type: ignore[arg-type]


def _respond(req: GenerationRequest) -> str:
    # slot 0 always answers 1; slot 1 answers 2 in round 1 and 1 afterwards (corrected by the debate)
    first = sum(m.role == "assistant" for m in req.messages) == 0
    return "The answer is 2." if req.agent.endswith("_1") and first else "The answer is 1."


class FinetuningScripted:
    def __init__(self, base_cls):  # type: ignore[no-untyped-def]
        self.backend = base_cls(_respond)
        self.trained: list[tuple[str, str | None, int]] = []

        def finetune(agent: Agent, examples, out_dir: Path, **settings):  # type: ignore[no-untyped-def]
            self.trained.append((agent.name, agent.adapter, len(examples)))
            out_dir.mkdir(parents=True)
            (out_dir / "adapter_model.safetensors").write_text(json.dumps([m.content for m in examples[0]]))
            return Agent(agent.name, str(out_dir))

        self.backend.finetune = finetune


def test_loop_builds_data_trains_each_agent_from_its_previous_weights(scripted, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    fs = FinetuningScripted(scripted)
    results = run(cfg, progress=False, backend=fs.backend)
    assert [r["iteration"] for r in results] == [0, 1, 2]
    sizes = json.loads((cfg.run_dir / "iter_1" / "data" / "sizes.json").read_text())
    # consensus: tie between 1 and 2 in round 1 is irrelevant; the last round is unanimous on 1
    assert sizes["gen_0"]["examples"] == 6 and sizes["gen_1"]["examples"] == 0
    assert sizes["critic_1"]["corrected (D_C-)"] == 6 and sizes["critic_0"]["kept available (D_C+)"] == 6
    trained = {(name, adapter) for name, adapter, _ in fs.trained}
    # iteration 1 starts from the base (no adapter); iteration 2 from iteration 1's own adapter
    assert ("gen_0", None) in trained
    assert ("gen_0", str(cfg.run_dir / "iter_1" / "agents" / "gen_0")) in trained
    # gen_1 had 0 < min_examples examples: never trained, keeps the base
    assert not any(name == "gen_1" for name, _, _ in fs.trained)
    society = society_after(cfg, 2)
    assert society.generators[1].adapter is None
    assert society.critics is not None and society.critics[1].adapter == str(
        cfg.run_dir / "iter_2/agents/critic_1"
    )
    skipped = json.loads((cfg.run_dir / "iter_1/agents/society.json").read_text())["skipped"]
    assert "gen_1" in skipped
    # the eval of iteration 2 used the finetuned generators in round 1 and critics in round 2
    rec = json.loads((cfg.run_dir / "iter_2/eval/debate.jsonl").read_text().splitlines()[0])
    assert rec["agents"] == [["gen_0", "gen_1"], ["critic_0", "critic_1"]]
    assert all(
        r["problem"]["split"] == "test"
        for r in map(json.loads, (cfg.run_dir / "iter_2/eval/debate.jsonl").read_text().splitlines())
    )
    # re-running does nothing new
    n = len(fs.trained)
    run(cfg, progress=False, backend=fs.backend)
    assert len(fs.trained) == n


def test_run_directory_refuses_other_settings(tmp_path: Path) -> None:
    task = get_task("arithmetic")
    open_run(_cfg(tmp_path), task)
    open_run(_cfg(tmp_path, iterations=5), task)  # more iterations of the same run: fine
    with pytest.raises(MftError, match="other settings.*agents"):
        open_run(_cfg(tmp_path, agents=3), task)
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["problems"]["train"] != manifest["problems"]["test"]
    assert manifest["versions"]["mft"]
