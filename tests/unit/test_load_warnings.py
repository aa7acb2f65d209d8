"""What loading a model changes is said once, in one line each, and kept in the run's manifest; library
chatter stays silenced unless --debug."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mft.backends.hf import HFBackend
from mft.cli import main
from mft.toy import CHECKPOINT_DIR


def _damaged(tmp_path: Path) -> Path:
    """The bundled model with one weight dropped, one unknown weight added and no pad token."""
    path = tmp_path / "damaged"
    shutil.copytree(CHECKPOINT_DIR, path)
    weights = load_file(path / "model.safetensors")
    weights.pop(next(k for k in sorted(weights) if "mlp.up_proj" in k))
    weights["model.extra.weight"] = torch.zeros(2)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.pop("pad_token")
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


def test_missing_and_unexpected_weights_and_the_pad_token_are_warnings(tmp_path: Path) -> None:
    notes = HFBackend(str(_damaged(tmp_path))).load_warnings
    assert len(notes) == 3, notes
    assert (
        "1 weight(s) missing from the checkpoint, initialised at random (model.layers.0.mlp.up_proj"
        in notes[0]
    )
    assert "in the checkpoint but not used by the architecture (model.extra.weight)" in notes[1]
    assert "no pad token; padding with its end-of-sequence token '<|end|>'" in notes[2]
    assert HFBackend("bundled").load_warnings == []  # a sound model: nothing to say


def test_a_run_shows_each_once_and_keeps_them_in_its_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    model = _damaged(tmp_path)
    argv = [
        "run", "--model", str(model), "--agents", "2", "--n-train", "4", "--n-test", "2",
        "--iterations", "1", "--diversity-problems", "0", "--min-examples", "1", "--max-new-tokens", "16",
        "--runs-dir", str(tmp_path / "runs"), "--name", "r", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("mft: warning:")]
    assert len(warned) == 3 and "weight(s) missing" in warned[0], err
    assert "LOAD REPORT" not in err + caplog.text  # the library's own report: silenced
    manifest = json.loads((tmp_path / "runs" / "r" / "manifest.json").read_text())
    assert manifest["load_warnings"] == [w.removeprefix("mft: warning: ") for w in warned]


def test_debug_lets_the_library_speak(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "d"
    argv = [
        "--debug",
        "debate",
        "--model",
        str(_damaged(tmp_path)),
        "--limit",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "LOAD REPORT" in caplog.text
    assert len(json.loads((out / "summary.json").read_text())["load_warnings"]) == 3
