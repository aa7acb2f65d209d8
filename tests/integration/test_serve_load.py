"""`mft serve` under concurrent society requests, a fifth of whose clients hang up mid-request: every
request that waited is answered whole, and a request after the storm is answered (no wedge). The memory
figures at 200 clients are `benchmarks/serve_load.py`'s (docs/performance.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mft.tasks import get_task
from tests.integration.test_serve import running_server

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"


def _bench():  # noqa: ANN202 - the benchmark script, loaded as a module
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("serve_load", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_storm_with_clients_hanging_up_answers_every_waiting_client_whole(tmp_path: Path) -> None:
    bench = _bench()
    task = get_task("arithmetic")
    questions = [task.question_prompt(p) for p in task.load("test", 26)]
    with running_server(["--agents", "2", "--rounds", "2"], tmp_path / "serve.log") as url:
        result = bench.storm(url.removesuffix("/v1"), questions[:25], 0.2, 2, 2, 48)
        assert result.dropped == 5
        assert (result.answered, result.incomplete, result.failed) == (20, 0, [])
        status, _ = bench.lone(url.removesuffix("/v1"), questions[-1], 48)
        assert status == 200
