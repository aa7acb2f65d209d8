"""What a backend can do is declared on its class (`Backend`'s capabilities), read by name through the table
without building the backend or importing torch, vllm or openai; no module tests a backend's name
instead."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from mft.backends import BACKENDS, backend_class, backends_where, training
from mft.backends.base import Backend, EngineShape

SRC = Path(__file__).resolve().parents[2] / "src"


def test_each_backend_declares_what_it_can_do() -> None:
    table = {
        name: (
            cls.objectives,
            cls.mixes_bases,
            cls.ray_trainer,
            cls.scores_responses,
            cls.loads_adapters,
            cls.estimates_memory,
        )
        for name in BACKENDS
        if (cls := backend_class(name))
    }
    assert table == {
        "hf": (("sft", "dpo", "grpo"), True, "hf", True, True, True),
        "openai": (("sft",), False, None, False, False, False),
        "vllm": (("sft", "dpo", "grpo"), False, "hf", True, True, False),
    }
    assert training("dpo") == training("grpo") == ("hf", "vllm") and training("sft") == (
        "hf",
        "openai",
        "vllm",
    )
    assert backends_where(lambda b: b.mixes_bases) == ("hf",)
    # the defaults of the interface: a backend that declares nothing can do nothing of the kind
    assert (Backend.objectives, Backend.mixes_bases, Backend.ray_trainer, Backend.scores_responses) == (
        (),
        False,
        None,
        False,
    )
    shape = EngineShape(agents=2, rounds=2, summarize=False, max_new_tokens=100, adapters=4, lora_rank=8)
    assert backend_class("hf").engine_options(shape) == backend_class("openai").engine_options(shape) == {}
    # 2 x 1024 + 1 x (2 x 100) + 100 = 2348 -> 2560; 4 adapters and the zero adapter; rank 8 is vLLM's 8
    sized = {"context_hint": 2560, "max_loras": 5, "max_lora_rank": 8}
    assert backend_class("vllm").engine_options(shape) == sized


def test_capabilities_are_read_without_torch_vllm_or_openai() -> None:
    code = (
        "import json, sys\n"
        "from mft.backends import BACKENDS, backend_class\n"
        "caps = {n: list(backend_class(n).objectives) for n in BACKENDS}\n"
        "heavy = [m for m in ('torch', 'vllm', 'openai', 'transformers', 'peft') if m in sys.modules]\n"
        "print(json.dumps([caps, heavy]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    caps, heavy = json.loads(out.stdout)
    assert caps["openai"] == ["sft"] and heavy == []


def test_no_module_outside_the_backends_compares_a_backend_name() -> None:
    """`backend == "vllm"`, `name != "hf"`, `backend in ("hf", "vllm")`: each is a capability instead (the
    backends included: a mixed society asks its backend's class), so a new backend is one file plus one
    table line."""
    found = []
    for path in (SRC / "mft").rglob("*.py"):
        if path.name == "registry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    names = [side, *getattr(side, "elts", [])]
                    if any(isinstance(n, ast.Constant) and n.value in BACKENDS for n in names):
                        found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, found
