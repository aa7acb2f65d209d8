from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from mft.records import Message
from mft.toy import CHECKPOINT_DIR
from mft.toy.corpus import CorpusConfig, sample_conversation, solve
from mft.toy.pretrain import PretrainConfig, encode, pretrain


def test_encode_matches_the_chat_template() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(CHECKPOINT_DIR)
    rng = random.Random(0)
    for _ in range(20):
        conv = sample_conversation(CorpusConfig(), rng)
        ids, labels = encode(tok, conv)
        ref = tok.apply_chat_template(
            [m.model_dump() for m in conv], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        assert ref["input_ids"] == ids
        assert [
            t if m else -100 for t, m in zip(ref["input_ids"], ref["assistant_masks"], strict=True)
        ] == labels


def test_corpus_chains_are_right_without_slips() -> None:
    rng = random.Random(0)
    for _ in range(50):
        ops = tuple(rng.randint(0, 30) for _ in range(6))
        a, b, c, d, e, f = ops
        assert solve(ops, 0.0, rng).answer == a + b * c + d - e * f
    slipped = [solve((3, 12, 7, 15, 5, 20), 1.0, rng).answer for _ in range(20)]
    assert all(x != 2 for x in slipped) or len(set(slipped)) > 1


def test_corpus_never_uses_test_problems() -> None:
    from mft.tasks import get_task
    from mft.tasks.arithmetic import pool_of

    test_q = {p.question for p in get_task("arithmetic").load("test", 500)}
    rng = random.Random(1)
    seen = 0
    for _ in range(2000):
        match = re.match(
            r"What is the result of (\S+)\?", sample_conversation(CorpusConfig(), rng)[0].content
        )
        if match:
            seen += 1
            assert match.group(1) not in test_q
            assert pool_of(tuple(int(x) for x in re.findall(r"\d+", match.group(1))), 0) == "train"
    assert seen > 1000


@pytest.mark.slow
def test_shrunken_recipe_learns(tmp_path: Path) -> None:
    cfg = PretrainConfig(
        hidden_size=48, layers=1, heads=2, intermediate_size=96, steps=60, batch_size=8, lr=5e-3, warmup=5
    )
    losses = pretrain(tmp_path / "tiny", cfg, log_every=10)
    assert losses[-1] < 0.7 * losses[0], losses
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tiny")
    assert model.config.hidden_size == 48 and tok.chat_template
    msgs = [Message(role="user", content="hi")]
    assert tok.apply_chat_template(
        [m.model_dump() for m in msgs], add_generation_prompt=True, tokenize=False
    ).endswith("<|assistant|>")
