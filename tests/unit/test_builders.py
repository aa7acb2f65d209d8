from __future__ import annotations

import json

import pytest

from mft.data.builders import CriticSplit, critic_split, generator_examples, mask_first_answer, mix_critic
from mft.data.examples import examples_text
from mft.errors import MftError
from mft.method_data import BuildContext, pooled_data, society_data
from mft.records import DebateRecord, Message, Problem
from mft.tasks import get_task

eq = get_task("arithmetic").is_equivalent


def _rec(
    pid: str, first: list[str | None], last: list[str | None], consensus: str | None, split: str = "train"
) -> DebateRecord:
    n = len(first)
    convs = [
        [
            Message(role="user", content=f"Q {pid}"),
            Message(role="assistant", content=f"first {pid} {i}: {first[i]}"),
            Message(role="user", content=f"others {pid} {i}"),
            Message(role="assistant", content=f"last {pid} {i}: {last[i]}"),
        ]
        for i in range(n)
    ]
    return DebateRecord(
        task="arithmetic",
        task_version="1",
        problem=Problem(id=pid, question="q", answer="999", split=split),  # gold never matches: unused
        agents=[[f"a{i}" for i in range(n)]] * 2,
        responses=[[c[1].content for c in convs], [c[3].content for c in convs]],
        answers=[first, last],
        conversations=convs,
        consensus=consensus,
        round_consensus=[None, consensus],
        correct=False,
    )


RECORDS = [
    _rec("p1", ["5", "5", "6"], ["5", "5", "5"], "5"),  # agent 2 corrected
    _rec("p2", ["7", "8", "8"], ["8", "8", "8"], "8"),  # agent 0 corrected
    _rec("p3", ["1", "2", None], ["1", "2", None], "1"),  # agent 1 stays wrong; agent 2 no answer
    _rec("p4", [None, None, None], [None, None, None], None),  # nobody answered: no data
]


def test_generator_data_is_first_answers_that_match_consensus() -> None:
    gen0 = generator_examples(RECORDS, 0, eq)
    assert [ex[1].content for ex in gen0] == ["first p1 0: 5", "first p3 0: 1"]
    assert all(len(ex) == 2 and ex[0].role == "user" for ex in gen0)
    assert [ex[1].content for ex in generator_examples(RECORDS, 2, eq)] == ["first p2 2: 8"]
    assert len(generator_examples(RECORDS, 1, eq)) == 2  # p1 and p2


def test_critic_split_corrected_and_kept() -> None:
    s0 = critic_split(RECORDS, 0, eq)
    assert [ex[3].content for ex in s0.corrected] == ["last p2 0: 8"]
    assert [ex[3].content for ex in s0.kept] == ["last p1 0: 5", "last p3 0: 1"]
    s2 = critic_split(RECORDS, 2, eq)
    assert [ex[3].content for ex in s2.corrected] == ["last p1 2: 5"]
    assert [ex[3].content for ex in s2.kept] == ["last p2 2: 8"]
    s1 = critic_split(RECORDS, 1, eq)
    assert len(s1.corrected) == 0 and len(s1.kept) == 2  # p3: final answer 2 != consensus 1 -> excluded
    # the critic trains on the whole conversation the engine built
    assert [m.role for m in s0.corrected[0]] == ["user", "assistant", "user", "assistant"]


def _ex(tag: str) -> list[Message]:
    return [Message(role="user", content=tag)]


# w is the share of D_C- (corrected) in a critic's data: all 4 corrected plus round(4 (1 - w) / w) kept
@pytest.mark.parametrize(
    "w, expected_corrected, expected_kept",
    [(0.5, 4, 4), (2 / 3, 4, 2), (0.8, 4, 1), (0.25, 4, 10), (1.0, 4, 0), (0.0, 0, 10)],
)
def test_mix_share_of_corrected(w: float, expected_corrected: int, expected_kept: int) -> None:
    split = CriticSplit(corrected=[_ex(f"c{i}") for i in range(4)], kept=[_ex(f"k{i}") for i in range(10)])
    mixed = mix_critic(split, w, seed="s")
    kept = [e for e in mixed if e[0].content.startswith("k")]
    corrected = [e for e in mixed if e[0].content.startswith("c")]
    assert (len(corrected), len(kept)) == (expected_corrected, expected_kept)
    assert mix_critic(split, w, seed="s") == mixed  # seeded


def test_the_ends_of_the_mix_are_one_set_only() -> None:
    split = CriticSplit(corrected=[_ex(f"c{i}") for i in range(3)], kept=[_ex(f"k{i}") for i in range(5)])
    only_corrected = mix_critic(split, 1.0, seed="s")
    only_kept = mix_critic(split, 0.0, seed="s")
    assert sorted(e[0].content for e in only_corrected) == ["c0", "c1", "c2"]
    assert sorted(e[0].content for e in only_kept) == ["k0", "k1", "k2", "k3", "k4"]


def test_the_default_mix_is_the_official_codes_two_thirds_corrected() -> None:
    from mft.config import RunConfig

    w = RunConfig().critic_corrected_share
    assert w == pytest.approx(2 / 3)
    split = CriticSplit(corrected=[_ex(f"c{i}") for i in range(30)], kept=[_ex(f"k{i}") for i in range(300)])
    mixed = mix_critic(split, w, seed="s")
    corrected = sum(e[0].content.startswith("c") for e in mixed)
    # every D_C- conversation, plus one D_C+ for every second one (the official code adds one with p = 1/2)
    assert (corrected, len(mixed) - corrected) == (30, 15)


def test_mix_without_corrections_is_empty_unless_only_kept_is_asked_for() -> None:
    split = CriticSplit(corrected=[], kept=[_ex("k0"), _ex("k1")])
    assert mix_critic(split, 0.5, seed="s") == []  # no D_C-: no share of it can be met (as the official code)
    assert len(mix_critic(split, 0.0, seed="s")) == 2


def test_masking_the_first_answer_marks_only_it() -> None:
    conv = RECORDS[0].conversations[2]
    masked = mask_first_answer(conv)
    assert [m.weight for m in masked] == [None, 0, None, None]
    assert [m.content for m in masked] == [m.content for m in conv]
    assert conv[1].weight is None  # the record's own conversation is untouched
    # what is written to the examples file: weight 0 on the first answer only, no key elsewhere
    line = json.loads(examples_text([masked]))
    assert [m.get("weight") for m in line["messages"]] == [None, 0, None, None]
    assert "weight" not in line["messages"][3]


@pytest.mark.parametrize("mask", [False, True])
def test_critic_datasets_mask_the_first_answer_when_asked(mask: bool) -> None:
    ctx = BuildContext(3, 1.0, seed=0, iteration=1, mask_critic_first_answer=mask)
    for data in (society_data(RECORDS, eq, ctx)["critic_2"], pooled_data(RECORDS, eq, ctx)["model"]):
        critics = [ex for ex in data.examples if len(ex) == 4]
        assert critics
        assert all(ex[1].weight == (0 if mask else None) and ex[3].weight is None for ex in critics)
    gens = society_data(RECORDS, eq, ctx)["gen_0"].examples
    assert all(m.weight is None for ex in gens for m in ex)  # generators always train on their answer


def test_bad_weight() -> None:
    with pytest.raises(MftError):
        mix_critic(CriticSplit(), 1.5, seed="s")


def test_test_split_records_never_feed_a_dataset() -> None:
    leaked = [*RECORDS, _rec("t1", ["5", "5", "5"], ["5", "5", "5"], "5", split="test")]
    for build in (lambda: generator_examples(leaked, 0, eq), lambda: critic_split(leaked, 0, eq)):
        with pytest.raises(MftError, match="not from the training split"):
            build()


def test_rationalized_examples_are_right_hinted_answers_without_the_hint() -> None:
    from mft.data.builders import rationalized_examples, wrong_samples
    from mft.records import Rationale

    gold = eq  # the gold of every record below is 999
    records = [_rec("r1", ["999", "5", None], ["999", "5", None], "999")]
    assert [(r.problem.id, s) for r, s in wrong_samples(records, gold)] == [("r1", 1), ("r1", 2)]

    def hinted(slot: int, answer: str | None) -> Rationale:
        prompt = f"Q r1\n\nHint: the correct answer is 999. ({slot})"
        return Rationale(
            problem_id="r1", slot=slot, hinted_prompt=prompt, response=f"{answer}!", answer=answer
        )

    rationales = [hinted(0, "999"), hinted(1, "999"), hinted(2, "4")]  # slot 0 was right: not rationalized
    examples = rationalized_examples(records, rationales, gold)
    assert [[m.content for m in ex] for ex in examples] == [
        ["Q r1", "999!"]
    ]  # slot 1 only: slot 2 still wrong
    assert examples[0][0] == records[0].conversations[1][0]  # the round-1 prompt, without the hint
