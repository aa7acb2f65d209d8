"""The iteration loop's logic with a scripted backend (the real-model loop is in tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mft.backends.base import Agent, GenerationRequest
from mft.config import RunConfig
from mft.errors import MftError
from mft.pipeline.run import open_run, run
from mft.pipeline.stages import society_after
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
        "embedding_model": None,
        "summarize": False,  # scripted agents answer questions; a test that wants summaries says so
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

        def finetune(agent: Agent, examples, out_dir: Path, settings=None, *, on_step=None):  # type: ignore[no-untyped-def]
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
    hashes = manifest["problem_hashes"]  # the one record of the problems: a hash per problem, per split
    assert hashes["train"] and hashes["test"] and not set(hashes["train"]) & set(hashes["test"])
    assert "problems" not in manifest
    assert manifest["versions"]["mft"]


def _gold_for_agent_0(req: GenerationRequest) -> str:
    # agent_0 (and any finetuned model) answers correctly; agent_1 answers 1 (wrong) in round 1, then agrees
    question = req.messages[0].content
    if req.agent == "summarizer":
        return "The agents disagree."
    expr = question.split("result of ")[1].split("?")[0]
    right = f"The answer is {eval(expr)}."  # noqa: S307 - our own arithmetic prompt
    first = sum(m.role == "assistant" for m in req.messages) == 0
    return "The answer is 1." if req.agent == "agent_1" and first else right


def _examples(path: Path) -> list[list[dict[str, str]]]:
    return [json.loads(line)["messages"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("method", ["majority_ft", "star"])
def test_single_model_methods_sample_one_round_and_train_one_model(scripted, tmp_path, method) -> None:
    cfg = _cfg(tmp_path, method=method, agents=3)
    fs = FinetuningScripted(scripted)
    fs.backend.respond = _gold_for_agent_0
    run(cfg, progress=False, backend=fs.backend)
    train = [json.loads(x) for x in (cfg.run_dir / "iter_1/debate.jsonl").read_text().splitlines()]
    assert all(len(r["responses"]) == 1 for r in train)  # N independent samples, no debate
    sizes = json.loads((cfg.run_dir / "iter_1/data/sizes.json").read_text())
    # 6 problems x 3 agents; agent_1 is wrong. STaR keeps the right ones (2 per problem); the majority of
    # (right, 1, right) is right, so Majority FT keeps the same 2 per problem here
    # STaR asks agent_1 again with the answer as a hint; this script still answers 1, so nothing is added
    assert sizes == {"model": {"examples": 12, **({"rationalized": 0} if method == "star" else {})}}
    examples = _examples(cfg.run_dir / "iter_1/data/model.jsonl")
    assert all(ex[1]["content"] != "The answer is 1." for ex in examples)
    # one model, continued from its own previous weights, plays every agent in every eval round
    assert [(n, a) for n, a, _ in fs.trained] == [
        ("model", None),
        ("model", str(cfg.run_dir / "iter_1/agents/model")),
    ]
    society = society_after(cfg, 2)
    assert {a.name for a in society.generators} == {"model"} and society.critics is None
    rec = json.loads((cfg.run_dir / "iter_2/eval/debate.jsonl").read_text().splitlines()[0])
    assert rec["agents"] == [["model"] * 3, ["model"] * 3]


def test_majority_ft_keeps_the_vote_not_the_truth(scripted, tmp_path) -> None:
    cfg = _cfg(tmp_path, method="majority_ft", agents=3, iterations=1)
    fs = FinetuningScripted(scripted)
    # agents 1 and 2 agree on a wrong answer: the vote is wrong and Majority FT trains on it, STaR would not
    fs.backend.respond = lambda req: "The answer is 7." if req.agent != "agent_0" else "The answer is 3."
    run(cfg, progress=False, backend=fs.backend)
    examples = _examples(cfg.run_dir / "iter_1/data/model.jsonl")
    assert len(examples) == 12 and all(ex[1]["content"] == "The answer is 7." for ex in examples)


def test_single_ft_pools_every_agents_data_into_one_model(scripted, tmp_path) -> None:
    cfg = _cfg(tmp_path, method="single_ft", iterations=1)
    fs = FinetuningScripted(scripted)
    run(cfg, progress=False, backend=fs.backend)
    ours = _cfg(tmp_path, name="ours", iterations=1)
    run(ours, progress=False, backend=FinetuningScripted(scripted).backend)
    per_agent = json.loads((ours.run_dir / "iter_1/data/sizes.json").read_text())
    pooled = json.loads((cfg.run_dir / "iter_1/data/sizes.json").read_text())
    assert pooled["model"]["examples"] == sum(v["examples"] for v in per_agent.values()) > 0
    assert [n for n, _, _ in fs.trained] == ["model"]


def test_ours_without_critics_trains_generators_that_answer_every_round(scripted, tmp_path) -> None:
    cfg = _cfg(tmp_path, method="ours_no_critic")
    fs = FinetuningScripted(scripted)
    run(cfg, progress=False, backend=fs.backend)
    assert {n for n, _, _ in fs.trained} == {"gen_0"}  # gen_1 has no examples; no critic is trained
    assert set(json.loads((cfg.run_dir / "iter_1/data/sizes.json").read_text())) == {"gen_0", "gen_1"}
    rec = json.loads((cfg.run_dir / "iter_2/eval/debate.jsonl").read_text().splitlines()[0])
    assert rec["agents"] == [["gen_0", "gen_1"], ["gen_0", "gen_1"]]


def test_each_iteration_records_the_societys_diversity(scripted, tmp_path) -> None:
    cfg = _cfg(tmp_path, iterations=1)  # diversity_problems: null = every test problem
    run(cfg, progress=False, backend=FinetuningScripted(scripted).backend)
    for k in (0, 1):
        div = json.loads((cfg.run_dir / f"iter_{k}/diversity.json").read_text())
        # the agents answer 1 and 2 in round 1 but both 1 in the final round, which is what is measured
        assert div["problems"] == div["of"] == 4 and div["round"] == 2
        assert div["agreement"]["mean"] == 1.0 and div["consensus"]["mean"] == 1.0
        assert "kl" not in div and "held_out_nll" not in div  # the scripted backend cannot score responses
    timings = json.loads((cfg.run_dir / "timings.json").read_text())
    assert "iter_1/diversity" in timings
    # a diversity.json of the older (round-1) definition is measured again, not kept
    path = cfg.run_dir / "iter_1/diversity.json"
    path.write_text(json.dumps({"problems": 4, "agreement": {"mean": 0.0, "se": 0.0, "n": 4}}))
    run(cfg, progress=False, backend=FinetuningScripted(scripted).backend)
    assert json.loads(path.read_text())["agreement"]["mean"] == 1.0
    sample = _cfg(tmp_path, name="sample", iterations=1, diversity_problems=2)
    run(sample, progress=False, backend=FinetuningScripted(scripted).backend)
    assert json.loads((sample.run_dir / "iter_1/diversity.json").read_text())["problems"] == 2
    off = _cfg(tmp_path, name="off", iterations=1, diversity_problems=0)
    run(off, progress=False, backend=FinetuningScripted(scripted).backend)
    assert not (off.run_dir / "iter_1/diversity.json").exists()


def _hint_helps(req: GenerationRequest) -> str:
    # agent_1 answers 1 (wrong) unless the gold answer is given as a hint, which it then follows
    question = req.messages[0].content
    expr = question.split("result of ")[1].split("?")[0]
    if req.agent == "agent_1" and "Hint:" not in question:
        return "The answer is 1."
    return f"The answer is {eval(expr)}."  # noqa: S307 - our own arithmetic prompt


@pytest.mark.parametrize("rationalize", [True, False])
def test_star_rationalizes_wrong_samples_with_the_answer_as_a_hint(scripted, tmp_path, rationalize) -> None:
    cfg = _cfg(tmp_path, method="star", agents=3, iterations=1, star_rationalize=rationalize)
    fs = FinetuningScripted(scripted)
    fs.backend.respond = _hint_helps
    run(cfg, progress=False, backend=fs.backend)
    sizes = json.loads((cfg.run_dir / "iter_1/data/sizes.json").read_text())
    examples = _examples(cfg.run_dir / "iter_1/data/model.jsonl")
    hinted = [r for call in fs.backend.calls for r in call if "Hint:" in r.messages[0].content]
    assert all(ex[0]["content"].count("Hint:") == 0 for ex in examples)  # the hint is never trained on
    if not rationalize:
        assert sizes == {"model": {"examples": 12}} and not hinted
        assert not (cfg.run_dir / "iter_1/rationalize.jsonl").exists()
        return
    # 6 problems: agent_1's wrong sample of each is asked again, of agent_1, with the gold answer as a hint
    assert len(hinted) == 6 and {r.agent for r in hinted} == {"agent_1"}
    assert sizes == {"model": {"examples": 18, "rationalized": 6}}
    train = [json.loads(x) for x in (cfg.run_dir / "iter_1/debate.jsonl").read_text().splitlines()]
    prompts = {r["conversations"][1][0]["content"] for r in train}
    assert sum(ex[0]["content"] in prompts for ex in examples) == 18  # round-1 prompts, as the debate's
    calls = len(fs.backend.calls)
    run(cfg, progress=False, backend=fs.backend)  # resumed: nothing is asked again
    assert len(fs.backend.calls) == calls


def test_star_data_waits_for_its_rationalization(scripted, tmp_path) -> None:
    from mft.pipeline.stages import stage_build_data

    cfg = _cfg(tmp_path, method="star", agents=3, iterations=1)
    fs = FinetuningScripted(scripted)
    fs.backend.respond = _hint_helps
    run(cfg, progress=False, backend=fs.backend)
    lines = (cfg.run_dir / "iter_1/rationalize.jsonl").read_text().splitlines()
    (cfg.run_dir / "iter_1/rationalize.jsonl").write_text("\n".join(lines[:-2]) + "\n")  # two not done
    (cfg.run_dir / "iter_1/data/sizes.json").unlink()
    with pytest.raises(MftError, match="iteration 1: 2 wrong sample.*not rationalized yet"):
        stage_build_data(cfg, 1, get_task("arithmetic"))
