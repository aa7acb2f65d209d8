#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): on one CUDA GPU, in under 8 minutes and with no downloads, the
# vLLM vs hf generation figures of a random-weight 0.5B model of a real architecture, then tests/gpu (the
# vllm backend on a GPU; a finetune with the engine asleep, the new adapter served). Skips with a message
# where no CUDA device is visible. Needs mft's dependencies (and vllm for the vLLM parts) in $PYTHON.
#     bash benchmarks/gpu_check.sh [--json gpu_check.json] [--problems 64] [--max-new-tokens 256]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
