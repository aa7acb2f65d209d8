"""benchmarks/gpu_check.sh where there is no GPU: it says so and succeeds; and the random-weight model it
builds is the architecture its config names, with the bundled tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_without_cuda_the_check_skips_with_one_clear_line() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [
        "gpu_check: no CUDA device is visible (torch.cuda.is_available() is False): skipped, nothing measured"
    ]


def test_the_random_model_is_the_named_architecture_with_the_bundled_tokenizer(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gpu_check import ARCHITECTURE, build_model
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    spec = json.loads(ARCHITECTURE.read_text())
    out, n_params = build_model(tmp_path / "m", layers=1)
    config = AutoConfig.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert config.model_type == spec["model_type"] == "qwen2"
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"):
        assert getattr(config, key) == spec[key], key
    assert config.num_hidden_layers == 1 and config.vocab_size == len(tokenizer)
    assert config.eos_token_id == tokenizer.eos_token_id and tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == n_params
    # the full model is the 0.5B body: 24 layers of (attention + MLP) without the embeddings
    h, i, kv = spec["hidden_size"], spec["intermediate_size"], spec["num_key_value_heads"]
    head = h // spec["num_attention_heads"]
    layer = h * h * 2 + 2 * h * kv * head + h + 2 * kv * head + 3 * h * i + 2 * h
    assert 0.3e9 < spec["num_hidden_layers"] * layer < 0.4e9  # Qwen2.5-0.5B: 0.36B without embeddings
