"""End to end: `mft debate` on the bundled model, then a resumed re-run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mft.cli import main
from mft.eval.outcomes import accuracies, read_outcomes
from mft.records import DebateRecord, problems_digest, read_jsonl


def test_debate_command_end_to_end_and_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    args = ["debate", "--limit", "6", "--chunk-size", "3", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for label in ("single agent", "majority vote", "debate"):
        assert label in printed
    records = read_jsonl(out / "debate.jsonl", DebateRecord)
    assert len(records) == 6
    assert all(len(r.responses) == 2 and len(r.responses[0]) == 3 for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["accuracy"]) == {"single", "majority", "debate"}
    outcomes = read_outcomes(out / "outcomes.jsonl.gz")
    assert [o["uid"] for o in outcomes] == [r.problem.id for r in records]
    assert {r: e.mean for r, e in accuracies(outcomes).items()} == {
        r: v["mean"] for r, v in summary["accuracy"].items()
    }
    assert summary["generated_tokens_this_invocation"] > 0
    before = (out / "debate.jsonl").read_bytes()
    assert main(args) == 0  # everything is finished: nothing regenerated, nothing appended
    assert (out / "debate.jsonl").read_bytes() == before
    assert json.loads((out / "summary.json").read_text())["generated_tokens_this_invocation"] == 0


def test_console_script_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "mft", "debate", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "--agents" in proc.stdout and "Number of agents" in proc.stdout


def test_debate_on_local_gsm8k_and_math_files(tmp_path: Path) -> None:
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    for task, data, n in (("gsm8k", "gsm8k_sample.jsonl", 5), ("math", "math_sample.jsonl", 3)):
        out = tmp_path / task
        args = [
            "debate",
            "--task",
            task,
            "--data",
            str(fixtures / data),
            "--limit",
            str(n),
            "--max-new-tokens",
            "24",
            "--out",
            str(out),
            "--no-progress",
        ]
        assert main(args) == 0
        records = read_jsonl(out / "debate.jsonl", DebateRecord)
        assert len(records) == n and all(r.task == task and r.problem.split == "test" for r in records)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["accuracy"]["debate"]["n"] == n and 0.0 <= summary["accuracy"]["debate"]["mean"] <= 1.0
        assert summary["data"]["test"]["skipped_bad_gold"] == 0
        assert summary["problems"] == problems_digest([r.problem for r in records])


def test_bad_dataset_stops_before_model_work(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "What is 1+1?", "answer": "#### 2"}\n{"question": "no answer field"}\n')
    assert (
        main(["debate", "--task", "gsm8k", "--data", str(bad), "--limit", "1", "--out", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "2" in err and "answer" in err
    assert not (tmp_path / "o" / "debate.jsonl").exists()


def test_cooperative_debate_on_the_bundled_model_and_no_resume_as_a_debate(tmp_path: Path, capsys) -> None:
    from mft.tasks.base import COOPERATIVE_OPENING

    out = tmp_path / "coop"
    args = ["debate", "--limit", "3", "--interaction", "cooperative", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    records = read_jsonl(out / "debate.jsonl", DebateRecord)
    assert [r.interaction for r in records] == ["cooperative"] * 3
    assert all(c[2].content.startswith(COOPERATIVE_OPENING) for r in records for c in r.conversations)
    assert json.loads((out / "summary.json").read_text())["config"]["interaction"] == "cooperative"
    capsys.readouterr()
    assert main([*args[:3], "--interaction", "debate", "--out", str(out), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "cooperative" in err and "Traceback" not in err
