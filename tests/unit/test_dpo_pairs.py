"""Ours (DPO): preference pairs from the debate's consensus alone, their file format, and the settings that
choose each role's objective."""

from __future__ import annotations

from pathlib import Path

import pytest

from mft.config import RunConfig
from mft.data.builders import critic_pairs, generator_pairs
from mft.data.examples import Pair, examples_text, read_examples, read_pairs, write_examples
from mft.errors import MftError
from mft.method_data import BuildContext, society_data, society_preference_data
from mft.methods import BY_KEY
from mft.pipeline.assemble import check_objectives, objective_of
from mft.records import DebateRecord, Message
from mft.tasks import get_task
from tests.unit.test_builders import _rec as builders_record

eq = get_task("arithmetic").is_equivalent


def _rec(pid: str, first: list[str | None], last: list[str | None], consensus: str | None) -> DebateRecord:
    # the builders' tests' record, with a gold answer that the consensus sometimes matches
    rec = builders_record(pid, first, last, consensus)
    problem = rec.problem.model_copy(update={"question": f"Q {pid}", "answer": "5"})
    return rec.model_copy(update={"problem": problem, "correct": consensus == "5"})


RECORDS = [
    _rec("p1", ["5", "6", "5"], ["5", "5", "6"], "5"),
    _rec("p2", ["7", "8", None], ["8", "8", "8"], "8"),  # unanimous at the end: no critic pair
    _rec("p3", [None, None, None], [None, None, None], None),  # nobody answered: no pairs at all
]


def _texts(pairs: list[Pair]) -> list[tuple[str, str, str]]:
    return [(p.prompt[-1].content, p.chosen.content, p.rejected.content) for p in pairs]


def test_generator_pairs_put_its_own_round1_reply_against_the_others_across_the_consensus() -> None:
    # p1: agents 0 and 2 agree with the consensus 5, agent 1 does not; p2: agent 0 (7) and agent 2 (no
    # answer) disagree with 8
    assert _texts(generator_pairs(RECORDS, 0, eq)) == [
        ("Q p1", "first p1 0: 5", "first p1 1: 6"),
        ("Q p2", "first p2 1: 8", "first p2 0: 7"),
    ]
    assert _texts(generator_pairs(RECORDS, 1, eq)) == [
        ("Q p1", "first p1 0: 5", "first p1 1: 6"),
        ("Q p1", "first p1 2: 5", "first p1 1: 6"),
        ("Q p2", "first p2 1: 8", "first p2 0: 7"),
        ("Q p2", "first p2 1: 8", "first p2 2: None"),  # a missing answer is on the rejected side
    ]
    pair = generator_pairs(RECORDS, 2, eq)[0]
    assert [m.role for m in pair.prompt] == ["user"] and pair.chosen.role == pair.rejected.role == "assistant"


def test_critic_pairs_are_final_replies_in_the_critics_own_context() -> None:
    pairs = critic_pairs(RECORDS, 2, eq)
    assert _texts(pairs) == [
        ("others p1 2", "last p1 0: 5", "last p1 2: 6"),
        ("others p1 2", "last p1 1: 5", "last p1 2: 6"),
    ]
    # its own context: its first answer and the others' answers it was shown, not its final reply
    assert [m.content for m in pairs[0].prompt] == ["Q p1", "first p1 2: 5", "others p1 2"]
    assert _texts(critic_pairs(RECORDS, 0, eq)) == [("others p1 0", "last p1 0: 5", "last p1 2: 6")]


def test_pairs_come_from_the_consensus_not_the_labels() -> None:
    """Corrupting every gold answer (and the `correct` flags) changes no pair."""
    ctx = BuildContext(3, 2 / 3, 0, 1, generator_objective="dpo", critic_objective="dpo")
    corrupted = [
        r.model_copy(
            update={"problem": r.problem.model_copy(update={"answer": "-12345"}), "correct": not r.correct}
        )
        for r in RECORDS
    ]
    clean = society_preference_data(RECORDS, eq, ctx)
    spoiled = society_preference_data(corrupted, eq, ctx)
    assert set(clean) == {f"{role}_{n}" for role in ("gen", "critic") for n in range(3)}
    assert all(examples_text(clean[s].items()) == examples_text(spoiled[s].items()) for s in clean)
    assert sum(len(d.items()) for d in clean.values()) > 0


def test_a_role_trained_by_sft_gets_ours_data() -> None:
    ctx = BuildContext(3, 2 / 3, 0, 1, generator_objective="sft", critic_objective="dpo")
    data = society_preference_data(RECORDS, eq, ctx)
    ours = society_data(RECORDS, eq, ctx)
    assert data["gen_1"].pairs is None and data["gen_1"].examples == ours["gen_1"].examples
    assert data["critic_1"].pairs is not None and data["critic_1"].sizes == {"examples": 1}


def test_pair_files_round_trip_through_the_one_example_writer(tmp_path: Path) -> None:
    pairs = generator_pairs(RECORDS, 1, eq) + critic_pairs(RECORDS, 2, eq)
    write_examples(tmp_path / "gen.jsonl", pairs)
    assert read_pairs(tmp_path / "gen.jsonl") == pairs
    first = (tmp_path / "gen.jsonl").read_text().splitlines()[0]
    assert first.startswith('{"prompt": [{"role": "user"') and '"chosen": [{"role": "assistant"' in first
    with pytest.raises(MftError, match="preference pair where a chat example was expected"):
        read_examples(tmp_path / "gen.jsonl")
    write_examples(tmp_path / "chat.jsonl", [[Message(role="user", content="q")]])
    with pytest.raises(MftError, match="chat example where a preference pair was expected"):
        read_pairs(tmp_path / "chat.jsonl")


def test_each_role_trains_by_its_objective_and_only_the_preference_method_uses_them() -> None:
    dpo = BY_KEY["ours_dpo"].run_as
    cfg = RunConfig(method=dpo, ft_objective_generator="sft")
    assert [objective_of(cfg, s) for s in ("gen_0", "critic_2")] == ["sft", "dpo"]
    assert objective_of(RunConfig(method="ours"), "critic_0") == "sft"  # Ours stays SFT
    check_objectives(RunConfig(method=dpo, backend="vllm"))
    with pytest.raises(MftError, match="trains by DPO, which the openai backend does not do"):
        check_objectives(RunConfig(method=dpo, backend="openai"))
    # openai with both roles on sft, or another method, is fine
    check_objectives(
        RunConfig(method=dpo, backend="openai", ft_objective_generator="sft", ft_objective_critic="sft")
    )
    check_objectives(RunConfig(method="ours", backend="openai"))
