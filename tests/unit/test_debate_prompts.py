"""The later-round prompts of GSM8K and MATH are the paper's: they restate the question and ask for the
\\boxed{answer} form, in the plain debate and in the summary variant, as the debate engine writes them."""

from __future__ import annotations

import pytest

from mft.backends.base import Sampling
from mft.debate.engine import DebateSettings, Society, run_debate
from mft.records import Problem
from mft.serve.society import AsAsked
from mft.tasks import get_task
from mft.tasks.base import Task

# braces and a dollar sign, as LaTeX questions have: they must reach the prompt untouched
QUESTION = "If $f(x) = \\frac{x}{2}$ and {a} = 3, what is f(4) + {a}?"
PROBLEM = Problem(id="p0", question=QUESTION, answer="5", split="test")


def _respond(req) -> str:  # type: ignore[no-untyped-def]
    if req.agent == "summarizer":
        return "SUMMARY: the agents say 5 and 6."
    k = int(req.agent.split("_")[1])
    return f"Agent {k}: so the answer is \\boxed{{{5 + k}}}."


def _round_two(scripted, task: Task, summarize: bool) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    """Each agent's round-2 user message, and the summariser's requests (summary mode)."""
    backend = scripted(_respond)
    settings = DebateSettings(rounds=2, summarize=summarize, sampling=Sampling(), chunk_size=1)
    rec = run_debate(backend, task, [PROBLEM], Society.of_base(3), settings, progress=False)[0]
    asked = [c[0].messages[0].content for c in backend.calls if c[0].agent == "summarizer"]
    return [conv[2].content for conv in rec.conversations], asked


@pytest.mark.parametrize("name", ["gsm8k", "math"])
@pytest.mark.parametrize("summarize", [False, True])
def test_round_two_restates_the_question_and_asks_for_a_boxed_answer(  # type: ignore[no-untyped-def]
    scripted, name: str, summarize: bool
) -> None:
    task = get_task(name)
    prompts, summariser = _round_two(scripted, task, summarize)
    for slot, prompt in enumerate(prompts):
        assert QUESTION in prompt
        assert "\\boxed{answer}" in prompt
        others = [f"Agent {k}: so the answer is \\boxed{{{5 + k}}}." for k in range(3) if k != slot]
        if summarize:
            assert "SUMMARY: the agents say 5 and 6." in prompt and not any(o in prompt for o in others)
        else:
            assert all(o in prompt for o in others)
            assert f"Agent {slot}:" not in prompt  # its own answer is in its history, not in the prompt
    if summarize:
        assert summariser and all("explain the reasoning in each solution" in s for s in summariser)
    else:
        assert summariser == []


def test_math_round_one_asks_for_bullet_point_reasoning() -> None:
    prompt = get_task("math").question_prompt(PROBLEM)
    assert "bullet point summary of your reasoning" in prompt and QUESTION in prompt
    assert "\\boxed{answer}" in prompt


@pytest.mark.parametrize("name", ["gsm8k", "math"])
def test_one_agent_is_asked_to_check_its_own_answer(name: str) -> None:
    prompt = get_task(name).debate_prompt(PROBLEM, [])
    assert "double check" in prompt and "\\boxed{answer}" in prompt


@pytest.mark.parametrize("name", ["gsm8k", "math"])
def test_a_served_question_is_restated_as_the_engine_restates_it(name: str) -> None:
    """`mft serve` gets the round-1 prompt as the user's message: the question inside it is restated."""
    task = get_task(name)
    served = AsAsked(task)
    as_sent = PROBLEM.model_copy(update={"question": task.question_prompt(PROBLEM)})
    assert served.debate_prompt(as_sent, ["x"]) == task.debate_prompt(PROBLEM, ["x"])
    assert served.summary_debate_prompt(as_sent, "s") == task.summary_debate_prompt(PROBLEM, "s")
    other = PROBLEM.model_copy(update={"question": "What is 2+2?"})  # any other message is the question
    assert "What is 2+2?" in served.debate_prompt(other, ["x"])


def test_arithmetic_speaks_as_du_et_al_and_the_paper() -> None:
    """The arithmetic task's prompts are Du et al.'s, character for character (the bundled model was
    pretrained on exactly these); the summariser is the paper's, asking for each solution's reasoning, and
    the summary round restates the question."""
    task = get_task("arithmetic")
    a, b = task.load("test", 2)
    assert task.question_prompt(a) == (
        f"What is the result of {a.question}? Make sure to state your answer at the end of the response."
    )
    assert task.debate_prompt(a, ["x", "y"]) == (
        "These are the recent/updated opinions from other agents: \n\n One agent response: ```x```"
        "\n\n One agent response: ```y```\n\n Use these opinions carefully as additional advice, can you "
        "provide an updated answer? Make sure to state your answer at the end of the response."
    )
    assert task.debate_prompt(a, ["x"]) == task.debate_prompt(b, ["x"])  # Du's names no question
    assert task.debate_prompt(a, []).startswith("Can you verify that your answer is correct.")
    assert task.summarize_prompt(a, ["x"]).endswith("and explain the reasoning in each solution.")
    assert f"The original problem is: What is the result of {a.question}?" in task.summary_debate_prompt(
        a, "s"
    )
