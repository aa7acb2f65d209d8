"""The memory estimate of `mft run --dry-run`, checked against sizes known for real models (from their
configs alone: nothing is downloaded or allocated)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mft.backends.hf.memory import GIB, MemoryPlan, estimate
from mft.cli import main

# Llama-3-8B-Instruct's published architecture (config.json); no weights are needed
LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
}

# The other two open bases of the paper, as published (config.json): Mistral-7B-Instruct-v0.2 (the Llama
# body with a 32k vocabulary) and Phi-3-mini-4k-instruct (fused qkv / gate-up layers, no grouped-query heads)
# (the preset's 128k-context variant has the same shapes; only its rope settings differ)
MISTRAL_7B = {
    **LLAMA3_8B,
    "architectures": ["MistralForCausalLM"],
    "model_type": "mistral",
    "vocab_size": 32000,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
}
PHI3_MINI = {
    "architectures": ["Phi3ForCausalLM"],
    "model_type": "phi3",
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32064,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "pad_token_id": 32000,
}


def _model_dir(tmp_path: Path, config: dict[str, object]) -> str:
    path = tmp_path / str(config["model_type"])
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


@pytest.fixture
def llama3_8b(tmp_path: Path) -> str:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    return str(tmp_path)


def _plan(model: str, **kw: object) -> MemoryPlan:
    base = {"model": model, "agents": 3, "rounds": 2, "max_new_tokens": 512, "batch_size": 64}
    return MemoryPlan(**{**base, **kw})  # type: ignore[arg-type]


def test_an_8b_models_parts_match_its_known_sizes(llama3_8b: str) -> None:
    parts = estimate(_plan(llama3_8b, lora_rank=16))
    assert 8.0e9 < parts["weights"] / 2 < 8.1e9  # 8.03 B parameters in bfloat16
    # LoRA r=16 on every linear layer of a Llama-3-8B / Mistral-7B body: 41,943,040 parameters, 6 adapters
    assert parts["LoRA adapters (2N)"] == 6 * 41_943_040 * 2
    # KV cache: 32 layers x 8 kv heads x 128 dims x 2 (k, v) x 2 bytes = 128 KiB per token
    assert parts["KV cache (one generation batch)"] == 64 * (256 + 3 * 512 + 512) * 131072
    assert parts["peak"] == max(parts["peak while training"], parts["peak while generating"])


def test_checkpointing_and_micro_batches_shrink_the_activations(llama3_8b: str) -> None:
    plain = estimate(_plan(llama3_8b))
    small = estimate(_plan(llama3_8b, ft_micro_batch_size=2, gradient_checkpointing=True, ft_max_length=1024))
    assert small["activations (one micro-batch)"] < plain["activations (one micro-batch)"] / 20
    assert small["peak while training"] < plain["peak while training"]
    assert small["peak while training"] < 80 * GIB  # LoRA agents of an 8B model train on one 80 GB GPU
    full = estimate(_plan(llama3_8b, ft_method="full", ft_micro_batch_size=2, gradient_checkpointing=True))
    assert full["gradients + AdamW states"] == 3 * full["weights"] and full["LoRA adapters (2N)"] == 0


def test_dry_run_prints_the_estimate_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--dry-run", "--runs-dir", str(tmp_path), "--name", "dry"]) == 0
    out = capsys.readouterr().out
    assert "peak while training" in out and "KV cache" in out and "GiB" in out
    assert not (tmp_path / "dry").exists()


def test_dry_run_counts_the_sequences_of_each_objectives_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DPO pair is two sequences in one forward pass (the objectives table's row): Ours (DPO) trains on
    twice the activations of Ours, at the same settings; a GRPO prompt is its G sampled replies."""

    def activations(method: str, *more: str) -> str:
        args = ["run", "--dry-run", "--method", method, "--runs-dir", str(tmp_path), "--name", "d", *more]
        assert main(args) == 0
        return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("activations"))

    sft, dpo = (float(activations(m).split()[-2]) for m in ("ours", "ours_dpo"))
    assert dpo == pytest.approx(2 * sft, rel=0.05) and sft > 0
    grpo = float(activations("ours_grpo", "--grpo-group", "6").split()[-2])
    assert grpo == pytest.approx(6 * sft, rel=0.05)


def test_mistral_and_phi3_parts_match_their_known_sizes(tmp_path: Path) -> None:
    mistral = estimate(_plan(_model_dir(tmp_path, MISTRAL_7B), lora_rank=16))
    assert 7.24e9 < mistral["weights"] / 2 < 7.25e9  # 7.24 B parameters in bfloat16
    assert mistral["LoRA adapters (2N)"] == 6 * 41_943_040 * 2  # the Llama body's adapters
    phi3 = estimate(_plan(_model_dir(tmp_path, PHI3_MINI), lora_rank=16))
    assert 3.82e9 < phi3["weights"] / 2 < 3.83e9  # 3.82 B parameters
    # the fused layers are adapted whole: qkv 3072 -> 9216, o 3072 -> 3072, gate-up 3072 -> 16384,
    # down 8192 -> 3072, each r x (inputs + outputs), 32 layers
    sides = (3072 + 9216) + (3072 + 3072) + (3072 + 16384) + (8192 + 3072)
    assert phi3["LoRA adapters (2N)"] == 6 * 16 * sides * 32 * 2
    # no grouped-query attention: 32 layers x 32 kv heads x 96 dims x 2 (k, v) x 2 bytes = 384 KiB per token
    assert phi3["KV cache (one generation batch)"] == 64 * (256 + 3 * 512 + 512) * 393216


@pytest.mark.parametrize(
    ("preset", "config", "fits_gib"),
    [
        ("paper-gsm8k-llama3-8b", LLAMA3_8B, 80),
        ("paper-math-llama3-8b", LLAMA3_8B, 80),
        ("paper-mmlu-llama3-8b", LLAMA3_8B, 80),
        ("paper-gsm8k-mistral-7b", MISTRAL_7B, 80),
        ("paper-gsm8k-phi3-mini", PHI3_MINI, 40),
    ],
)
def test_each_paper_preset_fits_the_gpu_its_header_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], preset: str, config: dict[str, object], fits_gib: int
) -> None:
    path = Path(__file__).parents[2] / "configs" / f"{preset}.yaml"
    assert f"one GPU ({fits_gib} GB or more)" in path.read_text()
    model = _model_dir(tmp_path, config)
    assert main(["run", "--dry-run", "--config", str(path), "--model", model]) == 0
    lines = capsys.readouterr().out.splitlines()
    peak = next(line for line in lines if line.split()[:1] == ["peak"] and len(line.split()) == 3)
    # 10% left for the CUDA context and fragmentation
    assert float(peak.split()[-2]) * GIB < fits_gib * 1e9 * 0.9, peak
