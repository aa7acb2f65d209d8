#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): on one CUDA GPU, in under 8 minutes and with no downloads, mft's
# own iteration on a random-weight model of Llama-3.1-8B's architecture (hf backend, bfloat16): a 3-agent,
# 2-round debate, a diversity pass and six LoRA finetunes, with tokens/s, examples/s, the diversity stage's
# seconds and peak GPU memory beside mft's estimate. Skips with one line where no CUDA device is visible.
#     bash benchmarks/gpu_check.sh [--json gpu_check.json] [--problems 64] [--max-new-tokens 128]
#     bash benchmarks/gpu_check.sh --allow-cpu --tiny      # the same steps on a CPU, a tiny model
#
# Needs torch, transformers, peft and accelerate in $PYTHON (default python3); not vllm, trl, datasets or
# math-verify. mft comes from this tree (src/). What mft needs beyond those libraries (pydantic) can come
# as wheels in benchmarks/wheels/ (or $GPU_CHECK_WHEELS), for a machine without network: each wheel is
# unpacked into a scratch folder put on PYTHONPATH, no pip needed. Fetch them where there is a network,
# for the GPU machine's Python (`make gpu-check-wheels GPU_PYTHON=3.12`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
shopt -s nullglob
wheels=("${GPU_CHECK_WHEELS:-benchmarks/wheels}"/*.whl)
if ((${#wheels[@]})); then
    site="$(mktemp -d -t gpu-check-site.XXXXXX)"
    trap 'rm -rf "$site"' EXIT
    for wheel in "${wheels[@]}"; do
        "$PY" -m zipfile -e "$wheel" "$site"
    done
    export PYTHONPATH="$PYTHONPATH:$site"
fi
"$PY" benchmarks/gpu_check.py "$@"
