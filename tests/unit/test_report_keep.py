"""`mft report PATH --keep DIR`: the small files a report is written from, out of a run directory, with
no machine path left in them (`mft.report.keep`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mft.cli import main
from mft.report import write_report
from tests.unit.test_report import FIXTURES

SMALL = (
    "reproduce.json",
    "ours/manifest.json",
    "ours/iter_2/eval/results.json",
    "ours/iter_2/diversity.json",
    "ours/iter_2/data/sizes.json",
    "majority/timings.json",
)


def _runs(tmp: Path) -> Path:
    """The report fixture's reproduce directory inside a runs directory, with what a real run also has: big
    files, an absolute runs_dir in a manifest, training curves, seeds."""
    runs = tmp / "my runs"  # a space: the path as JSON spells it
    root = runs / "arith"
    shutil.copytree(FIXTURES / "arithmetic", root)
    manifest = root / "ours/manifest.json"
    data = json.loads(manifest.read_text())
    data["config"]["runs_dir"] = str(root)
    data["config"]["data"] = str(runs)
    manifest.write_text(json.dumps(data, indent=2))
    (root / "ours/iter_2/debate.jsonl").write_text("{}\n" * 100)
    (root / "ours/iter_2/agents/gen_0").mkdir(parents=True)
    (root / "ours/iter_2/agents/gen_0/adapter_model.safetensors").write_bytes(b"\0" * 1000)
    (root / "ours/iter_2/agents/gen_0/train_stats.json").write_text('{"loss": 0.5}')
    (root / "ours/.lock").write_text("123")
    return root


def test_keep_copies_the_small_files_and_writes_the_same_report(tmp_path: Path) -> None:
    root = _runs(tmp_path)
    kept = tmp_path / "results/arith"
    assert main(["report", str(root), "--keep", str(kept)]) == 0
    for rel in SMALL:
        assert (kept / rel).is_file(), rel
    assert (kept / "ours/iter_2/agents/gen_0/train_stats.json").is_file()
    for big in (
        "ours/iter_2/debate.jsonl",
        "ours/iter_2/agents/gen_0/adapter_model.safetensors",
        "ours/.lock",
    ):
        assert not (kept / big).exists(), big
    config = json.loads((kept / "ours/manifest.json").read_text())["config"]
    assert config["runs_dir"] == "runs/arith" and config["data"] == "runs"
    assert not [p for p in kept.rglob("*.json") if str(tmp_path) in p.read_text()]
    assert (kept / "ours/iter_2/eval/results.json").read_bytes() == (
        root / "ours/iter_2/eval/results.json"
    ).read_bytes()
    # the report written there is the one written from the run (the fixture has no debate files it reads)
    assert (kept / "report.md").read_text() == write_report(root, tmp_path / "from-run").read_text()


def test_keep_a_reproduce_over_seeds_writes_each_seeds_report(tmp_path: Path) -> None:
    seeds = tmp_path / "runs/over-seeds"
    for s in ("0", "1"):
        shutil.copytree(FIXTURES / "arithmetic", seeds / f"seed_{s}")
    (seeds / "seeds.json").write_text(
        json.dumps({"seeds": {"0": "seed_0", "1": "seed_1"}, "task": "arithmetic"})
    )
    kept = tmp_path / "kept"
    assert main(["report", str(seeds), "--keep", str(kept)]) == 0
    assert (kept / "seeds.json").is_file()
    assert "seeds 0, 1" in (kept / "report.md").read_text()
    assert all((kept / f"seed_{s}/report.md").is_file() for s in ("0", "1"))
    # one seed kept alone: its paths read as they do kept with its seeds (runs/<reproduce>/seed_<s>/...)
    manifest = seeds / "seed_1/ours/manifest.json"
    data = json.loads(manifest.read_text())
    data["config"]["runs_dir"] = str(seeds / "seed_1")
    manifest.write_text(json.dumps(data))
    assert main(["report", str(seeds / "seed_1"), "--keep", str(tmp_path / "one")]) == 0
    config = json.loads((tmp_path / "one/ours/manifest.json").read_text())["config"]
    assert config["runs_dir"] == "runs/over-seeds/seed_1"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (lambda root, tmp: root / "kept", "is inside"),
        (lambda root, tmp: root / "ours", "is inside"),
        (lambda root, tmp: tmp / "my runs", "exists and is not an empty directory"),
    ],
)
def test_keep_refuses_a_directory_it_would_mix_into(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where, message: str
) -> None:
    root = _runs(tmp_path)
    before = sorted(root.rglob("*"))
    assert main(["report", str(root), "--keep", str(where(root, tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mft: error: ") and "--keep" in err
    assert sorted(root.rglob("*")) == before


def test_keep_names_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path), "--keep", str(tmp_path / "k")]) == 2
    assert "not a run, reproduce or seeds directory" in capsys.readouterr().err
    root = _runs(tmp_path)
    assert main(["report", str(root), "--keep", str(tmp_path / "k"), "--out", str(tmp_path / "o")]) == 2
    assert "--keep and --out" in capsys.readouterr().err
