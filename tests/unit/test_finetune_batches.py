"""Finetuning batch order: every example once per epoch, seeded, and length-grouped batches pad less."""

from __future__ import annotations

import random

import pytest

from mft.backends.hf.train import batch_order


def _padding(lengths: list[int], batches: list[list[int]]) -> int:
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize("grouped", [True, False])
def test_each_epoch_uses_every_example_once_in_batches_of_at_most_batch_size(grouped: bool) -> None:
    lengths = [random.Random(1).randint(50, 700) for _ in range(203)]
    batches = batch_order(lengths, 16, random.Random(0), grouped)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(203))
    assert all(1 <= len(b) <= 16 for b in batches)
    assert batch_order(lengths, 16, random.Random(0), grouped) == batches  # seeded


def test_length_grouped_batches_pad_less_and_stay_shuffled() -> None:
    rng = random.Random(2)
    lengths = [rng.choice([rng.randint(100, 200), rng.randint(400, 700)]) for _ in range(320)]
    plain = batch_order(lengths, 16, random.Random(0), group_by_length=False)
    grouped = batch_order(lengths, 16, random.Random(0), group_by_length=True)
    assert _padding(lengths, grouped) < 0.5 * _padding(lengths, plain)
    # batch order is not sorted by length: long and short batches are interleaved
    firsts = [max(lengths[i] for i in b) for b in grouped]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)
    # another seed gives other batches
    assert batch_order(lengths, 16, random.Random(1), True) != grouped


def test_precision_picks_the_autocast_dtype() -> None:
    import torch

    from mft.backends.hf.train import autocast_dtype
    from mft.errors import MftError

    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert autocast_dtype("auto", cpu) is (torch.bfloat16 if native else None)
    with pytest.raises(MftError, match="auto, bf16 or fp32"):
        autocast_dtype("fp16", cpu)
