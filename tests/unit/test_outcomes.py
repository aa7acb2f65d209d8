"""Per-problem outcomes: what a line holds, results.json recomputed from them exactly, the file's bytes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from mft.errors import MftError
from mft.eval.outcomes import accuracies, outcome, read_outcomes, write_outcomes
from mft.pipeline.assemble import build_task
from mft.pipeline.run import open_run, run
from mft.records import DebateRecord, Message, Problem, read_debates
from mft.rundir import RunDir
from mft.tasks import get_task
from tests.unit.test_pipeline import FinetuningScripted, _cfg


def test_a_line_holds_every_answer_the_votes_and_what_was_right() -> None:
    rec = DebateRecord(
        task="arithmetic",
        task_version="1",
        problem=Problem(id="p7", question="q", answer="7"),
        agents=[["a", "b", "c"], ["a", "b", "c"]],
        responses=[["x"] * 3, ["y"] * 3],
        answers=[["7", "7", "3"], ["3", "3", None]],
        conversations=[[Message(role="user", content="q")] for _ in range(3)],
        consensus="3",
        round_consensus=["7", "3"],
        correct=False,
    )
    line = outcome(rec, get_task("arithmetic"))
    assert line == {
        "uid": "p7",
        "gold": "7",
        "answers": [["7", "7", "3"], ["3", "3", None]],
        "majority": "7",
        "debate": "3",
        "correct": {"single": pytest.approx(2 / 3), "majority": 1, "debate": 0},
    }


def test_results_are_the_means_of_the_outcomes_exactly(scripted, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, agents=3, iterations=1, n_test=8, min_examples=1)
    task = build_task(cfg)
    train, test = open_run(cfg, task)
    gold = {p.question: p.answer for p in [*train, *test]}

    def respond(req):  # type: ignore[no-untyped-def]
        # right on some problems, by some agents, in some rounds: every reading strictly between 0 and 1
        question = next(q for q in gold if q in req.messages[0].content)
        rounds = sum(m.role == "assistant" for m in req.messages)
        q = sum(map(ord, question))
        right = (q + int(req.agent[-1]) * (q % 4) + rounds) % 3 != 0
        return f"The answer is {gold[question] if right else '-1'}."

    backend = FinetuningScripted(scripted).backend
    backend.respond = respond
    run(cfg, progress=False, backend=backend)
    rd = RunDir(cfg.run_dir)
    strictly_between = 0
    for k in (0, 1):
        outcomes = read_outcomes(rd.outcomes(k))
        records = read_debates(rd.eval_debate(k))
        assert [o["uid"] for o in outcomes] == [r.problem.id for r in records]
        assert [o["answers"] for o in outcomes] == [r.answers for r in records]
        results = json.loads(rd.results(k).read_text())
        recomputed = {r: e.__dict__ for r, e in accuracies(outcomes).items()}
        assert recomputed == results["accuracy"]  # exactly, not approximately
        strictly_between += sum(0 < v["mean"] < 1 for v in recomputed.values())
    assert strictly_between >= 3

    # an evaluation finished before outcomes existed gets them when the run is resumed, the same bytes
    before = rd.outcomes(1).read_bytes()
    rd.outcomes(1).unlink()
    run(cfg, progress=False, backend=backend)
    assert rd.outcomes(1).read_bytes() == before


def test_the_file_is_byte_identical_and_a_bad_line_is_named(tmp_path: Path) -> None:
    lines = [{"uid": "a", "correct": {"single": 0.5, "majority": 1, "debate": 0}}]
    write_outcomes(tmp_path / "one.jsonl.gz", lines)
    write_outcomes(tmp_path / "two.jsonl.gz", lines)
    assert (tmp_path / "one.jsonl.gz").read_bytes() == (tmp_path / "two.jsonl.gz").read_bytes()
    assert read_outcomes(tmp_path / "one.jsonl.gz") == lines
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(
        gzip.compress(b'{"uid": "a", "correct": {"single": 1, "majority": 1, "debate": 1}}\n{"uid": "b"}\n')
    )
    with pytest.raises(MftError, match=r"bad\.jsonl\.gz:2: not an outcome line"):
        read_outcomes(bad)
    with pytest.raises(MftError, match="is missing"):
        read_outcomes(tmp_path / "none.jsonl.gz")
