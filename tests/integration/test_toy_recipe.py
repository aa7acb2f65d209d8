from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from mft.records import Message
from mft.tasks.arithmetic import MAX_VALUE
from mft.toy import CHECKPOINT_DIR
from mft.toy.corpus import SLIP_OFFSETS, CorpusConfig, rev, sample_conversation, solve
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
        ops = tuple(rng.randint(0, MAX_VALUE) for _ in range(6))
        a, b, c, d, e, f = ops
        assert solve(ops, 0.0, rng).answer == a + b * c + d - e * f
    slipped = [solve((3, 12, 7, 15, 5, 20), 1.0, rng).answer for _ in range(20)]
    assert all(x != 2 for x in slipped) or len(set(slipped)) > 1


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("0", "000"),
        ("7", "700"),
        ("45", "540"),
        ("378", "873"),
        ("900", "009"),
        ("-501", "-105"),
        ("-5", "-500"),
    ],
)
def test_results_are_written_least_significant_digit_first(value: str, written: str) -> None:
    assert rev(int(value)) == written


def test_worked_solution_format() -> None:
    # 3+12*7+15-5*20 = 3+84+15-100 = 2; every result digit-reversed, the answer in the usual order
    assert solve((3, 12, 7, 15, 5, 20), 0.0, random.Random(0)).render() == (
        "12*07=12*00+12*7=000+480=480\n"
        "05*20=05*20+05*0=001+000=001\n"
        "300+480=780\n"
        "780+510=201\n"
        "201-001=200\n"
        "The answer is 002."
    )
    assert solve((11, 7, 9, 0, 23, 25), 0.0, random.Random(0)).lines[-1] == "470-575=-105"  # 74-575=-501


class _Draws(random.Random):
    """A generator whose `random()` returns the given draws in order (which of the three slips fire)."""

    def __init__(self, draws: list[float]) -> None:
        super().__init__(0)
        self.draws = iter(draws)

    def random(self) -> float:
        return next(self.draws)


def test_each_slip_is_one_token_and_moves_the_answer_by_its_own_offset() -> None:
    rng = random.Random(0)
    for _ in range(200):
        ops = tuple(rng.randint(0, MAX_VALUE) for _ in range(6))
        a, b, c, d, e, f = ops
        truth = solve(ops, 0.0, rng)
        assert truth.answer == a + b * c + d - e * f
        answers = set()
        for mask in range(1, 8):  # every non-empty set of slips, by seeding which ones fire
            picks = [bool(mask >> i & 1) for i in range(3)]
            chain = solve(ops, 0.5, _Draws([0.0 if p else 0.99 for p in picks]))
            offset = sum(o * s for o, s, p in zip(SLIP_OFFSETS, (1, -1, 1), picks, strict=True) if p)
            assert chain.answer == truth.answer + offset
            answers.add(chain.answer)
            if sum(picks) == 1:  # one slip: the first result it touches first differs in the slip's column
                line = next(
                    i for i, (x, y) in enumerate(zip(chain.lines, truth.lines, strict=True)) if x != y
                )
                got, want = chain.lines[line].split("=")[-1], truth.lines[line].split("=")[-1]
                if got.startswith("-") == want.startswith("-"):
                    got, want = got.lstrip("-"), want.lstrip("-")
                    first = next(i for i, (x, y) in enumerate(zip(got, want, strict=False)) if x != y)
                    assert first == len(str(SLIP_OFFSETS[picks.index(True)])) - 1, (chain.lines, truth.lines)
        assert len(answers) == 7  # agents that slip differently never agree on a wrong answer


def test_corpus_never_uses_test_problems() -> None:
    from mft.tasks import get_task
    from mft.tasks.base import pool_of

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
            assert pool_of(str(tuple(int(x) for x in re.findall(r"\d+", match.group(1)))), 0) == "train"
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


@pytest.mark.slow
def test_shipped_model_debate_beats_the_vote_which_beats_one_agent(tmp_path: Path) -> None:
    """The targets the bundled model was made for (measured on all 500 test problems: single 54.1%,
    majority 61.4%, debate 92.6%), checked on the first 150 with the paper's sampling settings."""
    import json

    from mft.cli import main

    out = tmp_path / "debate"
    assert main(["debate", "--limit", "150", "--seed", "0", "--out", str(out), "--no-progress"]) == 0
    acc = json.loads((out / "summary.json").read_text())["accuracy"]
    single, majority, debate = (acc[k]["mean"] for k in ("single", "majority", "debate"))
    assert 0.30 <= single <= 0.70, acc
    assert single < majority < debate, acc
    assert debate - majority >= 0.08, acc
