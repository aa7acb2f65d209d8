from __future__ import annotations

from pathlib import Path

import pytest

from mft.errors import MftError
from mft.records import DebateRecord, Message, Problem, append_jsonl, read_jsonl


def _record(i: int) -> DebateRecord:
    return DebateRecord(
        task="arithmetic",
        task_version="1",
        problem=Problem(id=f"p{i}", question="1+2*3+4-5*6", answer="-19", meta={"ops": [1, 2, 3, 4, 5, 6]}),
        agents=[["a", "b"], ["a", "b"]],
        responses=[["The answer is -19.", "The answer is 3."], ["The answer is -19.", "The answer is -19."]],
        answers=[["-19", "3"], ["-19", "-19"]],
        conversations=[[Message(role="user", content="q"), Message(role="assistant", content="r")]] * 2,
        consensus="-19",
        round_consensus=["3", "-19"],
        correct=True,
    )


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    recs = [_record(i) for i in range(3)]
    append_jsonl(path, recs[:2])
    append_jsonl(path, recs[2:])
    assert read_jsonl(path, DebateRecord) == recs


def test_torn_last_line_is_dropped_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    append_jsonl(path, [_record(0), _record(1)])
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # kill in the middle of writing record 1
    got = read_jsonl(path, DebateRecord)
    assert [r.problem.id for r in got] == ["p0"]
    append_jsonl(path, [_record(2)])
    assert [r.problem.id for r in read_jsonl(path, DebateRecord)] == ["p0", "p2"]


def test_corrupt_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    append_jsonl(path, [_record(0)])
    with open(path, "a") as fh:
        fh.write('{"task": "arithmetic"}\n')
    with pytest.raises(MftError, match=r"d.jsonl:2: not a valid DebateRecord"):
        read_jsonl(path, DebateRecord)


@pytest.mark.parametrize("odd", ["\x85", "\u2028", "\u2029"])  # JSON escapes the control characters
def test_a_reply_with_a_unicode_line_break_reads_back(tmp_path: Path, odd: str) -> None:
    """A model sampled hot writes any character; JSON keeps these raw, and str.splitlines() would cut the
    record there (a run at temperature 2 stopped so: 'Unterminated string')."""
    rec = _record(0).model_copy(update={"responses": [[f"The{odd}answer is -19.", "3"], ["-19", "-19"]]})
    rec = rec.model_copy(update={"answers": [[f"-19{odd}", "3"], ["-19", "-19"]]})
    path = tmp_path / "d.jsonl"
    append_jsonl(path, [rec, _record(1)])
    assert odd in path.read_text(encoding="utf-8")  # kept raw, the case that broke
    assert read_jsonl(path, DebateRecord) == [rec, _record(1)]
