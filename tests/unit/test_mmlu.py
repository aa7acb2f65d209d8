"""MMLU in its published layouts (CSV, JSONL, parquet), the paper's disjoint split and Du et al.'s prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mft.errors import MftError
from mft.records import Problem
from mft.tasks import get_task
from mft.tasks.mmlu import MMLUTask

FIXTURES = Path(__file__).parent.parent / "fixtures" / "mmlu"


def _both(task: MMLUTask) -> dict[str, list[Problem]]:
    return {split: task.load(split, n=None) for split in ("train", "test")}


def _pairs(problems: dict[str, list[Problem]]) -> set[tuple[str, str, str, str]]:
    return {(s, p.question, p.answer, p.meta["subject"]) for s, ps in problems.items() for p in ps}


def test_the_csv_release_is_read_and_split_into_disjoint_pools() -> None:
    split = _both(MMLUTask(str(FIXTURES / "data")))
    train, test = ({p.question for p in split[s]} for s in ("train", "test"))
    assert train and test and not train & test and len(train | test) == 12  # every row, in one pool each
    first = next(p for s in split.values() for p in s if p.question.startswith("Which planet is closest"))
    assert first.question == "Which planet is closest to the Sun?: A) Venus, B) Mercury, C) Earth, D) Mars"
    assert first.answer == "B" and first.meta["subject"] == "astronomy"
    assert {p.meta["subject"] for s in split.values() for p in s} == {"astronomy", "virology"}


def test_the_hub_layout_as_jsonl_or_parquet_gives_the_same_problems(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from_csv = _pairs(_both(MMLUTask(str(FIXTURES / "data"))))
    assert _pairs(_both(MMLUTask(str(FIXTURES / "mmlu.jsonl")))) == from_csv
    rows = [json.loads(line) for line in (FIXTURES / "mmlu.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000-of-00001.parquet")
    assert _pairs(_both(MMLUTask(str(tmp_path / "test-00000-of-00001.parquet")))) == from_csv


def test_du_et_al_prompts_character_for_character() -> None:
    task = get_task("mmlu", data=str(FIXTURES / "mmlu.jsonl"))
    p = Problem(id="x", question="Q?: A) a, B) b, C) c, D) d", answer="B")
    assert task.question_prompt(p) == (
        "Can you answer the following question as accurately as possible? Q?: A) a, B) b, C) c, D) d Explain "
        "your answer, putting the answer in the form (X) at the end of your response."
    )
    assert task.debate_prompt(p, ["one", "two"]) == (
        "These are the solutions to the problem from other agents: \n\n One agent solution: ```one```"
        "\n\n One agent solution: ```two```\n\n Using the reasoning from other agents as additional advice, "
        "can you give an updated answer? Examine your solution and that other agents step by step. Put your "
        "answer in the form (X) at the end of your response."
    )
    assert task.debate_prompt(p, []).startswith("Can you double check that your answer is correct.")


def test_the_grader() -> None:
    task = get_task("mmlu", data=str(FIXTURES / "mmlu.jsonl"))
    assert task.score("Mercury orbits closest. The answer is (B).", "B")
    assert not task.score("The answer is (A) or (B).", "B")  # ambiguous: wrong
    assert not task.score("I do not know.", "B")


def test_bad_rows_name_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "x_test.csv"
    bad.write_text("Q?,a,b,c,B\n", encoding="utf-8")
    with pytest.raises(MftError, match=r"x_test.csv, line 1: 5 columns, not 6"):
        MMLUTask(str(bad)).load("test")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": "Q?", "choices": ["a", "b", "c"], "answer": 0}) + "\n")
    with pytest.raises(MftError, match=r"line 1: field 'choices' must list the 4 options"):
        MMLUTask(str(rows)).load("test")
    rows.write_text(json.dumps({"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 7}) + "\n")
    with pytest.raises(MftError, match=r"index 7"):
        MMLUTask(str(rows)).load("test")


def test_the_papers_table_7_is_set_beside_an_mmlu_run_of_llama_3() -> None:
    from mft.report.paper import matching_rows

    rows = matching_rows("meta-llama/Meta-Llama-3-8B-Instruct", "mmlu", 3, 2)
    assert {k: (r.table, r.mean, r.se) for k, r in rows.items()} == {
        "base": ("Table 7", 60.4, None),
        "majority": ("Table 7", 61.8, None),
        "debate": ("Table 7", 65.8, None),
        "majority_ft": ("Table 7", 63.4, None),
        "ours": ("Table 7", 68.8, None),
    }
