"""benchmarks/reproduce_time.py: the measuring share, from every method's timings of a reproduce directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_measuring_share_sums_every_methods_stages(tmp_path: Path) -> None:
    (tmp_path / "ours").mkdir()
    (tmp_path / "star").mkdir()
    (tmp_path / "ours" / "timings.json").write_text(
        json.dumps({"iter_0/eval": 10, "iter_0/diversity": 10, "iter_1/debate": 20, "iter_1/finetune": 20})
    )
    # a method whose iteration 0 was copied from Ours: only the copy's seconds
    (tmp_path / "star" / "timings.json").write_text(
        json.dumps({"iter_0/eval": 0.0, "iter_1/debate": 10, "iter_1/eval": 30, "note": 5})
    )
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "reproduce_time.py"), "--read", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[-1] == "measuring share: 50% (diversity 10%)"  # (10 + 10 + 30) / 100, 10 / 100
    assert "all              100.0" in out
