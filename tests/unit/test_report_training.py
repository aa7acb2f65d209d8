"""The report's "Training signal" section: GRPO's reward, KL and groups without a signal per iteration and
per step, read from the agents' train_stats.json when the run is loaded; absent where nothing was recorded."""

from __future__ import annotations

import json
from pathlib import Path

from mft.report import build_report, load
from mft.report.document import table_markdown
from tests.unit.test_report import copy_fixture


def _stats(root: Path, k: int, slot: str, reward: list[float], kl: list[float], skipped: list[float]) -> None:
    out = root / "ours" / f"iter_{k}" / "agents" / slot
    out.mkdir(parents=True, exist_ok=True)
    curves = {"loss": [0.0] * len(reward), "reward": reward, "kl": kl, "skipped_groups": skipped}
    (out / "train_stats.json").write_text(json.dumps({"objective": "grpo", "curves": curves}))


def test_each_iterations_reward_kl_and_signal_per_role_beside_its_accuracy(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path, "arithmetic")
    _stats(root, 1, "gen_0", [0.5, 0.5, 0.7, 0.7], [0.0, 0.01, 0.02, 0.03], [0.0, 0.0, 0.5, 0.5])
    _stats(root, 1, "gen_1", [0.3, 0.3, 0.9, 0.9], [0.0, 0.01, 0.02, 0.05], [0.5, 0.5, 0.5, 0.5])
    _stats(root, 1, "critic_0", [0.8, 0.8], [0.0, 0.1], [1.0, 0.0])
    _stats(root, 2, "gen_0", [0.9, 0.9], [0.0, 0.02], [0.0, 0.0])
    doc = build_report(load(root))
    md = "\n".join(
        table_markdown(b) for b in doc.blocks if hasattr(b, "rows") and "reward (first batch)" in b.header
    )
    # generators of iteration 1: rewards (0.5 + 0.3) / 2 first, (0.7 + 0.9) / 2 last; KL of the last step
    # (0.03 + 0.05) / 2; no signal: mean over agents of each one's mean share (0.25, 0.5); the test debate
    # accuracy of that iteration's society (ours iter_1 in the fixture)
    ours_iter1 = load(root).run("ours").iterations[1].accuracy["debate"].mean
    assert f"| 1 | generators | 0.400 | 0.800 | 0.0400 | 38% | {100 * ours_iter1:.1f} |" in md
    assert "| 1 | critics | 0.800 | 0.800 | 0.1000 | 50% |" in md
    assert "| 2 | generators | 0.900 | 0.900 | 0.0200 | 0% |" in md
    assert {"plots/ours_reward.png", "plots/ours_kl.png"} <= set(doc.plots)


def test_no_recorded_curves_no_section(tmp_path: Path) -> None:
    doc = build_report(load(copy_fixture(tmp_path, "arithmetic")))
    assert not any(getattr(b, "text", None) == "Training signal" for b in doc.blocks)
    assert not any("reward" in p for p in doc.plots)
