"""`python -m mft.toy.diagnose`: the bundled model's answers classified against the worked solution."""

from __future__ import annotations

from pathlib import Path

import pytest

from mft.records import DebateRecord, Message, Problem, append_jsonl
from mft.toy.corpus import chain
from mft.toy.diagnose import diagnose, main

OPS = (27, 27, 14, 5, 3, 9)  # 27+27*14+5-3*9 = 383


def test_each_answer_is_classified_and_each_line_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truth, slipped = chain(OPS, (0, 0, 0)), chain(OPS, (10, 0, 1))
    broken = "\n".join([truth.lines[0], "junk", *truth.lines[2:]]) + "\nThe answer is 383."
    first = [truth.render(), slipped.render(), broken]
    last = [truth.render()] * 3
    convs = [[Message(role="user", content="q"), Message(role="assistant", content=t)] for t in first]
    record = DebateRecord(
        task="arithmetic",
        task_version="2",
        problem=Problem(
            id="p", question="27+27*14+5-3*9", answer="383", split="test", meta={"ops": list(OPS)}
        ),
        agents=[["a", "b", "c"]] * 2,
        responses=[first, last],
        answers=[["383", str(slipped.answer), "383"], ["383"] * 3],
        conversations=convs,
        consensus="383",
        round_consensus=["383", "383"],
        correct=True,
    )
    path = tmp_path / "debate.jsonl"
    append_jsonl(path, [record])
    one, two = diagnose(path)
    assert one["right"] == pytest.approx(2 / 3)
    assert (one["slip_free"], one["slip_pattern"], one["other"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    # the slip in the first product spoils its line and the sums after it; "junk" the second product
    assert one["first product"] == pytest.approx(2 / 3) and one["second product"] == pytest.approx(2 / 3)
    assert one["difference"] == pytest.approx(2 / 3)  # the units slip
    assert one["slip 1 (first product's tens)"] == pytest.approx(1 / 3) and one[
        "slip 3 (difference's units)"
    ] == pytest.approx(1 / 3)
    assert one["slip 2 (second product's hundreds)"] == 0.0
    assert two["slip_free"] == 1.0 and two["difference"] == 1.0
    assert main([str(path)]) == 0 and "round 2: right 100.0%" in capsys.readouterr().out
