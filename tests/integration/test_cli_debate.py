"""End to end: `mft debate` on the bundled model, then a resumed re-run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mft.cli import main
from mft.records import DebateRecord, read_jsonl


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
    assert summary["generated_tokens_this_invocation"] > 0
    before = (out / "debate.jsonl").read_bytes()
    assert main(args) == 0  # everything is finished: nothing regenerated, nothing appended
    assert (out / "debate.jsonl").read_bytes() == before
    assert json.loads((out / "summary.json").read_text())["generated_tokens_this_invocation"] == 0


def test_console_script_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "mft", "debate", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "--agents" in proc.stdout and "Number of agents" in proc.stdout
