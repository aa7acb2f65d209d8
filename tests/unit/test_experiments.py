"""The experiments beyond the main comparison: pooled-data society, Unique ID, zero-shot transfer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mft.backends.base import GenerationRequest
from mft.cli import main
from mft.config import RunConfig
from mft.errors import MftError
from mft.method_data import BuildContext, pooled_society_data, society_data, unique_id_data
from mft.methods import BY_KEY
from mft.pipeline.reproduce import reproduce
from mft.pipeline.run import run
from mft.pipeline.transfer import transfer
from mft.records import DebateRecord, Message, Problem
from mft.tasks import get_task
from tests.unit.test_pipeline import FinetuningScripted, _cfg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TASK = get_task("arithmetic")


def _record(pid: str, first: list[str], last: list[str]) -> DebateRecord:
    """A 2-round debate of len(first) agents: agent n said first[n], then last[n] (answers are the texts)."""
    n = len(first)
    convs = [
        [
            Message(role="user", content=f"q{pid}"),
            Message(role="assistant", content=f"a{pid}-{s}: {first[s]}"),
            Message(role="user", content="debate"),
            Message(role="assistant", content=f"b{pid}-{s}: {last[s]}"),
        ]
        for s in range(n)
    ]
    return DebateRecord(
        task="arithmetic",
        task_version="1",
        problem=Problem(id=pid, question=f"q{pid}", answer="0", split="train"),
        agents=[[f"agent_{s}" for s in range(n)]] * 2,
        responses=[[c[1].content for c in convs], [c[3].content for c in convs]],
        answers=[first, last],
        conversations=convs,
        consensus=max(set(last), key=last.count),
        round_consensus=[max(set(first), key=first.count), max(set(last), key=last.count)],
        correct=False,
    )


RECORDS = [
    _record("1", ["7", "7", "5"], ["7", "7", "7"]),
    _record("2", ["4", "9", "9"], ["9", "9", "9"]),
    _record("3", ["2", "2", "2"], ["2", "2", "2"]),
]
CTX = BuildContext(3, 0.5, 0, 1)  # agents, critic mix, seed, iteration


def _eq(a: str | None, b: str | None) -> bool:
    return a is not None and a == b


def _texts(examples: list[list[Message]]) -> list[str]:
    return sorted(json.dumps([m.content for m in ex]) for ex in examples)


def test_pooled_society_gives_every_agent_the_data_of_all_agents() -> None:
    own = society_data(RECORDS, _eq, CTX)
    pooled = pooled_society_data(RECORDS, _eq, CTX)
    assert set(pooled) == set(own)  # still N generators and N critics
    all_gen = [ex for n in range(3) for ex in own[f"gen_{n}"].examples]
    all_critic = [ex for n in range(3) for ex in own[f"critic_{n}"].examples]
    for n in range(3):
        # each agent's own data is not all of it (agent 2 was wrong on problem 1, agent 0 on problem 2)
        assert len(own[f"gen_{n}"].examples) < len(all_gen)
        assert _texts(pooled[f"gen_{n}"].examples) == _texts(all_gen)
        assert _texts(pooled[f"critic_{n}"].examples) == _texts(all_critic)
        assert pooled[f"gen_{n}"].sizes == {"examples": len(all_gen)}


def test_unique_id_trains_one_model_on_every_agents_data_each_example_naming_its_agent() -> None:
    data = unique_id_data(RECORDS, _eq, CTX)
    assert list(data) == ["model"]
    examples = data["model"].examples
    own = society_data(RECORDS, _eq, CTX)
    assert len(examples) == sum(len(d.examples) for d in own.values())
    assert all(ex[0].role == "system" for ex in examples)
    for name, dataset in own.items():
        role, slot = name.split("_")
        opening = f"You are {'generation' if role == 'gen' else 'critic'} agent {int(slot) + 1}."
        tagged = [ex[1:] for ex in examples if ex[0].content == opening]
        assert _texts(tagged) == _texts(dataset.examples), name


def _respond(req: GenerationRequest) -> str:
    """Every agent answers the arithmetic question right (the question is the first user message)."""
    if req.agent == "summarizer":
        return "They agree."
    question = next(m.content for m in req.messages if m.role == "user")
    expr = question.split("result of ")[1].split("?")[0]
    return f"The answer is {eval(expr)}."  # noqa: S307 - our own arithmetic prompt


def test_unique_id_model_is_told_its_agent_in_every_request_it_answers(scripted, tmp_path: Path) -> None:
    # every first answer is right: no D_C-, so the critics' data is D_C+ only (share of D_C- 0)
    cfg = _cfg(
        tmp_path, method="unique_id", agents=3, iterations=1, summarize=True, critic_corrected_share=0.0
    )
    fs = FinetuningScripted(scripted)
    fs.backend.respond = _respond
    run(cfg, progress=False, backend=fs.backend)
    assert [name for name, _, _ in fs.trained] == ["model"]  # one model
    examples = [json.loads(x)["messages"] for x in (cfg.run_dir / "iter_1/data/model.jsonl").open()]
    assert {ex[0]["content"] for ex in examples} == {
        f"You are {role} agent {n}." for role in ("generation", "critic") for n in (1, 2, 3)
    }
    model_requests = [r for call in fs.backend.calls for r in call if r.agent == "model"]
    assert model_requests  # iteration 1's eval
    for r in model_requests:
        role = "generation" if sum(m.role == "assistant" for m in r.messages) == 0 else "critic"
        assert r.messages[0].role == "system" and r.messages[0].content.startswith(f"You are {role} agent")
    # the base model (iteration 0) never saw ids: its requests have none
    base = [r for call in fs.backend.calls for r in call if r.agent.startswith("agent_")]
    assert base and all(r.messages[0].role == "user" for r in base)
    # `mft serve --run-dir` tells the finetuned model its ids too, the base model none
    from mft.serve.society import build_served

    assert build_served(run_dir=cfg.run_dir).agent_ids
    assert not build_served(run_dir=cfg.run_dir, iteration=0).agent_ids


def test_reproduce_runs_the_experiments_when_named_and_shares_the_base_stages(scripted, tmp_path) -> None:
    def runner(cfg: RunConfig, progress: bool, backend: object) -> list:
        fs = FinetuningScripted(scripted)
        fs.backend.respond = _respond
        return run(cfg, progress=progress, backend=fs.backend)

    base = _cfg(tmp_path, name="cmp", agents=3, iterations=1)
    root = reproduce(base, ["ours", "ours_pooled", "unique_id"], progress=False, runner=runner)
    for key in ("ours_pooled", "unique_id"):
        assert BY_KEY[key].label in (root / "report.md").read_text()
        for rel in ("iter_0/eval/debate.jsonl", "iter_1/debate.jsonl"):  # the base society: no ids
            assert (root / key / rel).read_bytes() == (root / "ours" / rel).read_bytes(), (key, rel)
    sizes = json.loads((root / "ours_pooled/iter_1/data/sizes.json").read_text())
    assert set(sizes) == {f"{r}_{n}" for r in ("gen", "critic") for n in range(3)}


# -- zero-shot transfer -------------------------------------------------------------------------------------
@pytest.fixture
def finished_run(scripted, tmp_path: Path) -> RunConfig:
    cfg = _cfg(tmp_path, agents=2, iterations=1)
    fs = FinetuningScripted(scripted)
    fs.backend.respond = _respond
    run(cfg, progress=False, backend=fs.backend)
    return cfg


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


GSM = {"task": "gsm8k", "data": FIXTURES / "gsm8k_sample.jsonl", "n_test": 3}


def test_transfer_evaluates_the_runs_society_on_the_other_task_and_only_reads_the_run(
    scripted, finished_run: RunConfig
) -> None:
    before = _files(finished_run.run_dir)
    backend = scripted(lambda req: "The answer is \\boxed{3}.")
    out, res = transfer(finished_run.run_dir, dict(GSM), backend=backend)
    assert out == finished_run.run_dir / "transfer" / "gsm8k"
    assert res["iteration"] == 1 and res["problems"] == 3
    records = [json.loads(x) for x in (out / "iter_1/eval/debate.jsonl").open()]
    assert {r["task"] for r in records} == {"gsm8k"}
    assert all(r["problem"]["split"] == "test" for r in records)
    gsm_questions = {json.loads(x)["question"] for x in (FIXTURES / "gsm8k_sample.jsonl").open()}
    assert all(r["problem"]["question"] in gsm_questions for r in records)
    assert records[0]["agents"] == [["gen_0", "gen_1"], ["critic_0", "critic_1"]]  # the run's society
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["task"] == "gsm8k" and manifest["config"]["model"] == finished_run.model
    assert json.loads((out / "transfer.json").read_text())["trained_on"] == "arithmetic"
    after = {k: v for k, v in _files(finished_run.run_dir).items() if not k.startswith("transfer/")}
    assert after == before  # the run itself is untouched
    # the base society on the same task: the reference, in the same directory
    _, base = transfer(finished_run.run_dir, dict(GSM), iteration=0, backend=backend)
    assert base["iteration"] == 0 and (out / "iter_0/eval/results.json").exists()


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"model": "gpt2"}, "--model 'gpt2' differs from the society's model 'bundled'"),
        ({"agents": 5}, "--agents 5 differs"),
        ({"temperature": 0.2}, "--temperature 0.2 differs"),
        ({"interaction": "cooperative"}, "--interaction 'cooperative' differs"),
        ({"task": "arithmetic", "data": None}, "is the task .* was trained on"),
    ],
)
def test_transfer_refuses_what_would_not_be_the_runs_society(
    scripted, finished_run: RunConfig, extra: dict, needle: str
) -> None:
    given = {**GSM, **extra}
    given = {k: v for k, v in given.items() if v is not None}
    with pytest.raises(MftError, match=needle):
        transfer(finished_run.run_dir, given, backend=scripted(lambda req: "x"))
    assert not (finished_run.run_dir / "transfer").exists()


def test_transfer_cli_refuses_another_base_model_in_one_line(finished_run: RunConfig, capsys) -> None:
    argv = ["eval", "--society", str(finished_run.run_dir), "--task", "gsm8k", "--model", "gpt2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differs from the society's model" in err
    assert main(["eval", "--society", str(finished_run.run_dir)]) == 2
    assert "--society needs --task" in capsys.readouterr().err


def test_report_shows_the_transfer_of_the_runs_societies(scripted, finished_run: RunConfig) -> None:
    from mft.report import write_report

    backend = scripted(lambda req: "The answer is \\boxed{3}.")
    for k in (0, 1):
        transfer(finished_run.run_dir, dict(GSM), iteration=k, backend=backend)
    md = write_report(finished_run.run_dir).read_text()
    section = md.split("## Zero-shot transfer")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| Ours (no summary) |")]
    assert [r.split(" | ")[1:4] for r in rows] == [
        ["arithmetic", "gsm8k", "0 (base)"],
        ["arithmetic", "gsm8k", "1"],
    ]


# -- paper vs this run --------------------------------------------------------------------------------------
REPORT_FIXTURES = FIXTURES / "report"


def _gsm_study_with_model(tmp_path: Path, model: str) -> Path:
    import shutil

    root = tmp_path / "gsm8k"
    shutil.copytree(REPORT_FIXTURES / "gsm8k", root)
    for manifest in root.glob("*/manifest.json"):
        data = json.loads(manifest.read_text())
        data["config"]["model"] = model
        manifest.write_text(json.dumps(data))
    return root


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}")[1].split("\n## ")[0]


def test_paper_vs_this_run_shows_the_papers_row_for_the_same_setting(tmp_path: Path) -> None:
    from mft.report import load, write_report
    from mft.report.tables import table_entries

    root = _gsm_study_with_model(tmp_path, "microsoft/Phi-3-mini-4k-instruct")
    section = _section(write_report(root).read_text(), "Paper vs this run")
    rows = {
        r.split(" | ")[0].strip("| "): r.split(" | ")[1:] for r in section.splitlines() if r.startswith("| ")
    }
    mine = table_entries(load(root))
    # Table 1 / Table 2 of the paper, Phi-3 on GSM8K (3 agents x 2 rounds), beside this study's numbers
    assert (
        rows["Ours"][:2] == ["Table 1", "88.60 ± 1.42"]
        and rows["Ours"][2].strip(" |") == mine["ours"][1].pct()
    )
    assert rows["Single-agent FT"][:2] == ["Table 2", "86.80 ± 1.51"]
    assert rows["STaR"][2].strip(" |") == "n/a"  # the paper has it, this study does not


@pytest.mark.parametrize("model", ["bundled", "meta-llama/Llama-3.1-8B-Instruct"])
def test_paper_vs_this_run_says_when_no_paper_row_matches(tmp_path: Path, model: str) -> None:
    from mft.report import write_report

    section = _section(write_report(_gsm_study_with_model(tmp_path, model)).read_text(), "Paper vs this run")
    assert "No table of the paper has this setting" in section and "| Ours |" not in section


def test_eval_without_society_still_needs_an_iteration(capsys) -> None:
    assert main(["eval", "--task", "arithmetic"]) == 2
    assert "--iteration K is required" in capsys.readouterr().err
    assert main(["eval", "--iteration", "0", "--out", "x"]) == 2
    assert "--out is for a transfer" in capsys.readouterr().err


def test_a_transfer_directory_holds_one_runs_societies(scripted, finished_run: RunConfig, tmp_path) -> None:
    import shutil

    backend = scripted(lambda req: "The answer is \\boxed{3}.")
    out, _ = transfer(finished_run.run_dir, dict(GSM), iteration=0, backend=backend)
    moved = tmp_path / "moved"
    shutil.copytree(finished_run.run_dir, moved)  # the run moved with its transfer/: still its own
    _, res = transfer(moved, dict(GSM), iteration=1, backend=backend)
    assert res["iteration"] == 1
    other = _cfg(tmp_path, name="other", agents=2, iterations=1)
    fs = FinetuningScripted(scripted)
    fs.backend.respond = _respond
    run(other, progress=False, backend=fs.backend)
    with pytest.raises(MftError, match="holds the transfer of another run's society"):
        transfer(other.run_dir, dict(GSM), out=moved / "transfer" / "gsm8k", backend=backend)
