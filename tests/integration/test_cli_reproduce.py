"""End to end: `mft reproduce` on the bundled model, tiny, then `mft compare` over its directory."""

from __future__ import annotations

import json
from pathlib import Path

from mft.cli import main


def test_reproduce_runs_the_methods_and_writes_the_report(tmp_path: Path, capsys) -> None:
    args = [
        "reproduce", "--task", "arithmetic", "--methods", "ours,single_ft,star", "--runs-dir", str(tmp_path),
        "--agents", "2", "--iterations", "1", "--n-train", "6", "--n-test", "4", "--chunk-size", "3",
        "--min-examples", "1", "--ft-epochs", "1", "--diversity-problems", "2", "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    root = tmp_path / "reproduce-arithmetic"
    printed = capsys.readouterr().out
    for label in (
        "Base",
        "Majority",
        "Debate",
        "STaR",
        "Ours",
        "Single-agent FT",
        "Single-agent FT (no debate)",
    ):
        assert label in printed
    # STaR rationalizes its wrong samples on the real model: the file, and their count in sizes.json
    assert "rationalized" in json.loads((root / "star/iter_1/data/sizes.json").read_text())["model"]
    assert (root / "star/iter_1/rationalize.jsonl").exists()
    assert json.loads((root / "reproduce.json").read_text())["methods"] == {
        "ours": "ours", "single_ft": "single_ft", "star": "star"
    }  # fmt: skip
    for method in ("ours", "single_ft", "star"):
        results = json.loads((root / method / "iter_1/eval/results.json").read_text())
        assert results["problems"] == 4 and results["usage"]["generated_tokens"] > 0
        diversity = json.loads((root / method / "iter_1/diversity.json").read_text())
        assert diversity["problems"] == 2 and "embedding_dissimilarity" in diversity and "kl" in diversity
        assert diversity["held_out_nll"]["mean"] > 0 and "kl_from_base" in diversity
    # single-model methods: one model plays both agents, so the agents' token distributions are identical
    assert json.loads((root / "single_ft/iter_1/diversity.json").read_text())["kl"]["mean"] == 0.0
    # KL from the base: 0 for the base society, > 0 once the agents are finetuned
    assert json.loads((root / "ours/iter_0/diversity.json").read_text())["kl_from_base"]["mean"] == 0.0
    assert json.loads((root / "ours/iter_1/diversity.json").read_text())["kl_from_base"]["mean"] > 0
    assert (root / "plots" / "kl_from_base_agents.png").exists()
    assert (root / "plots" / "accuracy_vs_diversity.png").exists()
    report = (root / "report.md").read_text()
    assert "| Ours |" in report and (root / "plots" / "accuracy.png").stat().st_size > 1000
    assert main(["compare", str(root), "--out", str(tmp_path / "cmp")]) == 0
    assert "arithmetic" in (tmp_path / "cmp" / "compare.md").read_text()
