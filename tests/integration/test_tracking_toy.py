"""A 1-iteration `mft run` of the bundled model with `--report-to tensorboard,wandb`: the event files, read
back with TensorBoard's own reader, hold the run's metrics.json, whose accuracies are results.json's and
whose training curves are the trainer's; W&B (offline) holds one run of the same points."""

from __future__ import annotations

import glob
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.unit.test_tracking import _tensorboard, _wandb_records

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")


@pytest.mark.slow
def test_a_toy_run_tracked_by_tensorboard_and_wandb_matches_its_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mft.cli import main
    from mft.tracking import read_metrics

    for var in ("WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    argv = [
        "run", "--agents", "2", "--no-summarize", "--n-train", "8", "--n-test", "2", "--iterations", "1",
        "--min-examples", "1", "--ft-epochs", "1", "--diversity-problems", "0", "--runs-dir", str(tmp_path),
        "--name", "toy", "--no-progress", "--report-to", "tensorboard,wandb",
    ]  # fmt: skip
    assert main(argv) == 0
    run_dir = tmp_path / "toy"
    ledger = read_metrics(run_dir / "metrics.json")

    # the accuracies are the run's own results, per iteration
    for k in (0, 1):
        results = json.loads((run_dir / f"iter_{k}" / "eval" / "results.json").read_text())
        for reading in ("single", "majority", "debate"):
            assert ledger[f"accuracy/{reading}"][k] == results["accuracy"][reading]["mean"]
    # every trained agent's curve is its trainer's: first and last loss, one point per optimizer step
    trained = sorted(p.parent.name for p in (run_dir / "iter_1" / "agents").glob("*/train_stats.json"))
    assert trained
    for slot in trained:
        stats = json.loads((run_dir / "iter_1" / "agents" / slot / "train_stats.json").read_text())
        curve = ledger[f"train/iter_1/{slot}/loss"]
        assert sorted(curve) == list(range(1, stats["steps"] + 1))
        assert (curve[1], curve[stats["steps"]]) == (stats["first_loss"], stats["last_loss"])

    # TensorBoard: every scalar of metrics.json, each step once
    events, images = _tensorboard(SimpleNamespace(run_dir=run_dir))  # type: ignore[arg-type]
    assert set(events) == set(ledger)
    for tag, points in events.items():
        assert len(points) == len({s for s, _ in points}), f"{tag}: a step logged twice"
        assert dict(points) == pytest.approx(ledger[tag], rel=1e-6)
    assert "report/accuracy" in images

    # W&B offline: one run, whose history holds the same accuracies
    (log,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    debate: dict[int, float] = {}
    for record in _wandb_records(log):
        if record.WhichOneof("record_type") == "history":
            row = {"".join(i.nested_key) or i.key: i.value_json for i in record.history.item}
            if "accuracy/debate" in row:
                debate[int(json.loads(row["iteration"]))] = json.loads(row["accuracy/debate"])
    assert debate == ledger["accuracy/debate"]
