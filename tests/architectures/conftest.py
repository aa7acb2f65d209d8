"""Session fixtures of the architectures suite: tiny models of each family, built on first use, once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.architectures.tiny import FAMILIES, TinyModels


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run these tests' tiny models on one thread: their ops are so small that a second thread only adds
    synchronisation, and on a machine shared with other work it costs 10-20x (measured: a training step of
    `teach_constant_reply` took 0.06 s on one thread, 0.95 s on two, while another test run used the CPUs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def tiny_model(tiny_models: TinyModels, family: str) -> Path:
    """The random-weight model of each family in turn."""
    return tiny_models.base(family)
