"""`mft reproduce --backend vllm`: two methods of the comparison on one vLLM engine (2 agents, 1 iteration,
small splits), their report, and the finetuned society of one of them served by `mft serve --run-dir
--backend vllm` (LoRA slots sized from the served adapters)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.test_serve import running_server
from tests.vllm_suite.test_vllm_run import CONFIG


def test_reproduce_two_methods_on_vllm_then_serve_the_finetuned_society(tmp_path: Path) -> None:
    import openai

    config = tmp_path / "vllm.yaml"
    # rank-20 adapters need vLLM's rank-32 slots (more than its default 16): the run sizes its engine from
    # its config, the server from the adapters it serves
    config.write_text(CONFIG.replace("  max_lora_rank: 8\n", "") + "lora_rank: 20\n")
    cmd = [sys.executable, "-m", "mft", "reproduce", "--config", str(config), "--methods", "ours,majority_ft"]
    proc = subprocess.run(
        [*cmd, "--runs-dir", str(tmp_path), "--name", "cmp", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=900,
        start_new_session=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "cmp"
    for method in ("ours", "majority_ft"):
        results = json.loads((root / method / "iter_1" / "eval" / "results.json").read_text())
        assert results["iteration"] == 1, method
        assert json.loads((root / method / "manifest.json").read_text())["config"]["backend"] == "vllm"
    report = (root / "report.md").read_text()
    assert "Majority FT" in report and "Ours" in report

    serve = ["--run-dir", str(root / "ours"), "--backend", "vllm"]
    with running_server(serve, tmp_path / "serve.log") as url:
        client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=300)
        models = [m.id for m in client.models.list()]
        assert {"gen_0", "gen_1", "critic_0", "critic_1", "society"} <= set(models), models
        question = "What is the result of 3+4*5? Make sure to state your answer at the end of the response."
        reply = client.chat.completions.create(
            model="critic_1", messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0
        )
        assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
