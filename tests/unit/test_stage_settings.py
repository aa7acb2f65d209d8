"""A stage command (`mft debate-train/build-data/finetune/eval --iteration K`) works on a run made with the
same settings only: it refuses, in one line and before any model is loaded, a run directory made with other
settings or with another version of the task, as `mft run` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mft.cli import main
from mft.config import RunConfig
from mft.pipeline.assemble import finetune_settings
from mft.pipeline.run import open_run
from mft.rundir import RunDir
from mft.tasks import get_task
from mft.tasks.arithmetic import ArithmeticTask

SETTINGS = ["--n-train", "3", "--n-test", "3", "--iterations", "1", "--no-summarize"]


def _made(tmp_path: Path) -> RunDir:
    cfg = RunConfig(name="r", runs_dir=tmp_path, n_train=3, n_test=3, iterations=1, summarize=False)
    open_run(cfg, get_task("arithmetic"))
    return RunDir(cfg.run_dir)


def _stage(tmp_path: Path, stage: str, *extra: str) -> list[str]:
    it = "0" if stage == "eval" else "1"
    return [stage, "--iteration", it, "--runs-dir", str(tmp_path), "--name", "r", *SETTINGS, *extra]


@pytest.mark.parametrize("stage", ["debate-train", "build-data", "finetune", "eval"])
def test_a_stage_command_refuses_a_run_made_with_other_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stage: str
) -> None:
    _made(tmp_path)
    assert main(_stage(tmp_path, stage, "--temperature", "0.5")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "was made with other settings (temperature differ)" in err and "--name" in err


def test_a_stage_command_refuses_a_run_made_with_another_task_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rd = _made(tmp_path)
    manifest = json.loads(rd.manifest.read_text())
    manifest["task"]["version"] = "0"  # as made by an mft whose arithmetic prompts differed
    rd.manifest.write_text(json.dumps(manifest))
    assert main(_stage(tmp_path, "build-data")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"made with task 'arithmetic' version 0, not {ArithmeticTask.version}" in err and "--name" in err
    # this mft's version: the stage goes on (to its own check: no debate yet)
    manifest["task"]["version"] = ArithmeticTask.version
    rd.manifest.write_text(json.dumps(manifest))
    main(_stage(tmp_path, "build-data"))
    assert "debate has 0 of 3 problems" in capsys.readouterr().err


def test_no_two_seeds_or_iterations_share_a_stage_seed() -> None:
    from mft.pipeline.assemble import stage_seed

    # with seed + k, seed 0's iteration 1 sampled with seed 1's iteration 0 random numbers
    drawn = {
        (s, stage, k): stage_seed(s, stage, k)
        for s in range(4)
        for stage in ("debate", "eval")
        for k in range(6)
    }
    assert len(set(drawn.values())) == len(drawn)
    assert stage_seed(0, "eval", 1) == stage_seed(0, "eval", 1)  # a function of the three only
    cfg = RunConfig(task="arithmetic", n_train=3, n_test=3, seed=2)
    assert finetune_settings(cfg, 1).seed == stage_seed(2, "finetune", 1) != finetune_settings(cfg, 2).seed
