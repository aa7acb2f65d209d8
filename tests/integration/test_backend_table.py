"""Adding a backend is one file plus one table line: a backend defined here (the hf backend on the bundled
model, counting its calls, with capabilities of its own) put in the backend table runs a whole `mft run`,
and what the run may ask of it is read from its class, never from its name."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mft.backends import TABLE, backend_class
from mft.backends.base import Agent, FinetuneSettings, GenerationRequest, Sampling, StepCallback, TrainingData
from mft.backends.hf import HFBackend
from mft.cli import main
from mft.methods import BY_KEY

pytestmark = pytest.mark.slow


class CountingBackend(HFBackend):
    """A backend of its own: generates and trains as the hf backend does, trains by SFT only, mixes no
    bases, scores nothing, trains no agent in a Ray worker."""

    name = "counting"
    objectives = ("sft",)
    mixes_bases = False
    ray_trainer = None
    scores_responses = False
    loads_adapters = False
    estimates_memory = False
    calls: ClassVar[Counter[str]] = Counter()

    def __init__(self, model: str = "bundled", batch_size: int = 256, **options: Any) -> None:
        CountingBackend.calls["built"] += 1
        super().__init__(model, batch_size, **options)

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[str]:
        CountingBackend.calls["generated"] += len(requests)
        return super().generate(requests, sampling)

    def finetune(
        self,
        agent: Agent,
        examples: TrainingData,
        out_dir: Path,
        settings: FinetuneSettings | None = None,
        *,
        on_step: StepCallback | None = None,
    ) -> Agent:
        CountingBackend.calls["finetuned"] += 1
        return super().finetune(agent, examples, out_dir, settings, on_step=on_step)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> type[CountingBackend]:
    """The table line: the default backend's entry names the class above."""
    monkeypatch.setitem(TABLE.entries, "hf", f"{__name__}:CountingBackend")
    CountingBackend.calls.clear()
    return CountingBackend


def test_a_backend_defined_outside_mft_runs_a_whole_run(registered, tmp_path: Path, capsys) -> None:
    assert backend_class("hf") is registered
    argv = [
        "run", "--agents", "2", "--n-train", "4", "--n-test", "4", "--iterations", "1",
        "--diversity-problems", "0", "--min-examples", "1", "--ft-epochs", "1", "--max-new-tokens", "24",
        "--no-progress", "--runs-dir", str(tmp_path), "--name", "counting",
    ]  # fmt: skip
    assert main(argv) == 0
    run_dir = tmp_path / "counting"
    for k in (0, 1):
        results = json.loads((run_dir / f"iter_{k}" / "eval" / "results.json").read_text())
        assert results["problems"] == 4 and set(results["accuracy"]) >= {"single", "majority", "debate"}
    calls = registered.calls
    assert calls["built"] == 1  # one backend for the whole run, built from the table
    # debates: train (iteration 1) and test (iterations 0 and 1), 4 problems x 2 agents x 2 rounds each,
    # plus the summaries; every agent that had data was trained by this class
    assert calls["generated"] >= 3 * 4 * 2 * 2
    trained = sorted(
        p.parent.name for p in (run_dir / "iter_1" / "agents").glob("*/adapter_model.safetensors")
    )
    assert calls["finetuned"] == len(trained) >= 1

    # what a run may ask of it comes from its class: no DPO (and the hint names who trains by it), no
    # mixed society, no likelihood metrics
    dpo = [*argv[:-1], "dpo", "--method", BY_KEY["ours_dpo"].run_as]
    assert main(dpo) == 2
    err = capsys.readouterr().err
    assert "trains by DPO, which the hf backend does not do" in err and "use backend vllm," in err
    assert not (tmp_path / "dpo" / "iter_1").exists()
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text("agents: [bundled, ./other]\nbackend: hf\n")
    assert main(["run", "--config", str(mixed), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err  # a name test (backend != "hf") would have let it through
    assert "field 'backend': a mixed society (agents on several base models)" in err and "not hf" in err
