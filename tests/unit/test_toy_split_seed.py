"""The bundled model was pretrained on arithmetic problems of the train pool of one split seed: another
split seed would put some of them into the test split, so it is refused (one line, before any model work)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mft.cli import main
from mft.errors import MftError
from mft.tasks.base import pool_of
from mft.toy import check_split_seed, pretraining_split_seed
from mft.toy.corpus import CorpusConfig, _train_ops


def test_another_split_seed_would_test_on_pretraining_problems() -> None:
    """Why the check exists: under split seed 1, about half of the corpus's problems are test problems."""
    assert pretraining_split_seed("bundled") == 0
    rng = random.Random(0)
    seen = [_train_ops(CorpusConfig(split_seed=0), rng) for _ in range(200)]
    in_test = sum(pool_of(str(ops), 1) == "test" for ops in seen)
    assert 60 < in_test < 140 and all(pool_of(str(ops), 0) == "train" for ops in seen)


@pytest.mark.parametrize("command", ["debate", "run"])
def test_the_bundled_model_with_another_split_seed_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    where = ["--out", str(tmp_path / "d")] if command == "debate" else ["--runs-dir", str(tmp_path)]
    assert main([command, "--task", "arithmetic", "--split-seed", "1", *where]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "split_seed 1" in err and "pretrained" in err and "use split_seed 0" in err
    assert not (tmp_path / "d").exists() and not (tmp_path / "arithmetic-toy").exists()


def test_only_a_toy_model_on_arithmetic_is_checked() -> None:
    check_split_seed("bundled", "arithmetic", 0)  # its own split seed
    check_split_seed("bundled", "gsm8k", 1)  # a task it was not pretrained on
    check_split_seed("some-org/some-model", "arithmetic", 1)  # no recipe: not a toy model
    with pytest.raises(MftError, match="split_seed 2"):
        check_split_seed("bundled", "arithmetic", 2)
