"""The cooperative interaction (the paper's Table 3): its prompts, its records, its rows in a comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mft.backends.base import GenerationRequest, Sampling
from mft.config import RunConfig
from mft.debate.engine import DebateSettings, Society, run_debate
from mft.errors import MftError
from mft.methods import BY_KEY, of_run
from mft.pipeline.reproduce import method_configs, reproduce
from mft.pipeline.run import run
from mft.records import read_debates
from mft.report.load import load
from mft.report.paper import matching_rows
from mft.report.tables import table_entries
from mft.serve.society import build_served
from mft.tasks import get_task
from mft.tasks.base import COOPERATIVE_OPENING
from tests.unit.test_pipeline import FinetuningScripted, _cfg

TASK = get_task("arithmetic")


def _answer(req: GenerationRequest) -> str:
    question = next(m.content for m in req.messages if m.role == "user")
    return f"The answer is {eval(question.split('result of ')[1].split('?')[0])}."  # noqa: S307 - our prompt


def _settings(**kw: object) -> DebateSettings:
    return DebateSettings(**{"rounds": 3, "sampling": Sampling(), "chunk_size": 2, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("summarize", [False, True])
def test_later_rounds_ask_the_agents_to_cooperate_and_round_one_is_unchanged(scripted, summarize) -> None:
    backend = scripted(lambda r: "They agree." if r.agent == "summarizer" else _answer(r))
    problems = TASK.load("test", 2)
    settings = _settings(interaction="cooperative", summarize=summarize)
    rec = run_debate(backend, TASK, problems, Society.of_base(3), settings, progress=False)[0]
    for slot in range(3):
        conv = rec.conversations[slot]
        assert conv[0].content == TASK.question_prompt(problems[0])  # answered alone, as in a debate
        for r, turn in ((1, conv[2]), (2, conv[4])):
            if summarize:
                later = TASK.summary_debate_prompt(problems[0], rec.summaries[r - 1][slot])
            else:
                later = TASK.debate_prompt(
                    problems[0], [x for s, x in enumerate(rec.responses[r - 1]) if s != slot]
                )
            assert turn.content == TASK.cooperative_prompt(later)
            assert turn.content.startswith(COOPERATIVE_OPENING)
    assert rec.interaction == "cooperative"
    assert json.loads(rec.model_dump_json())["interaction"] == "cooperative"


def test_a_debate_record_is_written_as_before_and_a_lone_agent_checks_its_own_answer(scripted) -> None:
    problems = TASK.load("test", 1)
    debate = run_debate(scripted(_answer), TASK, problems, Society.of_base(3), _settings(), progress=False)[0]
    assert "interaction" not in json.loads(debate.model_dump_json())  # older files and readers unchanged
    assert COOPERATIVE_OPENING not in debate.conversations[0][2].content
    alone = run_debate(
        scripted(_answer),
        TASK,
        problems,
        Society.of_base(1),
        _settings(interaction="cooperative"),
        progress=False,
    )[0]
    assert alone.conversations[0][2].content == TASK.debate_prompt(
        problems[0], []
    )  # no one to cooperate with


def test_a_debate_file_is_not_resumed_as_a_cooperative_one(scripted, tmp_path: Path) -> None:
    out = tmp_path / "debate.jsonl"
    problems = TASK.load("test", 2)
    run_debate(scripted(_answer), TASK, problems, Society.of_base(3), _settings(), out, progress=False)
    with pytest.raises(MftError, match="debate, seed"):
        run_debate(
            scripted(_answer),
            TASK,
            problems,
            Society.of_base(3),
            _settings(interaction="cooperative"),
            out,
            progress=False,
        )


def test_the_cooperative_row_is_ours_in_a_cooperative_interaction(tmp_path: Path) -> None:
    assert of_run("ours", True, "cooperative").key == "ours_cooperative"
    assert of_run("ours", False, "cooperative").key == "ours_no_summary"
    assert of_run("single_ft", True, "cooperative").key == "single_ft"
    configs = method_configs(_cfg(tmp_path), ["ours", "ours_cooperative", "star"])
    assert {k: c.interaction for k, c in configs.items()} == {
        "ours": "debate",
        "ours_cooperative": "cooperative",
        "star": "debate",
    }
    cooperative_all = method_configs(_cfg(tmp_path, interaction="cooperative"), ["ours", "ours_cooperative"])
    assert cooperative_all["ours"].interaction == "cooperative"  # the comparison's own setting, kept
    assert BY_KEY["ours_cooperative"].build is BY_KEY["ours"].build


def test_reproduce_reports_the_cooperative_society_before_and_after_finetuning(scripted, tmp_path) -> None:
    """The base model fails the test problems when asked to cooperate, its finetuned agents do not:
    Cooperative (base) is read from the cooperative run's own iteration 0, not from the shared base debate."""
    base = _cfg(tmp_path, name="cmp", agents=3, iterations=1, summarize=True, critic_corrected_share=0.0)
    tests = {TASK.question_prompt(p) for p in TASK.load("test", base.n_test)}

    def runner(cfg: RunConfig, progress: bool, backend: object) -> list:
        fs = FinetuningScripted(scripted)

        def respond(req: GenerationRequest) -> str:
            if req.agent == "summarizer":
                return "They agree."
            untrained = fs.backend.agents[req.agent].adapter is None
            if (
                untrained
                and req.messages[0].content in tests
                and COOPERATIVE_OPENING in req.messages[-1].content
            ):
                return "The answer is 99999."
            return _answer(req)

        fs.backend.respond = respond
        return run(cfg, progress=progress, backend=fs.backend)

    root = reproduce(base, ["ours", "ours_cooperative"], progress=False, runner=runner)
    coop = read_debates(root / "ours_cooperative/iter_0/eval/debate.jsonl")
    assert coop and all(r.interaction == "cooperative" for r in coop)  # its own, not Ours' copied
    assert (
        json.loads((root / "ours_cooperative/manifest.json").read_text())["config"]["interaction"]
        == "cooperative"
    )
    entries = {label: est.mean for label, est in table_entries(load(root)).values()}
    assert entries["Debate"] == 1.0 and entries["Ours (cooperative)"] == 1.0
    assert entries["Cooperative (base)"] == 0.0
    assert "Cooperative (base)" in (root / "report.md").read_text()
    paired = {r["method"]: r for r in json.loads((root / "paired.json").read_text())}
    assert paired["cooperative_base"]["difference"] == pytest.approx(-100.0)
    holds = {c["claim"]: c for c in json.loads((root / "holds.json").read_text())}
    assert holds["Cooperative (base) < Ours (cooperative)"]["figure"] == pytest.approx(100.0)


def test_the_papers_table_3_is_set_beside_a_gpt35_run_with_its_own_rows() -> None:
    rows = matching_rows("gpt-3.5-turbo-0125", "gsm8k", 3, 2)
    assert (rows["cooperative_base"].table, rows["cooperative_base"].mean) == ("Table 3", 81.8)
    assert (rows["ours_cooperative"].mean, rows["ours_cooperative"].se) == (84.0, None)
    assert rows["ours"].table == "Table 1"  # the debate's rows stay Table 1's
    assert "cooperative_base" not in matching_rows("meta-llama/Meta-Llama-3-8B-Instruct", "gsm8k", 3, 2)


def test_the_docs_quote_the_bundled_models_committed_cooperative_measurement() -> None:
    root = Path(__file__).resolve().parents[2]
    docs = " ".join((root / "docs/experiments.md").read_text().split())
    quoted = []
    for interaction in ("debate", "cooperative"):
        summary = json.loads((root / f"results/cooperative-bundled/{interaction}/summary.json").read_text())
        assert summary["config"]["interaction"] == interaction and summary["config"]["summarize"]
        debate = summary["accuracy"]["debate"]
        quoted.append(f"{100 * debate['mean']:.1f}% ± {100 * debate['se']:.1f}")
    assert f"its debate reaches {quoted[0]} and the same society asked to cooperate {quoted[1]}" in docs


def test_a_cooperative_run_alone_gives_no_debate_rows_and_says_it_cooperated(scripted, tmp_path) -> None:
    """Its iteration 0 is Cooperative (base), never Base / Majority / Debate: its last round is no debate."""
    fs = FinetuningScripted(scripted)
    fs.backend.respond = lambda req: "They agree." if req.agent == "summarizer" else _answer(req)
    cfg = _cfg(tmp_path, agents=3, iterations=1, summarize=True, interaction="cooperative")
    run(cfg, progress=False, backend=fs.backend)
    study = load(cfg.run_dir)
    assert study.base is None and any("Base / Majority / Debate are omitted" in n for n in study.notes)
    assert set(table_entries(study)) == {"ours_cooperative", "cooperative_base"}
    assert study.runs[0].harness == "3 agents x 2 rounds, cooperative"
    assert build_served(run_dir=cfg.run_dir).interaction == "cooperative"  # `mft serve` debates as it ran
