from __future__ import annotations

import re
from pathlib import Path

import pytest

from mft.backends.base import GenerationRequest, Sampling
from mft.debate.engine import DebateSettings, Society, run_debate
from mft.errors import MftError
from mft.records import DebateRecord, read_jsonl
from mft.tasks import get_task

task = get_task("arithmetic")


def _respond(req: GenerationRequest) -> str:
    """Agent k answers 'k' in round 1 (then +100 per later round); summaries list the answers they saw."""
    last = req.messages[-1].content
    if last.startswith("Here is a list of opinions"):
        seen = re.findall(r"answer is (\d+)", last)
        return "SUMMARY " + ",".join(seen)
    k = int(req.agent.split("_")[1])
    round_ = sum(1 for m in req.messages if m.role == "assistant")
    return f"agent {k} round {round_}: the answer is {k + 100 * round_}."


def _settings(**kw: object) -> DebateSettings:
    return DebateSettings(**{"rounds": 2, "sampling": Sampling(), "chunk_size": 2, **kw})  # type: ignore[arg-type]


def test_round_two_prompt_holds_exactly_the_other_agents_previous_answers(scripted) -> None:
    backend = scripted(_respond)
    problems = task.load("test", 2)
    records = run_debate(backend, task, problems, Society.of_base(3), _settings(), progress=False)
    rec = records[0]
    for slot in range(3):
        conv = rec.conversations[slot]
        assert [m.role for m in conv] == ["user", "assistant", "user", "assistant"]
        others = [rec.responses[0][s] for s in range(3) if s != slot]
        assert conv[2].content == task.debate_prompt(problems[0], others)
        assert (
            rec.responses[0][slot] not in conv[2].content
        )  # its own answer is in its history, not the prompt
        assert conv[1].content == rec.responses[0][slot]
    assert rec.answers == [["0", "1", "2"], ["100", "101", "102"]]


def test_one_backend_call_per_round_across_agents_and_problems(scripted) -> None:
    backend = scripted(_respond)
    problems = task.load("test", 4)
    run_debate(backend, task, problems, Society.of_base(3), _settings(chunk_size=4, rounds=3), progress=False)
    assert [len(c) for c in backend.calls] == [12, 12, 12]


def test_summaries_replace_answers(scripted) -> None:
    backend = scripted(_respond)
    problems = task.load("test", 1)
    rec = run_debate(backend, task, problems, Society.of_base(3), _settings(summarize=True), progress=False)[
        0
    ]
    assert rec.summaries[0][0] == "SUMMARY 1,2"
    assert rec.conversations[0][2].content == task.summary_debate_prompt(problems[0], "SUMMARY 1,2")
    summary_calls = [c for c in backend.calls if c[0].agent == "summarizer"]
    assert len(summary_calls) == 1 and len(summary_calls[0]) == 3


def test_resume_redoes_nothing_finished(scripted, tmp_path: Path) -> None:
    out = tmp_path / "debate.jsonl"
    problems = task.load("test", 6)
    first = scripted(_respond)
    run_debate(first, task, problems[:4], Society.of_base(3), _settings(), out, progress=False)
    assert len(read_jsonl(out, DebateRecord)) == 4
    second = scripted(_respond)
    records = run_debate(second, task, problems, Society.of_base(3), _settings(), out, progress=False)
    asked = {r.messages[0].content for call in second.calls for r in call}
    assert asked == {task.question_prompt(p) for p in problems[4:]}
    assert [r.problem.id for r in read_jsonl(out, DebateRecord)] == [p.id for p in problems]
    assert [r.problem.id for r in records] == [p.id for p in problems]
    third = scripted(_respond)
    run_debate(third, task, problems, Society.of_base(3), _settings(), out, progress=False)
    assert third.calls == []


def test_partly_written_chunk_is_completed_without_duplicates(scripted, tmp_path: Path) -> None:
    out = tmp_path / "debate.jsonl"
    problems = task.load("test", 4)
    run_debate(scripted(_respond), task, problems, Society.of_base(3), _settings(), out, progress=False)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:50])  # killed while writing the 2nd chunk's 2nd record
    run_debate(scripted(_respond), task, problems, Society.of_base(3), _settings(), out, progress=False)
    ids = [r.problem.id for r in read_jsonl(out, DebateRecord)]
    assert sorted(ids) == sorted(p.id for p in problems) and len(ids) == 4


def test_refuses_to_mix_settings(scripted, tmp_path: Path) -> None:
    out = tmp_path / "debate.jsonl"
    problems = task.load("test", 2)
    run_debate(scripted(_respond), task, problems, Society.of_base(3), _settings(), out, progress=False)
    with pytest.raises(MftError, match="other settings"):
        run_debate(scripted(_respond), task, problems, Society.of_base(2), _settings(), out, progress=False)


def test_critics_answer_later_rounds(scripted) -> None:
    from mft.backends.base import Agent

    society = Society(
        generators=[Agent(f"agent_{i}") for i in range(2)], critics=[Agent(f"critic_{i}") for i in range(2)]
    )

    def respond(req: GenerationRequest) -> str:
        return f"{req.agent}: the answer is 1."

    rec = run_debate(scripted(respond), task, task.load("test", 1), society, _settings(), progress=False)[0]
    assert rec.agents == [["agent_0", "agent_1"], ["critic_0", "critic_1"]]
    assert rec.responses[1][0].startswith("critic_0")


def test_critic_sees_at_inference_the_conversation_it_trains_on(scripted) -> None:
    from mft.backends.base import Agent
    from mft.data.builders import critic_split

    society = Society(
        generators=[Agent(f"agent_{i}") for i in range(3)], critics=[Agent(f"critic_{i}") for i in range(3)]
    )

    def respond(req: GenerationRequest) -> str:
        return "the answer is 4." if req.agent != "agent_0" else "the answer is 5."

    backend = scripted(respond)
    problems = task.load("train", 1)
    rec = run_debate(backend, task, problems, society, _settings(), progress=False)[0]
    example = critic_split([rec], 0, task.is_equivalent).corrected[0]  # agent 0 was corrected 5 -> 4
    critic_request = next(r for call in backend.calls for r in call if r.agent == "critic_0")
    assert critic_request.messages == example[:-1]
    assert example[-1].role == "assistant"
