"""Mixed societies without models: the `agents` setting, the refusals, and `MixedBackend`'s routing (over
scripted backends, one per base) through a whole run, its records, its society files and a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mft.backends.base import Agent, GenerationRequest, Sampling
from mft.backends.mixed import MixedBackend
from mft.cli import main
from mft.config import ConfigError, DebateConfig, RunConfig, load_config
from mft.errors import MftError
from mft.pipeline.assemble import base_society
from mft.pipeline.reproduce import reproduce
from mft.pipeline.run import run
from mft.pipeline.stages import society_after
from mft.records import DebateRecord, Message, Problem, read_jsonl
from tests.unit.test_pipeline import FinetuningScripted, _cfg


def _load(tmp_path: Path, text: str, cls: type[DebateConfig] | type[RunConfig] = DebateConfig) -> object:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    return load_config(cls, f)


def test_a_count_of_agents_is_unchanged(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "agents: 3\nmodel: ./somewhere\n")
    assert isinstance(cfg, DebateConfig)
    assert (cfg.agents, cfg.n_agents, cfg.mixed) == (3, 3, False)
    assert cfg.agent_models() == ["./somewhere"] * 3 and cfg.base_models() == ["./somewhere"]
    assert json.loads(cfg.model_dump_json())["agents"] == 3
    society = base_society(cfg)
    assert society.bases() is None and all(a.base is None for a in society.all_agents())


def test_a_list_names_each_agents_base(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "agents: [bundled, {model: ./other}, bundled]\n")
    assert isinstance(cfg, DebateConfig)
    assert cfg.n_agents == 3 and cfg.mixed
    assert cfg.agent_models() == ["bundled", "./other", "bundled"]
    assert cfg.summarizer_base() == "bundled" and cfg.base_models() == ["bundled", "./other"]
    society = base_society(cfg)
    assert society.bases() == ["bundled", "./other", "bundled"]
    assert society.summarizer.base == "bundled"
    # one base for every agent but another for the summaries is a mixed society too
    other = _load(tmp_path, "agents: 2\nsummarizer_model: ./other\n")
    assert isinstance(other, DebateConfig) and other.mixed and other.base_models() == ["bundled", "./other"]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("agents: [bundled, 3]\n", "field 'agents': entry 1 (3) is not a base model"),
        ("agents: [bundled, {path: ./x}]\n", "field 'agents': entry 1 ({'path': './x'}) is not a base model"),
        ("agents: [bundled, '']\n", "field 'agents': entry 1 ('') is not a base model"),
        ("agents: []\n", "field 'agents': a list of 1 to 64 agents, not 0"),
        ("agents: 0\n", "field 'agents': the number of agents must be 1 to 64, not 0"),
        ("agents: [bundled, ./x]\nbackend: vllm\n", "field 'backend': a mixed society"),
        ("agents: [bundled, ./x]\nbackend: openai\n", "field 'backend': a mixed society"),
        ("summarizer_model: ./x\nbackend: vllm\n", "field 'backend': a mixed society"),
    ],
)
def test_a_bad_society_is_one_line_naming_the_field(tmp_path: Path, capsys, text: str, needle: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=f"^{f}: .*" + needle.replace("(", r"\(").replace(")", r"\)")):
        load_config(DebateConfig, f)
    assert main(["debate", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mft: error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_one_base_on_vllm_is_still_fine(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "agents: [./x, ./x]\nbackend: vllm\n")
    assert isinstance(cfg, DebateConfig) and not cfg.mixed and cfg.primary_model == "./x"


def test_a_one_model_method_is_refused_for_a_mixed_society(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="field 'method': single_ft finetunes one model for every agent"):
        _load(tmp_path, "agents: [bundled, ./x]\nmethod: single_ft\n", RunConfig)
    with pytest.raises(MftError, match="star finetune"):
        reproduce(_mixed(tmp_path), ["ours", "star"], progress=False, runner=lambda *a, **k: [])


def test_debate_records_name_bases_only_in_a_mixed_society() -> None:
    rec = DebateRecord(
        task="t",
        task_version="1",
        problem=Problem(id="p", question="q", answer="1"),
        agents=[["a", "b"]],
        responses=[["x", "y"]],
        answers=[["1", "1"]],
        conversations=[[Message(role="user", content="q")]] * 2,
        consensus="1",
        correct=True,
    )
    assert "bases" not in json.loads(rec.model_dump_json())  # a one-model file is unchanged
    mixed = rec.model_copy(update={"bases": ["bundled", "./x"]})
    assert json.loads(mixed.model_dump_json())["bases"] == ["bundled", "./x"]


# -- MixedBackend over scripted backends ---------------------------------------------------------------------
def _mixed(tmp_path: Path, **kw: object) -> RunConfig:
    return _cfg(tmp_path, agents=["base-a", "base-b"], **kw)


def _answers(base: str):  # type: ignore[no-untyped-def]
    # base-a's agents answer 1, base-b's answer 1 too but say which base wrote it
    return lambda req: f"{base} says: The answer is 1."


def test_requests_go_to_their_agents_base_and_come_back_in_order(scripted) -> None:
    a, b = scripted(_answers("a")), scripted(_answers("b"))
    a.last_usage, b.last_usage = [], []
    mixed = MixedBackend({"base-a": a, "base-b": b})
    for agent in [Agent("x", base="base-a"), Agent("y", base="base-b"), Agent("z", base="base-a")]:
        mixed.add_agent(agent)
    assert a.agents["x"] == Agent("x") and "y" in b.agents  # the inner backend sees no base
    requests = [GenerationRequest(n, [Message(role="user", content="q")]) for n in ["y", "x", "z", "y"]]
    out = mixed.generate(requests, Sampling())
    assert out == ["b says: The answer is 1.", "a says: The answer is 1.", "a says: The answer is 1."] + [
        "b says: The answer is 1."
    ]
    assert [[r.agent for r in call] for call in a.calls] == [["x", "z"]]
    assert [[r.agent for r in call] for call in b.calls] == [["y", "y"]]
    with pytest.raises(MftError, match="on base model 'base-c', which this society does not load"):
        mixed.add_agent(Agent("w", base="base-c"))


def test_a_mixed_run_keeps_every_agent_on_its_base_through_finetuning_and_resume(
    scripted, tmp_path: Path
) -> None:
    # both agents keep their first answer: the critics learn from D_C+ alone
    cfg = _mixed(tmp_path, iterations=1, min_examples=1, critic_corrected_share=0)
    a, b = FinetuningScripted(scripted), FinetuningScripted(scripted)
    a.backend.respond, b.backend.respond = _answers("a"), _answers("b")
    mixed = MixedBackend({"base-a": a.backend, "base-b": b.backend})
    run(cfg, progress=False, backend=mixed)
    # each agent was finetuned by its own base's backend
    assert {name for name, _, _ in a.trained} == {"gen_0", "critic_0"}
    assert {name for name, _, _ in b.trained} == {"gen_1", "critic_1"}
    stored = json.loads((cfg.run_dir / "iter_1" / "agents" / "society.json").read_text())
    assert [g["base"] for g in stored["generators"]] == ["base-a", "base-b"]
    assert [c["base"] for c in stored["critics"]] == ["base-a", "base-b"]
    for path in ("iter_0/eval/debate.jsonl", "iter_1/debate.jsonl", "iter_1/eval/debate.jsonl"):
        for rec in read_jsonl(cfg.run_dir / path, DebateRecord):
            assert rec.bases == ["base-a", "base-b"]
            assert all(rnd[0].startswith("a says") and rnd[1].startswith("b says") for rnd in rec.responses)
    # the society read back (as a resume, `mft eval` and `mft serve` read it) is on the same bases
    society = society_after(cfg, 1)
    assert [(x.name, x.base) for x in society.generators] == [("gen_0", "base-a"), ("gen_1", "base-b")]
    assert society.summarizer.base == "base-a"
    # the run directory of another society (its bases swapped) is refused
    other = cfg.model_copy(update={"agents": ["base-b", "base-a"]})
    with pytest.raises(MftError, match="made with other settings"):
        run(other, progress=False, backend=mixed)
    # finished: a resume trains nothing again
    n = len(a.trained) + len(b.trained)
    run(cfg, progress=False, backend=mixed)
    assert len(a.trained) + len(b.trained) == n


def test_a_plain_reproduce_of_a_mixed_society_runs_the_methods_with_a_model_per_agent(
    scripted, tmp_path: Path
) -> None:
    ran: list[str] = []

    def runner(cfg: RunConfig, progress: bool, backend: object) -> list[object]:
        ran.append(cfg.method if cfg.summarize else "ours_no_summary")
        return []

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("mft.report.write_report", lambda root: root)
        reproduce(_mixed(tmp_path, name="cmp"), progress=False, runner=runner)
    assert ran == ["ours", "ours_no_summary", "ours_no_critic"]


def test_a_debate_file_of_a_society_on_other_bases_is_refused(scripted, tmp_path: Path) -> None:
    from mft.debate.engine import DebateSettings, Society, run_debate
    from mft.tasks import get_task

    task = get_task("arithmetic")
    problems = task.load("test", 2)
    backend = MixedBackend({"base-a": scripted(_answers("a")), "base-b": scripted(_answers("b"))})
    path = tmp_path / "debate.jsonl"
    run_debate(
        backend, task, problems, Society.of_base(2, ["base-a", "base-b"]), DebateSettings(), path, False
    )
    with pytest.raises(MftError, match="other settings .*2 agents on base-a, base-b"):
        run_debate(
            backend, task, problems, Society.of_base(2, ["base-b", "base-a"]), DebateSettings(), path, False
        )


def test_generated_tokens_count_each_text_by_its_writers_base(scripted) -> None:
    # base-a's tokenizer counts characters, base-b's words: each reply is counted by its own agent's base
    from mft.pipeline.stages import generated_tokens

    a, b = scripted(_answers("a")), scripted(_answers("b"))
    a.count_tokens = lambda texts: sum(len(t) for t in texts)  # type: ignore[method-assign]
    b.count_tokens = lambda texts: sum(len(t.split()) for t in texts)  # type: ignore[method-assign]
    mixed = MixedBackend({"base-a": a, "base-b": b})
    for agent in [Agent("x", base="base-a"), Agent("y", base="base-b")]:
        mixed.add_agent(agent)
    rec = DebateRecord(
        task="arithmetic",
        task_version="1",
        problem=Problem(id="p", question="q", answer="1", split="test"),
        agents=[["x", "y"]],
        responses=[["one two three", "four five six"]],
        answers=[["1", "1"]],
        conversations=[[], []],
        consensus="1",
        correct=True,
    )
    assert generated_tokens(mixed, [rec]) == len("one two three") + 3
